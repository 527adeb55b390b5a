//! How the background loop syncs a managed peer: exactly as `SyncWithPeer` does. The peer's
//! sync is admitted by the same gate (its owner's current policy on the peer URL, direction and
//! filter; the concurrency caps; the decision recorded), runs as a `SyncJob` in the same
//! registry (so `ListSyncs`, `GetSync` and `CancelSync` see it) and ends with the same finished
//! record. Only the audit path differs: the loop's, not a call's.

use super::gate::{CallInfo, shown};
use super::peers::{Peer, SyncFn};
use super::sync::SyncService;
use crate::event::Filter;
use crate::sync::{PeerUrl, SyncRequest};
use std::sync::Arc;
use tokio_stream::StreamExt;

/// The [`SyncFn`] the peer loop runs: each peer with its own filter, or `default_filter`
/// (`ORLY_SYNC_NEGENTROPY_FILTER`) when it has none.
pub fn peer_sync_fn(syncs: SyncService, default_filter: Filter) -> SyncFn {
    let default_filter = Arc::new(default_filter);
    Arc::new(move |peer: Peer| {
        let syncs = syncs.clone();
        let default_filter = default_filter.clone();
        Box::pin(async move { sync_peer(&syncs, peer, &default_filter).await })
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
