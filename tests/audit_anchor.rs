//! Public audit anchors (issue 18), end to end with real processes and real relays on
//! 127.0.0.1 port 0: the secured `orly-sync-negentropy` publishes an anchor per checkpoint to an
//! `orly-relay` (which demands NIP-42 AUTH for writes) and to a nostr-relay-builder relay (code
//! nobody here wrote); `orly audit verify --anchors` passes against each; a log rewritten and
//! re-signed with the right audit key passes local verify but not the anchors, which name the
//! first rewritten checkpoint; a truncated log is named by its missing seqs; with every anchor
//! relay down the service keeps serving, health and the backlog gauge (OTLP, to a collector in
//! the test) show the backlog, and the anchors go out once a relay is back. Every wait is bounded.

mod common;
#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/nrb.rs"]
mod nrb;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Keys, Proc, orly, relay};
use ed25519_dalek::{Signer, SigningKey};
use gateway::*;
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use nostr_sdk::prelude::{Filter as NFilter, Kind as NKind, NostrDatabase};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const KIND: u16 = orly::audit::anchor::ANCHOR_KIND;
/// Bound on waiting for anchors or health to change.
const ANCHOR_WAIT: Duration = Duration::from_secs(90);

/// The anchoring key, its file, and its public key in hex.
fn anchor_key(fx: &Fixture) -> (PathBuf, String) {
    let keys = Keys::from_seed(b"audit-anchor-test", 0);
    let path = fx.root.join("anchor.key");
    // The secret of `from_seed(seed, 0)`, counter 0, is sha256(seed || 0u64 || 0u32).
    let mut h = Sha256::new();
    h.update(b"audit-anchor-test");
    h.update(0u64.to_be_bytes());
    h.update(0u32.to_be_bytes());
    let secret: [u8; 32] = h.finalize().into();
    assert_eq!(
        Keys::from_secret(secret).expect("valid").pubkey,
        keys.pubkey,
        "the test derives the seed key's secret"
    );
    std::fs::write(&path, format!("{}\n", hex::encode(secret))).unwrap();
    (path, hex::encode(keys.pubkey))
}

/// Starts the service with anchoring to `relays`, a forced checkpoint every second.
fn start_anchoring(fx: &Fixture, n: u32, key: &Path, relays: &[&str]) -> Proc {
    start_anchoring_env(fx, n, key, relays, &[])
}

fn start_anchoring_env(
    fx: &Fixture,
    n: u32,
    key: &Path,
    relays: &[&str],
    envs: &[(&str, &str)],
) -> Proc {
    let mut cmd = fx.command(n, "info,fjall=warn,lsm_tree=warn,h2=warn");
    cmd.args(["--audit-anchor-interval", "1"])
        .env("ORLY_AUDIT_ANCHOR_KEY", key)
        .env("ORLY_AUDIT_ANCHOR_RELAYS", relays.join(","))
        .envs(envs.iter().copied());
    let child = cmd.spawn().expect("spawn orly-sync-negentropy");
    match common::announced(child, "orly-sync-negentropy", START_LIMIT) {
        Ok(proc) => proc,
        Err((mut child, line)) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("service did not start: {line:?}; log:\n{}", fx.log_text(n));
        }
    }
}

/// Audited calls in three rounds a bit over a second apart: each round is followed by a
/// forced checkpoint, so the log ends up with several checkpoints with records between them.
async fn write_records(fx: &Fixture, svc: &Proc) {
    let alice = fx.client("alice");
    let token = fx.token("alice", &alice);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
    for _ in 0..3 {
        for _ in 0..2 {
            list_syncs(&ch, &token).await.expect("ListSyncs is served");
        }
        tokio::time::sleep(Duration::from_millis(1600)).await;
    }
}

/// `orly audit verify --anchors` (off the runtime's threads: a relay may live in this runtime).
fn verify_anchors(fx: &Fixture, dir: &Path, relays: &[&str], anchor_pub: &str) -> (i32, String) {
    let run = || {
        orly(&[
            "audit",
            "verify",
            dir.to_str().unwrap(),
            "--pubkey",
            fx.audit_pub.to_str().unwrap(),
            "--anchors",
            &relays.join(","),
            "--anchor-pubkey",
            anchor_pub,
        ])
    };
    let (code, out, err) = tokio::task::block_in_place(run);
    (code, format!("{out}{err}"))
}

fn checkpoint_seqs(dir: &Path) -> Vec<u64> {
    audit_records(dir)
        .iter()
        .filter(|r| r["event"] == "checkpoint")
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect()
}

/// Anchor contents held by the nostr-relay-builder relay.
async fn nrb_anchors(db: &nostr_sdk::prelude::MemoryDatabase) -> Vec<Value> {
    db.query(NFilter::new().kind(NKind::from(KIND)))
        .await
        .expect("query")
        .into_iter()
        .map(|e| serde_json::from_str(&e.content).expect("anchor content is JSON"))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        if name != "LOCK" {
            std::fs::copy(e.path(), to.join(name)).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A forger with the audit key (what an insider with file access and the key can do): lines are
// rewritten as text and re-signed exactly as SECURITY.md documents the signatures.
// ---------------------------------------------------------------------------------------------

fn sign_b64(key: &SigningKey, msg: &str) -> String {
    STANDARD.encode(key.sign(msg.as_bytes()).to_bytes())
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Re-signs the log in `dir` (one segment) keeping only records up to `keep`, with `edit`
/// applied to each record's body before it is re-chained; then re-signs `HEAD.json`.
fn forge(dir: &Path, key: &SigningKey, keep: u64, edit: impl Fn(u64, String) -> String) {
    let segs = segments(dir);
    assert_eq!(segs.len(), 1, "the test log has one segment");
    let text = std::fs::read_to_string(&segs[0]).unwrap();
    let mut out = String::new();
    let (mut old_prev, mut new_prev) = (String::new(), String::new());
    let mut last = (0u64, String::new());
    for line in text.lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        let seq = rec["seq"].as_u64().unwrap();
        if seq > keep {
            break;
        }
        let sig = rec["sig"].as_str().expect("signed record");
        let suffix = format!(",\"sig\":\"{sig}\"}}");
        let mut body = line.strip_suffix(&suffix).expect("sig is last").to_string() + "}";
        if !old_prev.is_empty() && old_prev != new_prev {
            body = body.replace(&old_prev, &new_prev);
            if let Some(cp_sig) = rec["checkpoint"]["sig"].as_str() {
                let msg = format!("orly-audit-checkpoint\n{}\n{new_prev}", seq - 1);
                body = body.replace(cp_sig, &sign_b64(key, &msg));
            }
        }
        body = edit(seq, body);
        let rsig = sign_b64(
            key,
            &format!("orly-audit-record\n{}", sha_hex(body.as_bytes())),
        );
        let new_line = format!("{},\"sig\":\"{rsig}\"}}", &body[..body.len() - 1]);
        old_prev = sha_hex(line.as_bytes());
        new_prev = sha_hex(new_line.as_bytes());
        last = (seq, new_prev.clone());
        out.push_str(&new_line);
        out.push('\n');
    }
    std::fs::write(&segs[0], out).unwrap();
    let head_path = dir.join("HEAD.json");
    let mut head: Value = serde_json::from_slice(&std::fs::read(&head_path).unwrap()).unwrap();
    head["seq"] = last.0.into();
    head["hash"] = last.1.clone().into();
    head["sig"] = sign_b64(key, &format!("orly-audit-head\n{}\n{}", last.0, last.1)).into();
    std::fs::write(&head_path, serde_json::to_vec(&head).unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchors_on_two_relays_verify_and_catch_a_rewritten_or_truncated_log() {
    tokio::time::timeout(TEST_LIMIT, anchored_then_forged())
        .await
        .expect("test exceeded its time limit");
}

async fn anchored_then_forged() {
    let fx = Fixture::new();
    let (key, anchor_pub) = anchor_key(&fx);
    let store = tempfile::tempdir().unwrap();
    // orly-relay takes writes only from the anchoring key after NIP-42 AUTH.
    let orly_relay = tokio::task::block_in_place(|| {
        relay(
            store.path(),
            &["--auth-write", "--auth-pubkey", &anchor_pub],
        )
    });
    let orly_url = format!("ws://{}", orly_relay.addr);
    let nrb = nrb::local_relay(&[], nrb::no_rate_limit()).await;
    let relays = [orly_url.as_str(), nrb.url.as_str()];

    // Two runs of the service: the second continues the anchor chain of the first.
    for run in 1..=2 {
        let svc = tokio::task::block_in_place(|| start_anchoring(&fx, run, &key, &relays));
        write_records(&fx, &svc).await;
        let status = tokio::task::block_in_place(|| svc.terminate());
        assert!(
            status.success(),
            "run {run}: {status:?}; log:\n{}",
            fx.log_text(run)
        );
    }
    let cps = checkpoint_seqs(&fx.audit_dir);
    assert!(cps.len() >= 6, "checkpoints: {cps:?}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(fx.audit_dir.join("ANCHORS.json")).unwrap()).unwrap();
    assert_eq!(state["pending"], serde_json::json!([]), "{state}");

    // Every checkpoint anchored exactly once, in one chain (one first anchor), on the relay
    // nobody here wrote.
    let anchors = nrb_anchors(&nrb.db).await;
    let mut seqs: Vec<u64> = anchors.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs, cps,
        "one anchor per checkpoint, none twice across the restart"
    );
    let firsts = anchors.iter().filter(|a| a["prev"].is_null()).count();
    assert_eq!(
        firsts, 1,
        "the restart kept the previous anchor id: {anchors:?}"
    );

    for relays in [&relays[..1], &relays[1..], &relays[..]] {
        let (code, out) = verify_anchors(&fx, &fx.audit_dir, relays, &anchor_pub);
        assert_eq!(code, 0, "{relays:?}: {out}");
        assert!(
            out.contains(&format!(
                "{} of {} checkpoints anchored",
                cps.len(),
                cps.len()
            )),
            "{out}"
        );
    }
    // Another anchoring key's anchors are none of this log's.
    let stranger = hex::encode(Keys::from_seed(b"stranger", 0).pubkey);
    let (code, out) = verify_anchors(&fx, &fx.audit_dir, &relays, &stranger);
    assert_eq!(code, 4, "{out}");

    let audit_key = orly::audit::load_signing_key(&fx.root.join("audit.key")).unwrap();

    // The whole log rewritten from the record after the first checkpoint on, re-signed with
    // the right key: local verify passes, the anchors name the next checkpoint.
    let rewritten = fx.root.join("rewritten");
    copy_dir(&fx.audit_dir, &rewritten);
    let target = cps[0] + 1;
    forge(&rewritten, &audit_key, u64::MAX, |seq, body| {
        if seq == target {
            let edited = body.replace("\"admin\":\"alice\"", "\"admin\":\"mallory\"");
            assert_ne!(edited, body, "record {target} names alice");
            edited
        } else {
            body
        }
    });
    let (code, out) = fx.verify(&rewritten);
    assert_eq!(code, 0, "the forgery passes local verify: {out}");
    let (code, out) = verify_anchors(&fx, &rewritten, &relays, &anchor_pub);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("the first rewritten checkpoint is seq {}", cps[1])),
        "{out}"
    );

    // Truncated after the first checkpoint and one record, head re-signed: local verify
    // passes, the anchors name the seqs the log no longer has.
    let truncated = fx.root.join("truncated");
    copy_dir(&fx.audit_dir, &truncated);
    let keep = cps[0] + 1;
    forge(&truncated, &audit_key, keep, |_, body| body);
    let (code, out) = fx.verify(&truncated);
    assert_eq!(code, 0, "the truncated log passes local verify: {out}");
    let (code, out) = verify_anchors(&fx, &truncated, &relays, &anchor_pub);
    assert_eq!(code, 3, "{out}");
    let last = cps[cps.len() - 1];
    assert!(
        out.contains(&format!(
            "the log ends at seq {keep}: the log no longer has seq {} to {last}",
            keep + 1
        )),
        "{out}"
    );
    let missing: Vec<String> = cps[1..].iter().map(u64::to_string).collect();
    assert!(
        out.contains(&format!("anchors for seq {}", missing.join(", "))),
        "{out}"
    );

    // A relay nobody listens on: exit 5.
    let (code, out) = verify_anchors(&fx, &fx.audit_dir, &["ws://127.0.0.1:9"], &anchor_pub);
    assert_eq!(code, 5, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_anchor_relay_down_the_service_serves_and_reports_the_backlog() {
    tokio::time::timeout(TEST_LIMIT, relays_down())
        .await
        .expect("test exceeded its time limit");
}

async fn anchor_health(ch: &tonic::transport::Channel, service: &str) -> i32 {
    HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

async fn wait_health(ch: &tonic::transport::Channel, want: ServingStatus, fx: &Fixture) {
    let start = Instant::now();
    loop {
        if anchor_health(ch, "orly.audit.anchor").await == want as i32 {
            return;
        }
        assert!(
            start.elapsed() < ANCHOR_WAIT,
            "anchor health never became {want:?}; log:\n{}",
            fx.log_text(1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An OTLP metrics collector in the test process: every value of the anchor backlog gauge.
#[derive(Clone, Default)]
struct BacklogGauge(Arc<Mutex<Vec<i64>>>);

#[tonic::async_trait]
impl MetricsService for BacklogGauge {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            for m in rm.scope_metrics.into_iter().flat_map(|sm| sm.metrics) {
                if m.name != "orly.audit.anchor.backlog" {
                    continue;
                }
                if let Some(metric::Data::Gauge(g)) = m.data {
                    for p in g.data_points {
                        if let Some(number_data_point::Value::AsInt(v)) = p.value {
                            seen.push(v);
                        }
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

async fn relays_down() {
    let fx = Fixture::new();
    let (key, anchor_pub) = anchor_key(&fx);
    let gauge = BacklogGauge::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", otlp.local_addr().unwrap());
    let collector = {
        let g = gauge.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(MetricsServiceServer::new(g))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp))
                .await;
        })
    };
    // A relay that is down: its port is held, nothing answers (the connection is never
    // accepted), until the relay below takes over the same listener.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
    ];
    let svc = tokio::task::block_in_place(|| start_anchoring_env(&fx, 1, &key, &[&url], &otel));
    let alice = fx.client("alice");
    let token = fx.token("alice", &alice);
    let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;

    list_syncs(&ch, &token).await.expect("served");
    wait_health(&ch, ServingStatus::NotServing, &fx).await;
    // Evidence, not a gate: calls are served and the service's own health stays SERVING.
    for _ in 0..3 {
        list_syncs(&ch, &token)
            .await
            .expect("served while anchors are backlogged");
    }
    assert_eq!(
        anchor_health(&ch, "orlysync.negentropy.v1.NegentropyService").await,
        ServingStatus::Serving as i32
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(fx.audit_dir.join("ANCHORS.json")).unwrap()).unwrap();
    assert!(
        !state["pending"].as_array().unwrap().is_empty(),
        "the backlog is kept on disk: {state}"
    );
    wait_gauge(&gauge, "a backlog", |v| v > 0).await;
    // At least one whole publishing round failed (the relay never answered), so what follows
    // is a retry, not the first attempt finishing late.
    let start = Instant::now();
    while !fx
        .log_text(1)
        .contains("not accepted by any relay yet; retrying with backoff")
    {
        assert!(
            start.elapsed() < ANCHOR_WAIT,
            "no failed round; log:\n{}",
            fx.log_text(1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    list_syncs(&ch, &token)
        .await
        .expect("served after a failed anchoring round");

    // The relay comes back on the same address.
    let db = nrb::memory_db();
    let relay = LocalRelay::new(
        RelayBuilder::default()
            .rate_limit(nrb::no_rate_limit())
            .database(db.clone()),
    );
    let r = relay.clone();
    let accept = tokio::spawn(async move {
        while let Ok((mut tcp, peer)) = listener.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                if let Ok(Ok(true)) =
                    tokio::time::timeout(Duration::from_secs(10), nrb::ws_handshake(&mut tcp)).await
                {
                    let _ = r.take_connection(tcp, peer).await;
                }
            });
        }
    });
    wait_health(&ch, ServingStatus::Serving, &fx).await;
    assert!(
        !nrb_anchors(&db).await.is_empty(),
        "the backlog reached the relay"
    );

    let status = tokio::task::block_in_place(|| svc.terminate());
    assert!(status.success(), "{status:?}");
    let (code, out) = verify_anchors(&fx, &fx.audit_dir, &[&url], &anchor_pub);
    assert_eq!(code, 0, "{out}");
    accept.abort();
    collector.abort();
    relay.shutdown();
}

/// Waits (bounded) until the last exported value of the backlog gauge satisfies `pred`.
async fn wait_gauge(gauge: &BacklogGauge, what: &str, pred: impl Fn(i64) -> bool) {
    let start = Instant::now();
    loop {
        let last = gauge.0.lock().unwrap().last().copied();
        if last.is_some_and(&pred) {
            return;
        }
        assert!(
            start.elapsed() < ANCHOR_WAIT,
            "the backlog gauge never showed {what}: {:?}",
            gauge.0.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_without_anchors_is_anchored_by_hand() {
    tokio::time::timeout(TEST_LIMIT, by_hand())
        .await
        .expect("test exceeded its time limit");
}

/// `orly audit anchor` (off the runtime's threads).
fn anchor_by_hand(fx: &Fixture, dir: &Path, key: &Path, relay: &str) -> (i32, String) {
    let run = || {
        orly(&[
            "audit",
            "anchor",
            dir.to_str().unwrap(),
            "--pubkey",
            fx.audit_pub.to_str().unwrap(),
            "--anchor-key",
            key.to_str().unwrap(),
            "--relays",
            relay,
        ])
    };
    let (code, out, err) = tokio::task::block_in_place(run);
    (code, format!("{out}{err}"))
}

async fn by_hand() {
    let fx = Fixture::new();
    let (key, anchor_pub) = anchor_key(&fx);
    let nrb = nrb::local_relay(&[], nrb::no_rate_limit()).await;
    // Two runs without anchoring: each ends with its shutdown checkpoint.
    for run in 1..=2 {
        let svc = tokio::task::block_in_place(|| fx.start(run));
        let alice = fx.client("alice");
        let token = fx.token("alice", &alice);
        let ch = connect(&svc.addr, &fx.ca_pem, &alice).await;
        list_syncs(&ch, &token).await.expect("served");
        let status = tokio::task::block_in_place(|| svc.terminate());
        assert!(status.success(), "{status:?}");
    }
    let cps = checkpoint_seqs(&fx.audit_dir);
    assert_eq!(cps.len(), 2, "{cps:?}");
    let relays = [nrb.url.as_str()];
    let (code, out) = verify_anchors(&fx, &fx.audit_dir, &relays, &anchor_pub);
    assert_eq!(code, 4, "nothing anchored yet: {out}");
    assert!(
        out.contains(&format!(
            "checkpoints without an anchor: seq {}, {}",
            cps[0], cps[1]
        )),
        "{out}"
    );

    let (code, out) = anchor_by_hand(&fx, &fx.audit_dir, &key, &nrb.url);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify_anchors(&fx, &fx.audit_dir, &relays, &anchor_pub);
    assert_eq!(code, 0, "{out}");
    let anchors = nrb_anchors(&nrb.db).await;
    assert_eq!(anchors.len(), 2, "{anchors:?}");
    assert_eq!(
        anchors.iter().filter(|a| a["prev"].is_null()).count(),
        1,
        "one chain"
    );

    // Again: nothing is missing, nothing is published twice.
    let (code, out) = anchor_by_hand(&fx, &fx.audit_dir, &key, &nrb.url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to publish"), "{out}");
    assert_eq!(nrb_anchors(&nrb.db).await.len(), 2);

    // A rewritten copy is not anchored over the anchors that contradict it.
    let rewritten = fx.root.join("rewritten");
    copy_dir(&fx.audit_dir, &rewritten);
    let audit_key = orly::audit::load_signing_key(&fx.root.join("audit.key")).unwrap();
    forge(&rewritten, &audit_key, u64::MAX, |seq, body| {
        if seq == 1 {
            body.replace("\"admin\":\"alice\"", "\"admin\":\"mallory\"")
        } else {
            body
        }
    });
    let (code, out) = anchor_by_hand(&fx, &rewritten, &key, &nrb.url);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("nothing published"), "{out}");
    assert_eq!(nrb_anchors(&nrb.db).await.len(), 2);
}
