//! `DatabaseService.Reconcile`: negentropy sessions run inside orly-db, next to the store's
//! persistent index. Sessions are capped in number, end when idle or when orly-db stops, and
//! answer every request with one response (several when the ids of a step are many).

use super::status::{neg_status, store_status};
use crate::proto::orlydb::v1 as db;
use crate::store::{Store, StoreError};
use db::reconcile_request::Step;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::{Status, Streaming};
use tracing::Instrument;

/// Most sessions open at once (each may hold a loaded set of up to its caller's cap, or a
/// store snapshot).
pub(super) const MAX_SESSIONS: usize = 512;
/// A session with no request (or whose caller reads no answer) for this long is ended. A sync
/// job waits up to an hour (the service's largest reply timeout) for its peer between two
/// requests; the relay expires its own sessions after 60 s and closes them.
const IDLE: Duration = Duration::from_secs(3660);
/// Most ids (have + need) per response: 4 MB, well under the 64 MiB message limit.
const IDS_PER_RESPONSE: usize = 131_072;

type Tx = mpsc::Sender<Result<db::ReconcileResponse, Status>>;

/// The sessions of one orly-db.
pub(super) struct Sessions {
    stop: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
}

impl Sessions {
    pub(super) fn new(stop: watch::Receiver<bool>) -> Self {
        Self {
            stop,
            slots: Arc::new(Semaphore::new(MAX_SESSIONS)),
        }
    }

    /// Starts serving one session; its responses come out of the returned receiver.
    pub(super) fn start(
        &self,
        store: Arc<dyn Store>,
        mut inbound: Streaming<db::ReconcileRequest>,
    ) -> Result<mpsc::Receiver<Result<db::ReconcileResponse, Status>>, Status> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "reconcile: at most {MAX_SESSIONS} sessions at once"
            ))
        })?;
        let mut stop = self.stop.clone();
        let (tx, rx) = mpsc::channel(1);
        let task = async move {
            let _slot = slot;
            let stopped = async {
                // A dropped sender is no stop signal.
                if stop.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let res = tokio::select! {
                r = serve(&*store, &mut inbound, &tx) => r,
                () = stopped => Err(Status::unavailable("orly-db is stopping")),
            };
            if let Err(s) = res {
                // Never wait on a caller that reads nothing (the stream ends anyway).
                let _ = tx.try_send(Err(s));
            }
        };
        tokio::spawn(task.instrument(tracing::Span::current()));
        Ok(rx)
    }
}

/// Sends one response; false when the caller is gone or has read nothing for [`IDLE`].
async fn send(tx: &Tx, r: db::ReconcileResponse) -> bool {
    matches!(tokio::time::timeout(IDLE, tx.send(Ok(r))).await, Ok(Ok(())))
}

/// The next request, or `None` when the caller closed its stream; idle sessions end.
async fn next_request(
    inbound: &mut Streaming<db::ReconcileRequest>,
) -> Result<Option<db::ReconcileRequest>, Status> {
    tokio::time::timeout(IDLE, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("reconcile: session idle, ended"))?
}

/// One session: open, then one answer per request until the caller closes its stream.
async fn serve(
    store: &dyn Store,
    inbound: &mut Streaming<db::ReconcileRequest>,
    tx: &Tx,
) -> Result<(), Status> {
    let open = match next_request(inbound).await? {
        Some(db::ReconcileRequest {
            step: Some(Step::Open(o)),
        }) => o,
        Some(_) => {
            return Err(Status::invalid_argument(
                "reconcile: the first request must open the session",
            ));
        }
        None => return Ok(()),
    };
    if let Err(e) = crate::negentropy::FrameLimit::new(open.frame_limit) {
        return Err(Status::invalid_argument(format!(
            "reconcile: frame_limit must be {e}"
        )));
    }
    let max = open
        .max_items
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let filter = super::db::filter_of(open.filter)?;
    let mut session = match store.neg_session(filter, open.frame_limit, max).await {
        Ok(s) => s,
        Err(StoreError::TooMany { max }) => {
            let r = db::ReconcileResponse {
                too_many: Some(max as u64),
                ..Default::default()
            };
            send(tx, r).await;
            return Ok(());
        }
        Err(e) => return Err(store_status(e)),
    };
    let opened = db::ReconcileResponse {
        size: session.size() as u64,
        indexed: session.is_indexed(),
        ..Default::default()
    };
    if !send(tx, opened).await {
        return Ok(());
    }
    let mut initiator = false;
    while let Some(req) = next_request(inbound).await? {
        let sent = match req.step {
            Some(Step::Initiate(_)) => {
                initiator = true;
                let message = session.initiate().await.map_err(neg_status)?;
                send_step(tx, message, false, &[], &[]).await
            }
            Some(Step::Message(m)) if initiator => {
                let step = session.next(m).await.map_err(neg_status)?;
                let done = step.reply.is_none();
                let message = step.reply.unwrap_or_default();
                send_step(tx, message, done, &step.have, &step.need).await
            }
            Some(Step::Message(m)) => {
                let message = session.respond(m).await.map_err(neg_status)?;
                send_step(tx, message, false, &[], &[]).await
            }
            Some(Step::Open(_)) | None => {
                return Err(Status::failed_precondition(
                    "reconcile: the session is already open",
                ));
            }
        };
        if !sent {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends one step's answer: the ids in chunks (`more` on all but the last response), the
/// message and `done` with the last. False when the caller is gone.
async fn send_step(
    tx: &Tx,
    message: Vec<u8>,
    done: bool,
    have: &[[u8; 32]],
    need: &[[u8; 32]],
) -> bool {
    let (mut have, mut need) = (have, need);
    loop {
        let h = have.len().min(IDS_PER_RESPONSE);
        let n = need.len().min(IDS_PER_RESPONSE - h);
        let last = h == have.len() && n == need.len();
        let mut r = db::ReconcileResponse {
            have: have[..h].concat(),
            need: need[..n].concat(),
            more: !last,
            ..Default::default()
        };
        (have, need) = (&have[h..], &need[n..]);
        if last {
            r.message = message;
            r.done = done;
            return send(tx, r).await;
        }
        if !send(tx, r).await {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step with more ids than one response carries is split: every id arrives once, in
    /// order, and the message and `done` come with the last response only.
    #[tokio::test]
    async fn many_ids_are_split_across_responses() {
        let have: Vec<[u8; 32]> = (0..IDS_PER_RESPONSE + 5)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                id
            })
            .collect();
        let need: Vec<[u8; 32]> = have
            .iter()
            .take(IDS_PER_RESPONSE)
            .map(|i| {
                let mut id = *i;
                id[31] = 1;
                id
            })
            .collect();
        let (tx, mut rx) = mpsc::channel(8);
        let sender = tokio::spawn({
            let (have, need) = (have.clone(), need.clone());
            async move { send_step(&tx, vec![0x61], true, &have, &need).await }
        });
        let (mut got_have, mut got_need, mut responses) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(r) = rx.recv().await {
            let r = r.unwrap();
            got_have.extend_from_slice(&r.have);
            got_need.extend_from_slice(&r.need);
            responses.push((r.more, r.done, r.message));
        }
        assert!(sender.await.unwrap());
        assert_eq!(responses.len(), 3);
        let (last, rest) = responses.split_last().unwrap();
        assert_eq!(last, &(false, true, vec![0x61]));
        assert!(rest.iter().all(|r| r == &(true, false, vec![])));
        assert_eq!(got_have, have.concat());
        assert_eq!(got_need, need.concat());
    }
}
