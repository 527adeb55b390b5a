//! `orly audit verify DIR --pubkey audit.pub` on audit logs written by the real service (and,
//! for mid-log checkpoints, by the library's `AuditChain`): an intact log exits 0; every kind of
//! tampering, each on its own copy, exits 1 and names the first broken record.

mod common;
use common::*;

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use orly::audit::{AuditChain, AuditEntry, AuditOptions, AuditRecord};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000;
/// Bound on one CLI run.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs `orly` (killed after `RUN_LIMIT`); (exit code, stdout + stderr).
fn run(args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(bin("orly"));
    cmd.args(args)
        .env_remove("ORLY_DATA_DIR")
        .env_remove("ORLY_SYNC_CA")
        .env_remove("ORLY_SYNC_CERT")
        .env_remove("ORLY_SYNC_KEY")
        .env_remove("ORLY_SYNC_TOKEN")
        .env_remove("ORLY_SYNC_AUTH_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn orly");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orly {args:?} did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn verify(dir: &Path, pubkey: Option<&Path>) -> (i32, String) {
    let mut args = vec!["audit", "verify", dir.to_str().unwrap()];
    if let Some(p) = pubkey {
        args.extend(["--pubkey", p.to_str().unwrap()]);
    }
    run(&args)
}

/// A fresh copy of an audit directory (segments and HEAD.json; not the writer's LOCK).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

const SEGMENT: &str = "audit-000001.jsonl";

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(SEGMENT))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(dir.join(SEGMENT), s).unwrap();
}

fn line_hash(line: &str) -> String {
    orly::audit::line_hash(line.as_bytes())
}

fn sign(key: &SigningKey, msg: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.sign(msg.as_bytes()).to_bytes())
}

/// Rewrites `HEAD.json` to name the last line of the segment, signed with `key`.
fn forge_head(dir: &Path, key: &SigningKey) {
    let all = lines(dir);
    let last = all.last().unwrap();
    let rec: AuditRecord = serde_json::from_str(last).unwrap();
    let hash = line_hash(last);
    let path = dir.join("HEAD.json");
    let mut head: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    head["seq"] = rec.seq.into();
    head["hash"] = hash.clone().into();
    head["sig"] = sign(key, &format!("orly-audit-head\n{}\n{hash}", rec.seq)).into();
    std::fs::write(path, serde_json::to_vec(&head).unwrap()).unwrap();
}

/// Re-links every record from `index` (0-based line) on — new `prev`, checkpoints re-sealed and
/// re-signed with `key` — and re-signs the head with it: after an edit at `index`, a forgery
/// whose links are perfect, which only the audit public key can expose.
fn forge_from(dir: &Path, index: usize, key: &SigningKey) {
    let mut all = lines(dir);
    let mut prev_hash: Option<String> = None;
    for line in all.iter_mut().skip(index) {
        let mut rec: AuditRecord = serde_json::from_str(line).unwrap();
        if let Some(h) = &prev_hash {
            rec.prev = h.clone();
        }
        if let Some(seal) = &mut rec.checkpoint {
            seal.hash = rec.prev.clone();
            seal.sig = Some(sign(
                key,
                &format!("orly-audit-checkpoint\n{}\n{}", seal.seq, seal.hash),
            ));
        }
        *line = serde_json::to_string(&rec).unwrap();
        prev_hash = Some(line_hash(line));
    }
    write_lines(dir, &all);
    forge_head(dir, key);
}

struct Log {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    audit: PathBuf,
    audit_pub: PathBuf,
}

/// An audit log written by the real `orly-sync-negentropy`: three client-mode syncs by alice
/// (an allow and a `sync_finished` record each), one call without a token (a refusal), and a
/// clean shutdown (the final signed checkpoint).
fn service_log() -> Log {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let pki = root.join("pki");
    let p = |n: &str| pki.join(n).display().to_string();
    let (code, out) = run(&["certs", "init", pki.to_str().unwrap(), "--admin", "alice"]);
    assert_eq!(code, 0, "certs init: {out}");
    let (code, out) = run(&[
        "token",
        "mint",
        "--admin",
        "alice",
        "--key",
        &p("token.key"),
        "--cert",
        &p("alice.pem"),
        "--out",
        &p("alice.token"),
    ]);
    assert_eq!(code, 0, "token mint: {out}");

    let relay_dir = root.join("relay");
    import(&relay_dir, &notes("audit", 10, T0));
    let rl = relay(&relay_dir, &[]);
    let audit = root.join("audit");
    let store = root.join("store");
    let envs = [
        ("ORLY_TLS_CERT", p("server.pem")),
        ("ORLY_TLS_KEY", p("server.key")),
        ("ORLY_TLS_CLIENT_CA", p("ca.pem")),
        ("ORLY_POLICY", p("policy.toml")),
        ("ORLY_TOKEN_KEYS", p("token.pub")),
        ("ORLY_AUDIT_KEY", p("audit.key")),
        ("ORLY_AUDIT_DIR", audit.display().to_string()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let svc = spawn_service(
        "orly-sync-negentropy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            store.to_str().unwrap(),
        ],
        &envs,
    );
    let url = format!("ws://{}", rl.addr);
    let (ca, cert, key, token) = (
        p("ca.pem"),
        p("alice.pem"),
        p("alice.key"),
        p("alice.token"),
    );
    for dir in ["down", "none", "both"] {
        let (code, out) = run(&[
            "sync",
            &url,
            "--server",
            &svc.addr,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--token-file",
            &token,
            "--dir",
            dir,
            "--json",
        ]);
        assert_eq!(code, 0, "client-mode sync --dir {dir}: {out}");
    }
    let (code, out) = run(&[
        "sync", &url, "--server", &svc.addr, "--ca", &ca, "--cert", &cert, "--key", &key, "--json",
    ]);
    assert_ne!(code, 0, "a sync without a token succeeded: {out}");
    let st = svc.terminate();
    assert!(st.success(), "service did not stop cleanly: {st:?}");
    drop(rl);
    Log {
        _tmp: tmp,
        audit_pub: pki.join("audit.pub"),
        root,
        audit,
    }
}

struct Tamper {
    name: &'static str,
    edit: Box<dyn Fn(&Path)>,
    /// Every one of these must appear in the verifier's output.
    expect: Vec<String>,
}

fn check(log: &Log, cases: Vec<Tamper>) {
    let mut failures = Vec::new();
    for (i, c) in cases.into_iter().enumerate() {
        let copy = log.root.join(format!("tampered-{i}"));
        copy_dir(&log.audit, &copy);
        (c.edit)(&copy);
        let (code, out) = verify(&copy, Some(&log.audit_pub));
        eprintln!("[{}] exit {code}: {}", c.name, out.trim());
        if code != 1 {
            failures.push(format!("[{}] exit {code}, expected 1: {out}", c.name));
        }
        for e in &c.expect {
            if !out.contains(e.as_str()) {
                failures.push(format!("[{}] output lacks {e:?}: {out}", c.name));
            }
        }
    }
    assert!(failures.is_empty(), "\n  - {}", failures.join("\n  - "));
}

#[test]
fn verify_detects_every_tampering_of_a_service_log() {
    let log = service_log();
    let original = lines(&log.audit);
    let n = original.len();
    // 3 x (allow + sync_finished), 1 refusal, 1 shutdown checkpoint.
    assert_eq!(n, 8, "unexpected log shape:\n{}", original.join("\n"));
    let last: AuditRecord = serde_json::from_str(&original[n - 1]).unwrap();
    assert!(last.checkpoint.is_some(), "no checkpoint at clean shutdown");
    let (code, out) = verify(&log.audit, Some(&log.audit_pub));
    assert_eq!(code, 0, "intact log: {out}");
    assert!(out.starts_with("OK"), "{out}");
    let (code, out) = verify(&log.audit, None);
    assert_eq!(code, 0, "intact log without --pubkey: {out}");

    let at = |line: usize, seq: usize| format!("{SEGMENT} line {line} (seq {seq})");
    let other_key = orly::audit::generate_signing_key().unwrap();
    let cases = vec![
        Tamper {
            name: "edit a field",
            edit: Box::new(|d| {
                let mut l = lines(d);
                assert!(l[2].contains("\"allowed\":true"), "{}", l[2]);
                l[2] = l[2].replace("\"allowed\":true", "\"allowed\":false");
                write_lines(d, &l);
            }),
            expect: vec![at(3, 3), "edited".into()],
        },
        Tamper {
            name: "edit the admin of a refusal",
            edit: Box::new(|d| {
                let mut l = lines(d);
                l[6] = l[6].replace("\"admin\":\"alice\"", "\"admin\":\"bob\"");
                write_lines(d, &l);
            }),
            expect: vec![at(7, 7), "edited".into()],
        },
        Tamper {
            name: "delete a line",
            edit: Box::new(|d| {
                let mut l = lines(d);
                l.remove(2);
                write_lines(d, &l);
            }),
            expect: vec![at(3, 4), "seq 4 where 3 was expected".into()],
        },
        Tamper {
            name: "swap two lines",
            edit: Box::new(|d| {
                let mut l = lines(d);
                l.swap(2, 3);
                write_lines(d, &l);
            }),
            expect: vec![at(3, 4), "reordered".into()],
        },
        Tamper {
            name: "truncate the last line",
            edit: Box::new(|d| {
                let mut l = lines(d);
                l.pop();
                write_lines(d, &l);
            }),
            expect: vec![at(n, n), "cut off".into()],
        },
        Tamper {
            name: "truncate the last two lines",
            edit: Box::new(|d| {
                let mut l = lines(d);
                l.truncate(l.len() - 2);
                write_lines(d, &l);
            }),
            expect: vec![at(n - 1, n - 1), "cut off".into()],
        },
        Tamper {
            name: "cut the last line in half",
            edit: Box::new(|d| {
                let text = std::fs::read_to_string(d.join(SEGMENT)).unwrap();
                let last_len = text.trim_end().rsplit('\n').next().unwrap().len();
                let keep = text.len() - 1 - last_len / 2;
                std::fs::write(d.join(SEGMENT), &text[..keep]).unwrap();
            }),
            expect: vec![format!("{SEGMENT} line {n}"), "incomplete last line".into()],
        },
        Tamper {
            name: "delete HEAD.json",
            edit: Box::new(|d| std::fs::remove_file(d.join("HEAD.json")).unwrap()),
            expect: vec!["HEAD.json".into(), "missing".into()],
        },
        Tamper {
            name: "forged shutdown checkpoint (re-signed with another key, head too)",
            edit: Box::new(move |d| {
                // Say the last sync fetched nothing, then reseal with a key the forger has.
                let mut l = lines(d);
                assert!(l[5].contains("\"direction\":\"both\""), "{}", l[5]);
                l[5] = l[5].replace("\"direction\":\"both\"", "\"direction\":\"none\"");
                write_lines(d, &l);
                forge_from(d, 5, &other_key);
            }),
            expect: vec![at(n, n), "checkpoint signature does not verify".into()],
        },
    ];
    check(&log, cases);
}

#[test]
fn verify_detects_a_forged_checkpoint_in_the_middle_of_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let (key_path, pub_path) = (tmp.path().join("audit.key"), tmp.path().join("audit.pub"));
    orly::audit::write_key_pair(&key_path, &pub_path).unwrap();
    let key = orly::audit::load_signing_key(&key_path).unwrap();
    {
        let chain = AuditChain::open(
            &dir,
            Some(key),
            AuditOptions {
                checkpoint_every: 3,
                ..AuditOptions::default()
            },
        )
        .unwrap();
        for i in 0..8 {
            chain
                .append(
                    AuditEntry::decision(i % 2 == 0, format!("case {i}"))
                        .admin("alice")
                        .rpc("/orlysync.negentropy.v1.NegentropyService/SyncWithPeer"),
                )
                .unwrap();
        }
    }
    let all = lines(&dir);
    let cps: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            serde_json::from_str::<AuditRecord>(l)
                .unwrap()
                .checkpoint
                .is_some()
        })
        .map(|(i, _)| i)
        .collect();
    assert!(
        cps.len() >= 2,
        "expected checkpoints every 3 records: {all:#?}"
    );
    let (code, out) = verify(&dir, Some(&pub_path));
    assert_eq!(code, 0, "intact: {out}");

    // Rewrite a record before the first checkpoint, then re-link and re-seal everything after
    // it with the forger's key: the links are perfect, only the signatures betray it.
    let copy = tmp.path().join("forged");
    copy_dir(&dir, &copy);
    let mut l = lines(&copy);
    assert!(l[1].contains("case 1"), "{}", l[1]);
    l[1] = l[1].replace("case 1", "case one");
    write_lines(&copy, &l);
    let forger = orly::audit::generate_signing_key().unwrap();
    forge_from(&copy, 1, &forger);

    let (code, out) = verify(&copy, Some(&pub_path));
    let line = cps[0] + 1;
    assert_eq!(code, 1, "forged checkpoint accepted: {out}");
    assert!(
        out.contains(&format!("{SEGMENT} line {line} (seq {line})"))
            && out.contains("checkpoint signature does not verify"),
        "does not name the forged checkpoint (line {line}): {out}"
    );
    // Documented limit: without the public key, a consistent re-chaining is not detectable.
    let (code, out) = verify(&copy, None);
    assert_eq!(
        code, 0,
        "without --pubkey the re-chained log links up: {out}"
    );
}

/// Starts the service again on `log`'s audit directory (and store); returns it.
fn restart_service(log: &Log) -> Proc {
    let p = |n: &str| log.root.join("pki").join(n).display().to_string();
    let envs = [
        ("ORLY_TLS_CERT", p("server.pem")),
        ("ORLY_TLS_KEY", p("server.key")),
        ("ORLY_TLS_CLIENT_CA", p("ca.pem")),
        ("ORLY_POLICY", p("policy.toml")),
        ("ORLY_TOKEN_KEYS", p("token.pub")),
        ("ORLY_AUDIT_KEY", p("audit.key")),
        ("ORLY_AUDIT_DIR", log.audit.display().to_string()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let store = log.root.join("store");
    spawn_service(
        "orly-sync-negentropy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            store.to_str().unwrap(),
        ],
        &envs,
    )
}

/// Issue 14: a record appended after the signed head, chained correctly with SHA-256 (admin bob
/// allowed to push to an exfiltration relay), is named by `audit verify`; a restart does not
/// adopt it, records the incident first, and never seals it.
#[test]
fn a_forged_record_after_the_signed_head_is_named_and_never_sealed() {
    let log = service_log();
    let mut l = lines(&log.audit);
    let last: AuditRecord = serde_json::from_str(l.last().unwrap()).unwrap();
    let forged = serde_json::json!({
        "time": last.time,
        "seq": last.seq + 1,
        "prev": line_hash(l.last().unwrap()),
        "event": "decision",
        "allowed": true,
        "reason": "allowed by policy",
        "admin": "bob",
        "rpc": "/orlysync.negentropy.v1.NegentropyService/SyncWithPeer",
        "peer": "wss://exfil.example.com/",
        "direction": "up",
    })
    .to_string();
    l.push(forged.clone());
    write_lines(&log.audit, &l);
    let n = l.len();

    let (code, out) = verify(&log.audit, Some(&log.audit_pub));
    assert_eq!(code, 1, "the forged record passed: {out}");
    assert!(
        out.contains(&format!("{SEGMENT} line {n} (seq {n})"))
            && out.contains("cannot authenticate"),
        "does not name the forged record (line {n}): {out}"
    );

    // A restart leaves it out: a new segment starts with the incident, and what is sealed from
    // then on never covers the forged line.
    // The service opens the log right after it announces its address; how it stops does not
    // matter here.
    let svc = restart_service(&log);
    let second = log.audit.join("audit-000002.jsonl");
    let start = Instant::now();
    while !std::fs::read_to_string(&second).is_ok_and(|t| t.ends_with('\n'))
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(svc);
    let text = std::fs::read_to_string(&second).expect("a new segment");
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs[0]["event"], "recovery", "{text}");
    assert_eq!(recs[0]["seq"].as_u64(), Some(n as u64), "{text}");
    assert_eq!(
        recs[0]["excluded"][0]["line"].as_u64(),
        Some(n as u64),
        "{text}"
    );
    assert!(
        recs[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("incident"),
        "{text}"
    );
    let forged_hash = line_hash(&forged);
    assert!(
        !text.contains(&forged_hash),
        "the forged record was sealed: {text}"
    );
    let (code, out) = verify(&log.audit, Some(&log.audit_pub));
    assert_eq!(code, 0, "after the restart: {out}");
    assert!(
        out.contains("INCIDENT") && out.contains(&format!("{SEGMENT} from line {n}")),
        "{out}"
    );
}
