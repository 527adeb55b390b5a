//! Per-call cost of the security stack (issue 5, "Benchmark"; issue 14 §3): the same short sync
//! call — the relay and the service's store hold the same 100 events, `--dir both`, so nothing
//! moves — repeated N times over ONE established connection per mode, by 1, 8 and 32 concurrent
//! callers (the audit log's group commit lets concurrent allow records share one fsync),
//! against
//!   plain:  `orly-sync-negentropy` on loopback without security (plaintext gRPC, open gate);
//!   secure: the full stack — mTLS, token, per-IP and per-admin limits (high enough never to
//!           trigger), policy, and the hash-chained audit log (per call an allow record,
//!           fsynced before the sync starts, and a `sync_finished` record, fsynced with the
//!           next record or within 1 s).
//! and, as a reference,
//!   plain-nd: the same `SyncService` behind the same open gate, served plaintext from this
//!           process (on its own runtime thread) with TCP_NODELAY on accepted sockets: the
//!           baseline without a second process's scheduling (the binary's plain mode sets
//!           TCP_NODELAY on its incoming sockets too).
//! Calls alternate between the modes in blocks so machine noise hits all alike.
//! Prints, at each concurrency, calls/s (wall clock), p50 and p99 of each mode and the
//! secure/plain throughput ratios (goal >= 0.8).
//!
//! Env: ORLY_BENCH_CALLS (default 200, at most 5000), ORLY_BENCH_AUDIT_DIR (put the audit log
//! elsewhere, e.g. on tmpfs, to separate fsync cost from the rest of the stack).
//! Only 127.0.0.1 port 0; every wait bounded; the whole run is bounded by RUN_LIMIT.
//!
//! `-- load` runs the load bench instead: 50 concurrent client-mode syncs from 10 admins
//! (`support/load.rs`).

#[path = "support/load.rs"]
mod load;

use orly::auth::{MintRequest, TokenSigningKey};
use orly::proto::orlysync::negentropy::v1 as npb;
use orly::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const EVENTS: usize = 100;
const BLOCK: usize = 20;
/// Callers at once, one level after the other.
const CONCURRENCY: [usize; 3] = [1, 8, 32];
const WARMUP: usize = 10;
const CALL_LIMIT: Duration = Duration::from_secs(30);
const START_LIMIT: Duration = Duration::from_secs(60);
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// A child process killed on drop.
struct Proc(Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The package's binaries: cargo's CARGO_BIN_EXE_* for a registered bench, else next to this
/// executable (target/<profile>/{deps,examples}/..).
fn bin(name: &str) -> PathBuf {
    let from_cargo = match name {
        "orly" => option_env!("CARGO_BIN_EXE_orly"),
        "orly-relay" => option_env!("CARGO_BIN_EXE_orly-relay"),
        "orly-sync-negentropy" => option_env!("CARGO_BIN_EXE_orly-sync-negentropy"),
        _ => None,
    };
    if let Some(p) = from_cargo {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} not found next to {}; build the binaries first (cargo build --release --bins)",
        exe.display()
    );
}

fn spawn(name: &str, args: &[&str], envs: &[(&str, String)], log: &Path) -> Proc {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    for k in [
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
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line.clone());
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            line.clear();
        }
    });
    let line: String = rx.recv_timeout(START_LIMIT).unwrap_or_default();
    let addr = match line.trim().rsplit(' ').next() {
        Some(a) if line.contains("listening on") => a.to_string(),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} did not start: {line:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    };
    Proc(child, addr)
}

fn run_orly(args: &[&str]) {
    let out = Command::new(bin("orly"))
        .args(args)
        .env_remove("ORLY_DATA_DIR")
        .output()
        .expect("run orly");
    assert!(
        out.status.success(),
        "orly {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn events_jsonl(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for i in 0..EVENTS {
        let k = orly::event::Keys::from_seed(b"bench", (i % 7) as u64);
        let e = orly::event::sign_event(
            &k,
            1_700_000_000 + i as u64,
            1,
            vec![vec!["t".into(), "bench".into()]],
            &format!("bench note {i}"),
        );
        writeln!(f, "{}", e.to_json()).unwrap();
    }
}

fn policy(rate: u32) -> String {
    format!(
        "[service]\nper_ip_rate_per_minute = {rate}\nper_ip_burst = {rate}\nmax_concurrent_total = 256\n\n\
         [[admin]]\nname = \"alice\"\nidentities = [\"spiffe://orly.local/admin/alice\", \"alice\"]\n\
         peers = [\"*\"]\ndirections = [\"both\"]\nmax_events_per_sync = 1000000\n\
         rate_per_minute = {rate}\nburst = {rate}\nmax_concurrent = 256\n\n\
         [revoked]\njti = []\nadmins = []\n"
    )
}

struct Mode {
    name: &'static str,
    channel: Channel,
    token: Option<String>,
    lat: Vec<Duration>,
    /// Wall-clock time of this mode's blocks at the current concurrency.
    wall: Duration,
}

/// `n` calls of mode `m` by `callers` concurrent callers; their latencies, and the block's
/// wall-clock time.
async fn block(m: &Mode, peer: &str, n: usize, callers: usize) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let per = n.div_ceil(callers);
    let workers = (0..callers).map(|_| async {
        let mut lat = Vec::with_capacity(per);
        for _ in 0..per {
            lat.push(one_call(m, peer).await);
        }
        lat
    });
    let lat: Vec<Duration> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    (lat, started.elapsed())
}

async fn one_call(m: &Mode, peer: &str) -> Duration {
    let mut req = tonic::Request::new(npb::SyncPeerRequest {
        peer_url: peer.to_string(),
        direction: npb::Direction::Both as i32,
        timeout_seconds: 10,
        ..Default::default()
    });
    if let Some(t) = &m.token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut c = NegentropyServiceClient::new(m.channel.clone());
    let start = Instant::now();
    let last = tokio::time::timeout(CALL_LIMIT, async {
        let mut s = c.sync_with_peer(req).await?.into_inner();
        let mut last = None;
        while let Some(p) = s.message().await? {
            last = Some(p);
        }
        Ok::<_, tonic::Status>(last)
    })
    .await
    .unwrap_or_else(|_| panic!("{}: call timed out", m.name))
    .unwrap_or_else(|st| panic!("{}: call refused: {st:?}", m.name))
    .unwrap_or_else(|| panic!("{}: no progress", m.name));
    let took = start.elapsed();
    assert!(
        last.complete && last.fetched_count == 0 && last.sent_count == 0,
        "{}: not an in-sync, zero-transfer call: {last:?}",
        m.name
    );
    took
}

/// Plaintext `SyncService` (open gate) on 127.0.0.1:0 with TCP_NODELAY, served by its own
/// runtime on its own thread; returns its address and a stopper.
fn spawn_plain_nodelay(dir: PathBuf) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state_dir = dir.with_extension("peers");
        rt.block_on(async move {
            let store = orly::config::StoreConfig::Fjall(dir)
                .open()
                .await
                .expect("open store");
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(l.local_addr().unwrap().to_string()).unwrap();
            let settings = orly::server::SyncSettings {
                defaults: orly::service::SyncDefaults::default(),
                peers: orly::config::ManagedPeersConfig::in_dir(state_dir),
            };
            let gate = std::sync::Arc::new(orly::service::OpenGate);
            let _ = orly::server::serve_sync_plain(l, store, gate, settings, async {
                let _ = stop_rx.await;
            })
            .await;
        });
    });
    let addr = addr_rx
        .recv_timeout(START_LIMIT)
        .expect("in-process server start");
    (addr, stop_tx)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(m: &Mode) -> f64 {
    let mut v = m.lat.clone();
    v.sort();
    let rate = v.len() as f64 / m.wall.as_secs_f64();
    println!(
        "{:<7} calls {:>5}  {:>8.1} calls/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        m.name,
        v.len(),
        rate,
        pct(&v, 0.50).as_secs_f64() * 1e3,
        pct(&v, 0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3,
    );
    rate
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "load") {
        load::run();
        return;
    }
    orly::init_crypto();
    let calls: usize = std::env::var("ORLY_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .clamp(BLOCK, 5000);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pki = orly::auth::init_dev_pki(&root.join("pki"), &["alice".to_string()], &[], 1, false)
        .expect("dev PKI");
    let policy_path = root.join("policy.toml");
    std::fs::write(&policy_path, policy(1_000_000)).unwrap();
    let alice = &pki.admins[0];
    let alice_der = CertificateDer::from_pem_file(&alice.cert)
        .expect("alice cert")
        .to_vec();
    let token = orly::auth::mint(
        &TokenSigningKey::from_file(&pki.token_key).expect("token key"),
        &MintRequest {
            issuer: orly::auth::TOKEN_ISSUER,
            audience: orly::auth::TOKEN_AUDIENCE,
            admin: "alice",
            ttl: Duration::from_secs(3600),
            cert_der: Some(&alice_der),
            now: SystemTime::now(),
        },
    )
    .expect("mint");

    // The same 100 events on the relay and in both service stores.
    let jsonl = root.join("events.jsonl");
    events_jsonl(&jsonl);
    let dirs: Vec<PathBuf> = ["relay", "plain", "secure", "plain-nd"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    for d in &dirs {
        run_orly(&[
            "import",
            jsonl.to_str().unwrap(),
            "--data-dir",
            d.to_str().unwrap(),
        ]);
    }
    let s = |p: &Path| p.display().to_string();
    let relay = spawn(
        "orly-relay",
        &[
            "--data-dir",
            &s(&dirs[0]),
            "--listen",
            "127.0.0.1:0",
            "--max-connections-per-ip",
            "1024",
        ],
        &[],
        &root.join("relay.log"),
    );
    let plain = spawn(
        "orly-sync-negentropy",
        &["--listen", "127.0.0.1:0", "--data-dir", &s(&dirs[1])],
        &[],
        &root.join("plain.log"),
    );
    let audit_dir = std::env::var_os("ORLY_BENCH_AUDIT_DIR")
        .map(|d| PathBuf::from(d).join(format!("orly-bench-audit-{}", std::process::id())))
        .unwrap_or_else(|| root.join("audit"));
    let secure = spawn(
        "orly-sync-negentropy",
        &["--listen", "127.0.0.1:0", "--data-dir", &s(&dirs[2])],
        &[
            ("ORLY_TLS_CERT", s(&pki.server_cert)),
            ("ORLY_TLS_KEY", s(&pki.server_key)),
            ("ORLY_TLS_CLIENT_CA", s(&pki.ca_cert)),
            ("ORLY_POLICY", s(&policy_path)),
            ("ORLY_TOKEN_KEYS", s(&pki.token_pub)),
            ("ORLY_AUDIT_DIR", s(&audit_dir)),
            ("ORLY_AUDIT_KEY", s(&pki.audit_key)),
        ],
        &root.join("secure.log"),
    );
    let (nd_addr, nd_stop) = spawn_plain_nodelay(dirs[3].clone());
    let peer = format!("ws://{}", relay.1);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(RUN_LIMIT, async {
            let plain_ch = Endpoint::from_shared(format!("http://{}", plain.1))
                .unwrap()
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .expect("connect plain");
            let nd_ch = Endpoint::from_shared(format!("http://{nd_addr}"))
                .unwrap()
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .expect("connect plain-nd");
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca_cert).unwrap()))
                .identity(Identity::from_pem(
                    std::fs::read(&alice.cert).unwrap(),
                    std::fs::read(&alice.key).unwrap(),
                ))
                .domain_name("localhost");
            let secure_ch = Endpoint::from_shared(format!("https://{}", secure.1))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .expect("connect secure");
            let mode = |name, channel, token| Mode {
                name,
                channel,
                token,
                lat: Vec::new(),
                wall: Duration::ZERO,
            };
            let mut modes = [
                mode("plain", plain_ch, None),
                mode("plain-nd", nd_ch, None),
                mode("secure", secure_ch, Some(token)),
            ];
            for m in &modes {
                for _ in 0..WARMUP {
                    one_call(m, &peer).await;
                }
            }
            println!(
                "gateway per-call bench: {calls} in-sync `--dir both` calls per mode and \
                 concurrency ({EVENTS} events each side, zero transfer), one connection per \
                 mode, blocks of {BLOCK} calls per caller, modes alternating"
            );
            println!("audit dir (secure): {}", audit_dir.display());
            let verdict = |r: f64| if r >= 0.8 { "met" } else { "NOT met" };
            let mut summary = Vec::new();
            for callers in CONCURRENCY {
                let started = Instant::now();
                for m in modes.iter_mut() {
                    m.lat.clear();
                    m.wall = Duration::ZERO;
                }
                let total = calls.max(callers).div_ceil(callers) * callers;
                let mut done = 0;
                while done < total {
                    let n = (BLOCK * callers).min(total - done);
                    for m in modes.iter_mut() {
                        let (lat, wall) = block(m, &peer, n, callers).await;
                        m.lat.extend(lat);
                        m.wall += wall;
                    }
                    done += n;
                }
                println!(
                    "-- {callers} concurrent caller(s): {total} calls per mode, {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                let plain = report(&modes[0]);
                let nd = report(&modes[1]);
                let secure = report(&modes[2]);
                println!(
                    "secure/plain    throughput ratio at {callers:>2}: {:.3} (goal >= 0.8: {})",
                    secure / plain,
                    verdict(secure / plain)
                );
                println!(
                    "secure/plain-nd throughput ratio at {callers:>2}: {:.3} (goal >= 0.8: {}) \
                     <- fair baseline",
                    secure / nd,
                    verdict(secure / nd)
                );
                summary.push((callers, secure / plain, secure / nd));
            }
            println!("-- summary: secure/plain-nd (secure/plain) throughput by concurrent callers");
            for (callers, plain, nd) in summary {
                println!(
                    "{callers:>2} caller(s): {nd:.3} ({plain:.3}) {}",
                    verdict(nd)
                );
            }
        })
        .await
        .expect("bench exceeded its time limit");
    });
    let records = std::fs::read_to_string(audit_dir.join("audit-000001.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!("audit records written by the secure service: {records}");
    let _ = nd_stop.send(());
    drop((secure, plain, relay));
    if std::env::var_os("ORLY_BENCH_AUDIT_DIR").is_some() {
        let _ = std::fs::remove_dir_all(&audit_dir);
    }
}
