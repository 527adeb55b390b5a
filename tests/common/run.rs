//! `orly` run as a child process with a bound: its exit code, stdout and stderr, how long it
//! took, and what tests read from them (JSON lines, the final one, no panic). One blocking form
//! for `#[test]` functions and one async form for tokio tests; both remove the environment
//! variables a developer's shell could leak in.

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on any one `orly` run unless a test gives its own.
pub const RUN_LIMIT: Duration = Duration::from_secs(180);

/// What `orly` read from its environment that a test must set itself or not at all.
pub const ORLY_CLIENT_ENV: [&str; 6] = [
    "ORLY_DATA_DIR",
    "ORLY_SYNC_AUTH_KEY",
    "ORLY_SYNC_CA",
    "ORLY_SYNC_CERT",
    "ORLY_SYNC_KEY",
    "ORLY_SYNC_TOKEN",
];

/// A finished `orly` run.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    /// Every non-empty stdout line, parsed as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The final JSON line, every stdout line being JSON.
    pub fn last(&self) -> serde_json::Value {
        self.json_lines()
            .pop()
            .unwrap_or_else(|| panic!("no JSON line; stderr:\n{}", self.stderr))
    }

    /// The final non-empty stdout line (a `--json` summary), parsed.
    pub fn last_json(&self) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("no JSON line; stderr: {}", self.stderr));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Asserts neither stream shows a panic.
    pub fn no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "panic output:\n{}",
            self.stderr
        );
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `orly ARGS` with `envs`, in `cwd` when given; killed (and the test failed) after `limit`.
pub fn run_orly_within(
    limit: Duration,
    args: &[&str],
    envs: &[(&str, &str)],
    cwd: Option<&Path>,
) -> Out {
    let mut cmd = Command::new(super::bin("orly"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in ORLY_CLIENT_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn orly");
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for orly") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orly {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: t1.join().expect("stdout reader"),
        stderr: t2.join().expect("stderr reader"),
        elapsed: start.elapsed(),
    }
}

/// [`run_orly_within`] [`RUN_LIMIT`].
pub fn run_orly(args: &[&str], envs: &[(&str, &str)], cwd: Option<&Path>) -> Out {
    run_orly_within(RUN_LIMIT, args, envs, cwd)
}

/// `orly ARGS` with `envs` from a tokio test; killed (and the test failed) after `limit`.
pub async fn run_orly_async<S: AsRef<OsStr> + std::fmt::Debug>(
    limit: Duration,
    args: &[S],
    envs: &[(&str, &str)],
) -> Out {
    let mut cmd = tokio::process::Command::new(super::bin("orly"));
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for k in ORLY_CLIENT_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("orly {args:?} did not end within {limit:?}"))
        .expect("run orly");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}
