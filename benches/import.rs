//! Import throughput beside the raw BIP-340 verification rate measured in the same run: the
//! signature check is the physical limit of ingest, so the ratio says how much of the machine
//! the importer leaves on the table. Goal (issue 2): import ≥ 0.7 × raw verification, both
//! cores, on 100 000 events.
//!
//! `cargo bench --bench import` (harness = false: a plain binary, best of 3 runs per figure).

use indicatif::ProgressBar;
use orly::cli::gen_events::{GenSpec, generate};
use orly::cli::import::import;
use orly::event::Event;
use orly::store::FjallStore;
use rayon::prelude::*;
use std::io::{BufReader, BufWriter, Write};
use std::time::{Duration, Instant};

const N: u64 = 100_000;
const RUNS: usize = 3;

/// Best (shortest) of `RUNS` runs of `f`, as events per second.
fn best_rate(name: &str, mut f: impl FnMut() -> Duration) -> f64 {
    let best = (0..RUNS).map(|_| f()).min().expect("at least one run");
    let rate = N as f64 / best.as_secs_f64();
    println!("{name:<44} {rate:>10.0} events/s  (best of {RUNS}: {best:.3?})");
    rate
}

fn timed(f: impl FnOnce() -> usize) -> Duration {
    let t = Instant::now();
    let ok = f();
    let d = t.elapsed();
    assert_eq!(ok as u64, N, "every generated event must verify");
    d
}

fn main() {
    let spec = GenSpec {
        count: N,
        ..Default::default()
    };
    let t = Instant::now();
    let events: Vec<Event> = generate(&spec, 0..N);
    println!(
        "generated {N} events in {:.2?} ({} rayon threads, {} CPUs)",
        t.elapsed(),
        rayon::current_num_threads(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("events.jsonl");
    {
        let mut w = BufWriter::new(std::fs::File::create(&file).expect("create"));
        for ev in &events {
            writeln!(w, "{}", ev.to_json()).expect("write");
        }
        w.flush().expect("flush");
    }
    println!(
        "JSONL: {:.1} MiB\n",
        std::fs::metadata(&file).expect("stat").len() as f64 / 1048576.0
    );

    // (a) Raw BIP-340 verification: the signature over the claimed id, nothing else.
    let raw_all = best_rate("raw BIP-340 verify, all cores", || {
        timed(|| {
            events
                .par_iter()
                .filter(|e| e.verify_signature().is_ok())
                .count()
        })
    });
    let raw_one = best_rate("raw BIP-340 verify, one core", || {
        timed(|| {
            events
                .iter()
                .filter(|e| e.verify_signature().is_ok())
                .count()
        })
    });
    // (b) What every ingest does per event: recompute the id, then check the signature.
    let full_all = best_rate("id check + signature (Event::verify), all cores", || {
        timed(|| events.par_iter().filter(|e| e.verify().is_ok()).count())
    });
    // (c) The whole import: read JSONL, parse, verify, store (fresh store each run, flushed to
    //     disk as `orly import` does before it reports).
    let mut run = 0;
    let imported = best_rate("orly import (read+parse+verify+store)", || {
        run += 1;
        let dir = tmp.path().join(format!("store{run}"));
        let store = FjallStore::open(&dir).expect("open store");
        let input = BufReader::with_capacity(1 << 20, std::fs::File::open(&file).expect("open"));
        let t = Instant::now();
        let s =
            import(&store, input, &mut std::io::sink(), &ProgressBar::hidden()).expect("import");
        store.flush().expect("flush");
        let d = t.elapsed();
        assert_eq!((s.lines, s.rejected), (N, 0), "{s:?}");
        assert_eq!(s.accepted + s.replaced + s.superseded, N, "{s:?}");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        d
    });

    println!();
    println!(
        "single-core → all-cores speed-up of raw verify: {:.2}",
        raw_all / raw_one
    );
    println!(
        "Event::verify / raw verify (all cores):        {:.2}",
        full_all / raw_all
    );
    println!(
        "import / raw verify (all cores):               {:.2}  (goal ≥ 0.70: {})",
        imported / raw_all,
        if imported / raw_all >= 0.7 {
            "met"
        } else {
            "NOT met"
        }
    );
}
