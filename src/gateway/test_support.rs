//! Stand-ins for the gateway's unit tests, as linkerd2-proxy tests its layers: one check (or
//! layer) in front of an inner `tower::service_fn` that records what reached it, a real
//! [`AuditLog`] over an [`AuditChain`] in a temp directory, a policy from TOML text, and request
//! heads as the TLS accept path delivers them ([`ConnInfo`], `authorization`). No process, no
//! socket: a refusal is tested by calling the layer once and reading the status it answered and
//! the records it wrote.

use super::audit::AuditLog;
use super::tls::ConnInfo;
use crate::audit::{AuditChain, AuditEvent, AuditOptions, AuditRecord, generate_signing_key};
use crate::policy::{Policy, PolicyHandle};
use crate::service::CallInfo;
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tonic::Code;
use tonic::body::Body;
use tower::ServiceExt;
use tower::util::BoxCloneService;

/// Full path of a `NegentropyService` method.
pub(crate) fn rpc(method: &str) -> String {
    format!("/orlysync.negentropy.v1.NegentropyService/{method}")
}

/// SPIFFE identity the test PKI gives admin `name`.
pub(crate) fn spiffe(name: &str) -> String {
    format!("spiffe://orly.local/admin/{name}")
}

/// One `[[admin]]` table: `name` with its SPIFFE identity, any peer, both directions, a high
/// event cap, and `limits` (TOML lines) or limits no test reaches.
pub(crate) fn admin_toml(name: &str, lines: &str) -> String {
    let mut t = format!(
        "\n[[admin]]\nname = \"{name}\"\nidentities = [\"{}\"]\nmax_events_per_sync = 1000000\n",
        spiffe(name)
    );
    for (key, default) in [
        ("peers", "[\"*\"]"),
        ("directions", "[\"both\"]"),
        ("rate_per_minute", "100000"),
        ("burst", "10000"),
        ("max_concurrent", "8"),
    ] {
        if !lines.contains(&format!("{key} =")) {
            t.push_str(&format!("{key} = {default}\n"));
        }
    }
    t.push_str(lines);
    t.push('\n');
    t
}

/// A policy: `[service]` with `service` lines (and limits no test reaches for the others), then
/// `admins` (from [`admin_toml`]), then `tail` (e.g. a `[revoked]` table).
pub(crate) fn policy_toml(service: &str, admins: &[String], tail: &str) -> String {
    let mut t = format!("[service]\n{service}\n");
    for (key, value) in [
        ("per_ip_rate_per_minute", "100000"),
        ("per_ip_burst", "10000"),
        ("max_concurrent_total", "16"),
    ] {
        if !service.contains(&format!("{key} =")) {
            t.push_str(&format!("{key} = {value}\n"));
        }
    }
    for a in admins {
        t.push_str(a);
    }
    t.push_str(tail);
    t
}

/// A policy, an audit chain in a temp directory, and the records written so far.
pub(crate) struct Harness {
    dir: tempfile::TempDir,
    pub(crate) audit: AuditLog,
    pub(crate) policy: PolicyHandle,
    chain: Arc<AuditChain>,
    /// Records already handed out by [`Self::new_records`].
    seen: Mutex<usize>,
}

impl Harness {
    /// `policy` (TOML) and an empty, signed audit log.
    pub(crate) fn new(policy: &str) -> Self {
        crate::init_crypto();
        let dir = tempfile::tempdir().expect("tempdir");
        let parsed = Policy::from_toml_str(policy).expect("test policy parses");
        let policy = PolicyHandle::new(dir.path().join("policy.toml"), parsed);
        let key = generate_signing_key().expect("audit key");
        let opts = AuditOptions {
            checkpoint_every: 0,
            ..AuditOptions::default()
        };
        let chain =
            AuditChain::open(dir.path().join("audit"), Some(key), opts).expect("audit chain opens");
        let audit = AuditLog::new(chain);
        let chain = audit.chain_for_tests();
        let h = Self {
            dir,
            audit,
            policy,
            chain,
            seen: Mutex::new(0),
        };
        // Whatever opening the chain wrote is not a test's record.
        let _ = h.new_records();
        h
    }

    /// A path in the harness's temp directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the policy file with `policy` and reloads it, as the file watcher would.
    pub(crate) async fn reload(&self, policy: &str) {
        std::fs::write(self.policy.path(), policy).expect("write policy");
        self.policy.reload().await.expect("policy reloads");
    }

    /// Makes the next audit write fail (as a full disk would): the next record is not durable.
    pub(crate) fn break_audit(&self) {
        self.chain.inject_fault(crate::audit::Fault::PartialWrite);
    }

    /// Every decision and sync record in the log (checkpoints left out), in order.
    fn records(&self) -> Vec<AuditRecord> {
        read_records(&self.dir.path().join("audit"))
    }

    /// The records written since the last call.
    pub(crate) fn new_records(&self) -> Vec<AuditRecord> {
        let all = self.records();
        let mut seen = self.seen.lock().expect("seen");
        let fresh = all[(*seen).min(all.len())..].to_vec();
        *seen = all.len();
        fresh
    }
}

fn read_records(dir: &Path) -> Vec<AuditRecord> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("audit dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("audit segment");
        // A write that failed half-way leaves a line without its newline: not a record.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let r: AuditRecord = serde_json::from_str(line.trim_end()).expect("audit line parses");
            if !matches!(r.event, AuditEvent::Checkpoint) {
                out.push(r);
            }
        }
    }
    out
}

/// A call as the handler saw it: its [`CallInfo`] and its body bytes.
type SeenCall = (CallInfo, Vec<u8>);

/// What an inner service saw of the calls that reached it.
#[derive(Clone, Default)]
pub(crate) struct Reached {
    calls: Arc<Mutex<Vec<SeenCall>>>,
}

impl Reached {
    /// The [`CallInfo`] of every call that reached the inner service.
    pub(crate) fn calls(&self) -> Vec<CallInfo> {
        self.seen().into_iter().map(|(c, _)| c).collect()
    }

    /// The [`CallInfo`] and the body bytes of every call that reached the inner service.
    pub(crate) fn seen(&self) -> Vec<SeenCall> {
        self.calls.lock().expect("reached").clone()
    }
}

/// The inner service every layer under test wraps.
pub(crate) type Handler = BoxCloneService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The stand-in handler: records the call (its [`CallInfo`] and body) and answers OK.
pub(crate) fn inner(reached: &Reached) -> Handler {
    let calls = reached.calls.clone();
    BoxCloneService::new(tower::service_fn(move |req: http::Request<Body>| {
        let calls = calls.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let call = parts
                .extensions
                .get::<CallInfo>()
                .cloned()
                .unwrap_or_default();
            calls.lock().expect("reached").push((call, bytes));
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        }
    }))
}

/// A request for `path` as a TLS connection from 127.0.0.1 delivers it: its [`ConnInfo`] with
/// the client certificate `cert` (DER) and the per-IP token taken at accept already spent.
pub(crate) fn request(path: &str, cert: Option<&[u8]>) -> http::request::Builder {
    let conn = ConnInfo {
        remote: "127.0.0.1:40000".parse().expect("address"),
        client_cert: cert.map(|c| Arc::new(c.to_vec())),
        prepaid: Arc::new(AtomicBool::new(false)),
    };
    http::Request::builder().uri(path).extension(conn)
}

/// The request already past the identity layer: its [`CallInfo`] names `admin`.
pub(crate) fn as_admin(b: http::request::Builder, admin: &str) -> http::request::Builder {
    b.extension(CallInfo {
        admin: Some(admin.to_string()),
        ..CallInfo::default()
    })
}

/// Sends `req` through `svc` once: the status the caller sees (`Ok` when the call reached the
/// handler, whose stand-in answers without a status).
pub(crate) async fn send<S>(svc: S, req: http::Request<Body>) -> tonic::Status
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let resp = svc.oneshot(req).await.expect("layers do not fail");
    tonic::Status::from_header_map(resp.headers())
        .unwrap_or_else(|| tonic::Status::new(Code::Ok, ""))
}

/// Asserts one refusal: the caller saw `code`, the handler was not reached, and exactly one
/// record was written for it — a denied decision on `rpc` whose reason holds `reason`, naming
/// `admin` when the call had one.
pub(crate) fn assert_refused(
    h: &Harness,
    reached: &Reached,
    status: &tonic::Status,
    code: Code,
    rpc: &str,
    reason: &str,
    admin: Option<&str>,
) -> AuditRecord {
    assert!(
        reached.calls().is_empty(),
        "a refused call reached the handler"
    );
    assert_denied(h, status, code, rpc, reason, admin)
}

/// Asserts one denial: the caller saw `code` with `reason` in its message, and exactly one
/// record was written — a denied decision on `rpc` whose reason holds `reason`, naming `admin`.
pub(crate) fn assert_denied(
    h: &Harness,
    status: &tonic::Status,
    code: Code,
    rpc: &str,
    reason: &str,
    admin: Option<&str>,
) -> AuditRecord {
    assert_eq!(status.code(), code, "status: {status:?}");
    assert!(
        status.message().contains(reason),
        "message {:?} lacks {reason:?}",
        status.message()
    );
    let recs = h.new_records();
    let [r] = recs.as_slice() else {
        panic!(
            "{} records for one refusal, expected 1: {recs:?}",
            recs.len()
        );
    };
    assert!(matches!(r.event, AuditEvent::Decision), "{r:?}");
    assert_eq!(r.allowed, Some(false), "{r:?}");
    let why = r.reason.as_deref().unwrap_or_default();
    assert!(
        why.contains(reason),
        "record reason {why:?} lacks {reason:?}"
    );
    assert_eq!(r.rpc.as_deref(), Some(rpc), "{r:?}");
    assert_eq!(r.admin.as_deref(), admin, "{r:?}");
    r.clone()
}

/// Asserts the call passed: status OK, the handler reached once, and no record written (the
/// checks before the audit layer record only refusals).
pub(crate) fn assert_passed(h: &Harness, reached: &Reached, status: &tonic::Status) -> CallInfo {
    assert_eq!(status.code(), Code::Ok, "status: {status:?}");
    let recs = h.new_records();
    assert!(recs.is_empty(), "a passing check wrote records: {recs:?}");
    let calls = reached.calls();
    let [call] = calls.as_slice() else {
        panic!("{} calls reached the handler, expected 1", calls.len());
    };
    call.clone()
}
