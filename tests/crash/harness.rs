//! The kill-round machinery shared by the crash tests: a seeded PRNG (seed printed, settable by
//! `ORLY_CRASH_SEED`, so a failing round reproduces), kill points drawn from it, `orly sync
//! --json` runs watched line by line so a kill lands at a chosen point of the transfer, store
//! templates copied per round.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Bound on any single `orly` run, and on any wait for a kill point.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Kill rounds per target unless `ORLY_CRASH_ROUNDS` says otherwise (1..=50).
const ROUNDS: usize = 4;
/// Fixed `created_at` of the generated events' newest one (`orly gen --until`).
pub const GEN_UNTIL: u64 = 1_760_000_000;
/// The kinds generated: regular, replaceable and addressable (no deletions, so the outcome of
/// any merge is the newest version per head, whatever the order).
pub const GEN_KINDS: &str = "1,7,1,0,3,10002,30023";

/// splitmix64: tiny, stable forever, good enough to pick kill points.
pub struct Rng(u64);

impl Rng {
    /// The stream for `target` under the run's seed (each target its own stream, so the tests
    /// do not depend on the order they run in). Prints the seed.
    pub fn for_target(target: &str) -> Self {
        let seed = seed();
        eprintln!("{target}: ORLY_CRASH_SEED={seed} reproduces this run");
        let salt = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Self(seed ^ salt)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `ORLY_CRASH_SEED` (decimal or 0x-hex), else one from the clock.
fn seed() -> u64 {
    match std::env::var("ORLY_CRASH_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("ORLY_CRASH_SEED={s:?} is not a u64"))
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// Kill rounds per target.
pub fn rounds() -> usize {
    std::env::var("ORLY_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
        .clamp(1, 50)
}

/// Where in a sync the kill lands.
#[derive(Debug, Clone, Copy)]
pub enum KillPoint {
    /// This long after the sync started: connecting, opening the store, reconciling.
    After(Duration),
    /// Once this share of the differences has been moved (as the progress lines say), plus a
    /// little more time.
    Moved(f64, Duration),
}

impl KillPoint {
    /// One in five early (time), the others at a share of the transfer.
    pub fn pick(rng: &mut Rng) -> Self {
        if rng.range(0, 5) == 0 {
            KillPoint::After(Duration::from_millis(rng.range(0, 400)))
        } else {
            KillPoint::Moved(rng.unit() * 0.9, Duration::from_millis(rng.range(0, 25)))
        }
    }
}

/// A running `orly sync ... --json`, its progress lines read as they come.
pub struct SyncRun {
    child: Child,
    lines: Receiver<Value>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Direction, to know which counts make up the transfer.
    dir: String,
    started: Instant,
    /// The last progress line seen.
    pub last: Option<Value>,
    /// Progress lines seen.
    pub seen: usize,
}

/// How a sync run ended.
#[derive(Debug)]
pub struct Done {
    pub code: i32,
    pub last: Option<Value>,
    pub stderr: String,
    /// Progress lines seen.
    pub seen: usize,
}

impl Done {
    /// Exit 0 and a complete final line; returns it.
    pub fn converged(&self, when: &str) -> &Value {
        self.no_panic(when);
        assert_eq!(self.code, 0, "{when}: exit code: {self:?}");
        let last = self
            .last
            .as_ref()
            .unwrap_or_else(|| panic!("{when}: no progress line"));
        assert_eq!(last["complete"], true, "{when}: {last}");
        last
    }

    /// Exit 0, complete, and nothing moved in either direction.
    pub fn moved_nothing(&self, when: &str) {
        let last = self.converged(when);
        assert_eq!(
            (last["fetched"].as_u64(), last["sent"].as_u64()),
            (Some(0), Some(0)),
            "{when}: a second rerun still moved events: {last}"
        );
    }

    pub fn no_panic(&self, when: &str) {
        assert!(
            !self.stderr.contains("panicked"),
            "{when}: orly sync panicked:\n{}",
            self.stderr
        );
    }
}

/// Starts `orly sync URL ARGS... --json` (the `--dir` is read from `args`).
pub fn start_sync(url: &str, args: &[String]) -> SyncRun {
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "down".into());
    let mut child = Command::new(bin("orly"))
        .args(["sync", url, "--json"])
        .args(args)
        .env_remove("ORLY_DATA_DIR")
        .env_remove("ORLY_SYNC_AUTH_KEY")
        .env_remove("ORLY_SYNC_CA")
        .env_remove("ORLY_SYNC_CERT")
        .env_remove("ORLY_SYNC_KEY")
        .env_remove("ORLY_SYNC_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn orly sync");
    let out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("--json line is not JSON ({e}): {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    SyncRun {
        child,
        lines,
        stderr: Some(stderr),
        dir,
        started: Instant::now(),
        last: None,
        seen: 0,
    }
}

/// Runs `orly sync URL ARGS... --json` to its end.
pub fn run_sync(url: &str, args: &[String]) -> Done {
    start_sync(url, args).wait()
}

/// What to kill at the kill point.
pub enum Victim<'a> {
    /// The `orly sync` process itself.
    Sync,
    /// Another process (the relay, the service).
    Other(&'a mut Child),
}

/// Where a kill landed (printed in each round's log line).
#[derive(Debug)]
#[allow(dead_code)]
pub struct Landed {
    /// The sync had already ended when the kill came.
    pub sync_had_ended: bool,
    /// Time from the sync's start to the kill.
    pub at: Duration,
    /// Share of the differences moved by then, as the last progress line said.
    pub moved: f64,
}

impl SyncRun {
    /// Share of the differences moved, per the last line.
    fn moved(&self) -> f64 {
        let Some(p) = &self.last else { return 0.0 };
        let n = |k: &str| p[k].as_u64().unwrap_or(0) as f64;
        let total = match self.dir.as_str() {
            "down" => n("need"),
            "up" => n("have"),
            _ => n("need") + n("have"),
        };
        let done = n("fetched") + n("sent") + n("already_had") + n("skipped") + n("rejected");
        if total == 0.0 { 0.0 } else { done / total }
    }

    fn drain(&mut self, wait: Duration) -> bool {
        match self.lines.recv_timeout(wait) {
            Ok(v) => {
                self.last = Some(v);
                self.seen += 1;
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Waits for `point`, then sends SIGKILL to `victim`.
    pub fn kill_at(&mut self, point: KillPoint, victim: Victim) -> Landed {
        let mut ended = false;
        loop {
            let reached = match point {
                KillPoint::After(t) => self.started.elapsed() >= t,
                KillPoint::Moved(share, _) => self.last.is_some() && self.moved() >= share,
            };
            if reached {
                break;
            }
            if !self.drain(Duration::from_millis(2)) {
                ended = true; // stdout closed: the sync is over
                break;
            }
            assert!(
                self.started.elapsed() < RUN_LIMIT,
                "no kill point within {RUN_LIMIT:?}"
            );
        }
        if let (KillPoint::Moved(_, extra), false) = (point, ended) {
            std::thread::sleep(extra);
        }
        let ended = ended || self.child.try_wait().ok().flatten().is_some();
        let at = self.started.elapsed();
        match victim {
            Victim::Sync => {
                let _ = self.child.kill();
            }
            Victim::Other(c) => {
                c.kill().expect("kill -9");
                let _ = c.wait();
            }
        }
        Landed {
            sync_had_ended: ended,
            at,
            moved: self.moved(),
        }
    }

    /// Waits (bounded) for the end; reads what is left of its output.
    pub fn wait(mut self) -> Done {
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if self.started.elapsed() > RUN_LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("orly sync did not finish within {RUN_LIMIT:?}");
            }
            self.drain(Duration::from_millis(10));
        };
        while self.drain(Duration::from_millis(50)) {
            if self.started.elapsed() > RUN_LIMIT {
                break;
            }
        }
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        Done {
            code: status.code().unwrap_or(-1),
            last: self.last.take(),
            stderr: stderr.unwrap_or_default(),
            seen: self.seen,
        }
    }
}

impl Drop for SyncRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a (closed) store or any directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `orly gen` lines `skip..skip+count` of the seed-`seed` sequence, written to `path`.
pub fn gen_file(path: &Path, seed: u64, skip: u64, count: u64) {
    let status = Command::new(bin("orly"))
        .args([
            "gen",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args([
            "--skip",
            &skip.to_string(),
            "--kinds",
            GEN_KINDS,
            "--authors",
            "60",
        ])
        .args(["--until", &GEN_UNTIL.to_string(), "--span-days", "20"])
        .stdout(std::fs::File::create(path).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "orly gen");
}

/// `orly import FILES...` into `dir`.
pub fn import_files(dir: &Path, files: &[&Path]) {
    for f in files {
        let (code, _, err) = orly(&[
            "import",
            f.to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "import {}: {err}", f.display());
    }
}

/// Ids in the store in `dir`, as a set.
pub fn id_set(dir: &Path) -> BTreeSet<String> {
    ids(dir).into_iter().collect()
}

/// The two stores a sync runs between, as template stores (closed, copied per round), and
/// what any sync between them must converge to.
pub struct Sets {
    /// Our side's events.
    pub a: PathBuf,
    /// The relay's side's events (overlapping with ours: some shared, some replaced).
    pub b: PathBuf,
    /// A store holding both, merged by `orly import`: the converged state of either side.
    pub union: BTreeSet<String>,
}

impl Sets {
    /// Lines 0..2000 of one generated sequence on our side, 1500..3500 on the relay's.
    pub fn new(root: &Path, seed: u64) -> Self {
        let fa = root.join("a.jsonl");
        let fb = root.join("b.jsonl");
        gen_file(&fa, seed, 0, 2000);
        gen_file(&fb, seed, 1500, 2000);
        let (a, b, u) = (
            root.join("tpl-a"),
            root.join("tpl-b"),
            root.join("tpl-union"),
        );
        import_files(&a, &[&fa]);
        import_files(&b, &[&fb]);
        import_files(&u, &[&fa, &fb]);
        let union = id_set(&u);
        assert!(union.len() > id_set(&a).len() && union.len() > id_set(&b).len());
        Self { a, b, union }
    }
}

/// `orly stats --check` of every store named, each clean (see `crate::check`).
pub fn check_all(stores: &[&Path], when: &str) {
    for s in stores {
        crate::check(s, &format!("{when}: {}", s.display()));
    }
}

/// Stops a service with SIGTERM; it must exit 0.
pub fn stop(p: Proc, when: &str) {
    let name = p.name;
    let st = p.terminate();
    assert!(st.success(), "{when}: {name} did not stop cleanly: {st}");
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
