//! The security stack of `orly-sync-negentropy` (DESIGN.md §7, issue 5), table-driven, against
//! the real binary on 127.0.0.1 port 0 with real TLS (rcgen-made certificates from
//! `orly::auth::TestPki`), real tokens, a real policy file and a real audit directory.
//!
//! Every refused request must (a) get the right status class, (b) leave EXACTLY ONE new audit
//! record, `allowed:false`, whose `reason` names the cause. TLS-level cases make exactly one
//! connection attempt with a raw tokio-rustls client (a tonic Channel would reconnect in the
//! background and each retry is audited); under TLS 1.3 the server's verdict on the client
//! certificate arrives as an alert after the client's handshake finished (DEPENDENCIES.md
//! pitfall 2), so the client writes the HTTP/2 preface and reads the verdict.
//!
//! One service per test; every wait is bounded; nothing binds anything but 127.0.0.1 port 0
//! except the "refuse to be unsafe" test, which asks for 0.0.0.0:0 on purpose and kills the
//! service as soon as it announces itself.
//!
//! Layout: the test entry points are here (their names are what CI reports); the refusal table
//! is data in `security/refusals.rs`, run by `security/refusal_runs.rs`; reload tests live in
//! `security/reload.rs`, CancelSync ownership in `security/cancel.rs`. The fixture, clients and
//! audit readers are the shared gateway harness in `common/`.

#[path = "security/cancel.rs"]
mod cancel;
mod common;
#[path = "common/gateway.rs"]
mod gateway;
#[path = "security/refusal_runs.rs"]
mod refusal_runs;
#[path = "security/refusals.rs"]
mod refusals;
#[path = "security/reload.rs"]
mod reload;
use common::*;
use gateway::*;

use orly::auth::{IssuedCert, TestPki, TokenSigningKey, cert_fingerprint_hex};
use orly::auth::{TOKEN_AUDIENCE, TOKEN_ISSUER};
use orly::proto::orlysync::common::v1 as cpb;
use orly::proto::orlysync::negentropy::v1 as npb;
use orly::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

// ---------------------------------------------------------------------------------------------
// what these tests share beyond the gateway harness (tests/common/gateway.rs)

/// The policy reload must take effect within this (the service polls every 2 s).
const RELOAD_LIMIT: Duration = Duration::from_secs(5);
const T0: u64 = 1_700_000_000;
/// `RUST_LOG` of the services these tests start.
const SECURITY_LOG: &str = "info,fjall=warn,lsm_tree=warn,h2=warn,tower=warn,hyper=warn";

/// Starts the fixture's service (start 0, its log in `fx.log_path(0)`).
fn start_service(fx: &Fixture) -> Proc {
    tokio::task::block_in_place(|| fx.start_logging(0, SECURITY_LOG))
}

/// Starts `orly-sync-negentropy` with `args`/`envs`, stderr to `log`; waits (bounded) for its
/// "listening on" line.
fn spawn_logged(args: &[&str], envs: &[(&str, String)], log: &Path) -> Proc {
    start_command(service_command(args, envs, SECURITY_LOG, log), log)
}

/// An admin with any peer, every direction, limits that never trigger (at most 4 syncs).
fn open(name: &str) -> AdminSpec<'_> {
    AdminSpec {
        max_concurrent: 4,
        ..AdminSpec::open(name)
    }
}

/// `admins`, and `revoked_jti` revoked.
fn policy(admins: &[AdminSpec<'_>], revoked_jti: &[String]) -> String {
    policy_full(admins, revoked_jti, &[], 16)
}

/// `admins` under a service-wide cap of `max_concurrent_total` syncs, with revocations.
fn policy_full(
    admins: &[AdminSpec<'_>],
    revoked_jti: &[String],
    revoked_admins: &[&str],
    max_concurrent_total: u32,
) -> String {
    let service = format!("max_concurrent_total = {max_concurrent_total}");
    policy_toml(&service, admins) + &revoked_toml(revoked_jti, revoked_admins)
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims a valid alice token would carry, for hand-crafted tokens.
fn alice_claims(alice: &IssuedCert) -> Value {
    let now = unix_now();
    json!({
        "iss": TOKEN_ISSUER, "aud": TOKEN_AUDIENCE, "sub": "alice",
        "exp": now + 3600, "nbf": now, "iat": now,
        "jti": "handcrafted-0001",
        "cnf": {"x5t#S256": orly::auth::cert_thumbprint_b64url(&alice.cert_der)},
    })
}

// ---------------------------------------------------------------------------------------------
// 1. the refusal table

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_gets_its_status_and_exactly_one_audit_record() {
    tokio::time::timeout(TEST_LIMIT, refusal_runs::refusal_table())
        .await
        .expect("test exceeded its time limit");
}

// ---------------------------------------------------------------------------------------------
// 2. a valid admin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_admin_sync_is_audited_once_allowed_and_once_finished() {
    tokio::time::timeout(TEST_LIMIT, valid_sync())
        .await
        .expect("test exceeded its time limit");
}

async fn valid_sync() {
    let fx = Fixture::without_policy();
    let alice = fx.client("alice");
    fx.write_policy(&policy(&[open("alice")], &[]));
    let relay_dir = fx.root.join("relay");
    let events = notes("secure", 20, T0);
    let rl = tokio::task::block_in_place(|| {
        import(&relay_dir, &events);
        relay(&relay_dir, &[])
    });
    let svc = start_service(&fx);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let token = fx.token("alice", &alice);
    let jti = jti_of(&token);
    let trace = trace_id(1);
    let before = audit_records(&fx.audit_dir).len();
    let peer = format!("ws://{}", rl.addr);
    let msgs = sync_call_traced(
        &ch,
        Some(&token),
        &trace,
        sync_req(&peer, npb::Direction::Down, 10),
    )
    .await
    .unwrap_or_else(|st| panic!("valid sync refused: {st:?}\n{}", tail(&fx.log_text(0), 30)));
    let last = msgs.last().expect("at least one progress message");
    assert!(last.complete, "sync did not complete: {last:?}");
    assert_eq!(last.fetched_count, 20, "fetched: {last:?}");

    let recs = new_records(&fx.audit_dir, before, 2).await;
    assert_eq!(
        recs.len(),
        2,
        "expected exactly one allow and one completion record, got {recs:#?}"
    );
    let allow = &recs[0];
    let done = &recs[1];
    assert_eq!(s(allow, "event"), "decision", "{allow}");
    assert_eq!(allow.get("allowed"), Some(&Value::Bool(true)), "{allow}");
    assert_eq!(s(done, "event"), "sync_finished", "{done}");
    assert_eq!(done["counts"]["fetched"], json!(20), "{done}");
    assert!(done.get("error").is_none(), "{done}");
    let fp = cert_fingerprint_hex(&alice.cert_der);
    for r in [allow, done] {
        assert_eq!(s(r, "admin"), "alice", "{r}");
        assert_eq!(s(r, "cert_fingerprint"), fp, "{r}");
        assert_eq!(s(r, "token_jti"), jti, "{r}");
        assert!(s(r, "source").starts_with("127.0.0.1:"), "source: {r}");
        assert_eq!(s(r, "trace_id"), trace, "{r}");
        assert_eq!(s(r, "rpc"), SYNC_PATH, "{r}");
        assert_eq!(s(r, "direction"), "down", "{r}");
        assert!(s(r, "peer").starts_with(&peer), "{r}");
    }
    // Never the token: not whole, not its signature, not its claims segment.
    let text = all_text(&fx.audit_dir);
    for (what, part) in [
        ("the token", token.as_str()),
        ("the token's claims", token.split('.').nth(1).unwrap()),
        ("the token's signature", token.split('.').nth(2).unwrap()),
    ] {
        assert!(!text.contains(part), "{what} found in the audit files");
    }
    // The log an auditor gets verifies.
    drop(svc);
    let (code, out, err) = orly(&[
        "audit",
        "verify",
        fx.audit_dir.to_str().unwrap(),
        "--pubkey",
        fx.audit_pub.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "audit verify: {out}{err}");
}

// ---------------------------------------------------------------------------------------------
// 3. fail closed when the audit log cannot be written

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_audit_log_refuses_requests() {
    tokio::time::timeout(TEST_LIMIT, audit_unusable())
        .await
        .expect("test exceeded its time limit");
}

async fn audit_unusable() {
    let fx = Fixture::without_policy();
    let alice = fx.client("alice");
    fx.write_policy(&policy(&[open("alice")], &[]));
    let svc = start_service(&fx);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let token = fx.token("alice", &alice);
    // One record first, so the service holds its segment open when the directory goes.
    list_syncs_traced(&ch, Some(&token), &trace_id(1))
        .await
        .expect("ListSyncs before the audit dir goes");
    assert!(!audit_records(&fx.audit_dir).is_empty());
    // As root, chmod does not stop writes: take the directory away instead.
    std::fs::remove_dir_all(&fx.audit_dir).expect("remove audit dir");

    let mut failures = Vec::new();
    let expect_unavailable =
        |what: &str, r: Result<(), tonic::Status>, failures: &mut Vec<String>| match r {
            Ok(()) => failures.push(format!("[{what}] served although nothing can be audited")),
            Err(st) => {
                if st.code() != Code::Unavailable || !st.message().contains("audit log") {
                    failures.push(format!(
                        "[{what}] status {:?} {:?}, expected Unavailable naming the audit log",
                        st.code(),
                        st.message()
                    ));
                }
            }
        };
    let r = sync_call_traced(
        &ch,
        Some(&token),
        &trace_id(2),
        sync_req("ws://127.0.0.1:9/", npb::Direction::Down, 10),
    )
    .await
    .map(|_| ());
    expect_unavailable("valid sync", r, &mut failures);
    let r = list_syncs_traced(&ch, Some(&token), &trace_id(3)).await;
    expect_unavailable("valid ListSyncs", r, &mut failures);
    let r = sync_call_traced(
        &ch,
        None,
        &trace_id(4),
        sync_req("ws://127.0.0.1:9/", npb::Direction::Down, 10),
    )
    .await
    .map(|_| ());
    expect_unavailable("refusal (no token)", r, &mut failures);
    drop(svc);
    assert!(
        failures.is_empty(),
        "fail-closed audit:\n  - {}\n--- log ---\n{}",
        failures.join("\n  - "),
        tail(&fx.log_text(0), 30)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. refuse to be unsafe

#[test]
fn non_loopback_without_security_refuses_to_start_unless_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("store");
    let data = data.to_str().unwrap();
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let log = tmp.path().join("refuse.log");
        let mut cmd = Command::new(bin("orly-sync-negentropy"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for k in SERVICE_ENV {
            cmd.env_remove(k);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    };

    let (st, err) = run(&["--listen", "0.0.0.0:0", "--data-dir", data], &[]);
    let st =
        st.unwrap_or_else(|| panic!("service kept running on 0.0.0.0 without security: {err}"));
    assert!(!st.success(), "exit status {st:?}; stderr: {err}");
    assert!(
        err.contains("ORLY_TLS_CERT"),
        "message does not name ORLY_TLS_CERT: {err}"
    );

    // A partial setup is refused too, naming what is missing.
    let (st, err) = run(
        &["--listen", "0.0.0.0:0", "--data-dir", data],
        &[("ORLY_TLS_CERT", "/nonexistent/server.pem")],
    );
    let st = st.unwrap_or_else(|| panic!("service kept running with partial security: {err}"));
    assert!(!st.success(), "partial security settings accepted: {err}");
    assert!(
        err.contains("ORLY_TLS_CLIENT_CA"),
        "missing settings not named: {err}"
    );

    // --insecure: starts, and warns loudly. Killed as soon as it announces itself.
    let log = tmp.path().join("insecure.log");
    let data2 = tmp.path().join("store2");
    let p = spawn_logged(
        &[
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            data2.to_str().unwrap(),
            "--insecure",
        ],
        &[],
        &log,
    );
    drop(p);
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        err.contains("INSECURE"),
        "no loud warning with --insecure: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. policy hot reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_applies_and_a_broken_file_keeps_the_old_policy() {
    tokio::time::timeout(TEST_LIMIT, reload::policy_reload())
        .await
        .expect("test exceeded its time limit");
}

// ---------------------------------------------------------------------------------------------
// 6. certificate reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_reload_on_sighup_keeps_serving() {
    tokio::time::timeout(TEST_LIMIT, reload::cert_reload())
        .await
        .expect("test exceeded its time limit");
}

// ---------------------------------------------------------------------------------------------
// 7. every limit in the policy follows a reload, the service-wide one included

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_concurrency_cap_follows_policy_reload() {
    tokio::time::timeout(TEST_LIMIT, reload::total_cap_reload())
        .await
        .expect("test exceeded its time limit");
}

/// An admin may cancel only its own syncs: bob's `CancelSync` of alice's sync is refused with
/// PERMISSION_DENIED and leaves exactly one denied record (and alice's sync runs on); alice's own
/// cancel leaves one allowed record and stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_another_admins_sync_is_refused_and_audited() {
    tokio::time::timeout(TEST_LIMIT, cancel::cancel_ownership())
        .await
        .expect("test exceeded its time limit");
}

// ---------------------------------------------------------------------------------------------
// 8. SIGHUP (reload) never kills the service, not even right after it announced itself

unsafe extern "C" {
    /// libc's kill(2): std can only send SIGKILL, and `Command::new("kill")` is too slow to
    /// hit the window this test is about.
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGHUP: i32 = 1;

#[test]
fn sighup_right_after_announce_does_not_kill_the_service() {
    let fx = Fixture::without_policy();
    fx.write_policy(&policy(&[open("alice")], &[]));
    let env = fx.env();
    // A race: with the bug, about half the attempts die; ten clean runs make a false pass
    // unlikely (~0.1 %), and a fixed service passes every time.
    for attempt in 0..10 {
        let data = fx.root.join(format!("store{attempt}"));
        let mut env = env.clone();
        for (k, v) in env.iter_mut() {
            if *k == "ORLY_AUDIT_DIR" {
                *v = fx
                    .root
                    .join(format!("audit{attempt}"))
                    .display()
                    .to_string();
            }
        }
        let mut p = spawn_logged(
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
            ],
            &env,
            &fx.log_path(0),
        );
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { kill(p.child.id() as i32, SIGHUP) };
        assert_eq!(rc, 0, "kill(SIGHUP) failed");
        std::thread::sleep(Duration::from_millis(300));
        match p.child.try_wait() {
            Ok(None) => {}
            Ok(Some(st)) => panic!(
                "attempt {attempt}: SIGHUP sent right after 'listening on' killed the service \
                 ({st:?}): the reload handler is installed only after the address is announced"
            ),
            Err(e) => panic!("try_wait: {e}"),
        }
        drop(p);
    }
}

// ---------------------------------------------------------------------------------------------
// server reflection for v1alpha clients (old grpcurl, grpc_cli, grpcio)

/// Services listed by `grpc.reflection.v1alpha` over `ch`, sorted.
async fn v1alpha_services(
    ch: &Channel,
    token: Option<&str>,
    trace: &str,
) -> Result<Vec<String>, tonic::Status> {
    let call = reflection_v1alpha(ch, |req| traced(req, token, trace));
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .expect("reflection call timed out")
}

/// v1alpha reflection on the secured service sits behind the whole stack, as v1 does: an
/// admin with certificate and token gets the list (audited as allowed); without the token the
/// call is refused and audited with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_goes_through_the_security_stack() {
    tokio::time::timeout(TEST_LIMIT, reflection_v1alpha_secured())
        .await
        .expect("test exceeded its time limit");
}

async fn reflection_v1alpha_secured() {
    const RPC: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
    let fx = Fixture::without_policy();
    let alice = fx.client("alice");
    fx.write_policy(&policy(&[open("alice")], &[]));
    let svc = start_service(&fx);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let token = fx.token("alice", &alice);

    let before = audit_records(&fx.audit_dir).len();
    let names = v1alpha_services(&ch, Some(&token), &trace_id(1))
        .await
        .unwrap_or_else(|st| panic!("refused: {st:?}\n{}", tail(&fx.log_text(0), 30)));
    for want in [
        "orlysync.negentropy.v1.NegentropyService",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }
    let recs = new_records(&fx.audit_dir, before, 1).await;
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(
        recs[0].get("allowed"),
        Some(&Value::Bool(true)),
        "{recs:#?}"
    );
    assert_eq!(s(&recs[0], "rpc"), RPC, "{recs:#?}");
    assert_eq!(s(&recs[0], "admin"), "alice", "{recs:#?}");

    let before = audit_records(&fx.audit_dir).len();
    let trace = trace_id(2);
    let st = v1alpha_services(&ch, None, &trace)
        .await
        .expect_err("v1alpha reflection without a token");
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    let recs = new_records(&fx.audit_dir, before, 1).await;
    one_refusal_traced(&recs, "token required", Some(&trace), Some("alice")).unwrap();
    assert_eq!(s(&recs[0], "rpc"), RPC, "{recs:#?}");
}
