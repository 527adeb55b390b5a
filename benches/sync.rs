//! Sync benchmark: orly on both sides (the `orly-relay` and `orly sync` release binaries) over
//! loopback, on stores built from the deterministic generator. Prints wall time, rounds, bytes
//! each way and the client's peak RSS per case, beside the in-process cost of the negentropy
//! reconciliation alone for the same sets (the protocol's floor on this machine, measured in the
//! same run), as a ratio.
//!
//! `cargo bench --bench sync` runs every case; `cargo bench --bench sync -- small` only the
//! 100 000-event ones; `-- floors` only the in-process reconciliation of each case; `-- query`
//! relay queries by index; `-- overhead` client mode and the launcher layout; `-- sequence` the
//! user's sequence (import, sync, sync again) on freshly imported stores, which every full run
//! also ends with. Stores are cached under target/bench-data/<layout> (built once, copied per
//! run).

#[path = "support/sequence.rs"]
mod sequence;

use orly::cli::gen_events::{GenSpec, generate};
use orly::store::FjallStore;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

struct Case {
    name: &'static str,
    total: u64,
    differ: u64,
    dir: &'static str,
    frame: Option<u64>,
    reference: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "identical 1M, both",
        total: 1_000_000,
        differ: 0,
        dir: "both",
        frame: None,
        reference: "0.08 s, 103 MB",
    },
    Case {
        name: "100k, 1000 differ each way, both",
        total: 100_000,
        differ: 1_000,
        dir: "both",
        frame: None,
        reference: "1.4 s, 221 MB",
    },
    Case {
        name: "100k, 1000 differ each way, both, frame 60000",
        total: 100_000,
        differ: 1_000,
        dir: "both",
        frame: Some(60_000),
        reference: "1.4 s, 221 MB",
    },
    Case {
        name: "1M, 10000 differ each way, none",
        total: 1_000_000,
        differ: 10_000,
        dir: "none",
        frame: None,
        reference: "35.6 s, 272 MB",
    },
    Case {
        name: "1M, 10000 differ each way, both",
        total: 1_000_000,
        differ: 10_000,
        dir: "both",
        frame: None,
        reference: "36.4 s (12.3 s best path), 1.78 GB",
    },
    Case {
        name: "1M, 10000 differ each way, both, frame 60000",
        total: 1_000_000,
        differ: 10_000,
        dir: "both",
        frame: Some(60_000),
        reference: "36.4 s (12.3 s best path), 1.78 GB",
    },
];

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    // target/release/deps/sync-HASH → target/release/NAME
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target dir")
}

fn spec(seed: u64, count: u64) -> GenSpec {
    GenSpec {
        count,
        seed,
        authors: 1000,
        kinds: vec![1, 7],
        span_days: 365,
        ..GenSpec::default()
    }
}

/// The store layout the cached stores were built with: bump it when keyspaces or keys change,
/// so the bench measures stores as `orly import` writes them today, not upgraded ones (an
/// upgrade at open leaves its writes in the journal, which every later open replays).
const LAYOUT: &str = "layout-3";

/// Builds (once) the two stores of a size: shared events plus `differ` only on each side.
fn stores(total: u64, differ: u64) -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-data")
        .join(LAYOUT)
        .join(format!("{total}-{differ}"));
    let (a, b) = (root.join("a"), root.join("b"));
    if root.join("ready").exists() {
        return (a, b);
    }
    let _ = std::fs::remove_dir_all(&root);
    eprintln!("building stores {total}/{differ} (once)...");
    let sa = FjallStore::open(&a).expect("open a");
    let sb = FjallStore::open(&b).expect("open b");
    let shared = total - differ;
    let mut at = 0;
    while at < shared {
        let next = (at + 50_000).min(shared);
        let evs = generate(&spec(1, shared), at..next);
        sa.save_blocking(&evs).expect("save");
        sb.save_blocking(&evs).expect("save");
        at = next;
    }
    if differ > 0 {
        sa.save_blocking(&generate(&spec(2, differ), 0..differ))
            .expect("save");
        sb.save_blocking(&generate(&spec(3, differ), 0..differ))
            .expect("save");
    }
    sa.flush().expect("flush");
    sb.flush().expect("flush");
    drop((sa, sb));
    std::fs::write(root.join("ready"), b"").expect("marker");
    (a, b)
}

fn copy(src: &Path, dst: &Path) {
    let _ = std::fs::remove_dir_all(dst);
    let ok = Command::new("cp")
        .arg("-r")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp")
        .success();
    assert!(ok, "copy store");
}

/// The negentropy crate alone, both sides in this process, over the same two sets.
fn floor(a: &Path, b: &Path, frame: u64) -> (f64, u64) {
    use negentropy::{Id, Negentropy, NegentropyStorageVector};
    use orly::store::Order;
    let seal = |items: Vec<(u64, [u8; 32])>| -> Result<NegentropyStorageVector, negentropy::Error> {
        let mut v = NegentropyStorageVector::with_capacity(items.len());
        for (t, id) in items {
            v.insert(t, Id::from_byte_array(id))?;
        }
        v.seal()?;
        Ok(v)
    };
    let items = |p: &Path| {
        let s = FjallStore::open(p).expect("open");
        let mut v = Vec::new();
        s.query_blocking(&orly::event::Filter::default(), Order::OldestFirst, |e| {
            v.push((e.created_at, e.id));
            true
        })
        .expect("scan");
        v
    };
    let (ia, ib) = (items(a), items(b));
    let started = Instant::now();
    let mut client = Negentropy::owned(seal(ia).expect("seal"), frame).expect("neg");
    let mut server = Negentropy::owned(seal(ib).expect("seal"), frame).expect("neg");
    let mut msg = client.initiate().expect("init");
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    loop {
        rounds += 1;
        let reply = server.reconcile(&msg).expect("reconcile");
        match client
            .reconcile_with_ids(&reply, &mut have, &mut need)
            .expect("reconcile")
        {
            Some(m) => msg = m,
            None => break,
        }
    }
    (started.elapsed().as_secs_f64(), rounds)
}

/// Our reconciler alone, both sides in this process, each over its store's persistent index
/// (what `orly sync` against `orly-relay` does, without the network and transfers).
fn floor_indexed(a: &Path, b: &Path, frame: u64) -> (f64, u64) {
    use orly::negentropy::Reconciler;
    let (sa, sb) = (
        FjallStore::open(a).expect("open"),
        FjallStore::open(b).expect("open"),
    );
    let all = orly::event::Filter::default();
    let started = Instant::now();
    let mut client = Reconciler::new(
        sa.neg_storage_blocking(&all, usize::MAX).expect("set"),
        frame,
    )
    .expect("neg");
    let mut server = Reconciler::new(
        sb.neg_storage_blocking(&all, usize::MAX).expect("set"),
        frame,
    )
    .expect("neg");
    let mut msg = client.initiate().expect("init");
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    loop {
        rounds += 1;
        let reply = server.respond(&msg).expect("respond");
        match client.next(&reply, &mut have, &mut need).expect("next") {
            Some(m) => msg = m,
            None => break,
        }
    }
    (started.elapsed().as_secs_f64(), rounds)
}

/// Median of three.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Starts service `name` over the store in `dir` on 127.0.0.1:0; returns it and the address it
/// announces.
fn start(name: &str, dir: &Path) -> (std::process::Child, String) {
    start_with(name, dir, &[])
}

/// [`start`] with extra environment (e.g. `ORLY_DB_TYPE=grpc`).
fn start_with(name: &str, dir: &Path, envs: &[(&str, &str)]) -> (std::process::Child, String) {
    let mut child = Command::new(bin(name))
        .args([
            "--data-dir",
            dir.to_str().unwrap_or_default(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start service");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("announce");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    (child, addr)
}

/// One timed `orly sync` against `orly-relay` on fresh copies of the stores: (wall s, peak RSS
/// MB, final progress, exit status, stderr).
fn sync_once(
    case: &Case,
    a: &Path,
    b: &Path,
) -> (
    f64,
    f64,
    serde_json::Value,
    std::process::ExitStatus,
    String,
) {
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/work");
    std::fs::create_dir_all(&work).expect("work dir");
    let (wa, wb) = (work.join("a"), work.join("b"));
    copy(a, &wa);
    copy(b, &wb);
    let (mut relay, addr) = start("orly-relay", &wb);
    let mut args = vec![
        "-f".to_string(),
        "%e %M".to_string(),
        bin("orly").display().to_string(),
        "sync".into(),
        format!("ws://{addr}"),
        "--data-dir".into(),
        wa.display().to_string(),
        "--dir".into(),
        case.dir.into(),
        "--json".into(),
        "--timeout".into(),
        "120".into(),
    ];
    if let Some(f) = case.frame {
        args.extend(["--frame-size-limit".into(), f.to_string()]);
    }
    let out = Command::new("/usr/bin/time")
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("orly sync");
    let _ = relay.kill();
    let _ = relay.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let timing = stderr.lines().last().unwrap_or_default();
    let mut t = timing.split_whitespace();
    let wall: f64 = t.next().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
    let rss_mb = t
        .next()
        .and_then(|x| x.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        / 1024.0;
    (wall, rss_mb, last, out.status, stderr.into_owned())
}

fn run(case: &Case) {
    let (a, b) = stores(case.total, case.differ);
    let runs: Vec<_> = (0..3).map(|_| sync_once(case, &a, &b)).collect();
    let wall = median(runs.iter().map(|r| r.0).collect());
    let rss_mb = runs.iter().map(|r| r.1).fold(0.0, f64::max);
    let (_, _, last, status, stderr) = runs.into_iter().last().expect("three runs");
    let frame = case.frame.unwrap_or(0);
    let (floor_s, floor_rounds) = floor(&a, &b, frame);
    let (ours_s, ours_rounds) = floor_indexed(&a, &b, frame);
    println!("\n{}", case.name);
    println!(
        "  orly: {wall:.3} s wall (median of 3), {rss_mb:.0} MB peak RSS (client, max of 3), {} rounds, {:.2} MB up / {:.2} MB down, fetched {} sent {} have {} need {}, complete {}",
        last["round"],
        last["bytes_sent"].as_f64().unwrap_or(0.0) / 1e6,
        last["bytes_received"].as_f64().unwrap_or(0.0) / 1e6,
        last["fetched"],
        last["sent"],
        last["have"],
        last["need"],
        last["complete"],
    );
    println!(
        "  negentropy alone in-process (same sets, frame {}): {floor_s:.3} s, {floor_rounds} rounds; orly / floor = {:.1}x",
        if frame == 0 {
            "unlimited".to_string()
        } else {
            frame.to_string()
        },
        wall / floor_s.max(1e-9)
    );
    println!(
        "  orly's reconciler alone over both persistent indexes in-process: {ours_s:.3} s, {ours_rounds} rounds ({:.2}x the crate's in-memory floor)",
        ours_s / floor_s.max(1e-9)
    );
    println!(
        "  C++ reference figure from the issue (not measured in this run): {}",
        case.reference
    );
    if !status.success() {
        println!(
            "  orly sync exited {:?}: {}",
            status.code(),
            stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
        );
    }
}

/// Issue 4's overhead figure: the same 100k/1% `--dir both` sync, direct and through a plaintext
/// `orly-sync-negentropy` on loopback (client mode), in one run; best of three each. Also the
/// launcher's layout, where both the sync service and the relay reach their stores through
/// `orly-db` (the negentropy sessions then run inside each orly-db).
fn client_mode_overhead() {
    let (a, b) = stores(100_000, 1_000);
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/work");
    std::fs::create_dir_all(&work).expect("work dir");
    let (wa, wb) = (work.join("a"), work.join("b"));
    const MODES: [&str; 3] = ["direct", "client", "over orly-db"];
    let mut best = [f64::MAX; 3];
    for _ in 0..3 {
        for (slot, mode) in MODES.iter().enumerate() {
            copy(&a, &wa);
            copy(&b, &wb);
            let mut children = Vec::new();
            let relay_addr = if slot == 2 {
                let (db, db_addr) = start("orly-db", &wb);
                children.push(db);
                let grpc = [("ORLY_DB_TYPE", "grpc"), ("ORLY_GRPC_SERVER", &db_addr)];
                let (relay, addr) = start_with("orly-relay", &wb, &grpc);
                children.push(relay);
                addr
            } else {
                let (relay, addr) = start("orly-relay", &wb);
                children.push(relay);
                addr
            };
            let url = format!("ws://{relay_addr}");
            let mut cmd = Command::new(bin("orly"));
            cmd.args(["sync", &url, "--dir", "both", "--json"])
                .env("RUST_LOG", "warn");
            match slot {
                0 => {
                    cmd.args(["--data-dir", wa.to_str().unwrap_or_default()]);
                }
                1 => {
                    let (svc, addr) = start("orly-sync-negentropy", &wa);
                    cmd.args(["--server", &addr]);
                    children.push(svc);
                }
                _ => {
                    let (db, db_addr) = start("orly-db", &wa);
                    children.push(db);
                    let grpc = [("ORLY_DB_TYPE", "grpc"), ("ORLY_GRPC_SERVER", &db_addr)];
                    let (svc, addr) = start_with("orly-sync-negentropy", &wa, &grpc);
                    cmd.args(["--server", &addr]);
                    children.push(svc);
                }
            }
            let started = Instant::now();
            let out = cmd.output().expect("orly sync");
            let secs = started.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "{mode} sync failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            best[slot] = best[slot].min(secs);
            for mut c in children.into_iter().rev() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    println!("\nclient-mode overhead, 100k with 1000 differing each way, --dir both (best of 3)");
    println!(
        "  direct {:.3} s, through orly-sync-negentropy {:.3} s: ratio {:.2} (goal <= 1.10)",
        best[0],
        best[1],
        best[1] / best[0]
    );
    println!(
        "  launcher layout (sync service and relay each over orly-db) {:.3} s: ratio {:.2} to direct",
        best[2],
        best[2] / best[0]
    );
}

/// Relay queries (`REQ`, newest first, limit 500) over the 1M store, by the index each one
/// uses, against the plain time-index query measured in the same run; beside each, the cost of
/// reading every index entry the filter selects (what a query cost when it collected all
/// candidates before reading the newest).
fn queries() {
    use orly::event::Filter;
    use orly::store::Order;
    let (a, _) = stores(1_000_000, 0);
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/work/q");
    copy(&a, &work);
    let store = FjallStore::open(&work).expect("open");
    let authors: Vec<String> = orly::cli::gen_events::generate(&spec(1, 1_000_000), 0..3000)
        .iter()
        .map(|e| hex::encode(e.pubkey))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .take(300)
        .collect();
    let follows = serde_json::json!({"authors": authors, "kinds": [1]}).to_string();
    let cases: [(&str, String, bool); 5] = [
        ("time index (baseline)", "{}".into(), true),
        ("kinds [1]", r#"{"kinds":[1]}"#.into(), true),
        ("kinds [1,7]", r#"{"kinds":[1,7]}"#.into(), true),
        ("300 authors x kind 1", follows, true),
        (
            "#t, 4 values",
            r##"{"#t":["nostr","relay","sync","zap"]}"##.into(),
            false,
        ),
    ];
    let time = |f: &Filter| {
        let mut runs = Vec::new();
        let mut n = 0;
        for _ in 0..7 {
            n = 0;
            let t = Instant::now();
            store
                .query_blocking(f, Order::NewestFirst, |_| {
                    n += 1;
                    true
                })
                .expect("query");
            runs.push(t.elapsed().as_secs_f64());
        }
        (median(runs), n)
    };
    println!("\nqueries over 1M events, newest first, limit 500 (median of 7)");
    let mut base = f64::NAN;
    for (name, json, exact) in cases {
        let mut f = Filter::from_json(&json).expect("filter");
        f.limit = Some(500);
        let (secs, n) = time(&f);
        if base.is_nan() {
            base = secs;
        }
        let scan = if exact {
            let t = Instant::now();
            let all = store.count_blocking(&f).expect("count");
            format!(
                "; reading all {all} entries {:.1} ms ({:.0}x)",
                t.elapsed().as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() / secs
            )
        } else {
            String::new()
        };
        println!(
            "  {name}: {:.2} ms for {n} events, {:.2}x the baseline{scan}",
            secs * 1e3,
            secs / base
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "query") {
        queries();
        return;
    }
    let only_small = std::env::args().any(|a| a == "small");
    if std::env::args().any(|a| a == "overhead") {
        client_mode_overhead();
        return;
    }
    if std::env::args().any(|a| a == "sequence") {
        sequence::run();
        return;
    }
    let only_floors = std::env::args().any(|a| a == "floors");
    for case in CASES {
        if only_small && case.total > 100_000
            || std::env::args().any(|a| a == "1m") && case.total < 1_000_000
        {
            continue;
        }
        if only_floors {
            let (a, b) = stores(case.total, case.differ);
            let frame = case.frame.unwrap_or(0);
            let (crate_s, crate_r) = floor(&a, &b, frame);
            let (ours_s, ours_r) = floor_indexed(&a, &b, frame);
            println!(
                "{}: crate in memory {crate_s:.3} s / {crate_r} rounds, orly over indexes {ours_s:.3} s / {ours_r} rounds",
                case.name
            );
            continue;
        }
        run(case);
    }
    if !only_floors {
        client_mode_overhead();
        sequence::run();
    }
}
