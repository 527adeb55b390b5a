//! The gRPC sync service `orly-sync-negentropy`, client mode `orly sync --server`, and `orly-db`:
//! real processes on 127.0.0.1 (port 0), real stores in temp dirs, every wait bounded.

mod common;
use common::*;

use orly::proto::orlysync::common::v1 as cpb;
use orly::proto::orlysync::negentropy::v1 as npb;
use orly::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};
use tonic::transport::Channel;

// ---------------------------------------------------------------------------------------------
// helpers

const T0: u64 = 1_700_000_000;
fn sync_client(addr: &str) -> NegentropyServiceClient<Channel> {
    block(NegentropyServiceClient::connect(format!("http://{addr}")))
        .unwrap_or_else(|e| panic!("connect to sync service at {addr}: {e}"))
}

fn list_syncs(c: &mut NegentropyServiceClient<Channel>) -> Vec<npb::SyncStatus> {
    block(c.list_syncs(npb::ListSyncsRequest {}))
        .expect("ListSyncs")
        .into_inner()
        .syncs
}

/// Polls `f` every 100 ms until it returns Some, or panics after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The final `--json` line of a sync (every stdout line must be JSON).
fn last_of(out: &Out) -> serde_json::Value {
    out.last()
}

fn counters(v: &serde_json::Value) -> [u64; 4] {
    ["have", "need", "fetched", "sent"].map(|k| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {v}"))
    })
}

fn is_empty_dir(d: &Path) -> bool {
    std::fs::read_dir(d).unwrap().next().is_none()
}

fn sorted_union(a: &[String], b: &[String]) -> Vec<String> {
    let s: BTreeSet<String> = a.iter().chain(b).cloned().collect();
    s.into_iter().collect()
}

/// A JSONL file of `count` generated regular events (kinds 1 and 7, so none supersedes another)
/// for `seed`, made once and kept in the target's tmp dir (written under a temporary name, then
/// renamed, so concurrent test processes never see a partial file).
fn gen_jsonl(count: u64, seed: u64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("service-gen-{count}-seed{seed}.jsonl"));
    if path.exists() {
        return path;
    }
    let out = run_orly(
        &[
            "gen",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--kinds",
            "1,7",
        ],
        &[],
        None,
    );
    assert_eq!(out.code, 0, "gen failed: {}", out.stderr);
    assert_eq!(out.stdout.lines().count() as u64, count);
    let part = dir.join(format!(
        "service-gen-{count}-seed{seed}.{}.{:?}.part",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&part, out.stdout).unwrap();
    std::fs::rename(&part, &path).unwrap();
    path
}

/// Imports a JSONL file into the store in `dir`.
fn import_file(dir: &Path, f: &Path) {
    let out = run_orly(
        &[
            "import",
            f.to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(out.code, 0, "import failed: {}", out.stderr);
}

const BIG: u64 = 20_000;

/// A store in `dir` holding the `BIG` generated events.
fn big_store(dir: &Path) {
    import_file(dir, &gen_jsonl(BIG, 77));
}

/// `orly stats --check --json` on a closed store: (exit code, event count).
fn stats_check(dir: &Path) -> (i32, u64, serde_json::Value) {
    let out = run_orly(
        &[
            "stats",
            "--check",
            "--json",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &[],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("stats output {:?}: {e}; {}", out.stdout, out.stderr));
    let n = v["stats"]["events"].as_u64().expect("stats.events");
    (out.code, n, v)
}

fn valid_request(url: &str) -> npb::SyncPeerRequest {
    npb::SyncPeerRequest {
        peer_url: url.into(),
        filter: None,
        since: 0,
        direction: npb::Direction::Down as i32,
        dry_run: false,
        frame_size_limit: None,
        timeout_seconds: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. the same sync, three ways

/// The filter of the comparison sync, and the same condition in Rust.
fn cmp_filter() -> String {
    format!(r##"{{"kinds":[1],"#t":["nostr"],"since":{}}}"##, T0 + 1005)
}

fn cmp_matches(e: &Event) -> bool {
    e.kind == 1
        && e.created_at >= T0 + 1005
        && e.tags
            .iter()
            .any(|t| t.len() >= 2 && t[0] == "t" && t[1] == "nostr")
}

struct CmpData {
    shared: Vec<Event>,
    only_local: Vec<Event>,
    only_remote: Vec<Event>,
}

impl CmpData {
    fn new() -> Self {
        Self {
            shared: notes("shared", 40, T0),
            only_local: notes("local", 30, T0 + 1000),
            only_remote: notes("remote", 36, T0 + 1000),
        }
    }
    /// Fresh copies: (store dir, relay dir) under `root/name`.
    fn fresh(&self, root: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (l, r) = (
            root.join(format!("{name}-local")),
            root.join(format!("{name}-relay")),
        );
        import(&l, &[self.shared.clone(), self.only_local.clone()].concat());
        import(
            &r,
            &[self.shared.clone(), self.only_remote.clone()].concat(),
        );
        (l, r)
    }
}

struct Outcome {
    json: serde_json::Value,
    store: Vec<String>,
    relay: Vec<String>,
}

#[test]
fn same_sync_direct_client_fjall_client_orly_db_identical() {
    orly::init_crypto();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let d = CmpData::new();
    let filter = cmp_filter();

    let up: Vec<Event> = d
        .only_local
        .iter()
        .filter(|e| cmp_matches(e))
        .cloned()
        .collect();
    let down: Vec<Event> = d
        .only_remote
        .iter()
        .filter(|e| cmp_matches(e))
        .cloned()
        .collect();
    assert!(
        !up.is_empty() && up.len() < d.only_local.len(),
        "filter must select some"
    );
    assert!(!down.is_empty() && down.len() < d.only_remote.len());
    let want_store = sorted_union(
        &ids_of(&[d.shared.clone(), d.only_local.clone()].concat()),
        &ids_of(&down),
    );
    let want_relay = sorted_union(
        &ids_of(&[d.shared.clone(), d.only_remote.clone()].concat()),
        &ids_of(&up),
    );
    let want_counts = [
        up.len() as u64,
        down.len() as u64,
        down.len() as u64,
        up.len() as u64,
    ];

    // direct mode
    let direct = {
        let (local, remote) = d.fresh(tmp.path(), "direct");
        let rl = relay(&remote, &[]);
        let url = format!("ws://{}", rl.addr);
        let out = run_orly(
            &[
                "sync",
                &url,
                "--dir",
                "both",
                "--filter",
                &filter,
                "--json",
                "--data-dir",
                local.to_str().unwrap(),
            ],
            &[],
            None,
        );
        assert_eq!(out.code, 0, "direct sync failed: {}", out.stderr);
        rl.terminate();
        Outcome {
            json: last_of(&out),
            store: ids(&local),
            relay: ids(&remote),
        }
    };

    // client mode: runs with an empty HOME and an empty cwd and must create nothing in either
    let client_run = |url: &str, server: &str| -> Out {
        let home = tempfile::tempdir().unwrap();
        let cwd = tempfile::tempdir().unwrap();
        let out = run_orly(
            &[
                "sync", url, "--server", server, "--dir", "both", "--filter", &filter, "--json",
            ],
            &[("HOME", home.path().to_str().unwrap())],
            Some(cwd.path()),
        );
        assert!(
            is_empty_dir(home.path()),
            "client mode created files under HOME"
        );
        assert!(
            is_empty_dir(cwd.path()),
            "client mode created files in its cwd"
        );
        out
    };

    // client mode, service over fjall
    let via_fjall = {
        let (local, remote) = d.fresh(tmp.path(), "fjall");
        let rl = relay(&remote, &[]);
        let svc = sync_service(&local);
        let out = client_run(&format!("ws://{}", rl.addr), &svc.addr);
        assert_eq!(out.code, 0, "client sync (fjall) failed: {}", out.stderr);
        svc.terminate();
        rl.terminate();
        Outcome {
            json: last_of(&out),
            store: ids(&local),
            relay: ids(&remote),
        }
    };

    // client mode, service over orly-db
    let via_db = {
        let (local, remote) = d.fresh(tmp.path(), "grpc");
        let rl = relay(&remote, &[]);
        let db = orly_db(&local);
        let svc = sync_service_over_db(&db.addr);
        let out = client_run(&format!("ws://{}", rl.addr), &svc.addr);
        assert_eq!(out.code, 0, "client sync (orly-db) failed: {}", out.stderr);
        svc.terminate();
        db.terminate();
        rl.terminate();
        Outcome {
            json: last_of(&out),
            store: ids(&local),
            relay: ids(&remote),
        }
    };

    for (name, o) in [
        ("direct", &direct),
        ("client/fjall", &via_fjall),
        ("client/orly-db", &via_db),
    ] {
        assert_eq!(o.json["complete"], true, "{name}: {}", o.json);
        assert!(o.json.get("error").is_none(), "{name}: {}", o.json);
        assert_eq!(
            counters(&o.json),
            want_counts,
            "{name} counters (have, need, fetched, sent): {}",
            o.json
        );
        assert_eq!(o.store, want_store, "{name}: store end state");
        assert_eq!(o.relay, want_relay, "{name}: relay end state");
    }
    assert_eq!(counters(&direct.json), counters(&via_fjall.json));
    assert_eq!(counters(&direct.json), counters(&via_db.json));
    eprintln!("same_sync_three_ways took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 2. five client-mode syncs at once

#[test]
fn five_concurrent_client_syncs_store_exactly_the_union() {
    orly::init_crypto();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    // Each relay: its own 80 events plus 20 that every relay holds (concurrent fetches of the
    // same ids must still store each once). The store starts with 5 of the common ones.
    let common_events = notes("everyone", 20, T0 + 50_000);
    let svc_dir = tmp.path().join("svc");
    import(&svc_dir, &common_events[..5]);
    let mut relays = Vec::new();
    let mut want: Vec<String> = ids_of(&common_events);
    for i in 0..5 {
        let dir = tmp.path().join(format!("relay{i}"));
        let own = notes(&format!("relay{i}"), 80, T0 + i as u64 * 10_000);
        want.extend(ids_of(&own));
        import(&dir, &[own, common_events.clone()].concat());
        relays.push((dir.clone(), relay(&dir, &[])));
    }
    want.sort();
    let distinct: BTreeSet<&String> = want.iter().collect();
    assert_eq!(
        distinct.len(),
        want.len(),
        "test data must be distinct per relay"
    );

    let svc = sync_service(&svc_dir);
    let handles: Vec<_> = relays
        .iter()
        .map(|(_, r)| {
            let url = format!("ws://{}", r.addr);
            let server = svc.addr.clone();
            std::thread::spawn(move || {
                run_orly(
                    &["sync", &url, "--server", &server, "--dir", "down", "--json"],
                    &[],
                    None,
                )
            })
        })
        .collect();
    let outs: Vec<Out> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(o.code, 0, "sync {i} failed: {}\n{}", o.stderr, o.stdout);
        let v = last_of(o);
        assert_eq!(v["complete"], true, "sync {i}: {v}");
        let [have, need, fetched, sent] = counters(&v);
        // `have` counts what other syncs stored meanwhile (the relay lacks it); down sends none.
        assert!(have <= 4 * 80, "sync {i}: {v}");
        assert_eq!(sent, 0, "sync {i}: {v}");
        assert!((80..=95).contains(&need), "sync {i}: need {need}: {v}");
        // An id another sync stored meanwhile is not fetched: skipped when known before the
        // fetch, already had when another sync stored it first.
        let skipped = v["skipped"].as_u64().expect("skipped");
        let already_had = v["already_had"].as_u64().expect("already_had");
        assert_eq!(fetched + skipped + already_had, need, "sync {i}: {v}");
        assert!(
            fetched >= 80,
            "sync {i}: its own 80 events are fetched: {v}"
        );
    }
    // The service saw five syncs, all finished.
    let mut c = sync_client(&svc.addr);
    let syncs = list_syncs(&mut c);
    assert_eq!(syncs.len(), 5, "{syncs:?}");
    assert!(
        syncs
            .iter()
            .all(|s| !s.running && s.progress.as_ref().is_some_and(|p| p.complete))
    );
    drop(c);

    svc.terminate();
    let got = ids(&svc_dir);
    assert_eq!(
        got.len(),
        want.len(),
        "event count in the store after 5 concurrent syncs"
    );
    // Each event is counted as fetched by the one sync that stored it.
    let fetched: u64 = outs.iter().map(|o| counters(&last_of(o))[2]).sum();
    assert_eq!(
        fetched,
        (want.len() - 5) as u64,
        "fetched add up to the store's gain"
    );
    assert_eq!(got, want, "the store holds exactly the union");
    let (code, n, v) = stats_check(&svc_dir);
    assert_eq!(code, 0, "integrity check: {v}");
    assert_eq!(n, want.len() as u64, "{v}");
    eprintln!("five_concurrent took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. a client killed mid-sync

#[test]
fn killed_client_cancels_job_keeps_stored_events_and_next_call_completes() {
    orly::init_crypto();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    big_store(&relay_dir);
    let relay_ids = ids(&relay_dir);
    assert_eq!(relay_ids.len() as u64, BIG);
    let rl = relay(&relay_dir, &[]);
    let url = format!("ws://{}", rl.addr);
    let svc_dir = tmp.path().join("svc");
    let svc = sync_service(&svc_dir);
    eprintln!("killed_client: setup {:?}", started.elapsed());

    // Wrapped in a Proc so a failing assertion below still kills it.
    let mut client = Proc {
        child: Command::new(bin("orly"))
            .args([
                "sync", &url, "--server", &svc.addr, "--dir", "down", "--json",
            ])
            .env_remove("ORLY_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        addr: String::new(),
        name: "orly",
    };
    let stdout = client.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Kill -9 at the first progress line that reports stored events, so there is something
    // for the service to keep.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = 0;
    let first = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("a progress line with fetched > 0 within 60 s")
            .unwrap();
        lines += 1;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["complete"], false,
            "the sync finished before it could be killed: {v}"
        );
        if v["fetched"].as_u64().unwrap_or(0) > 0 {
            break v;
        }
    };
    client.child.kill().unwrap(); // SIGKILL
    let _ = client.child.wait();
    let seen_fetched = first["fetched"].as_u64().unwrap();
    eprintln!(
        "killed_client: killed at progress line {lines} after {:?}: {first}",
        started.elapsed()
    );

    let mut c = sync_client(&svc.addr);
    let st = wait_for(
        "the killed client's sync to stop",
        Duration::from_secs(30),
        || {
            let s = list_syncs(&mut c);
            assert_eq!(s.len(), 1, "{s:?}");
            (!s[0].running).then(|| s[0].clone())
        },
    );
    let p = st.progress.clone().expect("progress");
    assert!(!p.complete, "the job must not have completed: {p:?}");
    assert!(
        p.error.contains("cancelled"),
        "error mentions cancelled: {p:?}"
    );
    assert_eq!(p.error_kind, "cancelled", "{p:?}");
    assert!(
        (p.fetched_count as u64) >= seen_fetched && (p.fetched_count as u64) < BIG,
        "the sync stopped part way, after what the client saw ({seen_fetched}): {p:?}"
    );
    drop(c);
    svc.terminate();

    // What it stored is valid and stays stored.
    let (code, kept, v) = stats_check(&svc_dir);
    assert_eq!(code, 0, "integrity after a killed client: {v}");
    assert!(
        kept >= p.fetched_count as u64,
        "reported fetched {} but store holds {kept}",
        p.fetched_count
    );
    assert!(kept < BIG, "{kept}");
    let partial = ids(&svc_dir);
    assert!(partial.iter().all(|id| relay_ids.binary_search(id).is_ok()));
    eprintln!(
        "killed_client: kept {kept} events, reported fetched {}",
        p.fetched_count
    );

    // The service serves the next call, which brings the rest.
    let svc = sync_service(&svc_dir);
    let out = run_orly(
        &[
            "sync", &url, "--server", &svc.addr, "--dir", "down", "--json",
        ],
        &[],
        None,
    );
    assert_eq!(out.code, 0, "next sync: {}", out.stderr);
    let v = last_of(&out);
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["need"].as_u64(), Some(BIG - kept), "{v}");
    assert_eq!(v["fetched"].as_u64(), Some(BIG - kept), "{v}");
    svc.terminate();
    rl.terminate();
    assert_eq!(ids(&svc_dir), relay_ids);
    let (code, n, v) = stats_check(&svc_dir);
    assert_eq!((code, n), (0, BIG), "{v}");
    eprintln!("killed_client took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 4. CancelSync by id

#[test]
fn cancel_sync_by_id_stops_the_job() {
    orly::init_crypto();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    big_store(&relay_dir);
    let rl = relay(&relay_dir, &[]);
    let url = format!("ws://{}", rl.addr);
    let svc = sync_service(&tmp.path().join("svc"));
    let mut c = sync_client(&svc.addr);

    let mut stream = block(c.sync_with_peer(valid_request(&url)))
        .expect("SyncWithPeer accepted")
        .into_inner();
    let first = block(stream.message())
        .expect("first message")
        .expect("stream has a first message");
    assert!(!first.complete && first.error.is_empty(), "{first:?}");
    let id = first.sync_id.clone();
    assert!(
        !id.is_empty(),
        "first SyncProgress carries the sync id: {first:?}"
    );
    assert_eq!(first.peer_url, url);

    let running = block(c.get_sync(npb::GetSyncRequest {
        sync_id: id.clone(),
    }))
    .expect("GetSyncStatus")
    .into_inner();
    assert_eq!(running.sync_id, id);
    assert_eq!(running.direction, "down");

    let r = block(c.cancel_sync(npb::CancelSyncRequest {
        sync_id: id.clone(),
    }))
    .expect("CancelSync")
    .into_inner();
    assert!(r.cancelled, "CancelSync on a running sync");

    // The stream ends, its last word an error mentioning "cancelled".
    let mut last = first;
    let end_error = loop {
        match block(stream.message()) {
            Ok(Some(m)) => {
                assert_eq!(m.sync_id, id);
                if !m.error.is_empty() {
                    last = m;
                    break last.error.clone();
                }
                assert!(
                    !m.complete,
                    "the sync completed instead of being cancelled: {m:?}"
                );
                last = m;
            }
            Ok(None) => panic!("stream ended without an error; last {last:?}"),
            Err(s) => break s.message().to_string(),
        }
    };
    assert!(
        end_error.contains("cancelled"),
        "stream error: {end_error:?}"
    );
    assert!(!last.complete);
    // After the final message the stream is over.
    assert!(matches!(block(stream.message()), Ok(None) | Err(_)));

    let st = wait_for(
        "GetSyncStatus running=false",
        Duration::from_secs(10),
        || {
            let s = block(c.get_sync(npb::GetSyncRequest {
                sync_id: id.clone(),
            }))
            .expect("GetSyncStatus")
            .into_inner();
            (!s.running).then_some(s)
        },
    );
    let p = st.progress.expect("progress");
    assert!(p.error.contains("cancelled"), "{p:?}");
    assert_eq!(p.error_kind, "cancelled");
    assert!((p.fetched_count as u64) < BIG, "{p:?}");

    // Cancelling again, or an unknown id: nothing to cancel.
    let again = block(c.cancel_sync(npb::CancelSyncRequest {
        sync_id: id.clone(),
    }))
    .unwrap()
    .into_inner();
    assert!(!again.cancelled);
    let unknown = block(c.cancel_sync(npb::CancelSyncRequest {
        sync_id: "00".repeat(12),
    }))
    .unwrap()
    .into_inner();
    assert!(!unknown.cancelled);
    let malformed = block(c.cancel_sync(npb::CancelSyncRequest {
        sync_id: "nope".into(),
    }))
    .unwrap_err();
    assert_eq!(
        malformed.code(),
        tonic::Code::InvalidArgument,
        "{malformed:?}"
    );
    let nf = block(c.get_sync(npb::GetSyncRequest {
        sync_id: "nope".into(),
    }))
    .unwrap_err();
    assert_eq!(nf.code(), tonic::Code::NotFound, "{nf:?}");
    drop(rl);
    eprintln!("cancel_sync took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 5. reflection and health

const SYNC_SVC: &str = "orlysync.negentropy.v1.NegentropyService";

#[test]
fn reflection_lists_services_and_health_is_serving() {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let svc = sync_service(&tmp.path().join("svc"));
    let names = reflection_services(&svc.addr);
    assert!(names.iter().any(|n| n == SYNC_SVC), "{names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
    wait_for("health SERVING", Duration::from_secs(15), || {
        (health(&svc.addr, SYNC_SVC).ok() == Some(SERVING)).then_some(())
    });
    assert_eq!(health(&svc.addr, "").ok(), Some(SERVING));
}

/// grpcurl lists what reflection lists: it must not advertise a service the process does not
/// serve (each process registers the whole descriptor set).
#[test]
fn reflection_lists_only_served_services() {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let svc = sync_service(&tmp.path().join("svc"));
    let names = reflection_services(&svc.addr);
    assert!(
        !names.iter().any(|n| n == "orlydb.v1.DatabaseService"),
        "orly-sync-negentropy advertises DatabaseService, which it does not serve: {names:?}"
    );
    drop(svc);
    let db = orly_db(&tmp.path().join("db"));
    let names = reflection_services(&db.addr);
    assert!(
        names.iter().any(|n| n == "orlydb.v1.DatabaseService"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == SYNC_SVC),
        "orly-db advertises NegentropyService, which it does not serve: {names:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. bad requests

#[test]
fn bad_requests_are_invalid_argument_naming_the_field_and_start_nothing() {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    import(&relay_dir, &notes("bad", 5, T0));
    let rl = relay(&relay_dir, &[]);
    let url = format!("ws://{}", rl.addr);
    let svc = sync_service(&tmp.path().join("svc"));
    let mut c = sync_client(&svc.addr);

    let kinds = cpb::Filter {
        kinds: vec![1, 70000],
        ..Default::default()
    };
    let authors = cpb::Filter {
        authors: vec![vec![1, 2, 3, 4, 5]],
        ..Default::default()
    };
    let cases: Vec<(&str, npb::SyncPeerRequest, &str)> = vec![
        (
            "unknown direction",
            npb::SyncPeerRequest {
                direction: 99,
                ..valid_request(&url)
            },
            "direction",
        ),
        (
            "kind 70000",
            npb::SyncPeerRequest {
                filter: Some(kinds),
                ..valid_request(&url)
            },
            "filter.kinds",
        ),
        (
            "5-byte author",
            npb::SyncPeerRequest {
                filter: Some(authors),
                ..valid_request(&url)
            },
            "filter.authors",
        ),
        ("http:// peer", valid_request("http://x"), "peer_url"),
        ("empty peer", valid_request(""), "peer_url"),
        (
            "frame limit 100",
            npb::SyncPeerRequest {
                frame_size_limit: Some(100),
                ..valid_request(&url)
            },
            "frame_size_limit",
        ),
    ];
    for (what, req, field) in cases {
        let err = block(c.sync_with_peer(req))
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(field),
            "{what}: message {:?} names {field}",
            err.message()
        );
        assert!(list_syncs(&mut c).is_empty(), "{what}: a sync was started");
    }

    // Client mode with a bad --dir: a usage error, nothing sent.
    let out = run_orly(
        &["sync", &url, "--server", &svc.addr, "--dir", "sideways"],
        &[],
        None,
    );
    assert_eq!(out.code, 2, "bad --dir: {}", out.stderr);
    assert!(out.stderr.contains("--dir"), "{}", out.stderr);
    assert!(list_syncs(&mut c).is_empty());

    // A valid request still works afterwards.
    let ok = run_orly(&["sync", &url, "--server", &svc.addr, "--json"], &[], None);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(last_of(&ok)["fetched"].as_u64(), Some(5));
    assert_eq!(list_syncs(&mut c).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 7. not ready, and no service

#[test]
fn store_unreachable_not_serving_unavailable_and_cli_exit_6() {
    orly::init_crypto();
    // A port where nothing listens.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let svc = sync_service_over_db(&dead);
    wait_for("health NOT_SERVING", Duration::from_secs(20), || {
        (health(&svc.addr, SYNC_SVC).ok() == Some(NOT_SERVING)).then_some(())
    });

    let mut c = sync_client(&svc.addr);
    let err = block(c.sync_with_peer(valid_request("ws://127.0.0.1:9")))
        .expect_err("SyncWithPeer must fail while the store is unreachable");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("not ready"), "{err:?}");
    assert!(list_syncs(&mut c).is_empty());

    let out = run_orly(
        &["sync", "ws://127.0.0.1:9", "--server", &svc.addr],
        &[],
        None,
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.stderr.contains("sync service not ready"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&svc.addr),
        "names the address: {}",
        out.stderr
    );

    let out = run_orly(
        &["sync", "ws://127.0.0.1:9", "--server", "127.0.0.1:1"],
        &[],
        None,
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.stderr.contains("Failed to connect to sync service"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("127.0.0.1:1"), "{}", out.stderr);

    // --json mode reports the same failure as a final line.
    let out = run_orly(
        &[
            "sync",
            "ws://127.0.0.1:9",
            "--server",
            "127.0.0.1:1",
            "--json",
        ],
        &[],
        None,
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    let v = last_of(&out);
    assert_eq!(v["complete"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("Failed to connect to sync service"),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------------
// flags mean the same in both modes

/// `--frame-size-limit 0` means "no limit" (see `orly sync --help`). Direct mode honours it;
/// client mode must too, so the same sync takes the same negentropy rounds either way.
#[test]
fn frame_size_limit_zero_means_no_limit_in_client_mode_too() {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    big_store(&relay_dir);
    // Local: 10 000 other events, so our own negentropy frames are far above 60 000 bytes.
    let local_events = gen_jsonl(10_000, 5);
    let (direct_dir, svc_dir) = (tmp.path().join("direct"), tmp.path().join("svc"));
    import_file(&direct_dir, &local_events);
    import_file(&svc_dir, &local_events);
    let rl = relay(&relay_dir, &[]);
    let url = format!("ws://{}", rl.addr);
    let svc = sync_service(&svc_dir);
    let run = |limit: &str, server: Option<&str>| -> serde_json::Value {
        let mut args = vec![
            "sync",
            &url,
            "--dir",
            "none",
            "--json",
            "--frame-size-limit",
            limit,
        ];
        match server {
            Some(s) => args.extend(["--server", s]),
            None => args.extend(["--data-dir", direct_dir.to_str().unwrap()]),
        }
        let out = run_orly(&args, &[], None);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        last_of(&out)
    };
    let direct_none = run("0", None);
    let direct_60k = run("60000", None);
    let client_60k = run("60000", Some(&svc.addr));
    let client_none = run("0", Some(&svc.addr));
    for v in [&direct_none, &direct_60k, &client_60k, &client_none] {
        assert_eq!(counters(v), [10_000, BIG, 0, 0], "{v}");
    }
    // Sanity: the limit matters for this data set.
    assert!(
        direct_60k["round"].as_u64() > direct_none["round"].as_u64(),
        "direct: no limit {direct_none} vs 60000 {direct_60k}"
    );
    assert_eq!(
        client_60k["round"], direct_60k["round"],
        "limit 60000: {client_60k} vs {direct_60k}"
    );
    assert_eq!(
        client_none["round"], direct_none["round"],
        "--frame-size-limit 0 (none): client mode {client_none} vs direct mode {direct_none}"
    );
}

/// orly-db has no authentication, so it refuses a non-loopback listen address (before opening
/// the store or binding anything) unless `--insecure` is given.
#[test]
fn orly_db_refuses_a_non_loopback_address() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("orly-db"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path().join("store"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run orly-db");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
    assert!(err.contains("--insecure"), "{err}");
    assert!(
        !tmp.path().join("store").exists(),
        "the store is not even created"
    );
}

/// With `ORLY_DB_TOKEN` set, orly-db serves its store only to callers that send the secret:
/// no secret or a wrong one is UNAUTHENTICATED and stores nothing; health stays open for the
/// launcher's probe.
#[test]
fn orly_db_with_a_token_refuses_callers_without_it() {
    use orly::store::db_auth::DbToken;
    use orly::store::{RemoteStore, Store, StoreError};
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let secret = "s3cret-for-this-test-0123456789";
    let db = spawn_service(
        "orly-db",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            tmp.path().join("db").to_str().unwrap(),
        ],
        &[("ORLY_DB_TOKEN", secret)],
    );
    let events = notes("db-token", 3, 1_700_000_000);
    for token in [None, Some(DbToken("wrong-secret-0123456789abcdef".into()))] {
        let store = block(RemoteStore::connect(&db.addr, token.as_ref())).unwrap();
        let err = block(store.save(events.clone())).expect_err("saved without the secret");
        assert!(
            matches!(&err, StoreError::Engine(m) if m.contains("needs the ORLY_DB_TOKEN secret")),
            "{token:?}: {err}"
        );
        assert!(block(store.ready()).is_err(), "{token:?}");
    }
    let health = block(async {
        tonic_health::pb::health_client::HealthClient::new(channel(&db.addr).await)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "orlydb.v1.DatabaseService".into(),
            })
            .await
    })
    .expect("health needs no secret");
    assert_eq!(health.into_inner().status, 1, "SERVING");

    let store = block(RemoteStore::connect(
        &db.addr,
        Some(&DbToken(secret.into())),
    ))
    .unwrap();
    block(store.ready()).expect("ready with the secret");
    let saved = block(store.save(events.clone())).expect("save with the secret");
    assert_eq!(saved.len(), 3);
    let got = block(store.neg_items(orly::event::Filter::default())).unwrap();
    assert_eq!(got.len(), 3, "only the authorized save stored anything");
}

/// Runs a reconciliation between two sessions to the end: (ids only the initiator has, ids only
/// the responder has).
async fn reconcile_sessions(
    init: &mut dyn orly::store::NegSession,
    resp: &mut dyn orly::store::NegSession,
) -> (BTreeSet<[u8; 32]>, BTreeSet<[u8; 32]>) {
    let mut msg = init.initiate().await.expect("initiate");
    let (mut have, mut need) = (BTreeSet::new(), BTreeSet::new());
    for _ in 0..100 {
        let answer = resp.respond(msg).await.expect("respond");
        let step = init.next(answer).await.expect("next");
        have.extend(step.have);
        need.extend(step.need);
        match step.reply {
            Some(m) => msg = m,
            None => return (have, need),
        }
    }
    panic!("no convergence in 100 rounds");
}

/// Relay and sync service over orly-db reconcile inside orly-db, next to its persistent index:
/// the whole store is answered from the index (no item set loaded or sent, so no cap), loaded
/// sets are capped there, both roles reach the right differences over several rounds, and a
/// broken message is refused without harming the service.
#[test]
fn orly_db_runs_negentropy_sessions_next_to_its_index() {
    use orly::event::Filter;
    use orly::negentropy::{NegError, VecStorage};
    use orly::store::{LocalSession, RemoteStore, Store, StoreError};
    let tmp = tempfile::tempdir().unwrap();
    let db = orly_db(&tmp.path().join("db"));
    let events = notes("db-neg", 400, 1_700_000_000);
    let store = block(RemoteStore::connect(&db.addr, None)).unwrap();
    assert_eq!(block(store.save(events.clone())).unwrap().len(), 400);
    let kind1 = Filter::from_json(r#"{"kinds":[1]}"#).unwrap();
    let items = |f: &Filter| -> Vec<(u64, [u8; 32])> {
        let mut v: Vec<_> = events
            .iter()
            .filter(|e| f.matches(e))
            .map(|e| (e.created_at, e.id))
            .collect();
        v.sort();
        v
    };
    // Our side: the store's set less every 13th item, plus ids it lacks.
    let ours = |f: &Filter| {
        let all = items(f);
        let missing: BTreeSet<[u8; 32]> = all.iter().step_by(13).map(|i| i.1).collect();
        let extra: BTreeSet<[u8; 32]> = (0..25u8).map(|i| [i; 32]).collect();
        let mut mine: Vec<_> = all
            .into_iter()
            .filter(|i| !missing.contains(&i.1))
            .collect();
        mine.extend(extra.iter().map(|id| (1_700_000_100, *id)));
        let local = LocalSession::new(Box::new(VecStorage::from_pairs(mine)), 4096).unwrap();
        (local, missing, extra)
    };

    let held = block(async {
        // orly-db initiates over the whole store: indexed, and the cap of 10 does not apply.
        let mut remote = store
            .neg_session(Filter::default(), 4096, 10)
            .await
            .expect("whole store");
        assert!(remote.is_indexed());
        assert_eq!(remote.size(), 400);
        let (mut local, missing, extra) = ours(&Filter::default());
        let (have, need) = reconcile_sessions(&mut *remote, &mut local).await;
        assert_eq!((have, need), (missing, extra), "orly-db as initiator");

        // orly-db responds over a loaded set (kind 1).
        let mut remote = store.neg_session(kind1.clone(), 4096, 1000).await.unwrap();
        assert!(!remote.is_indexed());
        assert_eq!(remote.size(), items(&kind1).len());
        let (mut local, missing, extra) = ours(&kind1);
        let (have, need) = reconcile_sessions(&mut local, &mut *remote).await;
        assert_eq!((have, need), (extra, missing), "orly-db as responder");

        // One step whose ids are more than one response carries (131 072): orly-db's set is
        // empty, ours 140 000 made-up ids, so its one answer needs them all.
        let nothing_here = Filter::from_json(r#"{"kinds":[12345]}"#).unwrap();
        let mut remote = store
            .neg_session(nothing_here, 0, usize::MAX)
            .await
            .unwrap();
        assert_eq!(remote.size(), 0);
        let many: Vec<(u64, [u8; 32])> = (0..140_000u32)
            .map(|i| {
                let mut id = [7u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                (1_600_000_000 + u64::from(i % 1000), id)
            })
            .collect();
        let want: BTreeSet<[u8; 32]> = many.iter().map(|i| i.1).collect();
        let mut local = LocalSession::new(Box::new(VecStorage::from_pairs(many)), 0).unwrap();
        let (have, need) = reconcile_sessions(&mut *remote, &mut local).await;
        assert!(have.is_empty());
        assert_eq!(need.len(), want.len(), "every id, across responses");
        assert_eq!(need, want);

        // A loaded set past the cap is refused there, naming the cap (0 too).
        for cap in [5, 0] {
            match store.neg_session(kind1.clone(), 0, cap).await {
                Err(StoreError::TooMany { max }) => assert_eq!(max, cap),
                Err(e) => panic!("over the cap {cap}: {e}"),
                Ok(_) => panic!("over the cap {cap}: opened"),
            }
        }

        // An empty list matches nothing, through orly-db as in the store itself.
        let none = Filter::from_json(r#"{"kinds":[]}"#).unwrap();
        let s = store
            .neg_session(none.clone(), 0, usize::MAX)
            .await
            .unwrap();
        assert_eq!(s.size(), 0, "empty kinds list");
        assert_eq!(store.count(none.clone()).await.unwrap(), 0);
        assert!(store.neg_items(none).await.unwrap().is_empty());

        // A broken message ends that session with a protocol error; the service goes on.
        let mut remote = store
            .neg_session(Filter::default(), 0, usize::MAX)
            .await
            .unwrap();
        match remote.respond(vec![0x61, 0x00, 0x00, 0x07]).await {
            Err(NegError::Malformed(m)) => assert!(!m.is_empty()),
            other => panic!("broken message: {other:?}"),
        }
        assert!(remote.respond(vec![0x61]).await.is_err(), "session ended");
        store.ready().await.expect("orly-db still serves");
        let again = store
            .neg_session(Filter::default(), 0, usize::MAX)
            .await
            .unwrap();
        assert_eq!(again.size(), 400);
        again
    });
    // An open session does not hold orly-db's shutdown: it stops promptly and cleanly.
    let started = Instant::now();
    let status = db.terminate();
    assert!(status.success(), "orly-db exit: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(held);
}
