//! `orlysync.negentropy.v1.NegentropyService`: runs a [`SyncJob`] per `SyncWithPeer` call and
//! streams its real progress. Many calls run at once over one store; a caller that goes away
//! cancels its job, and `CancelSync` stops one by id. What a cancelled job stored stays stored.
//! A caller sees (lists, watches) the syncs its gate says it may: behind the gateway its own.

use super::gate::{Admission, CallInfo, SYNC_PATH, SyncGate, shown};
use super::jobs::SyncJobs;
use super::status;
use super::unix_now;
use crate::event::Filter;
use crate::peer::PeerOptions;
use crate::policy::redact_url;
use crate::proto::orlysync::negentropy::v1 as pb;
use crate::proto::{direction_from_pb, progress_from_pb, progress_to_pb};
use crate::store::Store;
use crate::sync::{Direction, ErrorKind, FrameLimit, PeerUrl, Progress, SyncJob, SyncRequest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Finished syncs remembered for `GetSync`/`ListSyncs`.
const KEEP_FINISHED: usize = 200;

/// Largest request message decoded, in bytes (tonic's default, stated): behind the gateway a
/// larger one is refused, with its audit record, before it reaches the codec.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Defaults applied to every sync the service runs.
#[derive(Debug, Clone, Default)]
pub struct SyncDefaults {
    /// Connection options (CA file, NIP-42 key, timeouts).
    pub peer: PeerOptions,
}

struct Entry {
    status: pb::SyncStatus,
    cancel: Option<tokio::sync::oneshot::Sender<()>>,
    finished_at: Option<Instant>,
}

/// The syncs of the service: `SyncWithPeer`, `GetSync`, `ListSyncs` and `CancelSync`, and the
/// background syncs of managed peers, all in one registry.
#[derive(Clone)]
pub struct SyncService {
    store: Arc<dyn Store>,
    gate: Arc<dyn SyncGate>,
    defaults: SyncDefaults,
    syncs: Arc<Mutex<HashMap<String, Entry>>>,
    jobs: SyncJobs,
}

impl SyncService {
    /// A service over `store`, admitting calls through `gate`.
    pub fn new(store: Arc<dyn Store>, gate: Arc<dyn SyncGate>, defaults: SyncDefaults) -> Self {
        Self {
            store,
            gate,
            defaults,
            syncs: Arc::default(),
            jobs: SyncJobs::new(),
        }
    }

    /// The registry its jobs run in: the server stops it at shutdown and drains it before the
    /// audit log is sealed.
    pub fn jobs(&self) -> SyncJobs {
        self.jobs.clone()
    }

    /// The gate its calls are admitted through.
    pub fn gate(&self) -> &Arc<dyn SyncGate> {
        &self.gate
    }

    /// The defaults every sync starts from.
    pub fn defaults(&self) -> &SyncDefaults {
        &self.defaults
    }

    /// Turns a request into a validated [`SyncRequest`]; INVALID_ARGUMENT names the field.
    pub fn validate(&self, r: &pb::SyncPeerRequest) -> Result<SyncRequest, Status> {
        self.defaults.validate(r)
    }
}

impl SyncDefaults {
    /// Turns a request into a validated [`SyncRequest`] with these defaults; INVALID_ARGUMENT
    /// names the field. Needs no store, so the request fuzz target reaches it.
    pub fn validate(&self, r: &pb::SyncPeerRequest) -> Result<SyncRequest, Status> {
        if r.peer_url.trim().is_empty() {
            return Err(Status::invalid_argument("peer_url: required"));
        }
        // The cause, not the URL: the caller sent it, and it may be huge or hold a secret.
        let peer_url = PeerUrl::parse(&r.peer_url).map_err(|e| {
            Status::invalid_argument(match e {
                crate::peer::PeerError::BadUrl(_, why) => format!("peer_url: {why}"),
                e => format!("peer_url: {e}"),
            })
        })?;
        let filter = match &r.filter {
            Some(f) => Filter::try_from(f).map_err(Status::invalid_argument)?,
            None => Filter::default(),
        };
        let since = match r.since {
            0 => None,
            s if s < 0 => return Err(Status::invalid_argument("since: must not be negative")),
            s => Some(s as u64),
        };
        let mut direction = direction_from_pb(r.direction).ok_or_else(|| {
            Status::invalid_argument(format!("direction: unknown value {}", r.direction))
        })?;
        if r.dry_run {
            direction = Direction::None;
        }
        let frame_limit = r
            .frame_size_limit
            .map(FrameLimit::new)
            .transpose()
            .map_err(|e| {
                Status::invalid_argument(format!("frame_size_limit: absent (negotiate), {e}"))
            })?;
        let mut peer = self.peer.clone();
        if r.timeout_seconds > 0 {
            peer.reply_timeout = Duration::from_secs(u64::from(r.timeout_seconds.min(3600)));
        }
        Ok(SyncRequest::new(peer_url, filter, direction)
            .with_since(since)
            .with_frame_limit(frame_limit)
            .with_peer_options(peer))
    }
}

/// The progress as the caller, other admins (status, list) and the registry see it: the URL
/// without its secrets, texts bounded.
fn to_pb(p: &Progress, sync_id: &str) -> pb::SyncProgress {
    let text = |t: &Option<String>| {
        t.as_deref()
            .map(|t| shown(t, &p.peer_url))
            .unwrap_or_default()
    };
    pb::SyncProgress {
        peer_url: redact_url(&p.peer_url),
        error: text(&p.error),
        last_refusal: text(&p.last_refusal),
        ..progress_to_pb(p, sync_id)
    }
}

type Syncs = Arc<Mutex<HashMap<String, Entry>>>;

fn update(syncs: &Syncs, id: &str, f: impl FnOnce(&mut Entry)) {
    if let Ok(mut m) = syncs.lock()
        && let Some(e) = m.get_mut(id)
    {
        f(e);
    }
}

fn forget_old(m: &mut HashMap<String, Entry>) {
    let mut done: Vec<(Instant, String)> = m
        .iter()
        .filter_map(|(k, e)| e.finished_at.map(|t| (t, k.clone())))
        .collect();
    if done.len() > KEEP_FINISHED {
        done.sort();
        for (_, k) in done.iter().take(done.len() - KEEP_FINISHED) {
            m.remove(k);
        }
    }
}

/// The stream of a sync's progress.
pub type ProgressStream = ReceiverStream<Result<pb::SyncProgress, Status>>;

impl SyncService {
    /// `SyncWithPeer`: validates, admits through the gate and starts the sync.
    pub async fn sync_with_peer(
        &self,
        request: Request<pb::SyncPeerRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let call = CallInfo::from_request(&request);
        let body = request.into_inner();
        let refuse = |s| self.gate.refuse(&call, SYNC_PATH, &body.peer_url, s);
        let req = match self.validate(&body) {
            Ok(r) => r,
            Err(s) => return Err(refuse(s).await),
        };
        if let Err(s) = self.can_start().await {
            return Err(refuse(s).await);
        }
        let admission: Admission = self.gate.admit(&call, &req).await?;
        Ok(Response::new(self.launch(admission, req).await?))
    }

    /// Whether a sync may start now: the store answers and the service is not stopping.
    pub async fn can_start(&self) -> Result<(), Status> {
        if let Err(e) = self.store.ready().await {
            return Err(status::not_ready(&e));
        }
        if self.jobs.is_stopping() {
            return Err(status::stopping());
        }
        Ok(())
    }

    /// Runs an admitted sync in the registry: its progress streams back, the last message
    /// complete or with its error; the gate records its end.
    pub async fn launch(
        &self,
        admission: Admission,
        req: SyncRequest,
    ) -> Result<ProgressStream, Status> {
        let mut req = req.with_max_events(admission.max_events);
        if let Some(url) = &admission.peer_url {
            req = req.with_peer_url(url.clone());
        }

        let sync_id = hex::encode(rand::random::<[u8; 12]>());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::SyncProgress, Status>>(64);
        let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
        {
            let mut m = self
                .syncs
                .lock()
                .map_err(|_| status::poisoned("registry"))?;
            forget_old(&mut m);
            m.insert(
                sync_id.clone(),
                Entry {
                    status: pb::SyncStatus {
                        sync_id: sync_id.clone(),
                        running: true,
                        progress: Some(pb::SyncProgress {
                            peer_url: redact_url(req.peer_url().as_str()),
                            sync_id: sync_id.clone(),
                            ..Default::default()
                        }),
                        admin: admission.admin.clone(),
                        direction: req.direction().as_str().into(),
                        started_at: unix_now(),
                    },
                    cancel: Some(cancel_tx),
                    finished_at: None,
                },
            );
        }
        let syncs = self.syncs.clone();
        let gate = self.gate.clone();
        let store = self.store.clone();
        let id = sync_id.clone();
        let stopping = self.jobs.stopping();
        let span = tracing::info_span!("sync_job", sync_id = %id, peer = %redact_url(req.peer_url().as_str()), direction = req.direction().as_str());
        let spawned = self.jobs.spawn(tracing::Instrument::instrument(
            async move {
                let started = Instant::now();
                let progress_tx = tx.clone();
                let (s2, id2) = (syncs.clone(), id.clone());
                let job_req = req.clone();
                let run = async move {
                    SyncJob::new(store, job_req)
                        .run(move |p: &Progress| {
                            let msg = to_pb(p, &id2);
                            update(&s2, &id2, |e| e.status.progress = Some(msg.clone()));
                            // A slow reader misses intermediate updates, never the final one
                            // (sent below).
                            if !p.complete && p.error.is_none() {
                                let _ = progress_tx.try_send(Ok(msg));
                            }
                        })
                        .await
                };
                let result = tokio::select! {
                    r = run => r.map_err(|e| (e.to_string(), e.kind())),
                    _ = tx.closed() => Err(("cancelled: the caller went away".to_string(), ErrorKind::Cancelled)),
                    _ = cancel_rx => Err(("cancelled by CancelSync".to_string(), ErrorKind::Cancelled)),
                    () = stopping.stopped() => Err(("cancelled: the service is stopping".to_string(), ErrorKind::Cancelled)),
                };
                let mut last = match &result {
                    Ok(p) => p.clone(),
                    Err((e, kind)) => {
                        // The job future may have been dropped: rebuild the final message from the last update.
                        let mut p = Progress {
                            peer_url: job_peer(&syncs, &id),
                            ..Default::default()
                        };
                        if let Ok(m) = syncs.lock()
                            && let Some(pp) = m.get(&id).and_then(|e| e.status.progress.clone())
                        {
                            p = progress_from_pb(&pp);
                        }
                        p.complete = false;
                        p.error = Some(e.clone());
                        p.error_kind = Some(*kind);
                        p
                    }
                };
                if result.is_ok() {
                    last.mark_complete();
                }
                let msg = to_pb(&last, &id);
                update(&syncs, &id, |e| {
                    e.status.running = false;
                    e.status.progress = Some(msg.clone());
                    e.cancel = None;
                    e.finished_at = Some(Instant::now());
                });
                crate::telemetry::count_sync(last.error_kind.map_or("complete", ErrorKind::as_str));
                crate::telemetry::count_events_moved("down", last.fetched);
                crate::telemetry::count_events_moved("up", last.sent);
                // The caller gets its answer first; the completion record (not a decision)
                // follows, and the admission (its concurrency hold) lives until it is written.
                let _ = tx.send(Ok(msg)).await;
                drop(tx);
                gate.finished(&admission, &req, &last, started.elapsed())
                    .await;
            },
            span,
        ));
        if let Err(job) = spawned {
            // The service began to stop after the admission: the job ends at once, cancelled,
            // with its finished record, before this call returns.
            job.await;
        }
        Ok(ReceiverStream::new(rx))
    }

    /// `GetSync`: one sync the caller may see, by id.
    pub async fn get_sync(
        &self,
        request: Request<pb::GetSyncRequest>,
    ) -> Result<Response<pb::SyncStatus>, Status> {
        let visible = self.gate.visibility(&CallInfo::from_request(&request));
        let id = request.into_inner().sync_id;
        let m = self
            .syncs
            .lock()
            .map_err(|_| status::poisoned("registry"))?;
        // Another admin's sync is not found, as if it did not exist. The id is not echoed: it is
        // the caller's input, of any size.
        m.get(&id)
            .filter(|e| visible.sees(&e.status.admin))
            .map(|e| Response::new(e.status.clone()))
            .ok_or_else(|| Status::not_found("sync_id: no such sync"))
    }

    /// `ListSyncs`: the syncs the caller may see, newest first.
    pub async fn list_syncs(
        &self,
        request: Request<pb::ListSyncsRequest>,
    ) -> Result<Response<pb::ListSyncsResponse>, Status> {
        let visible = self.gate.visibility(&CallInfo::from_request(&request));
        let m = self
            .syncs
            .lock()
            .map_err(|_| status::poisoned("registry"))?;
        let mut syncs: Vec<pb::SyncStatus> = m
            .values()
            .filter(|e| visible.sees(&e.status.admin))
            .map(|e| e.status.clone())
            .collect();
        syncs.sort_by_key(|s| std::cmp::Reverse(s.started_at));
        Ok(Response::new(pb::ListSyncsResponse { syncs }))
    }

    /// `CancelSync`: stops one of the caller's own running syncs.
    pub async fn cancel_sync(
        &self,
        request: Request<pb::CancelSyncRequest>,
    ) -> Result<Response<pb::CancelSyncResponse>, Status> {
        // Behind the gateway an admin may only cancel its own syncs; the gate audits the
        // decision either way, and nothing is cancelled without that record.
        let call = CallInfo::from_request(&request);
        let id = request.into_inner().sync_id;
        let owner = {
            let m = self
                .syncs
                .lock()
                .map_err(|_| status::poisoned("registry"))?;
            m.get(&id).map(|e| e.status.admin.clone())
        };
        // Ids are ours (24 hex characters); anything else is refused before it reaches the
        // audit log, whose records must stay small.
        let well_formed =
            id.len() == 24 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let decision = match (&call.admin, owner) {
            _ if !well_formed => Err(Status::invalid_argument(
                "sync_id: not a sync id (24 lowercase hex characters)",
            )),
            (_, None) => Ok(format!("allowed: no sync {id}, nothing to cancel")),
            (Some(caller), Some(owner)) if *caller != owner => Err(Status::permission_denied(
                format!("sync_id: {id} was started by another admin"),
            )),
            (_, Some(_)) => Ok(format!("allowed: cancel of own sync {id}")),
        };
        self.gate.cancel_decision(&call, decision).await?;
        let cancel = self
            .syncs
            .lock()
            .map_err(|_| status::poisoned("registry"))?
            .get_mut(&id)
            .and_then(|e| e.cancel.take());
        let cancelled = cancel.is_some_and(|c| c.send(()).is_ok());
        Ok(Response::new(pb::CancelSyncResponse { cancelled }))
    }
}

fn job_peer(syncs: &Syncs, id: &str) -> String {
    syncs
        .lock()
        .ok()
        .and_then(|m| {
            m.get(id)
                .and_then(|e| e.status.progress.as_ref().map(|p| p.peer_url.clone()))
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the service adds to the plain conversion: the URL's secrets never reach a caller,
    /// nor does a text quoting it; the counters cross whole.
    #[test]
    fn progress_shown_without_secrets() {
        let url = "ws://u:secret@127.0.0.1:7777/?t=secret";
        let p = Progress {
            peer_url: url.into(),
            round: 1,
            fetched: 4,
            error: Some(format!("cannot connect to {url}: refused")),
            error_kind: Some(ErrorKind::Incomplete),
            last_refusal: Some(format!("blocked: {url}")),
            ..Default::default()
        };
        let shown = to_pb(&p, "0123");
        for text in [&shown.peer_url, &shown.error, &shown.last_refusal] {
            assert!(!text.contains("secret"), "{text}");
            assert!(text.contains("127.0.0.1:7777"), "{text}");
        }
        let plain = progress_to_pb(&p, "0123");
        assert_eq!(
            pb::SyncProgress {
                peer_url: plain.peer_url.clone(),
                error: plain.error.clone(),
                last_refusal: plain.last_refusal.clone(),
                ..shown
            },
            plain
        );
    }
}
