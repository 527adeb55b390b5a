//! Crash, kill and load in the suite (issue 15 §3). Here: `kill -9` in the middle of a large
//! `orly import`: the reopened store must be consistent (every index entry has its event and
//! every event its index entries), must hold exactly what some prefix of the input produces
//! (batches are atomic and in order), and a re-import must converge to the full set.
//! The modules kill `orly import`, `orly sync` (down and up), `orly-relay` and
//! `orly-sync-negentropy` at seeded random points (`ORLY_CRASH_SEED` reproduces a run,
//! `ORLY_CRASH_ROUNDS` sets the rounds per target), and damage an index on purpose for
//! `orly stats --check` to find.

mod common;
#[path = "crash/damaged_index.rs"]
mod damaged_index;
#[path = "crash/harness.rs"]
mod harness;
#[path = "crash/import_kill.rs"]
mod import_kill;
#[path = "crash/pki.rs"]
mod pki;
#[path = "crash/service_kill.rs"]
mod service_kill;
#[path = "crash/sync_kill.rs"]
mod sync_kill;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const COUNT: &str = "120000";

/// Bytes actually allocated under `p` (the journal is preallocated, so its length says nothing).
fn allocated(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => allocated(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// An order-independent fingerprint of a set of ids, updated one id at a time.
fn fp(id: &str) -> u128 {
    u128::from_str_radix(&id[..32], 16).unwrap()
}

/// NIP-01 storage rules replayed line by line (regular; replaceable newest per pubkey+kind;
/// addressable newest per pubkey+kind+d; tie → lowest id), written independently of the store.
/// Returns the final stored set and, for the state after every prefix of the input, its
/// (size, fingerprint) → prefix length.
fn replay(events: &[Value]) -> (BTreeSet<String>, HashMap<(usize, u128), usize>) {
    let mut stored = BTreeSet::new();
    let mut heads: BTreeMap<(String, u64, String), (u64, String)> = BTreeMap::new();
    let mut print = 0u128;
    let mut prefixes = HashMap::from([((0, 0), 0)]);
    for (n, v) in events.iter().enumerate() {
        let kind = v["kind"].as_u64().unwrap();
        let at = v["created_at"].as_u64().unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let d = v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t[0] == "d")
            .and_then(|t| t[1].as_str())
            .unwrap_or_default();
        let pubkey = v["pubkey"].as_str().unwrap().to_string();
        assert!(!(20000..30000).contains(&kind) && kind != 5, "not modelled");
        let head = match kind {
            0 | 3 | 10000..=19999 => Some((pubkey, kind, String::new())),
            30000..=39999 => Some((pubkey, kind, d.to_string())),
            _ => None,
        };
        let mut take = true;
        if let Some(h) = head {
            match heads.get(&h) {
                Some((t, cur)) if (*t, std::cmp::Reverse(cur)) >= (at, std::cmp::Reverse(&id)) => {
                    take = false;
                }
                Some((_, cur)) => {
                    print ^= fp(cur);
                    stored.remove(cur);
                    heads.insert(h, (at, id.clone()));
                }
                None => {
                    heads.insert(h, (at, id.clone()));
                }
            }
        }
        if take && stored.insert(id.clone()) {
            print ^= fp(&id);
        }
        prefixes.insert((stored.len(), print), n + 1);
    }
    (stored, prefixes)
}

fn export_ids(dir: &Path) -> BTreeSet<String> {
    let (code, out, err) = orly(&["export", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "export: {err}");
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("exported line is JSON");
            v["id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// `orly stats --check --json`: exit code 0, no problems; returns the event count.
fn check(dir: &Path, when: &str) -> u64 {
    let (code, out, err) = orly(&[
        "stats",
        "--check",
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!err.contains("panicked"), "{when}: stats panicked: {err}");
    let st: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{when}: stats --json: {e}: {out}{err}"));
    assert_eq!(
        st["integrity"]["problems"],
        serde_json::json!([]),
        "{when}: integrity problems"
    );
    assert_eq!(code, 0, "{when}: stats --check exit code: {err}");
    assert_eq!(st["integrity"]["events"], st["stats"]["events"], "{when}");
    st["stats"]["events"].as_u64().unwrap()
}

fn summary(stderr: &str) -> BTreeMap<String, u64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("imported "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let (_, counts) = line.split_once(": ").unwrap();
    counts
        .split(", ")
        .map(|p| {
            let (name, n) = p.split_once(' ').unwrap();
            (name.to_string(), n.parse().unwrap())
        })
        .collect()
}

#[test]
fn kill_9_mid_import_leaves_a_consistent_prefix_and_reimport_converges() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let status = Command::new(bin("orly"))
        .args(["gen", "--count", COUNT, "--seed", "11"])
        .args(["--kinds", "1,7,1,7,0,3,10002,30023", "--authors", "200"])
        .stdout(std::fs::File::create(&file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&file).unwrap();
    let events: Vec<Value> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    drop(bytes);
    let (full, prefixes) = replay(&events);
    eprintln!(
        "{} events, {} to keep; generated and replayed in {:.1?}",
        events.len(),
        full.len(),
        t0.elapsed()
    );

    // Kill points, as bytes written under the store: just after the first commits, early, late.
    for (round, threshold) in [(1, 5u64 << 20), (2, 14 << 20), (3, 26 << 20)] {
        let when = format!("round {round} (killed at {} MiB)", threshold >> 20);
        let dir = tmp.path().join(format!("store{round}"));
        let mut child = Command::new(bin("orly"))
            .args(["import", file.to_str().unwrap(), "--data-dir"])
            .arg(&dir)
            .env_remove("ORLY_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("{when}: import ended ({st}) before the kill; use a bigger file");
            }
            if allocated(&dir) >= threshold {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{when}: stuck"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        let st = child.wait().unwrap();
        assert!(!st.success(), "{when}: import was not killed");
        let killed_after = started.elapsed();

        let count = check(&dir, &format!("{when}, after the kill"));
        assert!(count > 0, "{when}: nothing survived the kill");
        assert!(
            count < full.len() as u64,
            "{when}: import was already complete"
        );
        let partial = export_ids(&dir);
        assert_eq!(partial.len() as u64, count, "{when}");
        let print = partial.iter().fold(0u128, |a, id| a ^ fp(id));
        let prefix = prefixes.get(&(partial.len(), print));
        assert!(
            prefix.is_some(),
            "{when}: the {count} surviving events are not the result of any prefix of the input"
        );

        let t_reimport = Instant::now();
        let out = Command::new(bin("orly"))
            .args(["import", file.to_str().unwrap(), "--data-dir"])
            .arg(&dir)
            .env_remove("ORLY_DATA_DIR")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{when}: re-import: {err}");
        let t_reimport = t_reimport.elapsed();
        let s = summary(&err);
        assert_eq!(s["rejected"], 0, "{when}: {err}");
        assert_eq!(
            s["duplicate"], count,
            "{when}: survivors are duplicates: {err}"
        );
        let got = export_ids(&dir);
        assert!(
            got == full,
            "{when}: after re-import {} missing, {} unexpected",
            full.difference(&got).count(),
            got.difference(&full).count()
        );
        if round == 3 {
            assert_eq!(
                check(&dir, &format!("{when}, after re-import")),
                full.len() as u64
            );
        }
        eprintln!(
            "{when}: killed after {killed_after:.1?} at line ~{} with {count} events stored; \
             re-import {t_reimport:.1?}; round {:.1?}",
            prefix.unwrap(),
            started.elapsed()
        );
    }
    eprintln!("total {:.1?}", t0.elapsed());
}
