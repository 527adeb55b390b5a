//! A secured `orly-sync-negentropy` for tests of the security stack, the audit log and the
//! boundary between admins: a test PKI (rcgen) with an optional CRL, token and audit keys, a
//! policy file (rewritten atomically for reload tests), the real binary on 127.0.0.1 port 0, and
//! — in the files beside this one — tonic clients with real TLS (`grpc.rs`), raw TLS attempts
//! (`tls_probe.rs`) and readers of the audit directory (`audit_log.rs`). Included by `#[path]`
//! from the tests that need it, beside `common`.
#![allow(dead_code, unused_imports)]

#[path = "audit_log.rs"]
mod audit_log;
#[path = "grpc.rs"]
mod grpc;
#[path = "tls_probe.rs"]
mod tls_probe;
pub use audit_log::*;
pub use grpc::*;
pub use tls_probe::*;

pub use crate::common::{CALL_LIMIT, START_LIMIT};
use crate::common::{Proc, announced, bin, orly};
use orly::auth::{IssuedCert, MintRequest, TOKEN_AUDIENCE, TOKEN_ISSUER, TestPki, TokenSigningKey};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// Bound on a whole test.
pub const TEST_LIMIT: Duration = Duration::from_secs(300);
/// How long an expected audit record may take to appear.
pub const AUDIT_WAIT: Duration = Duration::from_secs(10);
/// After the expected records appeared: how long to keep watching for extra ones.
pub const AUDIT_SETTLE: Duration = Duration::from_millis(400);

pub const SERVICE: &str = "/orlysync.negentropy.v1.NegentropyService/";
pub const SYNC_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/SyncWithPeer";
pub const LIST_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/ListSyncs";
pub const STATUS_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/GetSync";
pub const CANCEL_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/CancelSync";

/// Environment variables the service reads; removed from every spawn so the test's own
/// environment cannot leak in.
pub const SERVICE_ENV: [&str; 23] = [
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
    "ORLY_SYNC_NEGENTROPY_LISTEN",
    "ORLY_SYNC_NEGENTROPY_PEERS",
    "ORLY_SYNC_NEGENTROPY_INTERVAL",
    "ORLY_SYNC_NEGENTROPY_FILTER",
    "ORLY_SYNC_NEGENTROPY_SESSION_TIMEOUT",
    "ORLY_SYNC_NEGENTROPY_STATE_DIR",
    "ORLY_SYNC_NEGENTROPY_PEER_CONCURRENCY",
    "ORLY_AUDIT_ANCHOR_KEY",
    "ORLY_AUDIT_ANCHOR_RELAYS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The `RUST_LOG` of a service started by [`Fixture::start`].
pub const SERVICE_LOG: &str = "info,fjall=warn,lsm_tree=warn,h2=warn";

/// SPIFFE identity the test PKI gives admin `name` (what the policies here map).
pub fn spiffe(name: &str) -> String {
    format!("spiffe://orly.local/admin/{name}")
}

/// The `jti` claim of `token` (read without verifying it).
pub fn jti_of(token: &str) -> String {
    orly::auth::inspect(token).expect("inspect")["claims"]["jti"]
        .as_str()
        .expect("jti")
        .to_string()
}

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

/// A `[revoked]` table listing `jti` and `admins`, to append to a policy.
pub fn revoked_toml(jti: &[String], admins: &[&str]) -> String {
    let list = |v: Vec<String>| v.join(", ");
    format!(
        "\n[revoked]\njti = [{}]\nadmins = [{}]\n",
        list(jti.iter().map(|j| format!("{j:?}")).collect()),
        list(admins.iter().map(|a| format!("{a:?}")).collect())
    )
}

/// Everything a secured service needs, in a temp directory: `ca.pem`, `server.pem`/`.key`,
/// `token.pub` (its private half in memory), `audit.key`/`.pub`, `policy.toml`, and the
/// `audit` and `store` directories it will use.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub pki: TestPki,
    pub ca_pem: String,
    /// The certificate the service starts with.
    pub server: IssuedCert,
    pub token_key: TokenSigningKey,
    pub token_pub_pem: String,
    pub audit_dir: PathBuf,
    pub audit_pub: PathBuf,
    pub policy_path: PathBuf,
    /// `ORLY_TLS_CRL`, once [`Self::set_crl`] wrote one.
    pub crl_path: Option<PathBuf>,
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
        let fx = Self::without_policy();
        fx.write_policy(policy);
        fx
    }

    /// PKI, token and audit keys; the test writes the policy before it starts the service.
    pub fn without_policy() -> Self {
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
        Fixture {
            audit_pub: root.join("audit.pub"),
            audit_dir: root.join("audit"),
            policy_path: root.join("policy.toml"),
            crl_path: None,
            pki,
            ca_pem,
            server,
            token_key,
            token_pub_pem: pair.public_pem,
            root,
            _tmp: tmp,
        }
    }

    /// Replaces the policy file (write, then rename: a polling service never sees half a file).
    pub fn write_policy(&self, text: &str) {
        let tmp = self.root.join("policy.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.policy_path).unwrap();
    }

    /// Writes a CRL revoking `revoked`; services started from now on check it.
    pub fn set_crl(&mut self, revoked: &[&IssuedCert]) {
        let crl = self.pki.crl_revoking(revoked).expect("CRL");
        let p = self.root.join("crl.pem");
        std::fs::write(&p, crl.pem).unwrap();
        self.crl_path = Some(p);
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
        self.mint_with(
            &self.token_key,
            admin,
            Some(cert),
            TOKEN_ISSUER,
            TOKEN_AUDIENCE,
            now,
            ttl,
        )
    }

    /// A token with every claim chosen: signed by `key`, bound to `cert` when given.
    #[allow(clippy::too_many_arguments)] // one knob per token claim the tables vary
    pub fn mint_with(
        &self,
        key: &TokenSigningKey,
        admin: &str,
        cert: Option<&IssuedCert>,
        issuer: &str,
        audience: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> String {
        orly::auth::mint(
            key,
            &MintRequest {
                issuer,
                audience,
                admin,
                ttl,
                cert_der: cert.map(|c| c.cert_der.as_slice()),
                now,
            },
        )
        .expect("mint")
    }

    /// The service's stderr of start `n`.
    pub fn log_path(&self, n: u32) -> PathBuf {
        self.root.join(format!("service-{n}.log"))
    }

    /// The security settings of the service, as environment variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let p = |f: &str| self.root.join(f).display().to_string();
        let mut v = vec![
            ("ORLY_TLS_CERT", p("server.pem")),
            ("ORLY_TLS_KEY", p("server.key")),
            ("ORLY_TLS_CLIENT_CA", p("ca.pem")),
            ("ORLY_POLICY", self.policy_path.display().to_string()),
            ("ORLY_TOKEN_KEYS", p("token.pub")),
            ("ORLY_AUDIT_DIR", self.audit_dir.display().to_string()),
            ("ORLY_AUDIT_KEY", p("audit.key")),
        ];
        if let Some(c) = &self.crl_path {
            v.push(("ORLY_TLS_CRL", c.display().to_string()));
        }
        v
    }

    /// The service command (stderr to `service-N.log`, stdout piped), not started.
    pub fn command(&self, n: u32, rust_log: &str) -> Command {
        let data = self.root.join("store").display().to_string();
        service_command(
            &["--listen", "127.0.0.1:0", "--data-dir", &data],
            &self.env(),
            rust_log,
            &self.log_path(n),
        )
    }

    /// Starts the service; waits (bounded) for its address.
    pub fn start(&self, n: u32) -> Proc {
        self.start_logging(n, SERVICE_LOG)
    }

    /// Starts the service with `RUST_LOG=rust_log`; waits (bounded) for its address.
    pub fn start_logging(&self, n: u32, rust_log: &str) -> Proc {
        start_command(self.command(n, rust_log), &self.log_path(n))
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

/// An `orly-sync-negentropy` command with `args`: none of the test's own service settings
/// ([`SERVICE_ENV`]), `envs`, `RUST_LOG=rust_log`, stderr to `log`, stdout piped.
pub fn service_command(
    args: &[&str],
    envs: &[(&str, String)],
    rust_log: &str,
    log: &Path,
) -> Command {
    let mut cmd = Command::new(bin("orly-sync-negentropy"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("create service log"));
    for k in SERVICE_ENV {
        cmd.env_remove(k);
    }
    cmd.env("RUST_LOG", rust_log).env("ORLY_LOG_FORMAT", "text");
    // Each service its own peer state, unless the test names one.
    cmd.env(
        "ORLY_SYNC_NEGENTROPY_STATE_DIR",
        crate::common::fresh_state_dir(),
    );
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Starts `cmd` (stderr going to `log`) and waits (bounded) for its address; on failure, stops
/// it and panics with its log.
pub fn start_command(mut cmd: Command, log: &Path) -> Proc {
    let child = cmd.spawn().expect("spawn orly-sync-negentropy");
    announced(child, "orly-sync-negentropy", START_LIMIT).unwrap_or_else(|(mut child, line)| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "service did not announce its address (got {line:?}); log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

/// Waits (bounded) until `log` contains `needle` at least `count` times.
pub async fn wait_log(log: &Path, needle: &str, count: usize, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
