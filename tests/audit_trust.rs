//! An audit trail an auditor can trust (issue 14 §1, and §2 on record size and URL secrets),
//! against the real `orly-sync-negentropy` on 127.0.0.1 port 0 with real TLS (rcgen-made
//! certificates from `orly::auth::TestPki`), real tokens, a real policy file and audit directory,
//! and the real `orly audit verify`:
//!
//! - a flood of denied calls with 3 MB peer URLs grows the log by a bounded amount per call;
//! - URL user information and query values never reach the log (peer, reason, error);
//! - when `HEAD.json` cannot be replaced, a call answered UNAVAILABLE is not left "allowed" in
//!   the log: an outcome record says it was refused, and the verifier says so too;
//! - a service killed during syncs: verify reports them interrupted (by seq), and the next start
//!   writes a first record listing them.
//!
//! Every wait is bounded; nothing binds anything but 127.0.0.1 port 0.

mod common;
#[path = "common/gateway.rs"]
mod gateway;
use gateway::*;

use orly::proto::orlysync::negentropy::v1 as npb;
use serde_json::Value;
use std::time::{Duration, Instant};
use tonic::Code;

/// The growth of the log per refused call that the test holds the service to: the documented
/// bound on one record.
const PER_CALL_BOUND: u64 = orly::audit::MAX_RECORD_BYTES as u64;

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_huge_peer_urls_grows_the_log_by_a_bounded_amount_per_call() {
    tokio::time::timeout(TEST_LIMIT, flood())
        .await
        .expect("test exceeded its time limit");
}

async fn flood() {
    let fx = Fixture::new();
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let bob = fx.client("bob");
    let bob_token = fx.token("bob", &bob);
    let ch_bob = connect(&svc.addr, &fx.ca_pem, &bob).await;
    list_syncs(&ch_bob, &bob_token).await.expect("bob lists");

    // Bob, allowed one relay, asks for 3 MB peer URLs; each call is denied and grows the log
    // by at most one bounded record.
    let huge = format!("ws://127.0.0.1:9/{}", "a".repeat(3 * 1024 * 1024));
    const CALLS: u64 = 8;
    let before = log_bytes(&fx.audit_dir);
    let n_before = audit_records(&fx.audit_dir).len();
    for i in 0..CALLS {
        let st = sync_call(
            &ch_bob,
            &bob_token,
            sync_req(&huge, npb::Direction::Down, 5),
        )
        .await
        .expect_err("a 3 MB peer URL was served");
        assert_eq!(st.code(), Code::PermissionDenied, "call {i}: {st:?}");
    }
    let recs = wait_records(&fx.audit_dir, "the flood's records", |r| {
        r.len() >= n_before + CALLS as usize
    })
    .await;
    let grown = log_bytes(&fx.audit_dir) - before;
    eprintln!(
        "{CALLS} denied calls with 3 MB peer URLs grew the log by {grown} bytes ({} per call)",
        grown / CALLS
    );
    assert_eq!(recs.len(), n_before + CALLS as usize, "one record per call");
    assert!(
        grown <= CALLS * PER_CALL_BOUND,
        "{CALLS} denied calls grew the log by {grown} bytes, more than {PER_CALL_BOUND} per call"
    );
    let last = &recs[recs.len() - 1];
    assert_eq!(last.get("allowed"), Some(&Value::Bool(false)), "{last}");
    assert!(s(last, "peer").contains("truncated: "), "{last}");
    drop(svc);
    let (code, out) = fx.verify(&fx.audit_dir);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_secrets_never_reach_the_audit_log() {
    tokio::time::timeout(TEST_LIMIT, secrets())
        .await
        .expect("test exceeded its time limit");
}

async fn secrets() {
    let fx = Fixture::new();
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let alice = fx.client("alice");
    let alice_token = fx.token("alice", &alice);
    // Secrets in peer URLs: a denied one (userinfo is not allowed), one with a bad scheme
    // (refused as invalid: the reason quotes the URL), one without a scheme at all, and an
    // allowed one whose sync fails (the error names the URL).
    let ch_alice = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let secret_urls = [
        (
            "ws://user:hunter2@127.0.0.1:9/?auth=s3cret",
            Code::PermissionDenied,
        ),
        (
            "http://user:hunter2@127.0.0.1:9/?auth=s3cret",
            Code::InvalidArgument,
        ),
        ("user:hunter2@127.0.0.1:9", Code::InvalidArgument),
        ("ws://127.0.0.1:9/?auth=s3cret&x=hunter2", Code::Ok),
    ];
    let n_before = audit_records(&fx.audit_dir).len();
    let mut expected = 0;
    for (url, code) in secret_urls {
        let r = sync_call(
            &ch_alice,
            &alice_token,
            sync_req(url, npb::Direction::Down, 5),
        )
        .await;
        match (r, code) {
            (Ok(msgs), Code::Ok) => {
                let last = msgs.last().expect("progress");
                assert!(
                    !last.error.is_empty(),
                    "a sync to port 9 succeeded: {last:?}"
                );
                expected += 2; // allowed + finished
            }
            (Err(st), c) => {
                assert_eq!(st.code(), c, "{url}: {st:?}");
                expected += 1;
            }
            (Ok(m), c) => panic!("{url}: served ({m:?}), expected {c:?}"),
        }
    }
    let recs = wait_records(&fx.audit_dir, "the secret URLs' records", |r| {
        r.len() >= n_before + expected
    })
    .await;
    let new = &recs[n_before..];
    let text = all_text(&fx.audit_dir);
    let mut failures = Vec::new();
    for secret in ["hunter2", "s3cret", "user:"] {
        if text.contains(secret) {
            let leaking: Vec<String> = new
                .iter()
                .filter(|r| r.to_string().contains(secret))
                .map(Value::to_string)
                .collect();
            failures.push(format!("{secret:?} is in the audit log: {leaking:#?}"));
        }
    }
    let peers: Vec<String> = new.iter().map(|r| s(r, "peer")).collect();
    for want in [
        "ws://<redacted>@127.0.0.1:9/?<redacted>",
        "http://<redacted>@127.0.0.1:9/?<redacted>",
        "<redacted>@127.0.0.1:9",
        "ws://127.0.0.1:9/?<redacted>",
    ] {
        if !peers.iter().any(|p| p == want) {
            failures.push(format!("no record with peer {want:?}: {peers:?}"));
        }
    }
    drop(svc);
    assert!(failures.is_empty(), "\n  - {}", failures.join("\n  - "));
    let (code, out) = fx.verify(&fx.audit_dir);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_because_the_head_cannot_be_replaced_is_not_left_allowed() {
    tokio::time::timeout(TEST_LIMIT, head_unwritable())
        .await
        .expect("test exceeded its time limit");
}

async fn head_unwritable() {
    let fx = Fixture::new();
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let alice = fx.client("alice");
    let token = fx.token("alice", &alice);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    // One record first, so the service holds its segment open.
    list_syncs(&ch, &token).await.expect("ListSyncs");
    // The directory is renamed under the service: its open segment still takes appends, but
    // HEAD.json can no longer be replaced (as root, chmod would not stop it).
    let moved = fx.root.join("audit-moved");
    std::fs::rename(&fx.audit_dir, &moved).expect("rename audit dir");
    let st = sync_call(
        &ch,
        &token,
        sync_req("ws://127.0.0.1:9/", npb::Direction::Down, 5),
    )
    .await
    .expect_err("served although the audit head cannot be written");
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    assert!(st.message().contains("audit log"), "{st:?}");
    drop(svc);

    let recs = audit_records(&moved);
    let allow = recs
        .iter()
        .find(|r| s(r, "rpc") == SYNC_PATH && r.get("allowed") == Some(&Value::Bool(true)));
    eprintln!("allow record written before the head failed: {allow:?}");
    if let Some(allow) = allow {
        // Durable before the head failed: the record right after it must say what the caller
        // got.
        let seq = allow["seq"].as_u64().expect("seq");
        let outcome = recs
            .iter()
            .find(|r| r["decision_seq"].as_u64() == Some(seq) && s(r, "event") == "outcome");
        let Some(outcome) = outcome else {
            panic!(
                "the log says seq {seq} was allowed, but its caller got UNAVAILABLE and no record \
                 says so:\n{}",
                recs.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        };
        assert_eq!(
            outcome.get("allowed"),
            Some(&Value::Bool(false)),
            "{outcome}"
        );
        assert!(
            s(outcome, "reason").starts_with("refused: audit log unavailable"),
            "{outcome}"
        );
        assert_eq!(s(outcome, "admin"), "alice", "{outcome}");
        let (code, out) = fx.verify(&moved);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("refused after all") && out.contains(&format!("seq {seq}")),
            "verify does not say seq {seq} was refused: {out}"
        );
    }
    // Either way, nothing in the log says a sync of alice's ran.
    assert!(
        !recs.iter().any(|r| s(r, "event") == "sync_finished"),
        "{recs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_of_a_killed_service_are_reported_interrupted() {
    tokio::time::timeout(TEST_LIMIT, killed_during_syncs())
        .await
        .expect("test exceeded its time limit");
}

async fn killed_during_syncs() {
    let fx = Fixture::new();
    let (relay_addr, relay_task) = stalling_relay().await;
    let mut svc = tokio::task::block_in_place(|| fx.start(1));
    let alice = fx.client("alice");
    let token = fx.token("alice", &alice);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    // Two syncs that stay open against the stalling relay.
    let mut calls = Vec::new();
    for _ in 0..2 {
        let (ch, token) = (ch.clone(), token.clone());
        let peer = format!("ws://{relay_addr}/");
        calls.push(tokio::spawn(async move {
            sync_call(&ch, &token, sync_req(&peer, npb::Direction::Down, 120)).await
        }));
    }
    let is_start = |r: &Value| {
        s(r, "rpc") == SYNC_PATH
            && r.get("allowed") == Some(&Value::Bool(true))
            && s(r, "peer").contains(&relay_addr)
    };
    let recs = wait_records(&fx.audit_dir, "two allow records", |r| {
        r.iter().filter(|r| is_start(r)).count() >= 2
    })
    .await;
    let mut started: Vec<u64> = recs
        .iter()
        .filter(|r| is_start(r))
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    started.sort_unstable();
    // A sync starts only once HEAD.json names its allow record (group commit writes the line
    // first, then fsyncs and moves the head): killed before that, a record is "unconfirmed",
    // not an interrupted sync. Wait for the head, as the syncs themselves do.
    let last = started.last().copied().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head: Option<Value> = std::fs::read(fx.audit_dir.join("HEAD.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if head
            .as_ref()
            .and_then(|h| h["seq"].as_u64())
            .is_some_and(|seq| seq >= last)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HEAD.json never named seq {last}: {head:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed: no shutdown, no finished record.
    svc.child.kill().expect("kill -9");
    let _ = svc.child.wait();
    for c in calls {
        let _ = c.await;
    }
    relay_task.abort();

    let want = started
        .iter()
        .map(|s| format!("seq {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (code, out) = fx.verify(&fx.audit_dir);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("interrupted syncs") && out.contains(&want),
        "verify does not report syncs {want} as interrupted: {out}"
    );

    // The next start's first record lists them.
    let n = audit_records(&fx.audit_dir).len();
    let svc = tokio::task::block_in_place(|| fx.start(2));
    let recs = wait_records(&fx.audit_dir, "the restart's first record", |r| r.len() > n).await;
    let first = &recs[n];
    assert_eq!(s(first, "event"), "recovery", "{first}");
    let listed: Vec<u64> = first["interrupted"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert_eq!(listed, started, "{first}");
    assert!(s(first, "reason").contains(&want), "{first}");
    drop(svc);
    let (code, out) = fx.verify(&fx.audit_dir);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("recorded as interrupted") && !out.contains("interrupted syncs ("),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals that used to leave no record (issue 14 §1): a message too large for the codec, a body
// that is not protobuf, anything but one message, a method nobody serves. Each row: what is
// sent → the status → exactly one record of that call, refused, with its reason.

/// What one row sends.
enum Call {
    /// A typed SyncWithPeer call.
    Sync(Box<npb::SyncPeerRequest>),
    /// Raw messages (none, one, several; any bytes) to a path.
    Raw(&'static str, Vec<Vec<u8>>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_requests_are_refused_with_exactly_one_record() {
    tokio::time::timeout(TEST_LIMIT, undecodable())
        .await
        .expect("test exceeded its time limit");
}

async fn undecodable() {
    use prost::Message;
    let fx = Fixture::new();
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let alice = fx.client("alice");
    let token = fx.token("alice", &alice);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let limit = orly::service::MAX_REQUEST_BYTES;
    let garbage = vec![0xff; 16];
    let valid_sync = sync_req("ws://127.0.0.1:9/", npb::Direction::Down, 5).encode_to_vec();
    let rows: Vec<(&str, Call, Code, String)> = vec![
        (
            "a 20 MB SyncWithPeer message",
            Call::Sync(Box::new(sync_req(
                &format!("ws://127.0.0.1:9/{}", "a".repeat(20 << 20)),
                npb::Direction::Down,
                5,
            ))),
            Code::OutOfRange,
            format!("more than the {limit} allowed"),
        ),
        (
            "a 5 MB ListSyncs message",
            Call::Raw(LIST_PATH, vec![vec![0; 5 << 20]]),
            Code::OutOfRange,
            format!("more than the {limit} allowed"),
        ),
        (
            "a SyncWithPeer body that is not protobuf",
            Call::Raw(SYNC_PATH, vec![garbage.clone()]),
            Code::InvalidArgument,
            "not a valid SyncPeerRequest message".into(),
        ),
        (
            "a ListSyncs body that is not protobuf",
            Call::Raw(LIST_PATH, vec![garbage.clone()]),
            Code::InvalidArgument,
            "not a valid ListSyncsRequest message".into(),
        ),
        (
            "a GetSync body that is not protobuf",
            Call::Raw(STATUS_PATH, vec![garbage.clone()]),
            Code::InvalidArgument,
            "not a valid GetSyncRequest message".into(),
        ),
        (
            "a CancelSync body that is not protobuf",
            Call::Raw(CANCEL_PATH, vec![garbage.clone()]),
            Code::InvalidArgument,
            "not a valid CancelSyncRequest message".into(),
        ),
        (
            "a SyncWithPeer call without a message",
            Call::Raw(SYNC_PATH, vec![]),
            Code::InvalidArgument,
            "no SyncPeerRequest message".into(),
        ),
        (
            "a SyncWithPeer call with two messages",
            Call::Raw(SYNC_PATH, vec![valid_sync.clone(), valid_sync.clone()]),
            Code::InvalidArgument,
            "more than one SyncPeerRequest message".into(),
        ),
        (
            "a method the service does not have",
            Call::Raw(
                "/orlysync.negentropy.v1.NegentropyService/DeleteEverything",
                vec![vec![]],
            ),
            Code::Unimplemented,
            "unknown method".into(),
        ),
    ];
    let mut failures = Vec::new();
    for (name, send, code, reason) in rows {
        let before = audit_records(&fx.audit_dir).len();
        let (rpc, got) = match send {
            Call::Sync(body) => (
                SYNC_PATH,
                sync_call(&ch, &token, *body).await.map(|m| m.len()),
            ),
            Call::Raw(path, msgs) => (path, raw_call(&ch, &token, path, msgs).await),
        };
        match got {
            Ok(n) => failures.push(format!("[{name}] served ({n} messages), expected {code:?}")),
            Err(st) if st.code() != code => failures.push(format!(
                "[{name}] status {:?} ({}), expected {code:?}",
                st.code(),
                st.message()
            )),
            Err(st) if st.message().len() > 1024 => failures.push(format!(
                "[{name}] a grpc-message of {} bytes",
                st.message().len()
            )),
            Err(_) => {}
        }
        let recs = new_records(&fx.audit_dir, before, 1).await;
        if let Err(e) = one_refusal(&recs, rpc, &reason, "alice") {
            failures.push(format!("[{name}] {e}"));
        }
    }
    // Control: the connection still serves, and a valid call is recorded allowed, once.
    let before = audit_records(&fx.audit_dir).len();
    if let Err(st) = list_syncs(&ch, &token).await {
        failures.push(format!("[control] ListSyncs after the rows: {st:?}"));
    }
    let recs = new_records(&fx.audit_dir, before, 1).await;
    if recs.len() != 1 || recs[0].get("allowed") != Some(&Value::Bool(true)) {
        failures.push(format!("[control] records of a valid ListSyncs: {recs:?}"));
    }
    drop(svc);
    assert!(failures.is_empty(), "\n  - {}", failures.join("\n  - "));
    let (code, out) = fx.verify(&fx.audit_dir);
    assert_eq!(code, 0, "{out}");
}

// ---------------------------------------------------------------------------------------------
// A policy the service cannot enforce: it exits before it binds its port (issue 14 §3).

#[test]
fn a_policy_that_does_not_load_stops_the_service_before_it_listens() {
    let fx = Fixture::new();
    let policy = fx.root.join("policy.toml");
    // Each row: what the policy file is → exit code 1, no address announced, stderr names why,
    // and the audit directory untouched.
    let rows: [(&str, Option<&str>, &str); 3] = [
        (
            "not TOML",
            Some("[[admin]\nname = \"alice\"\n"),
            "cannot parse policy",
        ),
        (
            "TOML but invalid",
            Some("[[admin]]\nname = \"alice\"\npeers = [\"*\"]\ndirections = [\"sideways\"]\n"),
            "invalid policy",
        ),
        ("missing", None, "cannot read policy file"),
    ];
    let mut failures = Vec::new();
    for (i, (name, text, why)) in rows.into_iter().enumerate() {
        match text {
            Some(t) => std::fs::write(&policy, t).unwrap(),
            None => {
                let _ = std::fs::remove_file(&policy);
            }
        }
        let n = i as u32 + 1;
        let mut child = fx
            .command(n, "info")
            .spawn()
            .expect("spawn orly-sync-negentropy");
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break Some(st);
            }
            if start.elapsed() > START_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            use std::io::Read;
            let _ = out.read_to_string(&mut stdout);
        }
        let stderr = fx.log_text(n);
        match status {
            None => failures.push(format!("[{name}] still running after {START_LIMIT:?}")),
            Some(st) if st.code() != Some(1) => {
                failures.push(format!("[{name}] exit {st:?}, expected 1"))
            }
            Some(_) => {}
        }
        if stdout.contains("listening on") {
            failures.push(format!("[{name}] announced an address: {stdout:?}"));
        }
        if !stderr.contains(why) {
            failures.push(format!("[{name}] stderr does not say {why:?}: {stderr}"));
        }
    }
    if fx.audit_dir.exists() {
        failures.push("the audit directory was created".into());
    }
    assert!(failures.is_empty(), "\n  - {}", failures.join("\n  - "));
}
