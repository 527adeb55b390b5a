//! Peers configured by `ORLY_SYNC_NEGENTROPY_PEERS` converge to the union of every good peer's
//! events (both ways), while a peer where nothing listens shows `error`, counts its failures and
//! backs off further at every failure.

use super::common::{self, import, notes, relay};
use super::harness::*;
use super::nrb;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Unix time now, in seconds with a fraction.
fn now_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A `ws://` URL where nothing listens: a port bound, then released.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("ws://127.0.0.1:{port}/")
}

fn set(events: &[common::Event]) -> BTreeSet<String> {
    events.iter().map(|e| e.id_hex()).collect()
}

fn store_set(dir: &Path) -> BTreeSet<String> {
    common::ids(dir).into_iter().collect()
}

/// What the test saw of the failing peer each time its failure count changed.
#[derive(Debug)]
struct Seen {
    failures: i32,
    status: String,
    last_error: String,
    next_attempt: i64,
    /// `next_attempt` minus the time it was seen: the wait still ahead.
    ahead: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_peers_converge_and_a_failing_peer_backs_off() {
    bounded(env_peers_converge()).await;
}

async fn env_peers_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, relay_dir) = (tmp.path().join("store"), tmp.path().join("relay-a"));
    let a = notes("bg1-a", 24, T0);
    let b = notes("bg1-b", 24, T0 + 100_000);
    let own = notes("bg1-own", 6, T0 + 200_000);
    tokio::task::block_in_place(|| {
        import(&relay_dir, &a);
        import(&store, &own);
    });
    let all: BTreeSet<String> = set(&a)
        .into_iter()
        .chain(set(&b))
        .chain(set(&own))
        .collect();
    let rl = tokio::task::block_in_place(|| relay(&relay_dir, &[]));
    let nrb = nrb::local_relay(&b, nrb::no_rate_limit()).await;
    let (url_a, url_b, dead) = (relay_url(&rl), format!("{}/", nrb.url), dead_url());
    let svc = plain_service(
        &tmp.path().join("store"),
        &tmp.path().join("state"),
        &[&url_a, &url_b, &dead],
    );
    let mut c = plain_client(&svc).await;
    assert_eq!(
        peers(&mut c).await,
        BTreeSet::from([url_a.clone(), url_b.clone(), dead.clone()]),
        "GetPeers lists the operator's peers"
    );

    // Every event reaches every good side: each good peer moves its own events down and the
    // others' up, so its syncs move |all| events in all.
    let total = all.len() as i64;
    let mut seen: Vec<Seen> = Vec::new();
    let start = Instant::now();
    let last = loop {
        let st = status(&mut c).await;
        let of = |u: &str| st.peer_states.iter().find(|s| s.peer_url == u).cloned();
        let d = of(&dead).expect("the failing peer is listed");
        if seen.last().map(|s| s.failures) != Some(d.consecutive_failures)
            && d.consecutive_failures > 0
        {
            seen.push(Seen {
                failures: d.consecutive_failures,
                status: d.status.clone(),
                last_error: d.last_error.clone(),
                next_attempt: d.next_attempt,
                ahead: d.next_attempt as f64 - now_f(),
            });
        }
        let good = [&url_a, &url_b].map(|u| of(u).expect("good peer listed"));
        let converged = good
            .iter()
            .all(|s| s.status == "idle" && s.last_sync > 0 && s.events_synced == total);
        if converged && d.consecutive_failures >= 4 {
            break (st, good);
        }
        assert!(
            start.elapsed() < WAIT,
            "not converged, or the failing peer not failed 4 times, after {WAIT:?}: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (st, good) = last;
    assert!(st.active, "the loop runs from start-up with peers: {st:?}");
    assert_eq!(st.peer_count, 3);
    assert!(st.last_sync > 0);
    for g in &good {
        assert_eq!(g.owner, "", "an operator peer has no owner: {g:?}");
        assert_eq!(g.direction, "both", "{g:?}");
        assert_eq!(g.consecutive_failures, 0, "{g:?}");
        assert!(g.last_error.is_empty(), "{g:?}");
    }

    // The failing peer: error, failures counted one by one, the wait ahead growing.
    eprintln!("the failing peer, at each new failure: {seen:#?}");
    let first = seen.first().expect("failures seen");
    let latest = seen.last().unwrap();
    assert!(
        seen.windows(2).all(|w| w[1].failures > w[0].failures) && seen.len() >= 2,
        "failures grow: {seen:#?}"
    );
    assert!(latest.failures >= 4, "{seen:#?}");
    assert_eq!(latest.status, "error", "{seen:#?}");
    assert!(latest.last_error.contains("connect"), "{seen:#?}");
    assert!(
        latest.next_attempt as f64 > now_f() - 0.5 && latest.ahead > 0.0,
        "next_attempt is in the future: {seen:#?}"
    );
    // With 1 s as base, the wait after failure n is in [2^(n-1)/2, 2^(n-1)] s: at most 1 s after
    // the first, at least 4 s after the fourth (less a second of rounding to whole seconds).
    assert!(
        latest.ahead >= 2.5 && latest.ahead > first.ahead,
        "the backoff grows: {seen:#?}"
    );
    for s in &seen {
        if s.status == "error" {
            assert!(!s.last_error.is_empty(), "{s:?}");
        }
    }

    // Both stores and both relays hold the union.
    tokio::task::block_in_place(|| {
        svc.terminate();
        rl.terminate();
    });
    assert_eq!(store_set(&store), all, "the service's store");
    assert_eq!(
        store_set(&relay_dir),
        all,
        "the orly-relay gained the others' events"
    );
    assert_eq!(
        nrb::db_ids(&nrb.db).await,
        all,
        "the nostr-relay-builder relay"
    );
}
