//! `orly` as a Unix tool under closed pipes: every subcommand whose stdout reader has gone away
//! (or whose stderr reader has) ends quietly — no panic, no backtrace, never exit 101 — with
//! the exit code it has when its output is read; bulk output stops early; a sync or an import
//! whose output nobody reads still does all its work. Every run is bounded in time.

mod common;
use common::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any one run may take (generous: the machine may be loaded).
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A pipe whose reader is already closed: any write to it fails with EPIPE at once.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

struct Run {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Runs `orly args` with stdout a pipe nobody reads (and stderr too when `stderr_closed`),
/// killing it after [`RUN_LIMIT`].
fn run_unread(args: &[&str], stderr_closed: bool) -> Run {
    let mut cmd = Command::new(bin("orly"));
    cmd.args(args)
        .env_remove("ORLY_DATA_DIR")
        .env_remove("ORLY_SYNC_AUTH_KEY")
        .stdin(Stdio::null())
        .stdout(closed_pipe());
    cmd.stderr(if stderr_closed {
        closed_pipe()
    } else {
        Stdio::piped()
    });
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn orly");
    let reader = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        })
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orly {args:?} still running after {RUN_LIMIT:?} with its reader gone");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stderr: reader
            .map(|r| r.join().expect("stderr reader"))
            .unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// The run ended quietly with `expected`.
fn assert_quiet(args: &[&str], run: &Run, expected: i32) {
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("Broken pipe"),
        "orly {args:?} with its reader gone wrote:\n{}",
        run.stderr
    );
    assert_ne!(run.code, Some(101), "orly {args:?} panicked");
    assert_eq!(
        run.code,
        Some(expected),
        "orly {args:?} with its reader gone; stderr:\n{}",
        run.stderr
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// A store of `n` generated events (more than a megabyte of JSONL for 5 000), and its JSONL.
fn generated_store(root: &Path, n: u64) -> (PathBuf, PathBuf) {
    let jsonl = root.join("gen.jsonl");
    let out = Command::new(bin("orly"))
        .args(["gen", "--count", &n.to_string(), "--seed", "9"])
        .output()
        .expect("orly gen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&jsonl, &out.stdout).unwrap();
    let dir = root.join("store");
    let (code, _, err) = orly(&["import", s(&jsonl), "--data-dir", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    (dir, jsonl)
}

fn event_count(dir: &Path) -> u64 {
    let (code, out, err) = orly(&["stats", "--json", "--data-dir", s(dir)]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json");
    v["stats"]["events"].as_u64().expect("event count")
}

/// Every report-printing subcommand, stdout unread: the same exit code as when read, quietly.
#[test]
fn every_subcommand_ends_quietly_when_stdout_is_unread() {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (store, _) = generated_store(root, 5_000);
    let pki = root.join("pki");
    let (code, _, err) = orly(&["certs", "init", s(&pki), "--admin", "alice"]);
    assert_eq!(code, 0, "{err}");
    let token_file = root.join("alice.token");
    let (code, token, err) = orly(&[
        "token",
        "mint",
        "--admin",
        "alice",
        "--key",
        s(&pki.join("token.key")),
        "--cert",
        s(&pki.join("alice.pem")),
    ]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(&token_file, token).unwrap();
    let audit = root.join("audit-empty");
    std::fs::create_dir_all(&audit).unwrap();
    let (token_key, alice_pem, audit_pub) = (
        pki.join("token.key"),
        pki.join("alice.pem"),
        pki.join("audit.pub"),
    );

    let cases: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["--version"],
        vec!["stats", "--help"],
        vec!["sync", "--help"],
        vec!["stats", "--data-dir", s(&store)],
        vec!["stats", "--json", "--data-dir", s(&store)],
        vec!["stats", "--check", "--data-dir", s(&store)],
        vec!["stats", "--check", "--json", "--data-dir", s(&store)],
        vec!["export", "--data-dir", s(&store)],
        vec![
            "export",
            "--ascending",
            "--filter",
            r#"{"kinds":[1]}"#,
            "--data-dir",
            s(&store),
        ],
        vec!["gen", "--count", "3000"],
        vec![
            "token",
            "mint",
            "--admin",
            "alice",
            "--key",
            s(&token_key),
            "--cert",
            s(&alice_pem),
        ],
        vec!["token", "inspect", s(&token_file)],
        vec![
            "certs",
            "init",
            s(&pki),
            "--admin",
            "alice",
            "--admin",
            "bob",
            "--force",
        ],
        vec!["audit", "verify", s(&audit)],
        vec!["audit", "verify", s(&audit), "--pubkey", s(&audit_pub)],
    ];
    for args in &cases {
        let (expected, out, err) = orly(args);
        assert!(
            !out.is_empty(),
            "orly {args:?} prints nothing to stdout, so this case tests nothing: {err}"
        );
        let run = run_unread(args, false);
        assert_quiet(args, &run, expected);
    }
}

/// Bulk output stops at the first failed write: `orly gen` of a trillion events (hours of
/// work) returns at once when nobody reads, and so does an export of more than its buffer.
#[test]
fn bulk_output_stops_early_when_unread() {
    orly::init_crypto();
    let args = ["gen", "--count", "1000000000000"];
    let run = run_unread(&args, false);
    assert_quiet(&args, &run, 0);
    assert!(
        run.took < Duration::from_secs(60),
        "gen took {:?}",
        run.took
    );

    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = generated_store(tmp.path(), 5_000);
    let args = ["export", "--data-dir", s(&store)];
    let (code, out, _) = orly(&args);
    assert_eq!(code, 0);
    assert!(
        out.len() > 1 << 20,
        "export is {} bytes, under its buffer",
        out.len()
    );
    let run = run_unread(&args, false);
    assert_quiet(&args, &run, 0);
}

/// A closed stderr loses messages, never the work: an import with rejected lines stores every
/// valid event and exits 0; errors and warnings keep their exit codes.
#[test]
fn a_closed_stderr_loses_messages_not_work() {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let events = notes("pipes", 40, 1_700_000_000);
    let input = root.join("mixed.jsonl");
    let mut text = String::new();
    for (i, e) in events.iter().enumerate() {
        text.push_str(&e.to_json());
        text.push('\n');
        if i % 10 == 0 {
            text.push_str("{not an event\n");
        }
    }
    std::fs::write(&input, text).unwrap();
    let store = root.join("store");
    let args = ["import", s(&input), "--data-dir", s(&store)];
    let run = run_unread(&args, true);
    assert_eq!(run.code, Some(0), "import with stderr closed");
    assert_eq!(event_count(&store), 40, "every valid event stored");

    let not_a_dir = root.join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let pki = root.join("pki");
    let (code, _, err) = orly(&["certs", "init", s(&pki), "--admin", "alice"]);
    assert_eq!(code, 0, "{err}");
    let token_key = pki.join("token.key");
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["stats", "--data-dir", s(&not_a_dir)], 1),
        (vec!["stats", "--no-such-flag"], 2),
        (vec!["sync", "ftp://nowhere", "--data-dir", s(&store)], 2),
        (
            // Warns on stderr (no --cert), prints the token on stdout.
            vec!["token", "mint", "--admin", "alice", "--key", s(&token_key)],
            0,
        ),
    ];
    for (args, expected) in &cases {
        let (code, _, err) = orly(args);
        assert_eq!(code, *expected, "orly {args:?} (read): {err}");
        let run = run_unread(args, true);
        assert_eq!(
            run.code,
            Some(*expected),
            "orly {args:?} with stderr closed"
        );
    }
}

/// `orly sync` whose progress nobody reads still syncs: `--json` lines to a closed stdout, or
/// the summary to a closed stderr, and every event arrives, exit 0.
#[test]
fn a_sync_nobody_watches_still_completes() {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let relay_dir = tmp.path().join("relay");
    let events = notes("pipes-sync", 300, 1_700_000_000);
    import(&relay_dir, &events);
    let rl = relay(&relay_dir, &[]);
    let url = format!("ws://{}", rl.addr);
    for (i, (json, stderr_closed)) in [(true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("local-{i}"));
        let mut args = vec!["sync", url.as_str(), "--data-dir", s(&dir)];
        if json {
            args.push("--json");
        }
        let run = run_unread(&args, stderr_closed);
        assert_quiet(&args, &run, 0);
        assert_eq!(
            ids(&dir),
            ids_of(&events),
            "orly {args:?} moved every event"
        );
    }
}

/// `scripts/demo.sh`'s last line, `orly stats | head -n 3`, under `set -o pipefail`: three
/// lines and success, however the reader's exit and our writes interleave.
#[test]
fn stats_into_head_succeeds_under_pipefail() {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    import(&store, &notes("head", 20, 1_700_000_000));
    for _ in 0..20 {
        let out = Command::new("bash")
            .args([
                "-c",
                r#"set -euo pipefail; "$0" stats --check --data-dir "$1" | head -n 3; "$0" stats --data-dir "$1" | true"#,
            ])
            .arg(bin("orly"))
            .arg(&store)
            .output()
            .expect("bash");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?}: {err}", out.status);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    }
}
