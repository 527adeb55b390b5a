//! PostgreSQL beside fjall, in one run: import with verification, a sync of two identical
//! stores (the bucket index answers), and a sync where each side has 1 % the other lacks
//! (`--dir both`). Each figure is one run of the real binaries (`orly import`, `orly sync`
//! against `orly-relay`), on a private PostgreSQL cluster this bench starts.
//!
//! `cargo bench --bench postgres` (harness = false). `ORLY_BENCH_PG_EVENTS` sets the store size
//! (default 100 000). Goals (issue 17): identical sync over PostgreSQL ≤ 0.1 s at 1M, 1 % both
//! ≤ 0.5 s at 100k, import ≥ 0.5 × fjall's rate.

#[path = "../tests/common/postgres.rs"]
mod pg;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn orly() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orly"));
    c.env("RUST_LOG", "warn").env_remove("ORLY_DB_TYPE");
    c
}

/// Where a store lives: a fjall directory or a PostgreSQL URL.
enum Side {
    Fjall(String),
    Pg(String),
}

impl Side {
    fn apply(&self, c: &mut Command) {
        match self {
            Side::Fjall(d) => {
                c.env("ORLY_DATA_DIR", d);
            }
            Side::Pg(u) => {
                c.env("ORLY_DB_TYPE", "postgres")
                    .env("ORLY_POSTGRES_URL", u);
            }
        }
    }
}

fn generate(out: &Path, count: u64, seed: u64) {
    let f = std::fs::File::create(out).expect("create");
    let st = orly()
        .args(["gen", "--kinds", "1,7", "--authors", "200"])
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .stdout(f)
        .status()
        .expect("orly gen");
    assert!(st.success());
}

fn import(side: &Side, file: &Path) -> f64 {
    let mut c = orly();
    c.arg("import").arg(file).stderr(Stdio::null());
    side.apply(&mut c);
    let t = Instant::now();
    assert!(c.status().expect("import").success());
    t.elapsed().as_secs_f64()
}

/// `orly sync --dir both` from `local` against an orly-relay over `remote`: (seconds, rounds).
fn sync(local: &Side, remote: &Side) -> (f64, serde_json::Value) {
    let mut r = Command::new(env!("CARGO_BIN_EXE_orly-relay"));
    r.args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    remote.apply(&mut r);
    let mut relay = r.spawn().expect("relay");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(relay.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("announce");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut c = orly();
    c.args(["sync", &format!("ws://{addr}"), "--dir", "both", "--json"]);
    local.apply(&mut c);
    let t = Instant::now();
    let out = c.output().expect("sync");
    let secs = t.elapsed().as_secs_f64();
    let _ = relay.kill();
    let _ = relay.wait();
    let last: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    assert!(out.status.success(), "sync failed: {last}");
    (secs, last)
}

fn main() {
    let n: u64 = std::env::var("ORLY_BENCH_PG_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let work = tempfile::tempdir().expect("tempdir");
    let (shared, a_only, b_only) = (
        work.path().join("shared.jsonl"),
        work.path().join("a.jsonl"),
        work.path().join("b.jsonl"),
    );
    generate(&shared, n, 7);
    generate(&a_only, (n / 100).max(1), 8);
    generate(&b_only, (n / 100).max(1), 9);
    let cluster = pg::PgCluster::start();
    let dir = |s: &str| work.path().join(s).display().to_string();
    let (fa, fb) = (Side::Fjall(dir("fa")), Side::Fjall(dir("fb")));
    let (pa, pb) = (Side::Pg(cluster.database()), Side::Pg(cluster.database()));

    let fj_import = import(&fa, &shared);
    let pg_import = import(&pa, &shared);
    import(&fb, &shared);
    import(&pb, &shared);
    let (fj_same, fj_same_j) = sync(&fa, &fb);
    let (pg_same, pg_same_j) = sync(&pa, &pb);
    for (side, f) in [
        (&fa, &a_only),
        (&fb, &b_only),
        (&pa, &a_only),
        (&pb, &b_only),
    ] {
        import(side, f);
    }
    let (fj_both, fj_both_j) = sync(&fa, &fb);
    let (pg_both, pg_both_j) = sync(&pa, &pb);

    println!("PostgreSQL beside fjall, {n} events (one run each):");
    println!(
        "  import:          fjall {fj_import:.2} s ({:.0} ev/s), postgres {pg_import:.2} s ({:.0} \
         ev/s), rate ratio {:.2} (goal >= 0.5)",
        n as f64 / fj_import,
        n as f64 / pg_import,
        fj_import / pg_import
    );
    println!(
        "  identical sync:  fjall {fj_same:.3} s (round {}), postgres {pg_same:.3} s (round {})",
        fj_same_j["round"], pg_same_j["round"]
    );
    println!(
        "  1% both:         fjall {fj_both:.3} s (have {}, need {}), postgres {pg_both:.3} s \
         (have {}, need {})",
        fj_both_j["have"], fj_both_j["need"], pg_both_j["have"], pg_both_j["need"]
    );
}
