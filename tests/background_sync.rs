//! Managed peers and their background sync, against the real `orly-sync-negentropy`, real
//! `orly-relay`s and nostr-relay-builder relays, all on 127.0.0.1 port 0:
//!
//! 1. peers configured by `ORLY_SYNC_NEGENTROPY_PEERS` converge to the union of every good
//!    peer's events (both ways), while a peer where nothing listens shows `error`, counts its
//!    failures and backs off further at every failure;
//! 2. the peer list survives a restart: peers added at run time stay with their state, the
//!    operator's list is merged in again, and a peer dropped from it goes;
//! 3. `Stop` stops background syncs, `TriggerSync` still runs one, `Start` resumes them;
//! 4. on a secured service, a background sync is its owner's, checked against the owner's
//!    current policy and recorded at `orly:peer-loop` (the operator's peers as `(operator)`);
//!    an `AddPeer` the policy refuses is PERMISSION_DENIED with exactly one record.
//!
//! Every wait is bounded; the interval is 1 s so each test runs in seconds.

mod common;
#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/nrb.rs"]
mod nrb;
use common::{Proc, import, notes, relay, spawn_service};

use orly::proto::orlysync::common::v1 as cpb;
use orly::proto::orlysync::negentropy::v1 as npb;
use orly::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

/// Bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// Bound on any one condition a test waits for.
const WAIT: Duration = Duration::from_secs(30);
const T0: u64 = 1_700_000_000;

type Client = NegentropyServiceClient<Channel>;

/// Runs `f` (a test body) bounded by [`TEST_LIMIT`].
async fn bounded(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test exceeded its time limit");
}

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

/// The peer URL of an `orly-relay` as the service lists it (normalized: with its path).
fn relay_url(p: &Proc) -> String {
    format!("ws://{}/", p.addr)
}

fn set(events: &[common::Event]) -> BTreeSet<String> {
    events.iter().map(|e| e.id_hex()).collect()
}

fn store_set(dir: &Path) -> BTreeSet<String> {
    common::ids(dir).into_iter().collect()
}

/// The plain (loopback, no TLS) service over the fjall store `store`, its managed peers kept in
/// `state`, with `peers` as the operator's list and an interval of 1 s.
fn plain_service(store: &Path, state: &Path, peers: &[&str]) -> Proc {
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

async fn plain_client(p: &Proc) -> Client {
    NegentropyServiceClient::new(common::channel(&p.addr).await)
}

async fn status(c: &mut Client) -> npb::SyncStatusResponse {
    c.get_sync_status(cpb::Empty {})
        .await
        .expect("GetSyncStatus")
        .into_inner()
}

async fn peers(c: &mut Client) -> BTreeSet<String> {
    let p = c.get_peers(cpb::Empty {}).await.expect("GetPeers");
    p.into_inner().peers.into_iter().collect()
}

async fn peer_state(c: &mut Client, url: &str) -> Option<npb::PeerSyncState> {
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

async fn list_syncs(c: &mut Client) -> Vec<npb::SyncStatus> {
    c.list_syncs(npb::ListSyncsRequest {})
        .await
        .expect("ListSyncs")
        .into_inner()
        .syncs
}

/// Polls `f` every 100 ms until it returns `Ok`; panics with `what` and the last `Err` (what was
/// seen) after [`WAIT`].
async fn wait_until<T, F, Fut>(what: &str, mut f: F) -> T
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

/// The state of `url` once its last sync succeeded (idle, `last_sync` > 0) with
/// `events_synced` at least `events`.
async fn synced(c: &mut Client, url: &str, events: i64) -> npb::PeerSyncState {
    wait_until(&format!("{url} synced ({events} events)"), || {
        let mut c = c.clone();
        async move {
            match peer_state(&mut c, url).await {
                Some(s) if s.status == "idle" && s.last_sync > 0 && s.events_synced >= events => {
                    Ok(s)
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 1. Operator peers converge; a failing peer backs off.

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

// ---------------------------------------------------------------------------------------------
// 2. The list survives a restart.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_list_survives_restart() {
    bounded(restart_keeps_the_list()).await;
}

async fn restart_keeps_the_list() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, state, relay_dir) = (
        tmp.path().join("store"),
        tmp.path().join("state"),
        tmp.path().join("relay-a"),
    );
    let a = notes("bg2-a", 8, T0);
    let c_events = notes("bg2-c", 8, T0 + 100_000);
    tokio::task::block_in_place(|| import(&relay_dir, &a));
    let rl = tokio::task::block_in_place(|| relay(&relay_dir, &[]));
    let nrb_b = nrb::local_relay(&notes("bg2-b", 8, T0 + 50_000), nrb::no_rate_limit()).await;
    let nrb_c = nrb::local_relay(&c_events, nrb::no_rate_limit()).await;
    let (url_a, url_b, url_c) = (
        relay_url(&rl),
        format!("{}/", nrb_b.url),
        format!("{}/", nrb_c.url),
    );

    let svc = plain_service(&store, &state, &[&url_a, &url_b]);
    let mut c = plain_client(&svc).await;
    synced(&mut c, &url_a, 1).await;
    synced(&mut c, &url_b, 1).await;
    c.add_peer(npb::AddPeerRequest {
        peer_url: url_c.clone(),
        ..Default::default()
    })
    .await
    .expect("AddPeer on the plain service");
    // C's syncs move its own 8 events down and the 16 others up.
    let before = synced(&mut c, &url_c, 24).await;
    c.remove_peer(npb::RemovePeerRequest {
        peer_url: url_a.clone(),
    })
    .await
    .expect("RemovePeer of an operator peer");
    assert_eq!(
        peers(&mut c).await,
        BTreeSet::from([url_b.clone(), url_c.clone()]),
        "RemovePeer takes it off the list"
    );
    assert!(peer_state(&mut c, &url_a).await.is_none());
    tokio::task::block_in_place(|| svc.terminate());

    // Same operator list: the added peer stays with its state, the removed operator peer is
    // back (the operator's list is merged in at every start).
    let mut failures = Vec::new();
    let svc = plain_service(&store, &state, &[&url_a, &url_b]);
    let mut c = plain_client(&svc).await;
    let listed = peers(&mut c).await;
    let after = peer_state(&mut c, &url_c).await;
    for (what, url) in [
        ("operator peer A (removed at run time)", &url_a),
        ("operator peer B", &url_b),
        ("peer C added at run time", &url_c),
    ] {
        if !listed.contains(url.as_str()) {
            failures.push(format!(
                "after restart 1: {what} {url} not listed; listed: {listed:?}"
            ));
        }
    }
    match after {
        None => failures.push(format!(
            "after restart 1: no state for peer C {url_c} added at run time (state before: {before:?})"
        )),
        Some(after) => {
            if !(after.last_sync >= before.last_sync && after.last_sync > 0) {
                failures.push(format!("C's last_sync not kept: before {before:?}, after {after:?}"));
            }
            if after.events_synced != before.events_synced {
                failures.push(format!(
                    "C's events_synced not kept (nothing new to move): before {before:?}, after {after:?}"
                ));
            }
        }
    }
    tokio::task::block_in_place(|| svc.terminate());

    // A peer taken out of the operator's list goes; the one an admin added stays.
    let svc = plain_service(&store, &state, &[&url_b]);
    let mut c = plain_client(&svc).await;
    let listed = peers(&mut c).await;
    let want = BTreeSet::from([url_b.clone(), url_c.clone()]);
    if listed != want {
        failures.push(format!(
            "after restart 2 with ORLY_SYNC_NEGENTROPY_PEERS=B: listed {listed:?}, expected B {url_b} and C {url_c} (A {url_a} gone)"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    tokio::task::block_in_place(|| svc.terminate());
    drop(rl);
}

// ---------------------------------------------------------------------------------------------
// 3. Start, Stop, TriggerSync.

/// The syncs of `url` ListSyncs shows, and whether any of them runs.
async fn syncs_of(c: &mut Client, url: &str) -> (Vec<npb::SyncStatus>, bool) {
    let all: Vec<npb::SyncStatus> = list_syncs(c)
        .await
        .into_iter()
        .filter(|s| s.progress.as_ref().is_some_and(|p| p.peer_url == url))
        .collect();
    let running = all.iter().any(|s| s.running);
    (all, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_pauses_the_loop_trigger_still_syncs_start_resumes() {
    bounded(start_stop_trigger()).await;
}

async fn start_stop_trigger() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    tokio::task::block_in_place(|| import(&relay_dir, &notes("bg3", 5, T0)));
    let rl = tokio::task::block_in_place(|| relay(&relay_dir, &[]));
    let url = relay_url(&rl);
    let svc = plain_service(
        &tmp.path().join("store"),
        &tmp.path().join("state"),
        &[&url],
    );
    let mut c = plain_client(&svc).await;

    // Running: the peer syncs again and again.
    wait_until("two background syncs", || {
        let mut c = c.clone();
        let url = url.clone();
        async move {
            let (s, _) = syncs_of(&mut c, &url).await;
            if s.len() >= 2 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        }
    })
    .await;
    let (s, _) = syncs_of(&mut c, &url).await;
    assert!(
        s.iter()
            .all(|s| s.admin == "(operator)" && s.direction == "both"),
        "background syncs of an operator peer are the operator's: {s:#?}"
    );

    // Stopped: the running sync finishes; no new one starts over three intervals.
    c.stop(cpb::Empty {}).await.expect("Stop");
    assert!(!status(&mut c).await.active, "Stop: not active");
    // A sync the loop picked just before Stop may still be registering.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = wait_until("the running sync to finish", || {
        let mut c = c.clone();
        let url = url.clone();
        async move {
            match syncs_of(&mut c, &url).await {
                (s, false) => Ok(s.len()),
                (s, true) => Err(format!("{s:?}")),
            }
        }
    })
    .await;
    let last_before = peer_state(&mut c, &url).await.unwrap().last_sync;
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let (s, _) = syncs_of(&mut c, &url).await;
    assert_eq!(s.len(), stopped, "no background sync while stopped: {s:#?}");

    // TriggerSync runs the peer once, stopped or not.
    c.trigger_sync(npb::TriggerSyncRequest {
        peer_url: url.clone(),
        ..Default::default()
    })
    .await
    .expect("TriggerSync");
    let triggered = wait_until("the triggered sync to run and finish", || {
        let mut c = c.clone();
        let url = url.clone();
        async move {
            match syncs_of(&mut c, &url).await {
                (s, false) if s.len() > stopped => Ok(s.len()),
                (s, _) => Err(format!("{s:?}")),
            }
        }
    })
    .await;
    assert_eq!(triggered, stopped + 1, "one sync per trigger");
    let st = peer_state(&mut c, &url).await.unwrap();
    assert!(
        st.last_sync >= last_before && st.status == "idle",
        "the triggered sync is recorded: {st:?}"
    );
    assert!(
        !status(&mut c).await.active,
        "a trigger does not start the loop"
    );
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (s, _) = syncs_of(&mut c, &url).await;
    assert_eq!(
        s.len(),
        triggered,
        "still stopped after the trigger: {s:#?}"
    );

    // Started again: syncs resume.
    c.start(cpb::Empty {}).await.expect("Start");
    assert!(status(&mut c).await.active, "Start: active");
    wait_until("background syncs to resume", || {
        let mut c = c.clone();
        let url = url.clone();
        async move {
            let (s, _) = syncs_of(&mut c, &url).await;
            if s.len() >= triggered + 2 {
                Ok(())
            } else {
                Err(format!("{} syncs", s.len()))
            }
        }
    })
    .await;
    tokio::task::block_in_place(|| {
        svc.terminate();
        rl.terminate();
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Secured: the owner's policy at every background sync, and the audit log.

fn alice_policy(peers: &str) -> String {
    gateway::policy_toml(
        "",
        &[gateway::AdminSpec {
            peers,
            extra: "rights = [\"manage_peers\"]",
            ..gateway::AdminSpec::open("alice")
        }],
    )
}

fn rec_is(r: &Value, event: &str, rpc: &str, admin: &str, peer: &str) -> bool {
    gateway::s(r, "event") == event
        && gateway::s(r, "rpc") == rpc
        && gateway::s(r, "admin") == admin
        && gateway::s(r, "peer").contains(peer)
}

const LOOP_PATH: &str = "orly:peer-loop";
const ADD_PEER_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/AddPeer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_background_syncs_follow_the_owners_policy_and_are_audited() {
    bounded(secured_loop()).await;
}

async fn secured_loop() {
    let fx = gateway::Fixture::with_policy(&alice_policy("\"ws://127.0.0.1:*\""));
    let relay_dir = fx.root.join("relay");
    tokio::task::block_in_place(|| import(&relay_dir, &notes("bg4-op", 5, T0)));
    let rl = tokio::task::block_in_place(|| relay(&relay_dir, &[]));
    let op_url = relay_url(&rl);
    let nrb = nrb::local_relay(&notes("bg4-alice", 5, T0 + 1000), nrb::no_rate_limit()).await;
    let alice_url = format!("{}/", nrb.url);
    let mut env = fx.env();
    env.push(("ORLY_SYNC_NEGENTROPY_PEERS", op_url.clone()));
    env.push(("ORLY_SYNC_NEGENTROPY_INTERVAL", "1s".into()));
    let peer_state_dir = fx.root.join("peer-state").display().to_string();
    env.push(("ORLY_SYNC_NEGENTROPY_STATE_DIR", peer_state_dir));
    let data = fx.root.join("store").display().to_string();
    let start = |n: u32| {
        let cmd = gateway::service_command(
            &["--listen", "127.0.0.1:0", "--data-dir", &data],
            &env,
            gateway::SERVICE_LOG,
            &fx.log_path(n),
        );
        tokio::task::block_in_place(|| gateway::start_command(cmd, &fx.log_path(n)))
    };
    let svc = start(1);
    let cert = fx.client("alice");
    let token = fx.token("alice", &cert);
    let ch = gateway::connect(&svc.addr, &fx.ca_pem, &cert).await;
    let mut c = gateway::client(&ch);
    let audit = fx.audit_dir.clone();

    // AddPeer outside alice's patterns: refused, one record.
    let trace = gateway::trace_id(4001);
    let before = gateway::audit_records(&audit);
    let outside = "ws://127.0.0.2:7/";
    let r = c
        .add_peer(gateway::traced(
            npb::AddPeerRequest {
                peer_url: outside.into(),
                ..Default::default()
            },
            Some(&token),
            &trace,
        ))
        .await;
    let st = r.expect_err("AddPeer outside alice's peers is refused");
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    let recs = gateway::new_records(&audit, before.len(), 1).await;
    let of_call: Vec<Value> = recs
        .iter()
        .filter(|r| gateway::s(r, "trace_id") == trace || gateway::s(r, "rpc") == ADD_PEER_PATH)
        .cloned()
        .collect();
    gateway::check_one_refusal(
        &of_call,
        &gateway::Refused {
            reason: "policy",
            rpc: Some(ADD_PEER_PATH),
            trace: Some(&trace),
            admin: Some("alice"),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("AddPeer refusal: {e}"));
    assert!(
        !gateway::s(&of_call[0], "peer").is_empty(),
        "the refusal names the peer: {}",
        of_call[0]
    );
    let peers_now = c
        .get_peers(gateway::request(cpb::Empty {}, &token))
        .await
        .expect("GetPeers")
        .into_inner()
        .peers;
    assert_eq!(peers_now, vec![op_url.clone()], "nothing added");

    // AddPeer inside them: alice's peer, synced in the background as alice's.
    c.add_peer(gateway::request(
        npb::AddPeerRequest {
            peer_url: alice_url.clone(),
            ..Default::default()
        },
        &token,
    ))
    .await
    .expect("AddPeer of a peer alice's policy allows");
    let state = |url: String| {
        let mut c = c.clone();
        let token = token.clone();
        async move {
            c.get_peer_sync_state(gateway::request(
                npb::PeerSyncStateRequest { peer_url: url },
                &token,
            ))
            .await
            .expect("GetPeerSyncState")
            .into_inner()
            .state
        }
    };
    for (url, owner) in [(&alice_url, "alice"), (&op_url, "")] {
        let s = wait_until(&format!("{url} synced"), || {
            let state = state(url.clone());
            async move {
                match state.await {
                    Some(s) if s.status == "idle" && s.last_sync > 0 && s.events_synced > 0 => {
                        Ok(s)
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        assert_eq!(s.owner, owner, "{s:?}");
    }
    let added = gateway::audit_records(&audit);
    assert!(
        added.iter().any(
            |r| rec_is(r, "decision", ADD_PEER_PATH, "alice", &alice_url)
                && r["allowed"] == Value::Bool(true)
        ),
        "the AddPeer allowed is recorded"
    );
    gateway::wait_records(
        &audit,
        "alice's and the operator's background records",
        |recs| {
            let has = |event: &str, admin: &str, peer: &str| {
                recs.iter()
                    .any(|r| rec_is(r, event, LOOP_PATH, admin, peer))
            };
            has("decision", "alice", &alice_url)
                && has("sync_finished", "alice", &alice_url)
                && has("decision", "(operator)", &op_url)
                && has("sync_finished", "(operator)", &op_url)
        },
    )
    .await;
    let recs = gateway::audit_records(&audit);
    for r in recs.iter().filter(|r| gateway::s(r, "rpc") == LOOP_PATH) {
        let want = if gateway::s(r, "peer").contains(&alice_url) {
            "alice"
        } else {
            "(operator)"
        };
        assert_eq!(gateway::s(r, "admin"), want, "loop record: {r}");
        if gateway::s(r, "event") == "decision" {
            assert_eq!(r["allowed"], Value::Bool(true), "before narrowing: {r}");
        }
    }

    // Alice's policy narrowed: her peer's next background sync is refused, the operator's
    // peer goes on.
    fx.write_policy(&alice_policy("\"wss://relay.example.com/\""));
    let narrowed_at = Instant::now();
    let refused = wait_until("alice's peer refused by policy", || {
        let state = state(alice_url.clone());
        async move {
            match state.await {
                Some(s)
                    if s.status == "error" && s.last_error.to_lowercase().contains("policy") =>
                {
                    Ok(s)
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(refused.consecutive_failures >= 1, "{refused:?}");
    assert!(
        narrowed_at.elapsed() < Duration::from_secs(10),
        "refused within the reload delay and an interval: {:?}",
        narrowed_at.elapsed()
    );
    let recs = gateway::wait_records(&audit, "the refusal of alice's background sync", |recs| {
        recs.iter().any(|r| {
            rec_is(r, "decision", LOOP_PATH, "alice", &alice_url)
                && r["allowed"] == Value::Bool(false)
                && gateway::s(r, "reason").to_lowercase().contains("policy")
        })
    })
    .await;
    let op_last = state(op_url.clone()).await.unwrap().last_sync;
    wait_until("the operator's peer to sync again", || {
        let state = state(op_url.clone());
        async move {
            match state.await {
                Some(s) if s.last_sync > op_last && s.status == "idle" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(
        recs.iter()
            .all(|r| gateway::s(r, "rpc") != LOOP_PATH || !gateway::s(r, "admin").is_empty()),
        "every loop record names its admin"
    );

    // Restarted over the same state: alice's peer is still hers, with its state; its syncs
    // are still refused by her narrowed policy.
    tokio::task::block_in_place(|| svc.terminate());
    let svc = start(2);
    let ch = gateway::connect(&svc.addr, &fx.ca_pem, &cert).await;
    let mut c = gateway::client(&ch);
    let listed: BTreeSet<String> = c
        .get_peers(gateway::request(cpb::Empty {}, &token))
        .await
        .expect("GetPeers after restart")
        .into_inner()
        .peers
        .into_iter()
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([op_url.clone(), alice_url.clone()]),
        "alice's peer survives a restart"
    );
    let kept = c
        .get_peer_sync_state(gateway::request(
            npb::PeerSyncStateRequest {
                peer_url: alice_url.clone(),
            },
            &token,
        ))
        .await
        .expect("GetPeerSyncState after restart")
        .into_inner()
        .state
        .expect("alice's peer state after restart");
    assert_eq!(kept.owner, "alice", "{kept:?}");
    assert!(
        kept.last_sync > 0 && kept.events_synced == refused.events_synced,
        "its state is kept: before {refused:?}, after {kept:?}"
    );
    tokio::task::block_in_place(|| {
        svc.terminate();
        rl.terminate();
    });
    let (code, out) = fx.verify(&audit);
    assert_eq!(code, 0, "the audit log verifies: {out}");
}
