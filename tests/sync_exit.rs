//! `orly sync` tells the truth (issue 12 §2): its exit code says whether the two sides agree
//! (7 when a completed sync left events dropped or uploads refused), a client-mode failure is
//! classed by what happened (a service dying mid-call is incomplete, a refused certificate is
//! auth, a per-IP refusal is refused with the retry delay), one sync costs one per-IP token, and
//! the counts add up: over syncs running at once into one store, `fetched` sums to what the
//! store gained, in the progress, the summary and the audit log. Real binaries on 127.0.0.1,
//! real stores, real TLS; every wait bounded.

mod common;
use common::*;

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000;
const EXIT_OK: i32 = 0;
const EXIT_REFUSED: i32 = 3;
const EXIT_AUTH: i32 = 4;
const EXIT_INCOMPLETE: i32 = 6;
const EXIT_DIFFER: i32 = 7;

// ---------------------------------------------------------------------------------------------
// running orly

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A store in `dir` holding `count` generated regular events (`orly gen | orly import`).
fn gen_store(dir: &Path, count: u64, seed: u64) {
    let (code, out, err) = orly(&[
        "gen",
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--kinds",
        "1,7",
    ]);
    assert_eq!(code, 0, "gen: {err}");
    let f = dir.with_extension("gen.jsonl");
    std::fs::write(&f, out).unwrap();
    let (code, _, err) = orly(&[
        "import",
        f.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "import: {err}");
    let _ = std::fs::remove_file(f);
}

// ---------------------------------------------------------------------------------------------
// the secured service: `orly certs init` PKI and starter policy, tokens, audit

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// `orly certs init` for `admins`, and a bound token for each.
    fn init(dir: &Path, admins: &[&str]) -> Self {
        let mut args = vec!["certs", "init", dir.to_str().unwrap()];
        for a in admins {
            args.extend(["--admin", a]);
        }
        let (code, _, err) = orly(&args);
        assert_eq!(code, 0, "certs init: {err}");
        let pki = Self { dir: dir.into() };
        for a in admins {
            let (code, _, err) = orly(&[
                "token",
                "mint",
                "--admin",
                a,
                "--key",
                &pki.path("token.key"),
                "--cert",
                &pki.path(&format!("{a}.pem")),
                "--out",
                &pki.path(&format!("{a}.token")),
            ]);
            assert_eq!(code, 0, "token mint: {err}");
        }
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Replaces `from` (which must be there) by `to` in the starter policy.
    fn edit_policy(&self, from: &str, to: &str) {
        let p = self.dir.join("policy.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains(from),
            "starter policy lacks {from:?}:\n{text}"
        );
        std::fs::write(&p, text.replace(from, to)).unwrap();
    }

    /// The client-mode flags for `admin` against `server`.
    fn client(&self, admin: &str, server: &str) -> Vec<String> {
        vec![
            "--server".into(),
            server.into(),
            "--ca".into(),
            self.path("ca.pem"),
            "--cert".into(),
            self.path(&format!("{admin}.pem")),
            "--key".into(),
            self.path(&format!("{admin}.key")),
            "--token-file".into(),
            self.path(&format!("{admin}.token")),
        ]
    }

    /// The service with mTLS, tokens, this PKI's policy and an audit log in `audit`.
    fn service(&self, store: &Path, audit: &Path) -> Proc {
        let envs = [
            ("ORLY_TLS_CERT", self.path("server.pem")),
            ("ORLY_TLS_KEY", self.path("server.key")),
            ("ORLY_TLS_CLIENT_CA", self.path("ca.pem")),
            ("ORLY_POLICY", self.path("policy.toml")),
            ("ORLY_TOKEN_KEYS", self.path("token.pub")),
            ("ORLY_AUDIT_KEY", self.path("audit.key")),
            ("ORLY_AUDIT_DIR", audit.display().to_string()),
            ("ORLY_DB_TYPE", "fjall".to_string()),
        ];
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        spawn_service(
            "orly-sync-negentropy",
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                store.to_str().unwrap(),
            ],
            &envs,
        )
    }
}

/// Every complete record of the audit log in `dir`, in order.
fn audit_records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
    });
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            out.push(serde_json::from_str(line.trim_end()).expect("audit line is JSON"));
        }
    }
    out
}

fn sync_records<'a>(recs: &'a [Value], event: &str) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| {
            r["event"] == event && r["rpc"].as_str().unwrap_or("").ends_with("SyncWithPeer")
        })
        .collect()
}

/// A relay that completes the WebSocket handshake and never answers; counts the NEG-OPENs it
/// receives.
async fn stalling_relay() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", l.local_addr().unwrap());
    let opens = Arc::new(AtomicUsize::new(0));
    let seen = opens.clone();
    let h = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                    while let Some(Ok(m)) = ws.next().await {
                        if m.to_text().is_ok_and(|t| t.starts_with("[\"NEG-OPEN\"")) {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    (url, opens, h)
}

// ---------------------------------------------------------------------------------------------
// 1. exit 7: completed, but the two sides still differ

/// The relay holds its author's deletion of `deleted`: an upload of it is refused
/// ("blocked: deleted by its author"), the others are stored. The sync completes, the relay
/// still lacks an event we have, and `orly sync` says so: exit 7, the cause in the summary line
/// and in the JSON, in direct and in client mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_exit_7_naming_the_cause_in_both_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let author = Keys::from_seed(b"exit-7", 0);
    let deleted = sign_event(&author, T0, 1, vec![], "deleted on the relay");
    let deletion = sign_event(
        &author,
        T0 + 10,
        5,
        vec![vec!["e".into(), deleted.id_hex()]],
        "",
    );
    let others = notes("exit-7", 6, T0 + 100);
    let ours = [vec![deleted.clone()], others.clone()].concat();

    for mode in ["direct", "client"] {
        for json in [false, true] {
            let case = format!("{mode}{}", if json { " --json" } else { "" });
            let remote = tmp.path().join(format!("remote-{mode}-{json}"));
            import(&remote, std::slice::from_ref(&deletion));
            let local = tmp.path().join(format!("local-{mode}-{json}"));
            import(&local, &ours);
            let rl = relay(&remote, &[]);
            let url = format!("ws://{}", rl.addr);
            let mut args = strings(&["sync", &url, "--dir", "up"]);
            let svc = match mode {
                "direct" => {
                    args.extend(strings(&["--data-dir", local.to_str().unwrap()]));
                    None
                }
                _ => {
                    let svc = sync_service(&local);
                    args.extend(strings(&["--server", &svc.addr]));
                    Some(svc)
                }
            };
            if json {
                args.push("--json".into());
            }
            let out = run_orly_async(RUN_LIMIT, &args, &[]).await;
            out.no_panic();
            assert_eq!(out.code, EXIT_DIFFER, "[{case}] {out}");
            if json {
                let last = out.last();
                assert_eq!(last["complete"], true, "[{case}] {last}");
                assert_eq!(last["sent"], others.len() as u64, "[{case}] {last}");
                assert_eq!(last["rejected"], 1, "[{case}] {last}");
                assert_eq!(last["differs"], json!(["rejected"]), "[{case}] {last}");
                assert_eq!(
                    last["last_refusal"], "blocked: deleted by its author",
                    "[{case}] {last}"
                );
            } else {
                assert!(
                    out.stderr
                        .contains("sync complete, but 1 upload refused by the relay:"),
                    "[{case}] the summary names the cause:\n{}",
                    out.stderr
                );
                assert!(
                    out.stderr
                        .contains("last reason: blocked: deleted by its author"),
                    "[{case}] {}",
                    out.stderr
                );
            }
            drop(svc);
            drop(rl);
            let mut want = ids_of(&others);
            want.push(deletion.id_hex());
            want.sort();
            assert_eq!(ids(&remote), want, "[{case}] what the relay stored");
        }
    }
}

/// A sync whose sides agree exits 0 and its final JSON carries no `differs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreeing_sides_exit_0_without_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let (remote, local) = (tmp.path().join("remote"), tmp.path().join("local"));
    import(&remote, &notes("agree", 12, T0));
    import(&local, &notes("agree-local", 3, T0 + 500));
    let rl = relay(&remote, &[]);
    let url = format!("ws://{}", rl.addr);
    let out = run_orly_async(
        RUN_LIMIT,
        &strings(&[
            "sync",
            &url,
            "--dir",
            "both",
            "--json",
            "--data-dir",
            local.to_str().unwrap(),
        ]),
        &[],
    )
    .await;
    assert_eq!(out.code, EXIT_OK, "{out}");
    let last = out.last();
    assert_eq!(
        (last["fetched"].as_u64(), last["sent"].as_u64()),
        (Some(12), Some(3))
    );
    assert!(last.get("differs").is_none(), "{last}");
}

// ---------------------------------------------------------------------------------------------
// 2. client mode: failures classed by what happened

/// Clients whose syncs the service had admitted and started see it die (SIGKILL): the call
/// broke off after the service answered, so each exits 6 (incomplete), not 4 ("check the client
/// certificate").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_dies_mid_call_leaves_its_clients_incomplete_not_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"), &["alice", "bob"]);
    let svc = pki.service(&tmp.path().join("store"), &tmp.path().join("audit"));
    let (url, opens, relay_task) = stalling_relay().await;
    let mut clients = Vec::new();
    for admin in ["alice", "alice", "bob", "bob"] {
        let mut args = strings(&["sync", &url, "--timeout", "120", "--json"]);
        args.extend(pki.client(admin, &svc.addr));
        clients.push(tokio::spawn(async move {
            run_orly_async(RUN_LIMIT, &args, &[]).await
        }));
    }
    // Every sync is running once the relay has its NEG-OPEN.
    let start = Instant::now();
    while opens.load(Ordering::SeqCst) < clients.len() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {} syncs reached the relay",
            opens.load(Ordering::SeqCst),
            clients.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(svc); // SIGKILL
    for c in clients {
        let out = c.await.unwrap();
        out.no_panic();
        assert_eq!(out.code, EXIT_INCOMPLETE, "{out}");
        let last = out.last();
        assert_eq!(last["error_kind"], "incomplete", "{last}");
        let err = last["error"].as_str().unwrap_or_default();
        assert!(!err.contains("certificate"), "{last}");
        // The service had answered (its headers go out as the job starts), so normally the
        // stream broke; were it killed between the job's start and its headers going out,
        // the call would fail before the answer: still incomplete.
        assert!(
            err.contains("broke off the call after it started")
                || err.contains("closed the connection before answering"),
            "{last}"
        );
    }
    relay_task.abort();
}

/// A client certificate the service's CA did not sign is refused in the TLS handshake: that,
/// and only that, is exit 4 with the certificate named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_certificate_is_still_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"), &["alice"]);
    let other = Pki::init(&tmp.path().join("other"), &["alice"]);
    let svc = pki.service(&tmp.path().join("store"), &tmp.path().join("audit"));
    let remote = tmp.path().join("remote");
    import(&remote, &notes("cert", 3, T0));
    let rl = relay(&remote, &[]);
    let url = format!("ws://{}", rl.addr);
    let mut args = strings(&["sync", &url]);
    args.extend(pki.client("alice", &svc.addr));
    // The right CA for the service, a certificate (and its key) from another CA.
    for a in args.iter_mut() {
        if a.ends_with("alice.pem") || a.ends_with("alice.key") {
            *a = a.replace(pki.dir.to_str().unwrap(), other.dir.to_str().unwrap());
        }
    }
    let out = run_orly_async(RUN_LIMIT, &args, &[]).await;
    out.no_panic();
    assert_eq!(out.code, EXIT_AUTH, "{out}");
    assert!(
        out.stderr.contains("refused our client certificate"),
        "{}",
        out.stderr
    );
}

/// The per-IP quota counts a sync once (its connection pays for its call): with a burst of 3
/// and a rate of 1 a minute, three syncs in a row are admitted. The fourth is refused with
/// RESOURCE_EXHAUSTED and its retry delay (a closed socket could not say when to come back):
/// exit 3 with the delay printed, one audit record with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sync_costs_one_per_ip_token_and_a_refusal_says_when_to_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"), &["alice"]);
    pki.edit_policy("per_ip_rate_per_minute = 120", "per_ip_rate_per_minute = 1");
    pki.edit_policy("per_ip_burst = 20", "per_ip_burst = 3");
    let audit = tmp.path().join("audit");
    let svc = pki.service(&tmp.path().join("store"), &audit);
    let remote = tmp.path().join("remote");
    import(&remote, &notes("per-ip", 10, T0));
    let rl = relay(&remote, &[]);
    let url = format!("ws://{}", rl.addr);
    let mut args = strings(&["sync", &url]);
    args.extend(pki.client("alice", &svc.addr));
    for i in 1..=3 {
        let out = run_orly_async(RUN_LIMIT, &args, &[]).await;
        assert_eq!(out.code, EXIT_OK, "sync {i} of the burst of 3: {out}");
    }
    let out = run_orly_async(RUN_LIMIT, &args, &[]).await;
    out.no_panic();
    assert_eq!(out.code, EXIT_REFUSED, "{out}");
    assert!(
        out.stderr
            .contains("rate limited: too many requests from 127.0.0.1")
            && out.stderr.contains("retry after"),
        "the refusal and its retry delay: {}",
        out.stderr
    );
    let st = svc.terminate();
    assert!(st.success(), "{st:?}");
    let recs = audit_records(&audit);
    let denied: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "decision" && r["allowed"] == false)
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert!(
        denied[0]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("rate limited: too many requests from 127.0.0.1"),
        "{:#?}",
        denied[0]
    );
    assert_eq!(sync_records(&recs, "sync_finished").len(), 3);
}

/// 50 client-mode syncs at once from one address against the service as `orly certs init` sets
/// it up (starter policy, mTLS, tokens): each exits 0, or 3 with the delay after which to retry
/// printed. Every refusal is audited once, every admitted sync finishes, and the counts add up:
/// the syncs' `fetched` sum to what the store gained, in their output and in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_client_syncs_from_one_address_exit_0_or_3_with_a_retry_delay() {
    const CLIENTS: usize = 50;
    const EVENTS: u64 = 40;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"), &["alice", "bob"]);
    let audit = tmp.path().join("audit");
    let store = tmp.path().join("store");
    let svc = pki.service(&store, &audit);
    let remote = tmp.path().join("remote");
    import(&remote, &notes("fifty", EVENTS as usize, T0));
    let rl = relay(&remote, &[]);
    let url = format!("ws://{}", rl.addr);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let admin = if i % 2 == 0 { "alice" } else { "bob" };
            let json = i % 4 < 2;
            let mut args = strings(&["sync", &url]);
            if json {
                args.push("--json".into());
            }
            args.extend(pki.client(admin, &svc.addr));
            tokio::spawn(async move { (json, run_orly_async(RUN_LIMIT, &args, &[]).await) })
        })
        .collect();
    let mut outs = Vec::new();
    for c in clients {
        outs.push(c.await.unwrap());
    }
    let took = started.elapsed();
    let (mut ok, mut refused, mut fetched) = (0usize, 0usize, 0u64);
    for (json, out) in &outs {
        out.no_panic();
        let (error, got) = if *json {
            let last = out.last();
            (
                last["error"].as_str().unwrap_or("").to_string(),
                last["fetched"].as_u64().unwrap_or(0),
            )
        } else {
            let got = out
                .stderr
                .split("fetched ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (out.stderr.clone(), got)
        };
        match out.code {
            EXIT_OK => {
                ok += 1;
                fetched += got;
            }
            EXIT_REFUSED => {
                assert!(
                    error.contains("retry after"),
                    "refused without a retry delay: {out}"
                );
                refused += 1;
            }
            _ => panic!("exit 0 or 3 expected: {out}"),
        }
    }
    eprintln!("{CLIENTS} concurrent syncs: {ok} completed, {refused} refused, in {took:?}");
    assert!(ok >= 1, "no sync was admitted");
    let st = svc.terminate();
    assert!(st.success(), "{st:?}");
    drop(rl);
    assert_eq!(
        ids(&store),
        ids(&remote),
        "the store holds the relay's events"
    );
    assert_eq!(
        fetched, EVENTS,
        "the admitted syncs' fetched add up to the store's gain"
    );
    let recs = audit_records(&audit);
    let finished = sync_records(&recs, "sync_finished");
    assert_eq!(finished.len(), ok, "one finished record per admitted sync");
    let audited: u64 = finished
        .iter()
        .map(|r| r["counts"]["fetched"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        audited, EVENTS,
        "the audit's fetched add up to the store's gain"
    );
    let denied = recs
        .iter()
        .filter(|r| r["event"] == "decision" && r["allowed"] == false)
        .count();
    assert_eq!(denied, refused, "one audit record per refusal");
}

// ---------------------------------------------------------------------------------------------
// 4. counts that add up

/// Several syncs at once into one store (jobs of one process over one store, as the service
/// runs them): each counts as fetched only what it newly stored, so their `fetched` sum to
/// what the store gained; what another sync stored first is `already_had`. The same going up:
/// `sent` sums to what the relay gained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_count_only_what_they_stored() {
    use orly::store::{FjallStore, Store};
    use orly::sync::{Direction, PeerUrl, Progress, SyncJob, SyncRequest};
    const JOBS: usize = 6;
    const EVENTS: u64 = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote");
    gen_store(&remote, EVENTS, 12);
    let rl = relay(&remote, &[]);
    let url = PeerUrl::parse(&format!("ws://{}", rl.addr)).unwrap();
    let req = |direction| SyncRequest::new(url.clone(), Default::default(), direction);
    async fn all(store: Arc<dyn Store>, req: SyncRequest) -> Vec<Progress> {
        let jobs: Vec<_> = (0..JOBS)
            .map(|_| {
                let job = SyncJob::new(store.clone(), req.clone());
                tokio::spawn(job.run(|_| {}))
            })
            .collect();
        let mut out = Vec::new();
        for j in jobs {
            out.push(j.await.unwrap().expect("sync completes"));
        }
        out
    }

    // Down: JOBS syncs fetch the same events into one empty store.
    let local = FjallStore::open(&tmp.path().join("local")).unwrap();
    let local: Arc<dyn Store> = Arc::new(local);
    let done = all(local.clone(), req(Direction::Down)).await;
    let gained = local.count(Default::default()).await.unwrap();
    assert_eq!(gained, EVENTS);
    let sum = |f: fn(&Progress) -> u64| done.iter().map(f).sum::<u64>();
    assert_eq!(
        sum(|p| p.fetched),
        gained,
        "fetched over the syncs: {done:#?}"
    );
    for p in &done {
        assert_eq!(p.dropped, 0);
        assert_eq!(p.fetched + p.already_had + p.skipped, p.need, "{p:#?}");
    }
    assert!(
        sum(|p| p.already_had + p.skipped) > 0,
        "the syncs did not overlap: {done:#?}"
    );

    // Up: JOBS syncs upload the same events from one store to one empty relay.
    let up_remote = tmp.path().join("up-remote");
    std::fs::create_dir_all(&up_remote).unwrap();
    let up_relay = relay(&up_remote, &[]);
    let url = PeerUrl::parse(&format!("ws://{}", up_relay.addr)).unwrap();
    let up_req = req(Direction::Up).with_peer_url(url);
    let done = all(local.clone(), up_req).await;
    drop(up_relay);
    let relay_gained = ids(&up_remote).len() as u64;
    assert_eq!(relay_gained, EVENTS);
    let sum = |f: fn(&Progress) -> u64| done.iter().map(f).sum::<u64>();
    assert_eq!(
        sum(|p| p.sent),
        relay_gained,
        "sent over the syncs: {done:#?}"
    );
    for p in &done {
        assert_eq!(p.rejected, 0);
        assert_eq!(p.sent + p.already_had, p.have, "{p:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. bytes in progress

/// The bytes moved are in every progress update, not only the last, in client mode (through
/// the service's `SyncProgress`) and in direct mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_carries_the_bytes_moved_so_far_in_both_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote");
    gen_store(&remote, 2000, 5);
    let rl = relay(&remote, &[]);
    let url = format!("ws://{}", rl.addr);
    for mode in ["client", "direct"] {
        let store = tmp.path().join(format!("store-{mode}"));
        std::fs::create_dir_all(&store).unwrap();
        let mut args = strings(&["sync", &url, "--json"]);
        let svc = if mode == "client" {
            let svc = sync_service(&store);
            args.extend(strings(&["--server", &svc.addr]));
            Some(svc)
        } else {
            args.extend(strings(&["--data-dir", store.to_str().unwrap()]));
            None
        };
        let out = run_orly_async(RUN_LIMIT, &args, &[]).await;
        assert_eq!(out.code, EXIT_OK, "[{mode}] {out}");
        drop(svc);
        let lines = out.json_lines();
        let (last, updates) = lines.split_last().unwrap();
        assert!(updates.len() >= 2, "[{mode}] progress updates: {lines:#?}");
        let (mut up, mut down) = (0, 0);
        for u in updates {
            let (s, r) = (
                u["bytes_sent"].as_u64().unwrap(),
                u["bytes_received"].as_u64().unwrap(),
            );
            assert!(
                s > 0 && r > 0,
                "[{mode}] an update without the bytes moved: {u}"
            );
            assert!(s >= up && r >= down, "[{mode}] bytes went backwards: {u}");
            (up, down) = (s, r);
        }
        assert!(
            last["bytes_sent"].as_u64().unwrap() >= up
                && last["bytes_received"].as_u64().unwrap() >= down,
            "[{mode}] {last}"
        );
        // 2000 events of at least 100 bytes each came down.
        assert!(
            last["bytes_received"].as_u64().unwrap() > 200_000,
            "[{mode}] {last}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. the service's event cap is its policy, not the relay's refusal

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_event_cap_is_reported_as_its_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"), &["alice"]);
    pki.edit_policy("max_events_per_sync = 1000000", "max_events_per_sync = 5");
    let audit = tmp.path().join("audit");
    let store = tmp.path().join("store");
    let svc = pki.service(&store, &audit);
    let remote = tmp.path().join("remote");
    import(&remote, &notes("cap", 20, T0));
    let rl = relay(&remote, &[]);
    let url = format!("ws://{}", rl.addr);
    let want = "stopped by the service's policy: at most 5 events per sync";
    for json in [false, true] {
        let mut args = strings(&["sync", &url]);
        if json {
            args.push("--json".into());
        }
        args.extend(pki.client("alice", &svc.addr));
        let out = run_orly_async(RUN_LIMIT, &args, &[]).await;
        out.no_panic();
        assert_eq!(out.code, EXIT_REFUSED, "{out}");
        let error = if json {
            let last = out.last();
            assert_eq!(last["error_kind"], "refused", "{last}");
            last["error"].as_str().unwrap_or("").to_string()
        } else {
            out.stderr.clone()
        };
        assert!(error.contains(want), "{error}");
        assert!(!error.contains("refused by relay"), "{error}");
    }
    let st = svc.terminate();
    assert!(st.success(), "{st:?}");
    let recs = audit_records(&audit);
    let finished = sync_records(&recs, "sync_finished");
    assert_eq!(finished.len(), 2);
    for r in finished {
        assert!(r["error"].as_str().unwrap_or("").contains(want), "{r}");
    }
    assert_eq!(ids(&store).len(), 10, "5 events per sync, two syncs");
}
