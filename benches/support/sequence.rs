//! The sequence a user runs, timed as whole commands: `orly import` into two fresh stores,
//! `orly-relay` on one, then `orly sync` from the other, then `orly sync` again. Each store is
//! opened exactly as a user's would be, straight after the import that wrote it, so what an open
//! costs after heavy writes (fjall's journal) shows here and not in the cached-store cases.
//!
//! Baselines in the same run: `orly stats` on an empty store (process start and an open with
//! nothing to read back), the same `orly stats` straight after the import, and orly's own
//! reconciler in-process over both stores' persistent indexes (the sync's floor).

use super::{bin, floor_indexed, median, spec, start};
use orly::cli::gen_events::generate;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// (name, events in each store, events only on each side, `--dir`).
const CASES: &[(&str, u64, u64, &str)] = &[
    ("identical 100k, both", 100_000, 0, "both"),
    (
        "100k, 1000 differ each way (1 %), both",
        100_000,
        1_000,
        "both",
    ),
];

const ROUNDS: usize = 3;

/// Wall seconds of a command that must succeed.
fn timed(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().expect("run");
    let s = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

fn orly(args: &[&str]) -> Command {
    let mut c = Command::new(bin("orly"));
    c.args(args).env("RUST_LOG", "warn");
    c
}

fn write_jsonl(path: &Path, parts: &[std::ops::Range<u64>], seeds: &[u64], total: u64) {
    let mut w = BufWriter::new(std::fs::File::create(path).expect("create"));
    for (range, seed) in parts.iter().zip(seeds) {
        for ev in generate(&spec(*seed, total), range.clone()) {
            writeln!(w, "{}", ev.to_json()).expect("write");
        }
    }
    w.flush().expect("flush");
}

/// Runs every case; prints medians of [`ROUNDS`] rounds.
pub fn run() {
    let root = tempfile::tempdir().expect("temp dir");
    let empty = root.path().join("empty");
    let d = empty.to_str().unwrap_or_default();
    timed(&mut orly(&["stats", "--data-dir", d]));
    let empty_open = median(
        (0..5)
            .map(|_| timed(&mut orly(&["stats", "--data-dir", d])))
            .collect(),
    );
    println!(
        "\nthe user's sequence: import, sync, sync again (whole commands, median of {ROUNDS})"
    );
    println!(
        "  baseline: `orly stats` on an empty store {:.3} s",
        empty_open
    );
    for &(name, total, differ, dir) in CASES {
        let shared = total - differ;
        let (fa, fb) = (root.path().join("a.jsonl"), root.path().join("b.jsonl"));
        // Side a: shared events, then its own; side b: the same shared ones, then others.
        write_jsonl(&fa, &[0..shared, shared..total], &[1, 1], total);
        write_jsonl(&fb, &[0..shared, 0..differ], &[1, 2], total);
        let mut rows: Vec<[f64; 4]> = Vec::new();
        let mut floor = (0.0, 0);
        for round in 0..ROUNDS {
            let (a, b) = (
                root.path().join(format!("a{round}")),
                root.path().join(format!("b{round}")),
            );
            let (sa, sb) = (
                a.to_str().unwrap_or_default(),
                b.to_str().unwrap_or_default(),
            );
            let import = timed(&mut orly(&[
                "import",
                fa.to_str().unwrap_or_default(),
                "--data-dir",
                sa,
            ]));
            timed(&mut orly(&[
                "import",
                fb.to_str().unwrap_or_default(),
                "--data-dir",
                sb,
            ]));
            let stats_after_import = timed(&mut orly(&["stats", "--data-dir", sa]));
            if round == 0 {
                // Reads only: the stores stay as the import left them.
                floor = floor_indexed(&a, &b, 0);
            }
            let (mut relay, addr) = start("orly-relay", &b);
            let url = format!("ws://{addr}");
            let sync = || timed(&mut orly(&["sync", &url, "--dir", dir, "--data-dir", sa]));
            let first = sync();
            let again = sync();
            let _ = relay.kill();
            let _ = relay.wait();
            rows.push([import, stats_after_import, first, again]);
            let _ = std::fs::remove_dir_all(&a);
            let _ = std::fs::remove_dir_all(&b);
        }
        let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
        let (import, stats, first, again) = (col(0), col(1), col(2), col(3));
        println!("  {name}");
        println!(
            "    orly import {import:.2} s; then `orly stats` {stats:.3} s ({:.2}x the empty-store open)",
            stats / empty_open.max(1e-9)
        );
        println!(
            "    orly sync right after the import {first:.3} s, again {again:.3} s (first / again = {:.2}); \
             reconciler alone in-process {:.3} s ({} rounds), sync / reconciler = {:.1}x",
            first / again.max(1e-9),
            floor.0,
            floor.1,
            first / floor.0.max(1e-9)
        );
    }
}
