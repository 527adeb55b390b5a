//! orly sync (direct mode) against orly-relay, real processes on loopback.

mod common;
use common::*;

#[test]
fn both_directions_converge_and_second_run_moves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let shared = notes("shared", 40, 1_700_000_000);
    let only_local = notes("local", 25, 1_700_001_000);
    let only_remote = notes("remote", 30, 1_700_002_000);
    import(&local, &[shared.clone(), only_local.clone()].concat());
    import(&remote, &[shared.clone(), only_remote.clone()].concat());
    let relay = relay(&remote, &[]);
    let url = format!("ws://{}", relay.addr);

    let (code, out, err) = orly(&[
        "sync",
        &url,
        "--dir",
        "both",
        "--json",
        "--data-dir",
        local.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "sync failed: {err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["complete"], true);
    assert_eq!(last["fetched"], 30);
    assert_eq!(last["sent"], 25);
    assert!(
        out.lines().count() >= 2,
        "progress lines before the final one"
    );

    let want = union(&[shared.clone(), only_local].concat(), &only_remote);
    assert_eq!(ids(&local), want);
    drop(relay);
    assert_eq!(ids(&remote), want);

    let relay = common::relay(&remote, &[]);
    let url = format!("ws://{}", relay.addr);
    let (code, out, _) = orly(&[
        "sync",
        &url,
        "--dir",
        "both",
        "--json",
        "--data-dir",
        local.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["have"].as_u64(), last["need"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        (last["fetched"].as_u64(), last["sent"].as_u64()),
        (Some(0), Some(0))
    );
}

/// The per-sync event cap (an admin's `max_events_per_sync` reaches the engine as
/// `max_events`) is exact in both directions: exactly that many events move, then the sync
/// stops, reported as the service's policy (not as the relay's refusal), and what moved stays
/// stored.
#[test]
fn the_event_cap_moves_exactly_that_many_then_refuses() {
    use orly::store::{FjallStore, Store};
    use orly::sync::{Direction, PeerUrl, SyncError, SyncJob, SyncRequest};
    let tmp = tempfile::tempdir().unwrap();
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let only_remote = notes("cap-remote", 300, 1_700_000_000);
    let only_local = notes("cap-local", 450, 1_700_100_000);
    import(&remote, &only_remote);
    let relay = relay(&remote, &[]);
    let url = PeerUrl::parse(&format!("ws://{}", relay.addr)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (direction, cap) in [(Direction::Down, 120u64), (Direction::Up, 150)] {
        let dir = local.join(format!("{direction:?}"));
        let store = FjallStore::open(&dir).unwrap();
        if direction == Direction::Up {
            store.save_blocking(&only_local).unwrap();
        }
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
        let req =
            SyncRequest::new(url.clone(), Default::default(), direction).with_max_events(Some(cap));
        let res = rt.block_on(SyncJob::new(store.clone(), req).run(|_| {}));
        match res {
            Err(e @ SyncError::Capped(n)) => {
                assert_eq!(n, cap);
                assert_eq!(
                    e.to_string(),
                    format!("stopped by the service's policy: at most {cap} events per sync")
                );
                assert_eq!(e.exit_code(), orly::sync::exit::REFUSED);
            }
            other => panic!("{direction:?}: expected the cap's refusal, got {other:?}"),
        }
        let local_count = rt.block_on(store.count(Default::default())).unwrap();
        match direction {
            Direction::Down => assert_eq!(local_count, cap, "fetched exactly the cap"),
            _ => assert_eq!(local_count, only_local.len() as u64),
        }
    }
    drop(relay);
    // The relay's store got exactly the cap of uploads.
    assert_eq!(ids(&remote).len(), only_remote.len() + 150);
}
