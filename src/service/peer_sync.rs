//! How the background loop syncs a managed peer: exactly as `SyncWithPeer` does. The peer's
//! sync is admitted by the same gate (its owner's current policy on the peer URL, direction and
//! filter; the concurrency caps; the decision recorded), runs as a `SyncJob` in the same
//! registry (so `ListSyncs`, `GetSync` and `CancelSync` see it) and ends with the same finished
//! record. Only the audit path differs: the loop's, not a call's.
//!
//! Replicas of the service sharing one store (PostgreSQL) would each sync every managed peer;
//! a lease in the store ([`Store::lease`]) lets one run a peer's background syncs at a time.
//! The holder keeps it from one run to the next (it is renewed at each run, and every third of
//! its lifetime while a sync runs) and the others skip the peer; when the holder stops or
//! dies, its lease expires and another replica takes the peer over. A holder that fails to
//! renew stops its sync rather than overlap another replica's.

use super::gate::{CallInfo, shown};
use super::peers::{Peer, PeerRun, SyncFn};
use super::sync::SyncService;
use crate::event::Filter;
use crate::store::Store;
use crate::sync::{PeerUrl, SyncRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

/// How a replica holds the peers it syncs.
#[derive(Debug, Clone)]
pub struct PeerLease {
    /// This process, as the store's lease table names it.
    pub holder: String,
    /// How long a lease lasts unless renewed: longer than the interval between a peer's syncs,
    /// so the holder keeps its peers from one run to the next.
    pub ttl: Duration,
}

impl PeerLease {
    /// A lease for this process, lasting twice `interval` plus ten seconds.
    pub fn for_interval(interval: Duration) -> Self {
        // Unique per process start (a random part: pids repeat across machines and restarts).
        let holder = format!(
            "pid {} {}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 6]>())
        );
        Self {
            holder,
            ttl: interval
                .saturating_mul(2)
                .saturating_add(Duration::from_secs(10)),
        }
    }
}

/// The [`SyncFn`] the peer loop runs: each peer with its own filter, or `default_filter`
/// (`ORLY_SYNC_NEGENTROPY_FILTER`) when it has none, while this replica holds its lease in
/// `store`.
pub fn peer_sync_fn(
    syncs: SyncService,
    store: Arc<dyn Store>,
    default_filter: Filter,
    lease: PeerLease,
) -> SyncFn {
    let shared = Arc::new((store, default_filter, lease));
    Arc::new(move |peer: Peer| {
        let syncs = syncs.clone();
        let shared = shared.clone();
        Box::pin(async move {
            let (store, default_filter, lease) = &*shared;
            let name = format!("peer:{}", peer.url);
            let take = || store.lease(&name, &lease.holder, lease.ttl);
            match take().await {
                Ok(true) => {}
                Ok(false) => return Ok(PeerRun::HeldElsewhere),
                Err(e) => return Err(format!("the peer's lease could not be taken: {e}")),
            }
            let renew_every = (lease.ttl / 3).max(Duration::from_secs(1));
            let renew = async {
                let mut tick = tokio::time::interval(renew_every);
                tick.tick().await; // the first tick is now: just taken
                loop {
                    tick.tick().await;
                    if !take().await.unwrap_or(false) {
                        return;
                    }
                }
            };
            tokio::select! {
                r = sync_peer(&syncs, peer, default_filter) => r.map(PeerRun::Moved),
                () = renew => Err("stopped: this replica lost the peer's lease (renewal failed); \
                                   another replica may take the peer over".into()),
            }
        })
    })
}

/// One background sync; `Ok` with the events moved, `Err` with the reason as admins may see it.
async fn sync_peer(
    syncs: &SyncService,
    peer: Peer,
    default_filter: &Filter,
) -> Result<u64, String> {
    let filter = match &peer.filter {
        Some(json) => Filter::from_json(json).map_err(|e| format!("the peer's filter: {e}"))?,
        None => default_filter.clone(),
    };
    let url = PeerUrl::parse(&peer.url).map_err(|e| shown(&format!("peer url: {e}"), &peer.url))?;
    let req = SyncRequest::new(url, filter, peer.direction())
        .with_peer_options(syncs.defaults().peer.clone());
    syncs
        .can_start()
        .await
        .map_err(|s| s.message().to_string())?;
    let call = CallInfo {
        admin: peer.owner.clone(),
        peer_loop: true,
        ..Default::default()
    };
    let admission = syncs
        .gate()
        .admit(&call, &req)
        .await
        .map_err(|s| s.message().to_string())?;
    let mut progress = syncs
        .launch(admission, req)
        .await
        .map_err(|s| s.message().to_string())?;
    let mut last = None;
    while let Some(item) = progress.next().await {
        last = Some(item.map_err(|s| s.message().to_string())?);
    }
    let last = last.ok_or_else(|| "the sync ended without a result".to_string())?;
    if !last.error.is_empty() {
        return Err(last.error);
    }
    let moved = last.fetched_count.saturating_add(last.sent_count);
    Ok(u64::try_from(moved).unwrap_or(0))
}
