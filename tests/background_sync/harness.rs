//! What the background-sync tests share: bounds on a test and on a wait, the plain (loopback)
//! service with its operator peers and state directory, the client calls the tests make of it,
//! and polling until a condition holds.

use super::common::{self, Proc, spawn_service};

use orly::proto::orlysync::common::v1 as cpb;
use orly::proto::orlysync::negentropy::v1 as npb;
use orly::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Bound on a whole test.
pub(super) const TEST_LIMIT: Duration = Duration::from_secs(90);
/// Bound on any one condition a test waits for.
pub(super) const WAIT: Duration = Duration::from_secs(30);
pub(super) const T0: u64 = 1_700_000_000;

pub(super) type Client = NegentropyServiceClient<Channel>;

/// Runs `f` (a test body) bounded by [`TEST_LIMIT`].
pub(super) async fn bounded(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test exceeded its time limit");
}

/// The peer URL of an `orly-relay` as the service lists it (normalized: with its path).
pub(super) fn relay_url(p: &Proc) -> String {
    format!("ws://{}/", p.addr)
}

/// The plain (loopback, no TLS) service over the fjall store `store`, its managed peers kept in
/// `state`, with `peers` as the operator's list and an interval of 1 s.
pub(super) fn plain_service(store: &Path, state: &Path, peers: &[&str]) -> Proc {
    let peers = peers.join(",");
    tokio::task::block_in_place(|| {
        spawn_service(
            "orly-sync-negentropy",
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                store.to_str().unwrap(),
            ],
            &[
                ("ORLY_DB_TYPE", "fjall"),
                ("ORLY_SYNC_NEGENTROPY_PEERS", &peers),
                ("ORLY_SYNC_NEGENTROPY_INTERVAL", "1s"),
                ("ORLY_SYNC_NEGENTROPY_STATE_DIR", state.to_str().unwrap()),
            ],
        )
    })
}

pub(super) async fn plain_client(p: &Proc) -> Client {
    NegentropyServiceClient::new(common::channel(&p.addr).await)
}

pub(super) async fn status(c: &mut Client) -> npb::SyncStatusResponse {
    c.get_sync_status(cpb::Empty {})
        .await
        .expect("GetSyncStatus")
        .into_inner()
}

pub(super) async fn peers(c: &mut Client) -> BTreeSet<String> {
    let p = c.get_peers(cpb::Empty {}).await.expect("GetPeers");
    p.into_inner().peers.into_iter().collect()
}

pub(super) async fn peer_state(c: &mut Client, url: &str) -> Option<npb::PeerSyncState> {
    let r = c
        .get_peer_sync_state(npb::PeerSyncStateRequest {
            peer_url: url.into(),
        })
        .await
        .expect("GetPeerSyncState")
        .into_inner();
    assert_eq!(
        r.found,
        r.state.is_some(),
        "found and state disagree: {r:?}"
    );
    r.state
}

/// Polls `f` every 100 ms until it returns `Ok`; panics with `what` and the last `Err` (what was
/// seen) after [`WAIT`].
pub(super) async fn wait_until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > WAIT => {
                panic!("timed out after {WAIT:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
