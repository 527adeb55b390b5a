//! ORLY's client calling the service as ORLY does: every method on the secured service, in the
//! shapes ORLY expects; `SyncWithPeer`'s `since`; and the loopback service without credentials.

use super::common::*;
use super::gateway::*;
use super::harness::*;

use std::time::{Duration, Instant};

/// Bound on waiting for something the service does in the background.
const BACKGROUND_WAIT: Duration = Duration::from_secs(30);

/// Polls `f` every 100 ms until it gives `Some`, for at most `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// every method, as ORLY's client calls it

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_client_calls_every_method() {
    tokio::time::timeout(TEST_LIMIT, every_method())
        .await
        .expect("test exceeded its time limit");
}

async fn every_method() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("alice", ALL_RIGHTS)]));
    // The service's store: 5 events of its own and 5 the relay has too; the relay: 20.
    let relay_events = notes("orly-neg-api", 20, T0);
    let own = notes("orly-neg-own", 5, T0 + 100);
    let mut stored = own.clone();
    stored.extend_from_slice(&relay_events[..5]);
    let rl = relay_with(&fx, "relay", &relay_events);
    let svc = service(&fx, &stored, &[]);
    let mut alice = Caller::new(&fx, &svc.addr, "alice").await;
    let peer = format!("ws://{}", rl.addr);

    // Ready, as ORLY's `orly sync --server` asks first.
    assert!(alice.ready().await.expect("Ready"), "Ready: ready=false");

    // The background sync: not running without peers, nothing synced.
    let st = alice.status().await.expect("GetSyncStatus");
    assert_eq!(
        (st.active, st.last_sync, st.peer_count, st.peer_states.len()),
        (false, 0, 0, 0),
        "{st:?}"
    );

    // SyncWithPeer with ORLY's request (no direction: down): 15 fetched, rounds as int32.
    let msgs = alice
        .sync(neg::SyncPeerRequest {
            peer_url: peer.clone(),
            filter: None,
            since: 0,
        })
        .await
        .unwrap_or_else(|st| panic!("SyncWithPeer: {st:?}\n{}", tail(&fx.log_text(0), 30)));
    let last = msgs.last().expect("at least one SyncProgress");
    assert!(
        last.complete && last.error.is_empty(),
        "not complete: {last:?}"
    );
    assert_eq!(last.fetched_count, 15, "{last:?}");
    assert_eq!(last.need_count, 15, "{last:?}");
    assert_eq!(last.have_count, 5, "{last:?}");
    assert_eq!(last.sent_count, 0, "down only: {last:?}");
    assert!(last.round >= 1, "{last:?}");
    assert!(
        msgs.iter().all(|m| m.peer_url.starts_with(&peer)),
        "{msgs:?}"
    );
    assert!(
        msgs.windows(2).all(|w| w[0].round <= w[1].round),
        "rounds never go back: {msgs:?}"
    );
    assert_eq!(
        msgs.iter().filter(|m| m.complete).count(),
        1,
        "only the last message is complete: {msgs:?}"
    );

    // Managed peers: add, list, state, trigger, remove.
    alice.add_peer(&peer).await.expect("AddPeer");
    let peers = alice.peers().await.expect("GetPeers");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert!(peers[0].starts_with(&peer), "{peers:?}");
    let found = alice.peer_state(&peer).await.expect("GetPeerSyncState");
    assert!(found.found, "{found:?}");
    let state = found.state.expect("state of a found peer");
    assert!(state.peer_url.starts_with(&peer), "{state:?}");
    assert_eq!(state.status, "idle", "{state:?}");
    assert_eq!(
        (
            state.last_sync,
            state.events_synced,
            state.consecutive_failures
        ),
        (0, 0, 0)
    );
    let missing = alice
        .peer_state("ws://127.0.0.1:9/")
        .await
        .expect("GetPeerSyncState of an unknown peer");
    assert!(!missing.found && missing.state.is_none(), "{missing:?}");
    let st = alice.status().await.expect("GetSyncStatus");
    assert_eq!((st.active, st.peer_count), (false, 1), "{st:?}");
    assert_eq!(st.peer_states.len(), 1, "{st:?}");

    // TriggerSync runs the peer now (both ways, as ORLY's service syncs its peers): the
    // service's own 5 go up; the state says so.
    alice.trigger(&peer).await.expect("TriggerSync");
    let state = until("the triggered sync to finish", BACKGROUND_WAIT, || {
        let mut c = alice.clone();
        let peer = peer.clone();
        async move {
            let s = c.peer_state(&peer).await.expect("GetPeerSyncState").state?;
            (s.last_sync > 0 || s.status == "error").then_some(s)
        }
    })
    .await;
    assert_eq!(state.status, "idle", "{state:?}");
    assert_eq!(state.events_synced, 5, "{state:?}");
    assert_eq!(
        (state.consecutive_failures, state.last_error.as_str()),
        (0, "")
    );
    let st = alice.status().await.expect("GetSyncStatus");
    assert_eq!(st.last_sync, state.last_sync, "{st:?}");
    assert_eq!(st.peer_states[0].events_synced, 5, "{st:?}");
    let up = alice
        .sync(neg::SyncPeerRequest {
            peer_url: peer.clone(),
            filter: None,
            since: 0,
        })
        .await
        .expect("SyncWithPeer after the trigger");
    let up = up.last().expect("progress");
    assert_eq!(
        (up.have_count, up.need_count, up.complete),
        (0, 0, true),
        "the relay got the service's events: {up:?}"
    );

    // Start and Stop toggle GetSyncStatus.active.
    alice.start().await.expect("Start");
    assert!(alice.status().await.unwrap().active, "active after Start");
    alice.start().await.expect("Start again");
    assert!(alice.status().await.unwrap().active, "Start is idempotent");
    alice.stop().await.expect("Stop");
    assert!(!alice.status().await.unwrap().active, "inactive after Stop");

    alice.remove_peer(&peer).await.expect("RemovePeer");
    assert_eq!(alice.peers().await.unwrap(), Vec::<String>::new());
    assert!(!alice.peer_state(&peer).await.unwrap().found);
    assert_eq!(alice.status().await.unwrap().peer_count, 0);
    alice.trigger("").await.expect("TriggerSync of every peer");

    // HandleNegOpen/Msg/Close, ListSessions, CloseSession: a client holding nothing learns it
    // needs all 25 events the service has now.
    let mut client = initiator(&[]);
    let init = client.initiate().unwrap();
    let r = alice
        .neg_open("conn-1", "sub-1", None, init)
        .await
        .expect("HandleNegOpen");
    assert_eq!(r.error, "", "{r:?}");
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut reply = r.message;
    let mut rounds = 1;
    while let Some(next) = client.next(&reply, &mut have, &mut need).unwrap() {
        let r = alice
            .neg_msg("conn-1", "sub-1", next)
            .await
            .expect("HandleNegMsg");
        assert_eq!(r.error, "", "{r:?}");
        reply = r.message;
        rounds += 1;
    }
    assert_eq!(need.len(), 25, "the client needs every event");
    assert!(have.is_empty());
    let listed = alice.sessions().await.expect("ListSessions");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            listed[0].subscription_id.as_str(),
            listed[0].connection_id.as_str(),
            listed[0].round_count
        ),
        ("sub-1", "conn-1", rounds),
        "{listed:?}"
    );
    alice
        .neg_close("conn-1", "sub-1")
        .await
        .expect("HandleNegClose");
    assert!(alice.sessions().await.unwrap().is_empty());

    let init = || initiator(&[]).initiate().unwrap();
    for (conn, sub) in [("c1", "s"), ("c2", "s"), ("c1", "t")] {
        let r = alice.neg_open(conn, sub, None, init()).await.unwrap();
        assert_eq!(r.error, "", "{conn}/{sub}: {r:?}");
    }
    alice.close_session("", "s").await.expect("CloseSession");
    let left: Vec<(String, String)> = alice
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.connection_id, s.subscription_id))
        .collect();
    assert_eq!(
        left,
        [("c1".to_string(), "t".to_string())],
        "an empty connection_id closes every session with the subscription id"
    );
    alice.close_session("c2", "t").await.expect("CloseSession");
    assert_eq!(
        alice.sessions().await.unwrap().len(),
        1,
        "another connection's session stays"
    );
    alice.close_session("c1", "t").await.expect("CloseSession");
    assert!(alice.sessions().await.unwrap().is_empty());
    let r = alice.neg_msg("c1", "t", vec![0x61]).await.unwrap();
    assert!(r.error.starts_with("closed:"), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// ORLY's `since`

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_bounds_what_sync_with_peer_fetches() {
    tokio::time::timeout(TEST_LIMIT, since())
        .await
        .expect("test exceeded its time limit");
}

async fn since() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("alice", ALL_RIGHTS)]));
    let events = notes("orly-neg-since", 10, T0); // created T0 .. T0+9
    let rl = relay_with(&fx, "relay", &events);
    let svc = service(&fx, &[], &[]);
    let mut alice = Caller::new(&fx, &svc.addr, "alice").await;
    let msgs = alice
        .sync(neg::SyncPeerRequest {
            peer_url: format!("ws://{}", rl.addr),
            filter: None,
            since: (T0 + 6) as i64,
        })
        .await
        .expect("SyncWithPeer with since");
    let last = msgs.last().expect("progress");
    assert!(last.complete, "{last:?}");
    assert_eq!(
        (last.need_count, last.fetched_count),
        (4, 4),
        "only the events created at or after since: {last:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// ORLY's client on loopback, without credentials

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_client_without_credentials_uses_the_loopback_service() {
    tokio::time::timeout(TEST_LIMIT, loopback())
        .await
        .expect("test exceeded its time limit");
}

async fn loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_events = notes("orly-neg-plain", 12, T0);
    let store = tmp.path().join("store");
    let relay_dir = tmp.path().join("relay");
    let (rl, svc) = tokio::task::block_in_place(|| {
        import(&relay_dir, &relay_events);
        import(&store, &relay_events[..4]);
        (relay(&relay_dir, &[]), sync_service(&store))
    });
    let mut c = Caller::plain(&svc.addr).await;
    let peer = format!("ws://{}", rl.addr);

    assert!(c.ready().await.expect("Ready"));
    let msgs = c
        .sync(neg::SyncPeerRequest {
            peer_url: peer.clone(),
            filter: None,
            since: 0,
        })
        .await
        .expect("SyncWithPeer");
    let last = msgs.last().expect("progress");
    assert!(last.complete, "{last:?}");
    assert_eq!(last.fetched_count, 8, "{last:?}");

    c.add_peer(&peer).await.expect("AddPeer");
    assert_eq!(c.peers().await.expect("GetPeers").len(), 1);
    assert!(c.peer_state(&peer).await.expect("GetPeerSyncState").found);
    c.start().await.expect("Start");
    assert!(c.status().await.expect("GetSyncStatus").active);
    c.stop().await.expect("Stop");
    assert!(!c.status().await.expect("GetSyncStatus").active);
    c.trigger(&peer).await.expect("TriggerSync");
    c.remove_peer(&peer).await.expect("RemovePeer");
    assert!(c.peers().await.unwrap().is_empty());

    let mut client = initiator(&[]);
    let r = c
        .neg_open("lc", "ls", None, client.initiate().unwrap())
        .await
        .expect("HandleNegOpen");
    assert_eq!(r.error, "", "{r:?}");
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut reply = r.message;
    while let Some(next) = client.next(&reply, &mut have, &mut need).unwrap() {
        let r = c.neg_msg("lc", "ls", next).await.expect("HandleNegMsg");
        assert_eq!(r.error, "", "{r:?}");
        reply = r.message;
    }
    assert_eq!(need.len(), 12, "the client needs every event");
    assert_eq!(c.sessions().await.expect("ListSessions").len(), 1);
    c.neg_close("lc", "ls").await.expect("HandleNegClose");
    c.neg_open("lc", "ls2", None, initiator(&[]).initiate().unwrap())
        .await
        .expect("HandleNegOpen");
    c.close_session("", "ls2").await.expect("CloseSession");
    assert!(c.sessions().await.unwrap().is_empty());
}
