//! The peer book on disk and the background loop's scheduling, with a sync function that
//! stands in for the sync job (the loop's contract: it is handed a peer, it returns what moved
//! or why it failed).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn peers(urls: &[&str]) -> Vec<Peer> {
    urls.iter().map(|u| Peer::new(*u)).collect()
}

#[test]
fn the_list_and_states_survive_a_restart_and_the_configured_list_stays_the_operators() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = PeerBook::open(dir.path(), peers(&["wss://a/", "wss://b/"])).unwrap();
    assert_eq!(b.urls(), ["wss://a/", "wss://b/"]);
    assert!(
        b.add(Peer {
            url: "wss://c/".into(),
            filter: Some(r#"{"kinds":[1]}"#.into()),
            direction: Some("down".into()),
            owner: Some("alice".into()),
        })
        .unwrap()
    );
    assert!(!b.add(Peer::new("wss://c/")).unwrap(), "listed already");
    assert!(b.remove("wss://a/").unwrap());
    assert!(!b.remove("wss://a/").unwrap());
    assert!(b.start("wss://b/"));
    b.finish(
        "wss://b/",
        1000,
        Ok(PeerRun::Moved(7)),
        60,
        &Backoff::default(),
    )
    .unwrap();
    assert!(b.start("wss://c/"));
    drop(b);

    // Reopened with another configured list: the operator's peers follow it (b is gone, z
    // comes), the peer alice added stays with its state.
    let b = PeerBook::open(dir.path(), peers(&["wss://b/", "wss://z/"])).unwrap();
    assert_eq!(b.urls(), ["wss://b/", "wss://c/", "wss://z/"]);

    let (_, st) = b.get("wss://b/").unwrap();
    assert_eq!(
        (st.last_sync, st.events_synced, st.status.as_str()),
        (1000, 7, "idle")
    );
    assert_eq!(st.next_attempt, 1060);
    let (p, st) = b.get("wss://c/").unwrap();
    assert_eq!(p.direction(), crate::sync::Direction::Down);
    assert_eq!(p.filter.as_deref(), Some(r#"{"kinds":[1]}"#));
    // It was syncing when the process went away.
    assert_eq!(st.status, "error");
    assert_eq!(st.consecutive_failures, 1);
    assert!(
        st.last_error.starts_with("interrupted"),
        "{}",
        st.last_error
    );

    drop(b);
    let b = PeerBook::open(dir.path(), peers(&["wss://z/"])).unwrap();
    assert_eq!(b.urls(), ["wss://c/", "wss://z/"]);
    drop(b);

    // A state file this version does not write is refused, naming it.
    std::fs::write(dir.path().join(STATE_FILE), br#"{"version":9,"peers":[]}"#).unwrap();
    let err = PeerBook::open(dir.path(), []).unwrap_err().to_string();
    assert!(
        err.contains("peers.json") && err.contains("version 9"),
        "{err}"
    );
}

#[test]
fn failures_back_off_and_a_success_resets_them() {
    let mut b = PeerBook::in_memory(peers(&["wss://a/"]));
    let backoff = Backoff {
        base_secs: 10,
        max_secs: 40,
    };
    let mut waits = Vec::new();
    for _ in 0..4 {
        assert!(b.start("wss://a/"));
        assert!(!b.start("wss://a/"), "one sync per peer at a time");
        b.finish("wss://a/", 0, Err("refused".into()), 60, &backoff)
            .unwrap();
        let (_, st) = b.get("wss://a/").unwrap();
        assert_eq!(st.status, "error");
        assert_eq!(st.last_error, "refused");
        waits.push(st.next_attempt);
    }
    assert_eq!(b.get("wss://a/").unwrap().1.consecutive_failures, 4);
    for (w, ceiling) in waits.iter().zip([10, 20, 40, 40]) {
        assert!(*w >= ceiling / 2 && *w <= ceiling, "{waits:?}");
    }
    assert!(b.due(4).is_empty() && b.due(40) == ["wss://a/"]);
    b.start("wss://a/");
    b.finish("wss://a/", 100, Ok(PeerRun::Moved(3)), 60, &backoff)
        .unwrap();
    let (_, st) = b.get("wss://a/").unwrap();
    assert_eq!((st.consecutive_failures, st.last_error.as_str()), (0, ""));
    assert_eq!((st.status.as_str(), st.next_attempt), ("idle", 160));
}

/// A stand-in sync: "bad" peers fail, others move 5 events after `pause`; counts calls and
/// the most syncs at once.
type StandIn = (
    SyncFn,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<Peer>>>,
);

fn stand_in(pause: Duration) -> StandIn {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let f: SyncFn = {
        let (now, most, seen) = (now.clone(), most.clone(), seen.clone());
        Arc::new(move |peer: Peer| {
            let (now, most, seen) = (now.clone(), most.clone(), seen.clone());
            Box::pin(async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                seen.lock().unwrap().push(peer.clone());
                tokio::time::sleep(pause).await;
                now.fetch_sub(1, Ordering::SeqCst);
                if peer.url.contains("bad") {
                    Err("transport: connection refused".into())
                } else {
                    Ok(PeerRun::Moved(5))
                }
            })
        })
    };
    (f, now, most, seen)
}

#[tokio::test]
async fn the_loop_syncs_every_peer_up_to_the_cap_and_backs_off_a_failing_one() {
    let (f, _, most, seen) = stand_in(Duration::from_millis(300));
    let cfg = PeerLoopConfig {
        interval: Duration::from_secs(1),
        max_concurrent: 2,
        backoff: Backoff {
            base_secs: 30,
            max_secs: 60,
        },
    };
    let urls = [
        "wss://bad/",
        "wss://g1/",
        "wss://g2/",
        "wss://g3/",
        "wss://g4/",
    ];
    let m = PeerManager::new(PeerBook::in_memory(peers(&urls)), cfg, f, true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(m.clone().run(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "never more than the cap at once"
    );
    let calls = |u: &str| seen.lock().unwrap().iter().filter(|p| p.url == u).count();
    assert_eq!(
        calls("wss://bad/"),
        1,
        "the failing peer waits out its backoff"
    );
    for u in &urls[1..] {
        assert!(
            calls(u) >= 2,
            "{u} synced again after the interval: {}",
            calls(u)
        );
        let (_, st) = m.state(u).unwrap();
        assert!(st.events_synced >= 10 && st.last_sync > 0, "{u}: {st:?}");
    }
    let (_, bad) = m.state("wss://bad/").unwrap();
    assert_eq!(
        (bad.status.as_str(), bad.consecutive_failures),
        ("error", 1)
    );
    assert_eq!(bad.last_error, "transport: connection refused");
    assert!(
        bad.next_attempt >= unix_now() + 10,
        "retry announced: {bad:?}"
    );
}

#[tokio::test]
async fn a_stopped_loop_runs_only_triggered_peers_and_shutdown_interrupts_syncs() {
    let (f, _, _, seen) = stand_in(Duration::from_millis(100));
    let m = PeerManager::new(
        PeerBook::in_memory(peers(&["wss://a/", "wss://b/"])),
        PeerLoopConfig::default(),
        f,
        false,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(m.clone().run(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "stopped: nothing runs by itself"
    );
    assert_eq!(m.trigger(Some("wss://nope/"), None), 0);
    assert_eq!(
        m.trigger(Some("wss://b/"), Some(r#"{"kinds":[7]}"#.into())),
        1
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].url, "wss://b/");
        assert_eq!(
            s[0].filter.as_deref(),
            Some(r#"{"kinds":[7]}"#),
            "the trigger's filter"
        );
    }
    assert_eq!(m.state("wss://b/").unwrap().1.events_synced, 5);
    assert!(
        m.state("wss://b/").unwrap().0.filter.is_none(),
        "the peer's own filter is kept"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();

    // A sync running at shutdown is stopped and recorded as interrupted.
    let (f, _, _, _) = stand_in(Duration::from_secs(3600));
    let m = PeerManager::new(
        PeerBook::in_memory(peers(&["wss://a/"])),
        PeerLoopConfig::default(),
        f,
        true,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(m.clone().run(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.state("wss://a/").unwrap().1.status, "syncing");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let (_, st) = m.state("wss://a/").unwrap();
    assert_eq!(st.status, "error");
    assert!(
        st.last_error.starts_with("interrupted"),
        "{}",
        st.last_error
    );
}

/// A trigger that arrives while the peer's sync runs is owed a run of its own, even with the
/// loop stopped (no timer would start it): it runs as soon as the first sync ends.
#[tokio::test]
async fn a_trigger_during_a_running_sync_runs_after_it_with_the_loop_stopped() {
    let (f, _, _, seen) = stand_in(Duration::from_millis(400));
    let m = PeerManager::new(
        PeerBook::in_memory(peers(&["wss://a/"])),
        PeerLoopConfig::default(),
        f,
        false,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(m.clone().run(async {
        let _ = stopped.await;
    }));
    assert_eq!(m.trigger(Some("wss://a/"), None), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(m.state("wss://a/").unwrap().1.status, "syncing");
    assert_eq!(
        m.trigger(Some("wss://a/"), Some(r#"{"kinds":[1]}"#.into())),
        1
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.len(), 2, "the second trigger ran: {s:?}");
        assert_eq!(s[1].filter.as_deref(), Some(r#"{"kinds":[1]}"#));
    }
    assert!(!m.is_running(), "the loop stays stopped");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
