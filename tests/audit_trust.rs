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
use common::*;

use futures_util::StreamExt;
use orly::auth::{IssuedCert, MintRequest, TestPki, TokenSigningKey};
use orly::gateway::{TOKEN_AUDIENCE, TOKEN_ISSUER};
use orly::proto::orlysync::negentropy::v1 as npb;
use orly::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Bound on one gRPC call (including reading its whole stream).
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(300);
/// Bound on a service announcing its address.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long an expected audit record may take to appear.
const AUDIT_WAIT: Duration = Duration::from_secs(10);

const SYNC_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/SyncWithPeer";

/// The growth of the log per refused call that the test holds the service to: the documented
/// bound on one record.
const PER_CALL_BOUND: u64 = orly::audit::MAX_RECORD_BYTES as u64;

/// Environment variables the service reads; removed from every spawn so the test's own
/// environment cannot leak in.
const SERVICE_ENV: [&str; 10] = [
    "ORLY_TLS_CERT",
    "ORLY_TLS_KEY",
    "ORLY_TLS_CLIENT_CA",
    "ORLY_TLS_CRL",
    "ORLY_POLICY",
    "ORLY_TOKEN_KEYS",
    "ORLY_AUDIT_DIR",
    "ORLY_AUDIT_KEY",
    "ORLY_DATA_DIR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    pki: TestPki,
    ca_pem: String,
    token_key: TokenSigningKey,
    audit_dir: PathBuf,
    audit_pub: PathBuf,
}

impl Fixture {
    /// PKI, token and audit keys, and a policy: `alice` may sync with any peer in any
    /// direction; `bob` only down from one relay.
    fn new() -> Self {
        orly::init_crypto();
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let pki = TestPki::new().expect("test CA");
        let ca_pem = pki.ca_cert_pem();
        let server = pki.issue_localhost_server().expect("server cert");
        std::fs::write(root.join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(root.join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(root.join("server.key"), &server.key_pem).unwrap();
        let pair = orly::auth::generate_ed25519_pem_pair().expect("token key pair");
        std::fs::write(root.join("token.pub"), &pair.public_pem).unwrap();
        let token_key = TokenSigningKey::from_pkcs8_pem(&pair.private_pem).expect("token key");
        orly::audit::write_key_pair(&root.join("audit.key"), &root.join("audit.pub"))
            .expect("audit key pair");
        let mut policy = String::from(
            "[service]\nper_ip_rate_per_minute = 100000\nper_ip_burst = 10000\n\
             max_concurrent_total = 16\n",
        );
        for (name, peers, directions) in [
            ("alice", "\"*\"", "\"both\""),
            ("bob", "\"wss://relay.example.com/\"", "\"down\""),
        ] {
            policy.push_str(&format!(
                "\n[[admin]]\nname = \"{name}\"\nidentities = [\"spiffe://orly.local/admin/{name}\"]\n\
                 peers = [{peers}]\ndirections = [{directions}]\nmax_events_per_sync = 1000000\n\
                 rate_per_minute = 100000\nburst = 10000\nmax_concurrent = 8\n"
            ));
        }
        std::fs::write(root.join("policy.toml"), policy).unwrap();
        Fixture {
            audit_pub: root.join("audit.pub"),
            audit_dir: root.join("audit"),
            pki,
            ca_pem,
            token_key,
            root,
            _tmp: tmp,
        }
    }

    fn client(&self, name: &str) -> IssuedCert {
        self.pki.issue_client(name).expect("client cert")
    }

    fn token(&self, admin: &str, cert: &IssuedCert) -> String {
        orly::auth::mint(
            &self.token_key,
            &MintRequest {
                issuer: TOKEN_ISSUER,
                audience: TOKEN_AUDIENCE,
                admin,
                ttl: Duration::from_secs(3600),
                cert_der: Some(cert.cert_der.as_slice()),
                now: SystemTime::now(),
            },
        )
        .expect("mint")
    }

    /// Starts the service (stderr to `service-N.log`); waits (bounded) for its address.
    fn start(&self, n: u32) -> Proc {
        let p = |f: &str| self.root.join(f).display().to_string();
        let log = self.root.join(format!("service-{n}.log"));
        let mut cmd = Command::new(bin("orly-sync-negentropy"));
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir", &p("store")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create service log"));
        for k in SERVICE_ENV {
            cmd.env_remove(k);
        }
        cmd.env("RUST_LOG", "info,fjall=warn,lsm_tree=warn,h2=warn")
            .env("ORLY_TLS_CERT", p("server.pem"))
            .env("ORLY_TLS_KEY", p("server.key"))
            .env("ORLY_TLS_CLIENT_CA", p("ca.pem"))
            .env("ORLY_POLICY", p("policy.toml"))
            .env("ORLY_TOKEN_KEYS", p("token.pub"))
            .env("ORLY_AUDIT_DIR", self.audit_dir.display().to_string())
            .env("ORLY_AUDIT_KEY", p("audit.key"));
        let mut child = cmd.spawn().expect("spawn orly-sync-negentropy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line.clone());
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                line.clear();
            }
        });
        let line = rx.recv_timeout(START_LIMIT).unwrap_or_default();
        match line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|_| line.contains("listening on"))
        {
            Some(addr) => Proc {
                child,
                addr: addr.to_string(),
                name: "orly-sync-negentropy",
            },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "service did not announce its address (got {line:?}); log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    fn verify(&self, dir: &Path) -> (i32, String) {
        let (code, out, err) = orly(&[
            "audit",
            "verify",
            dir.to_str().unwrap(),
            "--pubkey",
            self.audit_pub.to_str().unwrap(),
        ]);
        (code, format!("{out}{err}"))
    }
}

async fn connect(addr: &str, ca_pem: &str, cert: &IssuedCert) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem))
        .domain_name("localhost");
    let ep = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .expect("client TLS config")
        .connect_timeout(Duration::from_secs(5));
    tokio::time::timeout(CALL_LIMIT, ep.connect())
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

fn request<T>(body: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("token is ASCII"),
    );
    r
}

fn sync_req(peer: &str, direction: npb::Direction, timeout: u32) -> npb::SyncPeerRequest {
    npb::SyncPeerRequest {
        peer_url: peer.to_string(),
        direction: direction as i32,
        timeout_seconds: timeout,
        ..Default::default()
    }
}

/// One SyncWithPeer call, read to its end (bounded).
async fn sync_call(
    ch: &Channel,
    token: &str,
    body: npb::SyncPeerRequest,
) -> Result<Vec<npb::SyncProgress>, tonic::Status> {
    let mut c = NegentropyServiceClient::new(ch.clone())
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20);
    tokio::time::timeout(CALL_LIMIT, async move {
        let mut stream = c.sync_with_peer(request(body, token)).await?.into_inner();
        let mut all = Vec::new();
        while let Some(m) = stream.message().await? {
            all.push(m);
        }
        Ok(all)
    })
    .await
    .expect("SyncWithPeer call timed out")
}

async fn list_syncs(ch: &Channel, token: &str) -> Result<(), tonic::Status> {
    let mut c = NegentropyServiceClient::new(ch.clone());
    tokio::time::timeout(
        CALL_LIMIT,
        c.list_syncs(request(npb::ListSyncsRequest {}, token)),
    )
    .await
    .expect("ListSyncs timed out")
    .map(|_| ())
}

/// A relay that completes the WebSocket handshake and then never answers: a sync against it
/// stays open until its reply timeout or until the caller goes away.
async fn stalling_relay() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            });
        }
    });
    (addr, h)
}

/// Segments of `dir`, sorted.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every complete record in `dir`'s segments, in order.
fn audit_records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for f in segments(dir) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            out.push(serde_json::from_str(line.trim_end()).expect("audit line is JSON"));
        }
    }
    out
}

/// Total bytes of the segments.
fn log_bytes(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(e.path()).unwrap_or_default(),
        ));
    }
    text
}

/// Waits (bounded) until `pred` holds for the records of `dir`.
async fn wait_records(dir: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let recs = audit_records(dir);
        if pred(&recs) {
            return recs;
        }
        assert!(
            start.elapsed() < AUDIT_WAIT,
            "timed out waiting for {what}; records:\n{}",
            recs.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

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
