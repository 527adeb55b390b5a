//! A secured `orly-sync-negentropy` for tests of the audit log and of the boundary between
//! admins: a test PKI (rcgen), token and audit keys, a policy file, the real binary on 127.0.0.1
//! port 0, tonic clients with real TLS, raw gRPC calls (any bytes as the message), and readers of
//! the audit directory. Included by `#[path]` from the tests that need it, beside `common`.
#![allow(dead_code)]

use crate::common::{Proc, bin, orly};
use futures_util::StreamExt;
use orly::auth::{IssuedCert, MintRequest, TestPki, TokenSigningKey};
use orly::auth::{TOKEN_AUDIENCE, TOKEN_ISSUER};
use orly::proto::orlysync::negentropy::v1 as npb;
use orly::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use prost::bytes::{Buf, BufMut};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Bound on one gRPC call (including reading its whole stream).
pub const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Bound on a whole test.
pub const TEST_LIMIT: Duration = Duration::from_secs(300);
/// Bound on a service announcing its address.
pub const START_LIMIT: Duration = Duration::from_secs(60);
/// How long an expected audit record may take to appear.
pub const AUDIT_WAIT: Duration = Duration::from_secs(10);
/// After the expected records appeared: how long to keep watching for extra ones.
pub const AUDIT_SETTLE: Duration = Duration::from_millis(400);

pub const SERVICE: &str = "/orlysync.negentropy.v1.NegentropyService/";
pub const SYNC_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/SyncWithPeer";
pub const LIST_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/ListSyncs";
pub const STATUS_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/GetSyncStatus";
pub const CANCEL_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/CancelSync";

/// Environment variables the service reads; removed from every spawn so the test's own
/// environment cannot leak in.
pub const SERVICE_ENV: [&str; 14] = [
    "ORLY_TLS_CERT",
    "ORLY_TLS_KEY",
    "ORLY_TLS_CLIENT_CA",
    "ORLY_TLS_CRL",
    "ORLY_POLICY",
    "ORLY_TOKEN_KEYS",
    "ORLY_AUDIT_DIR",
    "ORLY_AUDIT_KEY",
    "ORLY_DATA_DIR",
    "ORLY_DB_TYPE",
    "ORLY_GRPC_SERVER",
    "ORLY_SYNC_AUTH_KEY",
    "ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// One `[[admin]]` table of the policy.
pub struct AdminSpec<'a> {
    pub name: &'a str,
    /// The TOML list's items, e.g. `"*"` or `"wss://relay.example.com/"` (quoted).
    pub peers: &'a str,
    /// The TOML list's items, e.g. `"both"`.
    pub directions: &'a str,
    pub rate_per_minute: u32,
    pub burst: u32,
    pub max_concurrent: u32,
    /// Further lines, e.g. `role = "auditor"`.
    pub extra: &'a str,
}

impl<'a> AdminSpec<'a> {
    /// Any peer, any direction, limits no test reaches.
    pub fn open(name: &'a str) -> Self {
        Self {
            name,
            peers: "\"*\"",
            directions: "\"both\"",
            rate_per_minute: 100_000,
            burst: 10_000,
            max_concurrent: 8,
            extra: "",
        }
    }
}

/// A policy: `[service]` with the `service` lines, and limits no test reaches for the keys they
/// do not set; then `admins`.
pub fn policy_toml(service: &str, admins: &[AdminSpec<'_>]) -> String {
    let mut policy = format!("[service]\n{service}\n");
    for (key, value) in [
        ("per_ip_rate_per_minute", "100000"),
        ("per_ip_burst", "10000"),
        ("max_concurrent_total", "16"),
    ] {
        if !service.contains(key) {
            policy.push_str(&format!("{key} = {value}\n"));
        }
    }
    for a in admins {
        policy.push_str(&format!(
            "\n[[admin]]\nname = \"{}\"\nidentities = [\"spiffe://orly.local/admin/{}\"]\n\
             peers = [{}]\ndirections = [{}]\nmax_events_per_sync = 1000000\n\
             rate_per_minute = {}\nburst = {}\nmax_concurrent = {}\n{}\n",
            a.name,
            a.name,
            a.peers,
            a.directions,
            a.rate_per_minute,
            a.burst,
            a.max_concurrent,
            a.extra
        ));
    }
    policy
}

pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub pki: TestPki,
    pub ca_pem: String,
    pub token_key: TokenSigningKey,
    pub audit_dir: PathBuf,
    pub audit_pub: PathBuf,
}

impl Fixture {
    /// `alice` may sync with any peer in any direction; `bob` only down from one relay.
    pub fn new() -> Self {
        Self::with_policy(&policy_toml(
            "",
            &[
                AdminSpec::open("alice"),
                AdminSpec {
                    peers: "\"wss://relay.example.com/\"",
                    directions: "\"down\"",
                    ..AdminSpec::open("bob")
                },
            ],
        ))
    }

    /// PKI, token and audit keys, and the policy `policy`.
    pub fn with_policy(policy: &str) -> Self {
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

    pub fn client(&self, name: &str) -> IssuedCert {
        self.pki.issue_client(name).expect("client cert")
    }

    /// A token for `admin` bound to `cert`, valid for an hour from now.
    pub fn token(&self, admin: &str, cert: &IssuedCert) -> String {
        self.token_for(admin, cert, SystemTime::now(), Duration::from_secs(3600))
    }

    /// A token for `admin` bound to `cert`, issued at `now`, valid for `ttl`.
    pub fn token_for(
        &self,
        admin: &str,
        cert: &IssuedCert,
        now: SystemTime,
        ttl: Duration,
    ) -> String {
        orly::auth::mint(
            &self.token_key,
            &MintRequest {
                issuer: TOKEN_ISSUER,
                audience: TOKEN_AUDIENCE,
                admin,
                ttl,
                cert_der: Some(cert.cert_der.as_slice()),
                now,
            },
        )
        .expect("mint")
    }

    /// The service's stderr of start `n`.
    pub fn log_path(&self, n: u32) -> PathBuf {
        self.root.join(format!("service-{n}.log"))
    }

    /// The service command (stderr to `service-N.log`, stdout piped), not started.
    pub fn command(&self, n: u32, rust_log: &str) -> Command {
        let p = |f: &str| self.root.join(f).display().to_string();
        let mut cmd = Command::new(bin("orly-sync-negentropy"));
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir", &p("store")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.log_path(n)).expect("create service log"));
        for k in SERVICE_ENV {
            cmd.env_remove(k);
        }
        cmd.env("RUST_LOG", rust_log)
            .env("ORLY_LOG_FORMAT", "text")
            .env("ORLY_TLS_CERT", p("server.pem"))
            .env("ORLY_TLS_KEY", p("server.key"))
            .env("ORLY_TLS_CLIENT_CA", p("ca.pem"))
            .env("ORLY_POLICY", p("policy.toml"))
            .env("ORLY_TOKEN_KEYS", p("token.pub"))
            .env("ORLY_AUDIT_DIR", self.audit_dir.display().to_string())
            .env("ORLY_AUDIT_KEY", p("audit.key"));
        cmd
    }

    /// Starts the service; waits (bounded) for its address.
    pub fn start(&self, n: u32) -> Proc {
        self.start_logging(n, "info,fjall=warn,lsm_tree=warn,h2=warn")
    }

    /// Starts the service with `RUST_LOG=rust_log`; waits (bounded) for its address.
    pub fn start_logging(&self, n: u32, rust_log: &str) -> Proc {
        let mut child = self
            .command(n, rust_log)
            .spawn()
            .expect("spawn orly-sync-negentropy");
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
                    self.log_text(n)
                );
            }
        }
    }

    pub fn log_text(&self, n: u32) -> String {
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    pub fn verify(&self, dir: &Path) -> (i32, String) {
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

pub async fn connect(addr: &str, ca_pem: &str, cert: &IssuedCert) -> Channel {
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

pub fn request<T>(body: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("token is ASCII"),
    );
    r
}

pub fn sync_req(peer: &str, direction: npb::Direction, timeout: u32) -> npb::SyncPeerRequest {
    npb::SyncPeerRequest {
        peer_url: peer.to_string(),
        direction: direction as i32,
        timeout_seconds: timeout,
        ..Default::default()
    }
}

pub fn client(ch: &Channel) -> NegentropyServiceClient<Channel> {
    NegentropyServiceClient::new(ch.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// One SyncWithPeer call, read to its end (bounded).
pub async fn sync_call(
    ch: &Channel,
    token: &str,
    body: npb::SyncPeerRequest,
) -> Result<Vec<npb::SyncProgress>, tonic::Status> {
    let mut c = client(ch);
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

/// A SyncWithPeer call that stays open: its first progress message (or its status), and the
/// stream, which the sync follows (dropping it cancels the sync).
pub async fn sync_open(
    ch: &Channel,
    token: &str,
    body: npb::SyncPeerRequest,
) -> Result<tonic::Streaming<npb::SyncProgress>, tonic::Status> {
    let mut c = client(ch);
    tokio::time::timeout(CALL_LIMIT, c.sync_with_peer(request(body, token)))
        .await
        .expect("SyncWithPeer call timed out")
        .map(tonic::Response::into_inner)
}

pub async fn list_syncs(ch: &Channel, token: &str) -> Result<Vec<npb::SyncStatus>, tonic::Status> {
    let mut c = client(ch);
    tokio::time::timeout(
        CALL_LIMIT,
        c.list_syncs(request(npb::ListSyncsRequest {}, token)),
    )
    .await
    .expect("ListSyncs timed out")
    .map(|r| r.into_inner().syncs)
}

pub async fn sync_status(
    ch: &Channel,
    token: &str,
    sync_id: &str,
) -> Result<npb::SyncStatus, tonic::Status> {
    let mut c = client(ch);
    let body = npb::GetSyncStatusRequest {
        sync_id: sync_id.to_string(),
    };
    tokio::time::timeout(CALL_LIMIT, c.get_sync_status(request(body, token)))
        .await
        .expect("GetSyncStatus timed out")
        .map(tonic::Response::into_inner)
}

pub async fn cancel_sync(ch: &Channel, token: &str, sync_id: &str) -> Result<bool, tonic::Status> {
    let mut c = client(ch);
    let body = npb::CancelSyncRequest {
        sync_id: sync_id.to_string(),
    };
    tokio::time::timeout(CALL_LIMIT, c.cancel_sync(request(body, token)))
        .await
        .expect("CancelSync timed out")
        .map(|r| r.into_inner().cancelled)
}

/// Any bytes as gRPC messages: what a broken or hostile client can send.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A call of `path` sending `messages` as they are (none, one, several; any bytes), read to its
/// end: the number of response messages, or the status.
pub async fn raw_call(
    ch: &Channel,
    token: &str,
    path: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<usize, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    tokio::time::timeout(CALL_LIMIT, async move {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("not ready: {e}")))?;
        let req = request(tokio_stream::iter(messages), token);
        let path = http::uri::PathAndQuery::from_static(path);
        let mut stream = grpc.streaming(req, path, RawCodec).await?.into_inner();
        let mut n = 0;
        while stream.message().await?.is_some() {
            n += 1;
        }
        Ok(n)
    })
    .await
    .expect("raw call timed out")
}

/// A relay that completes the WebSocket handshake and then never answers: a sync against it
/// stays open until its reply timeout or until the caller goes away.
pub async fn stalling_relay() -> (String, tokio::task::JoinHandle<()>) {
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
pub fn segments(dir: &Path) -> Vec<PathBuf> {
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
pub fn audit_records(dir: &Path) -> Vec<Value> {
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
pub fn log_bytes(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// Every file of `dir`, as (lossy) text.
pub fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(e.path()).unwrap_or_default(),
        ));
    }
    text
}

/// Waits (bounded) until `pred` holds for the records of `dir`.
pub async fn wait_records(dir: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
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

/// Waits (bounded) for `expect` records after the first `before`, then a moment more for any
/// extra ones; returns every record after `before`.
pub async fn new_records(dir: &Path, before: usize, expect: usize) -> Vec<Value> {
    let start = Instant::now();
    while audit_records(dir).len() < before + expect && start.elapsed() < AUDIT_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(AUDIT_SETTLE).await;
    let mut all = audit_records(dir);
    all.split_off(before.min(all.len()))
}

pub fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Checks `recs` is exactly one refusal of `admin` on `rpc` whose reason contains `reason`.
pub fn one_refusal(recs: &[Value], rpc: &str, reason: &str, admin: &str) -> Result<(), String> {
    let [r] = recs else {
        return Err(format!(
            "{} new audit records, expected exactly 1: {}",
            recs.len(),
            serde_json::to_string(recs).unwrap()
        ));
    };
    let mut errs = Vec::new();
    if s(r, "event") != "decision" {
        errs.push(format!("event {:?}, expected decision", s(r, "event")));
    }
    if r.get("allowed") != Some(&Value::Bool(false)) {
        errs.push(format!("allowed = {:?}, expected false", r.get("allowed")));
    }
    if !s(r, "reason").contains(reason) {
        errs.push(format!(
            "reason {:?} does not name the cause ({reason:?})",
            s(r, "reason")
        ));
    }
    if s(r, "rpc") != rpc {
        errs.push(format!("rpc {:?}, expected {rpc:?}", s(r, "rpc")));
    }
    if s(r, "admin") != admin {
        errs.push(format!("admin {:?}, expected {admin:?}", s(r, "admin")));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; record: {r}", errs.join("; ")))
    }
}

/// `msg` framed as one gRPC message (uncompressed).
pub fn framed(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}
