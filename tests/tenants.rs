//! One admin cannot hurt another (issue 14 §2), against the real `orly-sync-negentropy` on
//! 127.0.0.1 port 0 with real TLS, tokens, policy and audit directory:
//!
//! - URL secrets (user information, query values) and huge inputs never reach a caller, another
//!   admin or a log: progress messages, ListSyncs, GetSync, the `grpc-message` of refusals
//!   (also bounded in size), log lines and spans;
//! - an admin sees only its own syncs; an `auditor` role sees all; CancelSync stays owner-only;
//! - a token living longer than the policy's maximum is refused, with its record;
//! - a flood of denied calls from one admin grows the log by a bounded amount per call and is
//!   stopped by that admin's rate limit, while another admin keeps working.
//!
//! Every case is a row: action → status → exactly one record with its reason. Every wait is
//! bounded; nothing binds anything but 127.0.0.1 port 0.

mod common;
#[path = "common/gateway.rs"]
mod gateway;
use gateway::*;

use orly::proto::orlysync::common::v1 as cpb;
use orly::proto::orlysync::negentropy::v1 as npb;
use std::time::{Duration, Instant};
use tonic::Code;

/// Secrets the tests put in URLs; none may be shown anywhere.
const SECRETS: [&str; 3] = ["hunter2", "s3cret", "user:"];

/// Names the secrets `text` shows, if any.
fn leaks(text: &str) -> Vec<&'static str> {
    SECRETS.into_iter().filter(|s| text.contains(s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_secrets_and_huge_inputs_never_reach_callers_or_logs() {
    tokio::time::timeout(TEST_LIMIT, secrets_and_sizes())
        .await
        .expect("test exceeded its time limit");
}

async fn secrets_and_sizes() {
    let fx = Fixture::new();
    // Debug for our own crate: the sync's span is printed with every line inside it.
    let svc = tokio::task::block_in_place(|| {
        fx.start_logging(1, "info,orly=debug,fjall=warn,lsm_tree=warn")
    });
    let alice = fx.client("alice");
    let token = fx.token("alice", &alice);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let mut failures = Vec::new();

    // --- Refusals: the status says why, without the secret, in at most 1 KiB.
    let huge = "a".repeat(3 << 20);
    let huge_tag = npb::SyncPeerRequest {
        filter: Some(cpb::Filter {
            tags: [(huge.clone(), cpb::TagSet::default())].into(),
            ..Default::default()
        }),
        ..sync_req("ws://127.0.0.1:9/", npb::Direction::Down, 5)
    };
    let rows: Vec<(&str, npb::SyncPeerRequest, Code, &str)> = vec![
        (
            "userinfo and query in a ws:// URL",
            sync_req(
                "ws://user:hunter2@127.0.0.1:9/?auth=s3cret",
                npb::Direction::Down,
                5,
            ),
            Code::PermissionDenied,
            "user information",
        ),
        (
            "userinfo and query in an http:// URL",
            sync_req(
                "http://user:hunter2@127.0.0.1:9/?auth=s3cret",
                npb::Direction::Down,
                5,
            ),
            Code::InvalidArgument,
            "scheme must be ws or wss",
        ),
        (
            "userinfo without a scheme",
            sync_req("user:hunter2@127.0.0.1:9", npb::Direction::Down, 5),
            Code::InvalidArgument,
            "peer_url",
        ),
        (
            "a 3 MB http:// URL",
            sync_req(&format!("http://h/{huge}"), npb::Direction::Down, 5),
            Code::InvalidArgument,
            "scheme must be ws or wss",
        ),
        (
            "a 3 MB tag name",
            huge_tag,
            Code::InvalidArgument,
            "filter.tags",
        ),
    ];
    for (name, body, code, reason) in rows {
        let before = audit_records(&fx.audit_dir).len();
        match sync_call(&ch, &token, body).await {
            Ok(m) => failures.push(format!("[{name}] served: {m:?}")),
            Err(st) => {
                if st.code() != code {
                    failures.push(format!(
                        "[{name}] status {:?}, expected {code:?}",
                        st.code()
                    ));
                }
                let msg = st.message();
                if msg.len() > orly::service::MAX_SHOWN_MESSAGE {
                    failures.push(format!("[{name}] a grpc-message of {} bytes", msg.len()));
                }
                if !leaks(msg).is_empty() {
                    failures.push(format!("[{name}] the grpc-message shows a secret: {msg}"));
                }
                if !msg.contains(reason) {
                    failures.push(format!("[{name}] the grpc-message does not say {reason:?}"));
                }
            }
        }
        let recs = new_records(&fx.audit_dir, before, 1).await;
        if let Err(e) = one_refusal(&recs, SYNC_PATH, reason, "alice") {
            failures.push(format!("[{name}] {e}"));
        }
    }

    // --- Syncs with a secret in their (allowed) URL: one held open against a relay that never
    // answers, one that fails to connect. What alice is shown has no secret.
    let (relay, relay_task) = stalling_relay().await;
    let held_url = format!("ws://{relay}/?auth=s3cret&x=hunter2");
    let mut held = sync_open(&ch, &token, sync_req(&held_url, npb::Direction::Down, 3))
        .await
        .expect("the held sync is admitted");
    let start = Instant::now();
    let listed = loop {
        let all = list_syncs(&ch, &token).await.expect("ListSyncs");
        if let Some(s) = all.into_iter().find(|s| {
            s.running
                && s.progress
                    .as_ref()
                    .is_some_and(|p| p.peer_url.contains(&relay))
        }) {
            break s;
        }
        assert!(start.elapsed() < CALL_LIMIT, "the held sync is not listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let want = format!("ws://{relay}/?<redacted>");
    let shown_peer = |s: &npb::SyncStatus| s.progress.clone().unwrap_or_default().peer_url;
    if shown_peer(&listed) != want {
        failures.push(format!(
            "ListSyncs shows the peer as {:?}",
            shown_peer(&listed)
        ));
    }
    let status = sync_status(&ch, &token, &listed.sync_id)
        .await
        .expect("GetSync of alice's own sync");
    if shown_peer(&status) != want {
        failures.push(format!(
            "GetSync shows the peer as {:?}",
            shown_peer(&status)
        ));
    }
    // Its progress, to the end (the relay never answers: a timeout after 3 s).
    let mut progress = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(CALL_LIMIT, held.message())
        .await
        .expect("the held sync's stream did not end")
    {
        progress.push(m);
    }
    let failed = sync_call(
        &ch,
        &token,
        sync_req("ws://127.0.0.1:9/?auth=s3cret", npb::Direction::Down, 5),
    )
    .await
    .expect("a sync to a closed port is admitted");
    progress.extend(failed);
    if progress.iter().all(|p| p.error.is_empty()) {
        failures.push(format!("no sync failed (expected two): {progress:?}"));
    }
    for p in &progress {
        let text = format!("{} {} {}", p.peer_url, p.error, p.last_refusal);
        if !leaks(&text).is_empty() {
            failures.push(format!("a progress message shows a secret: {p:?}"));
        }
    }
    let finished = list_syncs(&ch, &token).await.expect("ListSyncs");
    for s in &finished {
        let p = s.progress.clone().unwrap_or_default();
        if !leaks(&format!("{} {}", p.peer_url, p.error)).is_empty() {
            failures.push(format!("ListSyncs shows a secret: {s:?}"));
        }
    }
    relay_task.abort();
    drop(svc);

    // --- Logs and spans.
    let log = fx.log_text(1);
    let lines: Vec<&str> = log.lines().filter(|l| !leaks(l).is_empty()).collect();
    if !lines.is_empty() {
        failures.push(format!(
            "the service log shows secrets:\n{}",
            lines.join("\n")
        ));
    }
    if !log.contains("sync_job") {
        failures.push("no log line inside a sync's span: the span check proves nothing".into());
    }
    assert!(failures.is_empty(), "\n  - {}", failures.join("\n  - "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_only_its_own_syncs_and_an_auditor_sees_all() {
    tokio::time::timeout(TEST_LIMIT, visibility())
        .await
        .expect("test exceeded its time limit");
}

/// Who asks, in the visibility table.
#[derive(Clone, Copy, Debug)]
enum Who {
    Alice,
    Bob,
    Carol,
}

/// What is asked about alice's sync.
#[derive(Clone, Copy, Debug)]
enum Ask {
    List,
    Status,
    Cancel,
}

async fn visibility() {
    let fx = Fixture::with_policy(&policy_toml(
        "",
        &[
            AdminSpec::open("alice"),
            AdminSpec::open("bob"),
            AdminSpec {
                extra: "role = \"auditor\"",
                ..AdminSpec::open("carol")
            },
        ],
    ));
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let mut who = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let cert = fx.client(name);
        let token = fx.token(name, &cert);
        who.push((connect(&svc.addr, &fx.ca_pem, &cert).await, token));
    }
    let at = |w: Who| &who[w as usize];
    // Alice's sync, held open against a relay that never answers, with a secret in its URL.
    let (relay, relay_task) = stalling_relay().await;
    let (ch_a, tok_a) = at(Who::Alice);
    let held = sync_open(
        ch_a,
        tok_a,
        sync_req(
            &format!("ws://{relay}/?auth=s3cret"),
            npb::Direction::Down,
            60,
        ),
    )
    .await
    .expect("alice's sync is admitted");
    let start = Instant::now();
    let id = loop {
        let all = list_syncs(ch_a, tok_a).await.expect("ListSyncs");
        if let Some(s) = all.iter().find(|s| s.running && s.admin == "alice") {
            break s.sync_id.clone();
        }
        assert!(start.elapsed() < CALL_LIMIT, "alice's sync is never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let want_peer = format!("ws://{relay}/?<redacted>");

    // Each row: who asks what about alice's sync → the status → whether it is shown → the one
    // record of the call (allowed, or refused with its reason).
    let rows: [(Who, Ask, Code, bool, &str); 8] = [
        (Who::Bob, Ask::List, Code::Ok, false, "allowed"),
        (Who::Bob, Ask::Status, Code::NotFound, false, "allowed"),
        (
            Who::Bob,
            Ask::Cancel,
            Code::PermissionDenied,
            false,
            "started by another admin",
        ),
        (Who::Carol, Ask::List, Code::Ok, true, "allowed"),
        (Who::Carol, Ask::Status, Code::Ok, true, "allowed"),
        (
            Who::Carol,
            Ask::Cancel,
            Code::PermissionDenied,
            false,
            "started by another admin",
        ),
        (Who::Alice, Ask::List, Code::Ok, true, "allowed"),
        (Who::Alice, Ask::Status, Code::Ok, true, "allowed"),
    ];
    let mut failures = Vec::new();
    for (w, ask, code, shown, reason) in rows {
        let name = format!("{w:?} {ask:?}");
        let me = name.split(' ').next().unwrap_or_default().to_lowercase();
        let (ch, token) = at(w);
        let before = audit_records(&fx.audit_dir).len();
        let got: Result<Option<npb::SyncStatus>, tonic::Status> = match ask {
            Ask::List => list_syncs(ch, token)
                .await
                .map(|all| all.into_iter().find(|s| s.sync_id == id)),
            Ask::Status => sync_status(ch, token, &id).await.map(Some),
            Ask::Cancel => cancel_sync(ch, token, &id).await.map(|_| None),
        };
        match got {
            Ok(seen) => {
                if code != Code::Ok {
                    failures.push(format!("[{name}] answered, expected {code:?}: {seen:?}"));
                }
                if seen.is_some() != shown {
                    failures.push(format!("[{name}] alice's sync shown: {}", seen.is_some()));
                }
                if let Some(s) = seen {
                    let peer = s.progress.unwrap_or_default().peer_url;
                    if peer != want_peer {
                        failures.push(format!("[{name}] the peer is shown as {peer:?}"));
                    }
                }
            }
            Err(st) if st.code() != code => failures.push(format!(
                "[{name}] status {:?} ({}), expected {code:?}",
                st.code(),
                st.message()
            )),
            Err(st) if st.message().contains(&relay) => {
                failures.push(format!("[{name}] the refusal names alice's peer: {st:?}"))
            }
            Err(_) => {}
        }
        // Exactly one record of the call: NOT_FOUND is an allowed call's answer.
        let recs = new_records(&fx.audit_dir, before, 1).await;
        let allowed = matches!(code, Code::Ok | Code::NotFound);
        let ok = recs.len() == 1
            && s(&recs[0], "admin") == me
            && recs[0].get("allowed") == Some(&serde_json::Value::Bool(allowed))
            && s(&recs[0], "reason").contains(reason);
        if !ok {
            failures.push(format!("[{name}] expected one record {reason:?}: {recs:?}"));
        }
    }
    // Bob lists nobody's syncs but his own (he has none).
    let (ch_b, tok_b) = at(Who::Bob);
    let bobs = list_syncs(ch_b, tok_b).await.expect("bob lists");
    if !bobs.is_empty() {
        failures.push(format!("bob lists syncs of others: {bobs:?}"));
    }
    // CancelSync stays with the owner.
    match cancel_sync(ch_a, tok_a, &id).await {
        Ok(true) => {}
        other => failures.push(format!("alice could not cancel her own sync: {other:?}")),
    }
    drop(held);
    relay_task.abort();
    drop(svc);
    assert!(failures.is_empty(), "\n  - {}", failures.join("\n  - "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_living_longer_than_the_policy_allows_is_refused() {
    tokio::time::timeout(TEST_LIMIT, token_lifetime())
        .await
        .expect("test exceeded its time limit");
}

async fn token_lifetime() {
    // The default policy maximum: 30 days.
    let fx = Fixture::new();
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let alice = fx.client("alice");
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let day = Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    // Each row: the token's lifetime → the status of a ListSyncs → one record with its reason.
    let rows: [(&str, Duration, Code, &str); 4] = [
        (
            "ten years",
            day * 3650,
            Code::Unauthenticated,
            "token lifetime too long: 315360000 s, the policy allows at most 2592000 s",
        ),
        (
            "31 days",
            day * 31,
            Code::Unauthenticated,
            "token lifetime too long: 2678400 s",
        ),
        ("30 days", day * 30, Code::Ok, "allowed"),
        ("one hour", Duration::from_secs(3600), Code::Ok, "allowed"),
    ];
    let mut failures = Vec::new();
    for (name, ttl, code, reason) in rows {
        let token = fx.token_for("alice", &alice, now, ttl);
        let before = audit_records(&fx.audit_dir).len();
        let got = list_syncs(&ch, &token).await;
        match (&got, code) {
            (Ok(_), Code::Ok) => {}
            (Err(st), c) if st.code() == c => {}
            _ => failures.push(format!("[{name}] {got:?}, expected {code:?}")),
        }
        let recs = new_records(&fx.audit_dir, before, 1).await;
        let allowed = code == Code::Ok;
        let ok = recs.len() == 1
            && recs[0].get("allowed") == Some(&serde_json::Value::Bool(allowed))
            && s(&recs[0], "admin") == "alice"
            && s(&recs[0], "reason").contains(reason);
        if !ok {
            failures.push(format!("[{name}] expected one record {reason:?}: {recs:?}"));
        }
    }
    drop(svc);
    assert!(failures.is_empty(), "\n  - {}", failures.join("\n  - "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_admins_flood_is_bounded_per_call_and_stopped_by_its_rate_while_others_work() {
    tokio::time::timeout(TEST_LIMIT, flood_against_others())
        .await
        .expect("test exceeded its time limit");
}

/// Most a refusal made before the request message is read (rate limit) may add to the log: it
/// records who and why, never what the call carried.
const HEAD_REFUSAL_BOUND: u64 = 1024;

async fn flood_against_others() {
    // Bob may fetch from one relay, 5 calls at once then one a minute; alice is unlimited.
    const BURST: u32 = 5;
    let fx = Fixture::with_policy(&policy_toml(
        "",
        &[
            AdminSpec::open("alice"),
            AdminSpec {
                peers: "\"wss://relay.example.com/\"",
                directions: "\"down\"",
                rate_per_minute: 1,
                burst: BURST,
                ..AdminSpec::open("bob")
            },
        ],
    ));
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let alice = fx.client("alice");
    let alice_token = fx.token("alice", &alice);
    let ch_alice = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let bob = fx.client("bob");
    let bob_token = fx.token("bob", &bob);
    let ch_bob = connect(&svc.addr, &fx.ca_pem, &bob).await;

    // Bob floods with 3 MB peer URLs he may not use; after each of his calls alice lists.
    const CALLS: usize = 30;
    let huge = format!("ws://127.0.0.1:9/{}", "a".repeat(3 << 20));
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut denied, mut limited) = (0u64, 0u64);
    for i in 0..CALLS {
        let (before_bytes, before) = (log_bytes(&fx.audit_dir), audit_records(&fx.audit_dir));
        let st = sync_call(
            &ch_bob,
            &bob_token,
            sync_req(&huge, npb::Direction::Down, 5),
        )
        .await
        .expect_err("bob's 3 MB URL was served");
        let (bound, reason) = match st.code() {
            Code::PermissionDenied => {
                denied += 1;
                (orly::audit::MAX_RECORD_BYTES as u64, "peer")
            }
            Code::ResourceExhausted => {
                limited += 1;
                (HEAD_REFUSAL_BOUND, "rate limited")
            }
            c => {
                failures.push(format!("[bob call {i}] status {c:?}: {}", st.message()));
                continue;
            }
        };
        // The refusal is durable before its answer: the log has grown already.
        let recs = audit_records(&fx.audit_dir);
        let new = &recs[before.len().min(recs.len())..];
        let grown = log_bytes(&fx.audit_dir) - before_bytes;
        if let Err(e) = one_refusal(new, SYNC_PATH, reason, "bob") {
            failures.push(format!("[bob call {i}] {e}"));
        }
        if grown > bound {
            failures.push(format!(
                "[bob call {i}] {:?} grew the log by {grown} bytes, more than {bound}",
                st.code()
            ));
        }
        // Alice is not hurt.
        if let Err(st) = list_syncs(&ch_alice, &alice_token).await {
            failures.push(format!("[alice after bob's call {i}] {st:?}"));
        }
    }
    // Bob's burst, plus what his rate grants while the flood lasts, got to the policy.
    let granted = u64::from(BURST) + started.elapsed().as_secs() / 60 + 1;
    eprintln!(
        "{CALLS} calls of bob in {:?}: {denied} denied by policy, {limited} rate limited; log {} \
         bytes",
        started.elapsed(),
        log_bytes(&fx.audit_dir)
    );
    if denied > granted || denied < u64::from(BURST) {
        failures.push(format!(
            "{denied} of bob's calls reached the policy, expected {BURST} to {granted}"
        ));
    }
    if limited + denied != CALLS as u64 {
        failures.push(format!(
            "{limited} rate limited + {denied} denied != {CALLS}"
        ));
    }
    // And alice still syncs.
    match sync_call(
        &ch_alice,
        &alice_token,
        sync_req("ws://127.0.0.1:9/", npb::Direction::Down, 5),
    )
    .await
    {
        Ok(p) if p.last().is_some_and(|p| !p.error.is_empty()) => {}
        other => failures.push(format!("alice's sync after the flood: {other:?}")),
    }
    drop(svc);
    assert!(failures.is_empty(), "\n  - {}", failures.join("\n  - "));
    let (code, out) = fx.verify(&fx.audit_dir);
    assert_eq!(code, 0, "{out}");
}

// ---------------------------------------------------------------------------------------------
// Floods do not stall the door (issue 14 §3): refusals before authentication are recorded
// without making the accept loop wait.

/// How long a legitimate admin's fresh connection and call may take while another address
/// floods the service with refused connections (about 40 ms measured here; up to 3 s when the
/// accept loop waited for each refusal's fsync).
const DOOR_BOUND: Duration = Duration::from_secs(1);
/// How soon a connection refused at accept must find itself closed.
const CLOSED_WITHIN: Duration = Duration::from_millis(300);
/// Connections in the flood, all from one address.
const FLOOD: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_connections_does_not_stall_the_door() {
    tokio::time::timeout(TEST_LIMIT, door_flood())
        .await
        .expect("test exceeded its time limit");
}

/// One refused connection from 127.0.0.2: connect, wait (bounded) to be closed, go away without
/// a word (a connection let through to its handshake fails it by closing). `None` when it could
/// not connect; else whether the service closed it within [`CLOSED_WITHIN`].
async fn refused_connection(addr: std::net::SocketAddr) -> Option<bool> {
    use tokio::io::AsyncReadExt;
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind("127.0.0.2:0".parse().ok()?).ok()?;
    let mut tcp = tokio::time::timeout(Duration::from_secs(5), sock.connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut buf = [0u8; 64];
    Some(matches!(
        tokio::time::timeout(CLOSED_WITHIN, tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    ))
}

async fn door_flood() {
    use futures_util::StreamExt;
    // Per address: 10 connections paid (and 10 a second), 40 more answered (let through to
    // their handshake), the rest closed at accept. Alice's calls stay within her address's quota.
    let fx = Fixture::with_policy(&policy_toml(
        "per_ip_rate_per_minute = 600\nper_ip_burst = 10",
        &[AdminSpec::open("alice")],
    ));
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let addr: std::net::SocketAddr = svc.addr.parse().expect("address");
    let alice = fx.client("alice");
    let token = fx.token("alice", &alice);
    // Alice, from 127.0.0.1: a fresh connection and a call, timed.
    let call = || async {
        let t = Instant::now();
        let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
        list_syncs(&ch, &token).await.map(|_| t.elapsed())
    };
    let baseline = call().await.expect("alice's call before the flood");
    let before = audit_records(&fx.audit_dir).len();

    let flood = tokio::spawn(async move {
        let t = Instant::now();
        let outcomes: Vec<Option<bool>> = futures_util::stream::iter(0..FLOOD)
            .map(|_| refused_connection(addr))
            .buffer_unordered(64)
            .collect()
            .await;
        let connected = outcomes.iter().filter(|o| o.is_some()).count();
        let closed = outcomes.iter().filter(|o| **o == Some(true)).count();
        (connected, closed, t.elapsed())
    });
    let mut during = Vec::new();
    while !flood.is_finished() {
        during.push(call().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (connected, closed, took) = flood.await.expect("flood task");
    let mut failures = Vec::new();
    let worst = during
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .max()
        .copied()
        .unwrap_or_default();
    eprintln!(
        "{connected} of {FLOOD} connections from 127.0.0.2 in {took:?}, {closed} closed within \
         {CLOSED_WITHIN:?}; alice: {baseline:?} before, {} calls during, the slowest {worst:?}",
        during.len()
    );
    if connected != FLOOD {
        failures.push(format!(
            "only {connected} of {FLOOD} flood connections were made"
        ));
    }
    // All but those let through to their handshake (at most 10 + 40 and what refills meanwhile)
    // are closed at accept, at once.
    if closed < FLOOD - 100 {
        failures.push(format!(
            "only {closed} of {FLOOD} refused connections were closed within {CLOSED_WITHIN:?}"
        ));
    }
    for r in &during {
        match r {
            Ok(t) if *t > DOOR_BOUND => failures.push(format!(
                "alice's call took {t:?} during the flood, more than {DOOR_BOUND:?}"
            )),
            Ok(_) => {}
            Err(st) => failures.push(format!("alice's call failed during the flood: {st:?}")),
        }
    }
    if during.is_empty() {
        failures.push("the flood ended before alice could call".into());
    }

    // Every refused connection is in the log once: on its own, or counted in a summary.
    let from_flood = |r: &serde_json::Value| {
        s(r, "rpc") == "connect" && s(r, "source").starts_with("127.0.0.2:")
    };
    let summary_count = |r: &serde_json::Value| -> Option<u64> {
        let reason = s(r, "reason");
        let (n, rest) = reason.split_once(" refusals from 127.0.0.2 in ")?;
        rest.split_once(' ')?;
        n.parse().ok()
    };
    let start = Instant::now();
    let (single, summed, summaries) = loop {
        let recs = audit_records(&fx.audit_dir);
        let flood_recs: Vec<&serde_json::Value> = recs[before.min(recs.len())..]
            .iter()
            .filter(|r| from_flood(r))
            .collect();
        let summaries: Vec<u64> = flood_recs.iter().filter_map(|r| summary_count(r)).collect();
        let single = flood_recs.len() - summaries.len();
        let summed: u64 = summaries.iter().sum();
        if single as u64 + summed >= FLOOD as u64 || start.elapsed() > AUDIT_WAIT {
            break (single, summed, summaries.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("{single} refusals recorded one by one, {summed} in {summaries} summary records");
    if single as u64 + summed != FLOOD as u64 {
        failures.push(format!(
            "{FLOOD} refused connections, {single} records of one + {summed} summed in \
             {summaries} summaries"
        ));
    }
    drop(svc);
    assert!(failures.is_empty(), "\n  - {}", failures.join("\n  - "));
    let (code, out) = fx.verify(&fx.audit_dir);
    assert_eq!(code, 0, "{out}");
}
