//! The anchoring task of the sync service: signs an anchor for every checkpoint the chain writes,
//! publishes it to every anchor relay, retries with backoff while no relay accepts it, forces a
//! checkpoint when records were written but none for `interval`, and keeps `ANCHORS.json` up to
//! date. Never a gate: nothing here can refuse or delay a request; a backlog is reported (the
//! `backlog` watch, the `orly.audit.anchor.backlog` gauge, a warning in the log).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::AnchorError;
use super::format::{ANCHOR_VERSION, AnchorPayload, build_anchor, log_id};
use super::relay::{anchor_peer_options, publish};
use super::state::{self, AnchorState};
use crate::audit::{AuditChain, CheckpointWritten};
use crate::event::{Event, Keys};
use crate::peer::PeerOptions;
use crate::telemetry as metrics;

/// First retry delay after an attempt no relay accepted; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts while relays are down.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How long the shutdown waits for the last anchors (the shutdown checkpoint's included).
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// Most anchors kept waiting. Beyond it, checkpoints are not anchored by the service while the
/// relays stay down (a warning each; `orly audit anchor` publishes them later), so an outage
/// under heavy traffic cannot grow memory and `ANCHORS.json` without bound. Later anchors still
/// cover those records through the chain.
pub(super) const MAX_BACKLOG: usize = 10_000;
/// Longest `ANCHORS.json` lags the anchors signed (it is rewritten at most this often).
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// What the service anchors with: validated once (`gateway::SecurityArgs`).
#[derive(Clone)]
pub struct AnchorSettings {
    /// The anchoring key (signs anchors, answers NIP-42 challenges).
    pub keys: Keys,
    /// ws:// or wss:// URLs of the anchor relays.
    pub relays: Vec<String>,
    /// Longest time between anchors while records are written.
    pub interval: Duration,
}

impl std::fmt::Debug for AnchorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorSettings")
            .field("pubkey", &hex::encode(self.keys.pubkey))
            .field(
                "relays",
                &self
                    .relays
                    .iter()
                    .map(|r| crate::peer::redact_url(r))
                    .collect::<Vec<_>>(),
            )
            .field("interval", &self.interval)
            .finish()
    }
}

/// Anchoring attached to a chain, not running yet.
pub struct Anchorer {
    settings: AnchorSettings,
    log: String,
    path: PathBuf,
    state: AnchorState,
    rx: mpsc::UnboundedReceiver<CheckpointWritten>,
    /// When `ANCHORS.json` was last written, and whether the state changed since.
    persisted: Instant,
    dirty: bool,
}

/// The running task; [`AnchorTask::stop`] ends it.
pub struct AnchorTask {
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
    backlog: watch::Receiver<usize>,
}

impl Anchorer {
    /// Reads `ANCHORS.json` and subscribes to the checkpoints of `chain` (which must sign: the
    /// log's identity is its audit key). Call before the service writes records.
    pub fn attach(settings: AnchorSettings, chain: &AuditChain) -> Result<Self, AnchorError> {
        let key = chain.verifying_key().ok_or_else(|| {
            AnchorError::Config("anchoring needs ORLY_AUDIT_KEY (the log's identity)".into())
        })?;
        let log = log_id(&key);
        let path = state::state_path(chain.dir());
        let pubkey = hex::encode(settings.keys.pubkey);
        let mut st = state::load(&path)
            .map_err(AnchorError::State)?
            .unwrap_or_else(|| AnchorState {
                log: log.clone(),
                anchor_pubkey: pubkey.clone(),
                ..AnchorState::default()
            });
        if st.log != log {
            return Err(AnchorError::State(format!(
                "{} is for log {} but the audit key makes this log {log}",
                path.display(),
                st.log
            )));
        }
        if st.anchor_pubkey != pubkey {
            // Pending anchors stay valid (signed by the old key); the new key's chain starts anew.
            tracing::warn!(
                old = %st.anchor_pubkey, new = %pubkey,
                "the anchoring key changed: the next anchor starts a new chain (no prev)"
            );
            st.anchor_pubkey = pubkey;
            st.last_signed = None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if !chain.on_checkpoint(move |cp| {
            let _ = tx.send(cp);
        }) {
            return Err(AnchorError::Config(
                "the audit chain is anchored already".into(),
            ));
        }
        Ok(Self {
            settings,
            log,
            path,
            state: st,
            rx,
            persisted: Instant::now(),
            dirty: false,
        })
    }

    /// Starts the task. `peer_ca`: extra CA trusted for wss:// anchor relays.
    pub fn start(self, chain: Arc<AuditChain>, peer_ca: Option<PathBuf>) -> AnchorTask {
        let (stop, stop_rx) = oneshot::channel();
        let (backlog_tx, backlog) = watch::channel(self.state.pending.len());
        let opts = anchor_peer_options(Some(self.settings.keys.clone()), peer_ca);
        let handle = tokio::spawn(self.run(chain, opts, stop_rx, backlog_tx));
        AnchorTask {
            stop,
            handle,
            backlog,
        }
    }

    async fn run(
        mut self,
        chain: Arc<AuditChain>,
        opts: PeerOptions,
        mut stop: oneshot::Receiver<()>,
        backlog: watch::Sender<usize>,
    ) {
        let mut pending = self.state.pending_events();
        let mut backoff = MIN_BACKOFF;
        let mut next_try = Instant::now();
        let mut tick = tokio::time::interval_at(
            Instant::now() + self.settings.interval,
            self.settings.interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_checkpoint = self.state.last_signed_seq;
        report(&backlog, pending.len());
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(cp) = self.rx.recv() => {
                    last_checkpoint = last_checkpoint.max(cp.seq);
                    let was_idle = pending.is_empty();
                    self.sign(cp, &mut pending);
                    if was_idle && backoff == MIN_BACKOFF {
                        next_try = Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(next_try), if !pending.is_empty() => {
                    let attempt = self.attempt(&mut pending, &opts);
                    let done = tokio::select! {
                        done = attempt => done,
                        _ = &mut stop => break,
                    };
                    if done {
                        backoff = MIN_BACKOFF;
                    } else {
                        next_try = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                _ = tick.tick() => {
                    if let Some(seq) = force_checkpoint(&chain, last_checkpoint).await {
                        last_checkpoint = last_checkpoint.max(seq);
                    }
                }
                _ = tokio::time::sleep_until(self.persisted + PERSIST_EVERY), if self.dirty => {
                    self.persist(&pending, true);
                }
            }
            report(&backlog, pending.len());
        }
        // The shutdown checkpoint was written before the stop: sign it, try once more.
        while let Ok(cp) = self.rx.try_recv() {
            self.sign(cp, &mut pending);
        }
        if !pending.is_empty()
            && tokio::time::timeout(SHUTDOWN_FLUSH, self.attempt(&mut pending, &opts))
                .await
                .is_err()
        {
            tracing::warn!("audit anchors: stopped while publishing");
        }
        report(&backlog, pending.len());
        self.persist(&pending, true);
        if !pending.is_empty() {
            tracing::warn!(
                backlog = pending.len(),
                "audit anchors not accepted by any relay at shutdown: kept in {}, sent at the \
                 next start",
                self.path.display()
            );
        }
    }

    /// Signs the anchor of `cp` (unless that checkpoint is anchored already) and records it.
    fn sign(&mut self, cp: CheckpointWritten, pending: &mut Vec<Event>) {
        if cp.seq <= self.state.last_signed_seq {
            return;
        }
        if pending.len() >= MAX_BACKLOG {
            metrics::count_anchor("skipped");
            tracing::warn!(
                seq = cp.seq,
                "audit anchor backlog full ({MAX_BACKLOG}): checkpoint not anchored (publish it \
                 later with `orly audit anchor`)"
            );
            return;
        }
        let payload = AnchorPayload {
            v: ANCHOR_VERSION,
            log: self.log.clone(),
            seq: cp.seq,
            hash: cp.hash,
            time: cp.time,
            prev: self.state.last_signed.clone(),
        };
        let event = build_anchor(&self.settings.keys, now(), &payload);
        self.state.last_signed = Some(event.id_hex());
        self.state.last_signed_seq = cp.seq;
        pending.push(event);
        self.persist(pending, false);
    }

    /// One round: every pending anchor to every relay. Returns whether none is left.
    async fn attempt(&mut self, pending: &mut Vec<Event>, opts: &PeerOptions) -> bool {
        let sends = self
            .settings
            .relays
            .iter()
            .map(|url| publish(url, pending.as_slice(), opts));
        let results = futures_util::future::join_all(sends).await;
        let mut accepted = vec![false; pending.len()];
        for (url, res) in self.settings.relays.iter().zip(results) {
            match res {
                Ok(per_event) => {
                    for (i, r) in per_event.into_iter().enumerate() {
                        match r {
                            Ok(()) => accepted[i] = true,
                            Err(why) => tracing::warn!(
                                relay = %crate::peer::redact_url(url),
                                "audit anchor refused: {}",
                                crate::peer::redact_urls_in(&why)
                            ),
                        }
                    }
                }
                Err(why) => tracing::warn!(
                    relay = %crate::peer::redact_url(url),
                    "audit anchor relay unavailable: {}",
                    crate::peer::redact_urls_in(&why)
                ),
            }
        }
        let mut kept = Vec::with_capacity(pending.len());
        for (event, ok) in pending.drain(..).zip(accepted) {
            if ok {
                metrics::count_anchor("published");
                if let Some(seq) = anchored_seq(&event) {
                    self.state.published = Some((seq, event.id_hex()));
                }
            } else {
                metrics::count_anchor("not_accepted");
                kept.push(event);
            }
        }
        *pending = kept;
        self.persist(pending, true);
        if !pending.is_empty() {
            tracing::warn!(
                backlog = pending.len(),
                "audit anchors not accepted by any relay yet; retrying with backoff"
            );
        }
        pending.is_empty()
    }

    /// Writes `ANCHORS.json` now (`force`) or, when it was written less than
    /// [`PERSIST_EVERY`] ago, marks it for the loop to write then.
    fn persist(&mut self, pending: &[Event], force: bool) {
        if !force && self.persisted.elapsed() < PERSIST_EVERY {
            self.dirty = true;
            return;
        }
        self.persisted = Instant::now();
        self.dirty = false;
        self.state.pending = pending
            .iter()
            .filter_map(|e| serde_json::from_str(&e.to_json()).ok())
            .collect();
        if let Err(e) = state::store(&self.path, &self.state) {
            tracing::error!("audit anchors: {e}");
        }
    }

    /// The state file this anchorer keeps.
    pub fn state_path(&self) -> &Path {
        &self.path
    }
}

impl AnchorTask {
    /// Anchors signed but accepted by no relay yet.
    pub fn backlog(&self) -> watch::Receiver<usize> {
        self.backlog.clone()
    }

    /// Stops the task: the anchors of checkpoints already written (the shutdown checkpoint's
    /// included) get one last attempt of at most a few seconds, then the state is saved.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.handle.await {
            tracing::error!("audit anchor task failed: {e}");
        }
    }
}

fn report(backlog: &watch::Sender<usize>, n: usize) {
    metrics::set_anchor_backlog(n as u64);
    backlog.send_if_modified(|v| {
        let changed = *v != n;
        *v = n;
        changed
    });
}

/// A checkpoint when records were written since `last_checkpoint`; its seq.
async fn force_checkpoint(chain: &Arc<AuditChain>, last_checkpoint: u64) -> Option<u64> {
    let chain = chain.clone();
    let res = tokio::task::spawn_blocking(move || {
        if chain.last_record()?.seq <= last_checkpoint {
            return Ok(None);
        }
        chain.checkpoint().map(|r| Some(r.seq))
    })
    .await;
    match res {
        Ok(Ok(seq)) => seq,
        Ok(Err(e)) => {
            tracing::error!("audit anchors: cannot write a checkpoint: {e}");
            None
        }
        Err(e) => {
            tracing::error!("audit anchors: checkpoint task failed: {e}");
            None
        }
    }
}

fn anchored_seq(event: &Event) -> Option<u64> {
    serde_json::from_str::<AnchorPayload>(&event.content)
        .ok()
        .map(|p| p.seq)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
