//! Shared test harness: real binaries on 127.0.0.1 port 0, real stores in temp dirs.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use orly::event::{Event, Keys, sign_event};

mod plain;
mod run;
pub use plain::*;
pub use run::*;

/// Bound on one gRPC call (including reading its whole stream).
pub const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Bound on a service announcing its address.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// A running child process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: String,
    pub name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Sends `kill -SIG` (e.g. "HUP") to the process; panics when `kill` fails.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits (up to 10 s) for exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }
}

pub fn bin(name: &str) -> PathBuf {
    match name {
        "orly" => PathBuf::from(env!("CARGO_BIN_EXE_orly")),
        "orly-relay" => PathBuf::from(env!("CARGO_BIN_EXE_orly-relay")),
        "orly-db" => PathBuf::from(env!("CARGO_BIN_EXE_orly-db")),
        "orly-sync-negentropy" => PathBuf::from(env!("CARGO_BIN_EXE_orly-sync-negentropy")),
        other => panic!("unknown binary {other}"),
    }
}

/// Waits (up to `limit`) for `child`'s first stdout line, "NAME listening on ADDR", and keeps
/// draining stdout so the child never blocks on a full pipe. The address, or the line seen
/// (empty when none came) with the child, still running, for the caller to report and stop.
pub fn announced(
    mut child: Child,
    name: &'static str,
    limit: Duration,
) -> Result<Proc, (Child, String)> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line.clone());
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            line.clear();
        }
    });
    let line = rx.recv_timeout(limit).unwrap_or_default();
    match line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|_| line.contains("listening on"))
    {
        Some(addr) => Ok(Proc {
            child,
            addr: addr.to_string(),
            name,
        }),
        None => Err((child, line)),
    }
}

/// Starts a service binary that announces "NAME listening on ADDR" on stdout, on port 0.
pub fn spawn_service(name: &'static str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd.env_remove("ORLY_DATA_DIR")
        .env_remove("ORLY_DB_TYPE")
        .env_remove("ORLY_GRPC_SERVER")
        .env_remove("ORLY_DB_TOKEN")
        .env_remove("ORLY_SYNC_NEGENTROPY_PEERS")
        .env_remove("ORLY_SYNC_NEGENTROPY_FILTER")
        .env_remove("ORLY_SYNC_NEGENTROPY_INTERVAL");
    // Each service its own peer state (never the user's), unless the test names one.
    cmd.env("ORLY_SYNC_NEGENTROPY_STATE_DIR", fresh_state_dir());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    announced(child, name, START_LIMIT).unwrap_or_else(|(mut child, line)| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{name} did not announce its address: {line:?}")
    })
}

/// A new directory for one service's managed-peer state, under the tests' scratch directory.
pub fn fresh_state_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "peer-state-{}-{n}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ))
}

/// `orly-relay` on port 0 over a fjall store in `dir`.
pub fn relay(dir: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    spawn_service("orly-relay", &args, &[])
}

/// `orly-sync-negentropy` on loopback without security, over the fjall store in `dir`.
pub fn sync_service(dir: &Path) -> Proc {
    spawn_service(
        "orly-sync-negentropy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &[("ORLY_DB_TYPE", "fjall")],
    )
}

/// `orly-sync-negentropy` on loopback without security, over the `orly-db` at `db_addr`.
pub fn sync_service_over_db(db_addr: &str) -> Proc {
    spawn_service(
        "orly-sync-negentropy",
        &["--listen", "127.0.0.1:0"],
        &[("ORLY_DB_TYPE", "grpc"), ("ORLY_GRPC_SERVER", db_addr)],
    )
}

/// `orly-db` on loopback (no token) over the fjall store in `dir`.
pub fn orly_db(dir: &Path) -> Proc {
    spawn_service(
        "orly-db",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    )
}

/// Runs `orly` with args; returns (exit code, stdout, stderr).
pub fn orly(args: &[&str]) -> (i32, String, String) {
    orly_env(args, &[])
}

pub fn orly_env(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin("orly"));
    cmd.args(args)
        .env_remove("ORLY_DATA_DIR")
        .env_remove("ORLY_SYNC_AUTH_KEY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run orly");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes events as JSONL.
pub fn write_jsonl(path: &Path, events: &[Event]) {
    let mut s = String::new();
    for e in events {
        s.push_str(&e.to_json());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// Imports events into the store in `dir` with `orly import`.
pub fn import(dir: &Path, events: &[Event]) {
    let f = dir.with_extension("import.jsonl");
    write_jsonl(&f, events);
    let (code, _, err) = orly(&[
        "import",
        f.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "import failed: {err}");
    let _ = std::fs::remove_file(f);
}

/// Ids of every event in the store in `dir` (via `orly export`), sorted.
pub fn ids(dir: &Path) -> Vec<String> {
    ids_matching(dir, "{}")
}

pub fn ids_matching(dir: &Path, filter: &str) -> Vec<String> {
    let (code, out, err) = orly(&[
        "export",
        "--filter",
        filter,
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "export failed: {err}");
    let mut v: Vec<String> = out
        .lines()
        .map(|l| {
            Event::from_json(l.as_bytes())
                .expect("exported event parses")
                .id_hex()
        })
        .collect();
    v.sort();
    v
}

/// Regular (kind 1) events by `n_authors` authors, distinct content per `tag`.
pub fn notes(tag: &str, n: usize, base_time: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let k = Keys::from_seed(tag.as_bytes(), (i % 5) as u64);
            let kind = if i % 4 == 0 { 7 } else { 1 };
            let tags = vec![vec![
                "t".to_string(),
                if i % 3 == 0 {
                    "rust".into()
                } else {
                    "nostr".into()
                },
            ]];
            sign_event(
                &k,
                base_time + i as u64,
                kind,
                tags,
                &format!("{tag} note {i}"),
            )
        })
        .collect()
}

/// Sorted, distinct ids of the events in `a` and `b`: what a store holding both has.
pub fn union(a: &[Event], b: &[Event]) -> Vec<String> {
    let mut v = ids_of(a);
    v.extend(ids_of(b));
    v.sort();
    v.dedup();
    v
}

/// Sorted ids of `events`.
pub fn ids_of(events: &[Event]) -> Vec<String> {
    let mut v: Vec<String> = events.iter().map(|e| e.id_hex()).collect();
    v.sort();
    v
}
