//! Managed peers with background sync — what ORLY's service does with `Start`, `Stop`,
//! `AddPeer`, `RemovePeer`, `TriggerSync`, `GetPeers` and `GetPeerSyncState`: a peer list, and a
//! loop that syncs each peer every interval.
//!
//! Beyond ORLY: peers sync concurrently up to a cap; a failing peer backs off exponentially
//! with jitter and its state says when it will retry; each peer may have its own filter and
//! direction; the list and states survive a restart ([`PeerBook`] in a state directory). The
//! loop does not know how a sync runs: it is handed a [`SyncFn`] (the service gives one that
//! runs the same `SyncJob` as `SyncWithPeer`, with its progress, limits, policy check and
//! audit records). The loop owns its syncs (a `JoinSet`); at shutdown they are stopped and
//! their peers recorded as interrupted.

mod backoff;
mod book;

pub use backoff::Backoff;
pub use book::{BookError, Peer, PeerBook, PeerRun, PeerState, STATE_FILE, status};

use super::unix_now;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Runs one sync with a peer; `Ok` says what it did (the events moved, or that another
/// replica holds the peer), `Err` the reason it failed (already redacted and bounded for
/// showing to admins).
pub type SyncFn = Arc<dyn Fn(Peer) -> BoxFuture<'static, Result<PeerRun, String>> + Send + Sync>;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct PeerLoopConfig {
    /// Between a peer's successful syncs (`ORLY_SYNC_NEGENTROPY_INTERVAL`, default 60 s).
    pub interval: Duration,
    /// Peers synced at once.
    pub max_concurrent: usize,
    /// Waits after failures.
    pub backoff: Backoff,
}

impl Default for PeerLoopConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            max_concurrent: 4,
            backoff: Backoff::default(),
        }
    }
}

#[derive(Default)]
struct Control {
    running: bool,
    /// Peers asked for by `TriggerSync`, with the trigger's own filter if it gave one; they
    /// run even while the loop is stopped.
    triggered: HashMap<String, Option<String>>,
}

/// The peer list, its states and the background loop's controls.
pub struct PeerManager {
    book: Mutex<PeerBook>,
    control: Mutex<Control>,
    wake: Notify,
    cfg: PeerLoopConfig,
    sync: SyncFn,
}

impl PeerManager {
    /// A manager over `book`; the loop starts stopped unless `start` is true.
    pub fn new(book: PeerBook, cfg: PeerLoopConfig, sync: SyncFn, start: bool) -> Arc<Self> {
        Arc::new(Self {
            book: Mutex::new(book),
            control: Mutex::new(Control {
                running: start,
                triggered: HashMap::new(),
            }),
            wake: Notify::new(),
            cfg,
            sync,
        })
    }

    fn book(&self) -> MutexGuard<'_, PeerBook> {
        // Every change is one map operation plus a save: a panic cannot leave it half done.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Start`: runs the background loop (idempotent).
    pub fn start(&self) {
        self.control().running = true;
        self.wake.notify_one();
    }

    /// `Stop`: no new background syncs (those running finish).
    pub fn stop(&self) {
        self.control().running = false;
        self.wake.notify_one();
    }

    /// True while the background loop runs.
    pub fn is_running(&self) -> bool {
        self.control().running
    }

    /// `AddPeer`; false when listed already.
    pub fn add(&self, peer: Peer) -> Result<bool, BookError> {
        let added = self.book().add(peer)?;
        self.wake.notify_one();
        Ok(added)
    }

    /// `RemovePeer`; false when not listed. A sync running with it finishes.
    pub fn remove(&self, url: &str) -> Result<bool, BookError> {
        self.control().triggered.remove(url);
        self.book().remove(url)
    }

    /// The listed URL a caller means by `given`: the URL as listed, the same URL in another
    /// spelling (normalized as the policy does), or the redacted form `GetPeers` shows when
    /// exactly one listed peer has it.
    pub fn find(&self, given: &str) -> Option<String> {
        let urls = self.urls();
        if urls.iter().any(|u| u == given) {
            return Some(given.to_string());
        }
        if let Ok(n) = crate::policy::normalize_peer_url(given)
            && urls.iter().any(|u| u == n.as_str())
        {
            return Some(n.as_str().to_string());
        }
        let mut shown = urls
            .iter()
            .filter(|u| crate::policy::redact_url(u) == given);
        match (shown.next(), shown.next()) {
            (Some(u), None) => Some(u.clone()),
            _ => None,
        }
    }

    /// `GetPeers`: the listed URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        self.book().urls()
    }

    /// `GetPeerSyncState`: a peer's state, if listed.
    pub fn state(&self, url: &str) -> Option<(Peer, PeerState)> {
        self.book().get(url).cloned()
    }

    /// Every peer's state, in URL order (`GetSyncStatus`).
    pub fn states(&self) -> Vec<(Peer, PeerState)> {
        self.book().all().cloned().collect()
    }

    /// The last successful sync with any peer (Unix seconds; 0: none).
    pub fn last_sync(&self) -> i64 {
        self.book()
            .all()
            .map(|(_, st)| st.last_sync)
            .max()
            .unwrap_or(0)
    }

    /// `TriggerSync`: syncs `url` (or every peer when `None`) now, with `filter` instead of its
    /// own when given, whether the loop runs or not. Returns the peers triggered (an unknown
    /// URL gives none).
    pub fn trigger(&self, url: Option<&str>, filter: Option<String>) -> usize {
        let urls: Vec<String> = {
            let mut book = self.book();
            let urls = match url {
                Some(u) => book.get(u).map(|_| vec![u.to_string()]).unwrap_or_default(),
                None => book.urls(),
            };
            for u in &urls {
                book.make_due(u);
            }
            urls
        };
        let mut c = self.control();
        for u in &urls {
            c.triggered.insert(u.clone(), filter.clone());
        }
        drop(c);
        self.wake.notify_one();
        urls.len()
    }

    /// Peers to start now, marked syncing, with the filter each runs with.
    fn pick(&self, free: usize) -> Vec<Peer> {
        if free == 0 {
            return Vec::new();
        }
        let mut c = self.control();
        let mut book = self.book();
        let now = unix_now();
        let mut out = Vec::new();
        for url in book.due(now) {
            if out.len() == free {
                break;
            }
            let trigger = c.triggered.remove(&url);
            if !c.running && trigger.is_none() {
                continue;
            }
            let Some((peer, _)) = book.get(&url).cloned() else {
                continue;
            };
            if book.start(&url) {
                let mut peer = peer;
                if let Some(Some(f)) = trigger {
                    peer.filter = Some(f);
                }
                out.push(peer);
            }
        }
        out
    }

    fn finish(&self, url: &str, outcome: Result<PeerRun, String>) {
        let interval = i64::try_from(self.cfg.interval.as_secs()).unwrap_or(i64::MAX);
        // A trigger that came while this sync ran is still owed a run: due now, not after the
        // interval the finished sync schedules (the loop may be stopped, with no timer).
        // (Locks in the order `pick` takes them: control, then book.)
        let owed = self.control().triggered.contains_key(url);
        let mut book = self.book();
        if let Err(e) = book.finish(url, unix_now(), outcome, interval, &self.cfg.backoff) {
            tracing::error!("peer state not saved: {e}");
        }
        if owed {
            book.make_due(url);
            drop(book);
            self.wake.notify_one();
        }
    }

    /// The loop: starts due peers up to the cap, records what their syncs did, sleeps until
    /// the next is due or something changes, until `shutdown` completes. Then stops the syncs
    /// still running and records them as interrupted.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut syncs: JoinSet<(String, Result<PeerRun, String>)> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
        tokio::pin!(shutdown);
        loop {
            let free = self.cfg.max_concurrent.max(1).saturating_sub(syncs.len());
            for peer in self.pick(free) {
                let url = peer.url.clone();
                let sync = self.sync.clone();
                let task = syncs.spawn({
                    let url = url.clone();
                    async move { (url, sync(peer).await) }
                });
                running.insert(task.id(), url);
            }
            // Sleep until the soonest peer is due (while the loop runs), or a change.
            let wait = if self.is_running() {
                self.book()
                    .next_due()
                    .map(|at| Duration::from_secs(u64::try_from(at - unix_now()).unwrap_or(0)))
            } else {
                None
            };
            let sleep = async {
                match wait {
                    // At least a short pause, so a peer due now but over the cap waits for a
                    // finished sync rather than spinning.
                    Some(d) => tokio::time::sleep(d.max(Duration::from_millis(200))).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = syncs.join_next_with_id(), if !syncs.is_empty() => match done {
                    Ok((id, (url, outcome))) => {
                        running.remove(&id);
                        self.finish(&url, outcome);
                    }
                    Err(e) => {
                        tracing::error!("a peer sync task failed: {e}");
                        if let Some(url) = running.remove(&e.id()) {
                            self.finish(&url, Err("internal error: the sync task failed".into()));
                        }
                    }
                },
                () = self.wake.notified() => {}
                () = sleep => {}
            }
        }
        syncs.shutdown().await;
        for url in running.into_values() {
            self.finish(
                &url,
                Err("interrupted: the service stopped during this sync".into()),
            );
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
