//! `cargo bench --bench postgres -- identical-1m`: `orly sync --dir both` between two identical
//! stores of 1M events (`ORLY_BENCH_PG_1M_EVENTS` to change), fjall ↔ fjall beside
//! PostgreSQL ↔ PostgreSQL. The goal (issue 17) is ≤ 0.1 s over PostgreSQL: the persistent
//! bucket index answers in one round, without reading item lists.
//!
//! Each engine imports the events once (timed: the import rate at 1M, beside fjall's); the
//! second store is a copy of the first (the directory for fjall, `CREATE DATABASE … TEMPLATE`
//! for PostgreSQL), which holds the same rows and bucket sums as a second import would.

use super::{Side, generate, import, pg, sync};
use std::process::Command;
use std::time::Instant;

/// Syncs timed per engine (the first one reads a cold copy).
const RUNS: usize = 3;

pub fn run(n: u64) {
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("shared.jsonl");
    let t = Instant::now();
    generate(&file, n, super::SHARED_SEED);
    let gen_secs = t.elapsed().as_secs_f64();
    let cluster = pg::PgCluster::start();
    let dir = |s: &str| work.path().join(s);
    let (fa_dir, fb_dir) = (dir("fa"), dir("fb"));
    let fa = Side::Fjall(fa_dir.display().to_string());
    let fb = Side::Fjall(fb_dir.display().to_string());
    let pa_url = cluster.database();
    let pa = Side::Pg(pa_url.clone());

    let fj_import = import(&fa, &file);
    let pg_import = import(&pa, &file);

    let t = Instant::now();
    let ok = Command::new("cp")
        .arg("-r")
        .arg(&fa_dir)
        .arg(&fb_dir)
        .status()
        .expect("cp")
        .success();
    assert!(ok, "copy the fjall store");
    let fj_copy = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let copy = "orly_bench_1m_copy";
    cluster.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {copy} TEMPLATE {} STRATEGY FILE_COPY",
            pg::db_name(&pa_url)
        ),
    );
    let pg_copy = t.elapsed().as_secs_f64();
    let pb = Side::Pg(cluster.url(copy));

    let mut times = [Vec::new(), Vec::new()];
    let mut last = [serde_json::Value::Null, serde_json::Value::Null];
    for _ in 0..RUNS {
        for (k, (a, b)) in [(&fa, &fb), (&pa, &pb)].into_iter().enumerate() {
            let (secs, j) = sync(a, b);
            assert!(
                j["have"] == 0 && j["need"] == 0,
                "identical stores differ: {j}"
            );
            times[k].push(secs);
            last[k] = j;
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (fj_best, pg_best) = (best(&times[0]), best(&times[1]));
    println!(
        "PostgreSQL beside fjall, identical {n} events (ratio = postgres / fjall; `orly gen` took \
         {gen_secs:.1} s):"
    );
    println!(
        "  import:         fjall {fj_import:.1} s ({:.0} ev/s), postgres {pg_import:.1} s ({:.0} \
         ev/s), rate ratio {:.2} (goal >= 0.5)",
        n as f64 / fj_import,
        n as f64 / pg_import,
        fj_import / pg_import
    );
    println!(
        "  second store:   fjall directory copy {fj_copy:.1} s, postgres CREATE DATABASE … \
         TEMPLATE {pg_copy:.1} s"
    );
    println!(
        "  identical sync, --dir both, best of {RUNS}: fjall {fj_best:.3} s (runs {}; round {}), \
         postgres {pg_best:.3} s (runs {}; round {}), time ratio {:.2} (goal: postgres <= 0.1 s: \
         {})",
        list(&times[0]),
        last[0]["round"],
        list(&times[1]),
        last[1]["round"],
        pg_best / fj_best,
        if pg_best <= 0.1 { "met" } else { "NOT met" }
    );
}
