//! The sync service's life cycle (issue 13 §3), against the real `orly-sync-negentropy` on
//! 127.0.0.1 port 0 with real TLS, tokens, policy and audit log:
//!
//! - SIGTERM during a running sync: the sync is cancelled, its finished record is written, and
//!   only then the final checkpoint — which lists no open sync; `orly audit verify` reports none
//!   interrupted;
//! - SIGHUP reloads the token keys (as it reloads TLS files and the policy), even when the key
//!   file's size and modification time did not change;
//! - a service started with several configuration problems names every one of them, not only
//!   the first, and exits 1 without listening (issue 13 §4).
//!
//! Every wait is bounded; nothing binds anything but 127.0.0.1 port 0.

mod common;
#[path = "common/gateway.rs"]
mod gateway;
use gateway::*;

use orly::auth::{MintRequest, TokenSigningKey};
use orly::gateway::{TOKEN_AUDIENCE, TOKEN_ISSUER};
use orly::proto::orlysync::negentropy::v1 as npb;
use serde_json::Value;
use std::time::{Duration, SystemTime};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_running_at_sigterm_is_recorded_finished_before_the_final_checkpoint() {
    tokio::time::timeout(TEST_LIMIT, running_at_sigterm())
        .await
        .expect("test exceeded its time limit");
}

async fn running_at_sigterm() {
    let fx = Fixture::new();
    let (relay_addr, relay_task) = stalling_relay().await;
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let alice = fx.client("alice");
    let token = fx.token("alice", &alice);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    // A sync that would stay open for two minutes against the stalling relay.
    let peer = format!("ws://{relay_addr}/");
    let call = tokio::spawn(async move {
        sync_call(&ch, &token, sync_req(&peer, npb::Direction::Down, 120)).await
    });
    let is_start = |r: &Value| {
        s(r, "rpc") == SYNC_PATH
            && r.get("allowed") == Some(&Value::Bool(true))
            && s(r, "peer").contains(&relay_addr)
    };
    let recs = wait_records(&fx.audit_dir, "the allow record", |r| {
        r.iter().any(is_start)
    })
    .await;
    let seq = recs
        .iter()
        .find(|r| is_start(r))
        .and_then(|r| r["seq"].as_u64())
        .expect("seq");

    let status = tokio::task::block_in_place(|| svc.terminate());
    assert!(
        status.success(),
        "the service did not stop cleanly: {status:?}\n{}",
        fx.log_text(1)
    );
    // The caller got its final message: cancelled, with the reason.
    let got = call.await.expect("call task");
    relay_task.abort();
    let last = got
        .expect("the caller's stream ended with a final message, not an error")
        .pop()
        .expect("a final message");
    assert!(!last.complete, "{last:?}");
    assert_eq!(last.error_kind, "cancelled", "{last:?}");
    assert!(last.error.contains("stopping"), "{last:?}");

    let recs = audit_records(&fx.audit_dir);
    let shown = || {
        recs.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let finished = recs
        .iter()
        .position(|r| s(r, "event") == "sync_finished" && r["decision_seq"].as_u64() == Some(seq))
        .unwrap_or_else(|| panic!("no finished record for seq {seq}:\n{}", shown()));
    let last = recs.last().expect("records");
    assert!(
        last.get("checkpoint").is_some_and(|c| !c.is_null()),
        "the log does not end with a checkpoint:\n{}",
        shown()
    );
    assert!(
        finished < recs.len() - 1,
        "the finished record came after the final checkpoint:\n{}",
        shown()
    );
    assert!(
        last["checkpoint"]
            .get("open_syncs")
            .is_none_or(|o| o.as_array().is_some_and(Vec::is_empty)),
        "the final checkpoint lists open syncs: {last}"
    );
    let (code, out) = fx.verify(&fx.audit_dir);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("interrupted syncs ("), "{out}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_token_keys() {
    tokio::time::timeout(TEST_LIMIT, token_keys_on_sighup())
        .await
        .expect("test exceeded its time limit");
}

#[cfg(unix)]
async fn token_keys_on_sighup() {
    let fx = Fixture::new();
    let svc = tokio::task::block_in_place(|| fx.start(1));
    let alice = fx.client("alice");
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    list_syncs(&ch, &fx.token("alice", &alice))
        .await
        .expect("the first key works");

    // A new key pair, written over the old public key in place, with the file's size and
    // modification time unchanged: only SIGHUP can tell the service.
    let keys = fx.root.join("token.pub");
    let mtime = std::fs::metadata(&keys)
        .and_then(|m| m.modified())
        .expect("mtime");
    let pair = orly::auth::generate_ed25519_pem_pair().expect("key pair");
    assert_eq!(
        pair.public_pem.len() as u64,
        std::fs::metadata(&keys).expect("len").len(),
        "Ed25519 public keys in PEM have one length"
    );
    std::fs::write(&keys, &pair.public_pem).expect("write keys");
    std::fs::File::options()
        .write(true)
        .open(&keys)
        .and_then(|f| f.set_modified(mtime))
        .expect("restore mtime");
    let key = TokenSigningKey::from_pkcs8_pem(&pair.private_pem).expect("signing key");
    let new_token = orly::auth::mint(
        &key,
        &MintRequest {
            issuer: TOKEN_ISSUER,
            audience: TOKEN_AUDIENCE,
            admin: "alice",
            ttl: Duration::from_secs(3600),
            cert_der: Some(alice.cert_der.as_slice()),
            now: SystemTime::now(),
        },
    )
    .expect("mint");

    // More than one poll later, the file watch has seen nothing: the new key is unknown.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let st = list_syncs(&ch, &new_token)
        .await
        .expect_err("a token of a key not yet loaded was accepted");
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");

    let hup = std::process::Command::new("kill")
        .args(["-HUP", &svc.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match list_syncs(&ch, &new_token).await {
            Ok(_) => break,
            Err(st) => {
                assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "token keys not reloaded on SIGHUP; log:\n{}",
                    fx.log_text(1)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let status = tokio::task::block_in_place(|| svc.terminate());
    assert!(status.success(), "{status:?}");
}

/// Runs `bin` with `args` and only `envs` of the ORLY_* variables; (exit code, stderr). Bounded.
fn refused_start(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = std::process::Command::new(common::bin(bin));
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("ORLY_") || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return (status.code().unwrap_or(-1), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} did not exit on a bad configuration");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_configuration_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let store = store.to_str().expect("utf-8");
    /// A binary, its flags and variables, and what its error must name.
    type Row<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let rows: [Row<'_>; 3] = [
        (
            "orly-sync-negentropy",
            vec!["--data-dir", store],
            vec![
                ("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN", "0.0.0.0:0"),
                ("ORLY_DB_TYPE", "sqlite"),
                ("ORLY_SYNC_AUTH_KEY", "not a key"),
            ],
            vec![
                "ORLY_DB_TYPE must be fjall, grpc or postgres",
                "ORLY_SYNC_AUTH_KEY:",
                "refusing to listen on non-loopback 0.0.0.0:0",
            ],
        ),
        (
            "orly-relay",
            vec!["--data-dir", store, "--auth-pubkey", "nothex"],
            vec![("ORLY_RELAY_LISTEN", "nowhere"), ("ORLY_DB_TYPE", "grpc")],
            vec![
                "ORLY_RELAY_LISTEN/--listen",
                "ORLY_GRPC_SERVER",
                "--auth-pubkey nothex",
            ],
        ),
        (
            "orly-db",
            vec!["--data-dir", store, "--listen", "0.0.0.0:0"],
            vec![("ORLY_DB_TOKEN", "short")],
            vec![
                "refusing to listen on 0.0.0.0:0",
                "ORLY_DB_TOKEN must be at least",
            ],
        ),
    ];
    for (bin, args, envs, wanted) in rows {
        let (code, err) = refused_start(bin, &args, &envs);
        assert_eq!(code, 1, "{bin}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{bin} did not report {w:?}:\n{err}");
        }
        assert!(
            !std::path::Path::new(store).exists(),
            "{bin} opened the store before its configuration was valid"
        );
    }
}
