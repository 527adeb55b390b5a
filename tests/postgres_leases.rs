//! Replicas of the sync service over one PostgreSQL database run each managed peer's background
//! sync on one replica at a time, through a lease in the database: exclusive until it expires,
//! renewed by its holder, taken over by another replica when the holder is gone. Checked on
//! the store (two connection pools racing) and with two real `orly-sync-negentropy` processes
//! syncing the same operator peer, a real `orly-relay`.

mod common;
#[path = "common/postgres.rs"]
mod pg;

use common::{block, channel, import, notes, relay, spawn_service};
use orly::proto::orlysync::negentropy::v1 as npb;
use orly::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use orly::store::Store;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_exclusive_until_it_expires_and_racers_get_one_winner() {
    let url = pg::cluster().database();
    let (a, b) = (pg::open_store(&url).await, pg::open_store(&url).await);
    let ttl = Duration::from_secs(2);
    assert!(a.lease("peer:x", "a", ttl).await.unwrap());
    assert!(!b.lease("peer:x", "b", ttl).await.unwrap(), "held by a");
    assert!(
        a.lease("peer:x", "a", ttl).await.unwrap(),
        "its holder renews it"
    );
    assert!(
        b.lease("peer:y", "b", ttl).await.unwrap(),
        "another name is free"
    );
    // Past its lifetime without a renewal, another holder takes it; the old one has lost it.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(b.lease("peer:x", "b", ttl).await.unwrap());
    assert!(!a.lease("peer:x", "a", ttl).await.unwrap());

    // Eight holders racing for a free lease, each on its own pool: exactly one wins.
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(pg::open_store(&url).await);
    }
    let racers = stores.iter().enumerate().map(|(i, s)| {
        let holder = format!("r{i}");
        async move { s.lease("peer:race", &holder, ttl).await.unwrap() }
    });
    let won = futures_util::future::join_all(racers).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}

type Client = NegentropyServiceClient<tonic::transport::Channel>;

async fn state(c: &mut Client, url: &str) -> npb::PeerSyncState {
    let r = c
        .get_peer_sync_state(npb::PeerSyncStateRequest {
            peer_url: url.into(),
        })
        .await
        .expect("GetPeerSyncState")
        .into_inner();
    assert!(r.found, "{url} is listed");
    r.state.expect("a listed peer has a state")
}

/// Two replicas, one operator peer: one replica syncs it, again and again, while the other
/// skips it (idle, never synced, no failure); when the holder stops, the other takes the peer
/// over once the lease expires (twice the interval plus ten seconds).
#[test]
fn two_replicas_sync_a_peer_one_at_a_time_and_the_second_takes_over() {
    let url = pg::cluster().database();
    let peer_dir = tempfile::tempdir().unwrap();
    import(peer_dir.path(), &notes("lease", 30, 1_700_000_000));
    let peer = relay(peer_dir.path(), &[]);
    let peer_url = format!("ws://{}/", peer.addr);
    let env = [
        ("ORLY_DB_TYPE", "postgres"),
        ("ORLY_POSTGRES_URL", url.as_str()),
        ("ORLY_SYNC_NEGENTROPY_PEERS", peer_url.as_str()),
        ("ORLY_SYNC_NEGENTROPY_INTERVAL", "1s"),
    ];
    let args = ["--listen", "127.0.0.1:0"];
    let first = spawn_service("orly-sync-negentropy", &args, &env);
    let second = spawn_service("orly-sync-negentropy", &args, &env);
    let mut clients: Vec<Client> = [&first, &second]
        .iter()
        .map(|p| NegentropyServiceClient::new(block(channel(&p.addr))))
        .collect();

    // Wait for the first background sync, on whichever replica took the lease.
    let start = Instant::now();
    let holder = loop {
        let synced: Vec<bool> = clients
            .iter_mut()
            .map(|c| block(state(c, &peer_url)).last_sync > 0)
            .collect();
        if let Some(i) = synced.iter().position(|s| *s) {
            assert_eq!(synced.iter().filter(|s| **s).count(), 1, "{synced:?}");
            break i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no replica synced"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let other = 1 - holder;
    // For several intervals: the holder syncs again, the other never does and never fails.
    let first_sync = block(state(&mut clients[holder], &peer_url)).last_sync;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let s = block(state(&mut clients[other], &peer_url));
        assert_eq!(
            s.last_sync, 0,
            "the replica without the lease synced: {s:?}"
        );
        assert_eq!(s.consecutive_failures, 0, "{s:?}");
        assert_ne!(s.status, "error", "{s:?}");
        std::thread::sleep(Duration::from_millis(150));
    }
    let again = block(state(&mut clients[holder], &peer_url));
    assert!(
        again.last_sync > first_sync,
        "the holder keeps syncing: {again:?}"
    );
    let count = block(async {
        pg::open_store(&url)
            .await
            .count(orly::event::Filter::default())
            .await
            .unwrap()
    });
    assert_eq!(count, 30, "the peer's events are in the shared database");

    // The holder stops; the other takes the peer over after the lease expires (12 s here).
    let procs = [first, second];
    let [first, second] = procs;
    let (gone, left) = if holder == 0 {
        (first, second)
    } else {
        (second, first)
    };
    drop(gone);
    let stopped = Instant::now();
    loop {
        let s = block(state(&mut clients[other], &peer_url));
        if s.last_sync > 0 {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "the second replica never took the peer over: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(left);
}
