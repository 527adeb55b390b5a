//! `cargo bench --bench gateway -- load` (issue 15, "Crash, kill and load"): 50 client-mode
//! `orly sync` runs at once, from 10 admins, through one `orly-sync-negentropy` with mTLS,
//! bound tokens, a policy admitting all ten (5 syncs each at once) and the signed audit log,
//! against 5 `orly-relay` peers (10 syncs each, one time slice apiece, `--dir both`).
//! Checks that every sync completes (exit 0), that the service's store ends as the union of
//! everything, that each relay gained at least the service's own events, and that
//! `orly audit verify` passes with one allow and one finished record per sync; prints the
//! p50/p99/max wall time per sync (process start to exit, as a user's cron job sees it) and the
//! service's peak RSS (VmHWM).
//!
//! Env: ORLY_LOAD_EVENTS (events per store, default 2000, at most 100000).
//! Only 127.0.0.1 port 0; every wait bounded; the whole run is bounded by LOAD_LIMIT.

use super::{Proc, bin, pct, run_orly, spawn};
use orly::auth::{MintRequest, TokenSigningKey};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const ADMINS: usize = 10;
const RELAYS: usize = 5;
const SYNCS: usize = 50;
/// Newest `created_at` of the generated events, and their spread.
const UNTIL: u64 = 1_760_000_000;
const SPAN_DAYS: u64 = 10;
const LOAD_LIMIT: Duration = Duration::from_secs(600);

fn policy() -> String {
    let mut p = String::from(
        "[service]\nper_ip_rate_per_minute = 6000\nper_ip_burst = 200\n\
         max_concurrent_total = 64\n",
    );
    for a in 0..ADMINS {
        p.push_str(&format!(
            "\n[[admin]]\nname = \"admin{a}\"\n\
             identities = [\"spiffe://orly.local/admin/admin{a}\", \"admin{a}\"]\n\
             peers = [\"*\"]\ndirections = [\"both\"]\nmax_events_per_sync = 1000000\n\
             rate_per_minute = 600\nburst = 10\nmax_concurrent = 5\n"
        ));
    }
    p.push_str("\n[revoked]\njti = []\nadmins = []\n");
    p
}

/// `orly gen` into `file` (regular kinds only, so the union of sets is their merged state),
/// then `orly import` into `dir`; returns the ids.
fn seed_store(file: &Path, dir: &Path, seed: u64, count: usize) -> BTreeSet<String> {
    let out = std::fs::File::create(file).expect("jsonl");
    let st = Command::new(bin("orly"))
        .args([
            "gen",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args([
            "--kinds",
            "1,7",
            "--authors",
            "40",
            "--until",
            &UNTIL.to_string(),
        ])
        .args(["--span-days", &SPAN_DAYS.to_string()])
        .stdout(out)
        .status()
        .expect("orly gen");
    assert!(st.success(), "orly gen");
    run_orly(&[
        "import",
        &file.display().to_string(),
        "--data-dir",
        &dir.display().to_string(),
    ]);
    std::fs::read_to_string(file)
        .expect("jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("gen line");
            v["id"].as_str().expect("id").to_string()
        })
        .collect()
}

fn export_ids(dir: &Path) -> BTreeSet<String> {
    let out = Command::new(bin("orly"))
        .args(["export", "--data-dir", &dir.display().to_string()])
        .env_remove("ORLY_DATA_DIR")
        .output()
        .expect("orly export");
    assert!(out.status.success(), "export {}", dir.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("export line");
            v["id"].as_str().expect("id").to_string()
        })
        .collect()
}

/// Peak resident set of a running process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Stops a service with SIGTERM (bounded); it must exit 0.
fn stop(mut p: Proc, what: &str) {
    let _ = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(st)) = p.0.try_wait() {
            assert!(st.success(), "{what} stopped with {st}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not stop within 20 s");
}

struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
    took: Option<Duration>,
}

pub fn run() {
    orly::init_crypto();
    let t0 = Instant::now();
    let events: usize = std::env::var("ORLY_LOAD_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
        .clamp(10, 100_000);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let s = |p: &Path| p.display().to_string();

    // Ten admins: certificates, bound tokens, a policy admitting them.
    let names: Vec<String> = (0..ADMINS).map(|a| format!("admin{a}")).collect();
    let pki = orly::auth::init_dev_pki(&root.join("pki"), &names, &[], 1, false).expect("PKI");
    let key = TokenSigningKey::from_file(&pki.token_key).expect("token key");
    let mut tokens = Vec::new();
    for (name, admin) in names.iter().zip(&pki.admins) {
        let der = CertificateDer::from_pem_file(&admin.cert)
            .expect("cert")
            .to_vec();
        let token = orly::auth::mint(
            &key,
            &MintRequest {
                issuer: orly::auth::TOKEN_ISSUER,
                audience: orly::auth::TOKEN_AUDIENCE,
                admin: name,
                ttl: Duration::from_secs(3600),
                cert_der: Some(&der),
                now: SystemTime::now(),
            },
        )
        .expect("mint");
        let f = root.join(format!("{name}.token"));
        std::fs::write(&f, token).unwrap();
        tokens.push(f);
    }
    let policy_path = root.join("policy.toml");
    std::fs::write(&policy_path, policy()).unwrap();

    // The service's store and five relays' stores, all different.
    let svc_dir = root.join("service");
    let mut union = seed_store(&root.join("service.jsonl"), &svc_dir, 900, events);
    let own = union.clone();
    let mut relays = Vec::new();
    for r in 0..RELAYS {
        let dir = root.join(format!("relay{r}"));
        let ids = seed_store(
            &root.join(format!("relay{r}.jsonl")),
            &dir,
            901 + r as u64,
            events,
        );
        union.extend(ids.iter().cloned());
        let p = spawn(
            "orly-relay",
            &["--data-dir", &s(&dir), "--listen", "127.0.0.1:0"],
            &[],
            &root.join(format!("relay{r}.log")),
        );
        relays.push((dir, ids, p));
    }
    let audit = root.join("audit");
    let svc = spawn(
        "orly-sync-negentropy",
        &["--listen", "127.0.0.1:0", "--data-dir", &s(&svc_dir)],
        &[
            ("ORLY_TLS_CERT", s(&pki.server_cert)),
            ("ORLY_TLS_KEY", s(&pki.server_key)),
            ("ORLY_TLS_CLIENT_CA", s(&pki.ca_cert)),
            ("ORLY_POLICY", s(&policy_path)),
            ("ORLY_TOKEN_KEYS", s(&pki.token_pub)),
            ("ORLY_AUDIT_DIR", s(&audit)),
            ("ORLY_AUDIT_KEY", s(&pki.audit_key)),
        ],
        &root.join("service.log"),
    );
    let rss_idle = peak_rss_kib(svc.0.id());

    // Sync i: admin i % 10, relay i % 5, time slice i / 5 of ten.
    let all_started = Instant::now();
    let base = UNTIL - SPAN_DAYS * 86_400 - 1;
    let width = (UNTIL - base) / 10 + 1;
    let mut runs: Vec<Running> = (0..SYNCS)
        .map(|i| {
            let (a, r, slice) = (i % ADMINS, i % RELAYS, (i / RELAYS) as u64);
            let since = base + slice * width;
            let until = if slice == 9 { UNTIL } else { since + width - 1 };
            let (out, err) = (
                root.join(format!("sync{i}.out")),
                root.join(format!("sync{i}.err")),
            );
            let child = Command::new(bin("orly"))
                .args([
                    "sync",
                    &format!("ws://{}", relays[r].2.1),
                    "--json",
                    "--dir",
                    "both",
                ])
                .args([
                    "--filter",
                    &format!("{{\"since\":{since},\"until\":{until}}}"),
                ])
                .args(["--server", &svc.1, "--ca", &s(&pki.ca_cert)])
                .args([
                    "--cert",
                    &s(&pki.admins[a].cert),
                    "--key",
                    &s(&pki.admins[a].key),
                ])
                .args(["--token-file", &s(&tokens[a])])
                .env_remove("ORLY_DATA_DIR")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(&err).unwrap())
                .spawn()
                .expect("spawn orly sync");
            Running {
                child,
                out,
                err,
                started: Instant::now(),
                took: None,
            }
        })
        .collect();
    while runs.iter().any(|r| r.took.is_none()) {
        assert!(
            all_started.elapsed() < LOAD_LIMIT,
            "syncs still running after {LOAD_LIMIT:?}"
        );
        for r in runs.iter_mut().filter(|r| r.took.is_none()) {
            if let Ok(Some(_)) = r.child.try_wait() {
                r.took = Some(r.started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = all_started.elapsed();
    let rss_peak = peak_rss_kib(svc.0.id());

    let (mut fetched, mut sent) = (0u64, 0u64);
    let mut took = Vec::new();
    for (i, r) in runs.iter_mut().enumerate() {
        let code = r.child.wait().expect("wait").code();
        let out = std::fs::read_to_string(&r.out).unwrap_or_default();
        let err = std::fs::read_to_string(&r.err).unwrap_or_default();
        let last: serde_json::Value = out
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        assert!(
            code == Some(0) && last["complete"] == true,
            "sync {i} did not complete (exit {code:?}): {last}\n{err}"
        );
        fetched += last["fetched"].as_u64().unwrap_or(0);
        sent += last["sent"].as_u64().unwrap_or(0);
        took.extend(r.took);
    }
    took.sort();

    stop(svc, "the service");
    let got = export_ids(&svc_dir);
    assert!(
        got == union,
        "the service's store is not the union: {} missing, {} unexpected",
        union.difference(&got).count(),
        got.difference(&union).count()
    );
    assert_eq!(
        fetched as usize,
        union.len() - own.len(),
        "fetched counts add up"
    );
    for (r, (dir, ids, p)) in relays.into_iter().enumerate() {
        stop(p, "a relay");
        let held = export_ids(&dir);
        assert!(
            ids.is_subset(&held) && own.is_subset(&held) && held.is_subset(&union),
            "relay {r} did not gain the service's events"
        );
    }
    let verify = Command::new(bin("orly"))
        .args([
            "audit",
            "verify",
            &s(&audit),
            "--pubkey",
            &s(&pki.audit_pub),
        ])
        .output()
        .expect("audit verify");
    let report = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(
        verify.status.success(),
        "audit verify: {report}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let records: Vec<serde_json::Value> = std::fs::read_dir(&audit)
        .expect("audit dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect();
    let syncs = |event: &str| {
        records
            .iter()
            .filter(|r| {
                r["event"] == event && r["rpc"].as_str().unwrap_or("").ends_with("SyncWithPeer")
            })
            .count()
    };
    let allowed = records
        .iter()
        .filter(|r| {
            r["allowed"] == true && r["rpc"].as_str().unwrap_or("").ends_with("SyncWithPeer")
        })
        .count();
    assert_eq!(
        (allowed, syncs("sync_finished")),
        (SYNCS, SYNCS),
        "one allow and one finished record per sync"
    );

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "gateway load bench: {SYNCS} concurrent client-mode syncs (`--dir both`, one time slice \
         each) from {ADMINS} admins over mTLS + tokens + policy + signed audit, against \
         {RELAYS} orly-relay peers; {events} events in each of the {} stores",
        RELAYS + 1
    );
    println!(
        "all {SYNCS} completed in {:.2} s: fetched {fetched}, sent {sent}; service store {} \
         events = the union",
        wall.as_secs_f64(),
        got.len()
    );
    println!(
        "per sync (orly process start to exit): p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  min {:.0} ms",
        ms(pct(&took, 0.50)),
        ms(pct(&took, 0.99)),
        ms(*took.last().unwrap()),
        ms(took[0])
    );
    println!(
        "service peak RSS (VmHWM): {:.1} MiB (after start: {:.1} MiB)",
        rss_peak as f64 / 1024.0,
        rss_idle as f64 / 1024.0
    );
    println!(
        "audit: {} records, verify: {}",
        records.len(),
        report.lines().next().unwrap_or_default()
    );
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
}
