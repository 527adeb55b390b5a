//! `orly peers` and `orly syncs` against the real secured `orly-sync-negentropy` (mTLS, tokens,
//! policy, audit) on 127.0.0.1 port 0, run as the real `orly` binary with `orly sync`'s
//! service flags and variables: managed peers added, listed, triggered (a real `orly-relay`
//! synced, its events counted), watched, removed; the syncs listed, shown and cancelled; URL
//! secrets never shown; an admin without `manage_peers` refused with a clear message and exit
//! 3, no token with exit 4; a reader that goes away early costs no panic. Every wait is bounded.

mod common;
#[path = "common/gateway.rs"]
mod gateway;
use common::*;
use gateway::*;

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on one `orly` run.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// Bound on a triggered background sync showing in the peer's state.
const SYNC_WAIT: Duration = Duration::from_secs(15);
/// Secrets put in peer URLs; never shown.
const SECRETS: [&str; 3] = ["pw-s3cret", "tok-s3cret", "q-s3cret"];

/// Files of one admin: certificate, key, token.
struct Admin {
    cert: PathBuf,
    key: PathBuf,
    token: PathBuf,
}

/// A secured service (admin `alice` holds `manage_peers`, `bob` does not) and the admins'
/// files.
struct Setup {
    fx: Fixture,
    svc: Proc,
    alice: Admin,
    bob: Admin,
}

fn setup(operator_peers: Option<&str>) -> Setup {
    let fx = Fixture::with_policy(&policy_toml(
        "",
        &[
            AdminSpec {
                extra: "rights = [\"manage_peers\"]",
                ..AdminSpec::open("alice")
            },
            AdminSpec::open("bob"),
        ],
    ));
    let admin = |name: &str| {
        let cert = fx.client(name);
        let token = fx.token(name, &cert);
        let p = |f: String| fx.root.join(f);
        let a = Admin {
            cert: p(format!("{name}.pem")),
            key: p(format!("{name}.key")),
            token: p(format!("{name}.token")),
        };
        std::fs::write(&a.cert, &cert.cert_pem).unwrap();
        std::fs::write(&a.key, &cert.key_pem).unwrap();
        std::fs::write(&a.token, token).unwrap();
        a
    };
    let (alice, bob) = (admin("alice"), admin("bob"));
    let mut envs = fx.env();
    if let Some(peers) = operator_peers {
        envs.push(("ORLY_SYNC_NEGENTROPY_PEERS", peers.to_string()));
    }
    let data = fx.root.join("store").display().to_string();
    let cmd = service_command(
        &["--listen", "127.0.0.1:0", "--data-dir", &data],
        &envs,
        SERVICE_LOG,
        &fx.log_path(1),
    );
    let svc = start_command(cmd, &fx.log_path(1));
    Setup {
        fx,
        svc,
        alice,
        bob,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", self.all()))
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Setup {
    /// The service flags of `admin` as `orly sync`'s variables (`ORLY_SYNC_CA`, ...).
    fn env_of(&self, admin: &Admin) -> Vec<(&'static str, String)> {
        let s = |p: &Path| p.display().to_string();
        vec![
            ("ORLY_SYNC_CA", s(&self.fx.root.join("ca.pem"))),
            ("ORLY_SYNC_CERT", s(&admin.cert)),
            ("ORLY_SYNC_KEY", s(&admin.key)),
            ("ORLY_SYNC_TOKEN", s(&admin.token)),
        ]
    }

    /// `orly ARGS --server ADDR` as alice (her files through the variables).
    fn alice(&self, args: &[&str]) -> Out {
        self.run_as(&self.alice, args)
    }

    fn run_as(&self, admin: &Admin, args: &[&str]) -> Out {
        let mut a = args.to_vec();
        a.extend(["--server", &self.svc.addr]);
        run(&a, &self.env_of(admin), Stdio::piped())
    }

    /// Polls alice's `orly peers status URL --json` until `done` holds (bounded).
    fn wait_peer(&self, url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let out = self.alice(&["peers", "status", url, "--json"]);
            assert_eq!(out.code, 0, "peers status {url}: {}", out.all());
            let v = out.json();
            if done(&v) {
                return v;
            }
            assert!(
                start.elapsed() < SYNC_WAIT,
                "{what}: not within {SYNC_WAIT:?}; last: {v}\nservice log:\n{}",
                tail(&self.fx.log_text(1), 30)
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

/// Runs `orly args` with none of the caller's service variables but `envs`, stdout to
/// `stdout` (piped: read), killed after [`RUN_LIMIT`].
fn run(args: &[&str], envs: &[(&str, String)], stdout: Stdio) -> Out {
    let mut cmd = Command::new(bin("orly"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    for k in [
        "ORLY_DATA_DIR",
        "ORLY_SYNC_CA",
        "ORLY_SYNC_CERT",
        "ORLY_SYNC_KEY",
        "ORLY_SYNC_TOKEN",
        "ORLY_SYNC_AUTH_KEY",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn orly");
    let read = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orly {args:?} still running after {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A pipe whose reader is already closed: any write to it fails with EPIPE at once.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s:?}:\n{text}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The whole life of managed peers through the CLI: add, list, trigger and watch a real sync,
/// the sync in `syncs list` and `syncs status`, start/stop, remove; refusals and not-found with
/// their exit codes.
#[test]
fn peers_and_syncs_through_the_secured_service() {
    let tmp = tempfile::tempdir().unwrap();
    let relay_store = tmp.path().join("relay");
    let events = notes("peers-cli", 12, 1_700_000_000);
    import(&relay_store, &events);
    let relay = relay(&relay_store, &[]);
    let relay_url = format!("ws://{}/", relay.addr);
    let secret_url = "ws://127.0.0.1:9/?token=tok-s3cret";
    let st = setup(None);

    // Nothing yet; the loop is stopped.
    let out = st.alice(&["peers", "status", "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let v = out.json();
    assert_eq!(
        (v["active"].as_bool(), v["peer_count"].as_i64()),
        (Some(false), Some(0)),
        "{v}"
    );
    let out = st.alice(&["peers", "list"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.all());
    assert!(out.stderr.contains("no managed peers"), "{}", out.all());

    // Two peers: the relay (down, with a filter), and one whose URL holds a secret.
    let out = st.alice(&[
        "peers",
        "add",
        &relay_url,
        "--dir",
        "down",
        "--filter",
        "{\"kinds\":[1,7]}",
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        out.stdout.trim(),
        format!("added peer {relay_url} (direction down, filter {{\"kinds\":[1,7]}}, owner alice)"),
        "{}",
        out.all()
    );
    // Added again with other settings: nothing changes, and the output says so.
    let out = st.alice(&["peers", "add", &relay_url, "--dir", "up", "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let v = out.json();
    assert_eq!(
        (&v["added"], &v["direction"]),
        (&Value::Bool(false), &Value::from("down")),
        "{v}"
    );
    assert!(
        out.stderr
            .contains("was listed already: nothing changed; --dir and --filter were not applied"),
        "{}",
        out.all()
    );
    let out = st.alice(&["peers", "add", secret_url, "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_no_secret("peers add --json", &out.all());
    let v = out.json();
    assert_eq!(
        (&v["peer_url"], &v["added"]),
        (
            &Value::from("ws://127.0.0.1:9/?<redacted>"),
            &Value::Bool(true)
        ),
        "{v}"
    );
    assert_eq!(
        (&v["direction"], &v["filter"], &v["owner"]),
        (&Value::from("both"), &Value::Null, &Value::from("alice")),
        "{v}"
    );

    // A URL with user information is refused by the policy: exit 3, and no secret shown.
    let out = st.alice(&[
        "peers",
        "add",
        "ws://user:pw-s3cret@127.0.0.1:9/?token=q-s3cret",
    ]);
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stderr.contains("user information"), "{}", out.all());
    assert_no_secret("a refused peers add", &out.all());
    // Bad flags never reach the service: exit 2.
    let out = st.alice(&["peers", "add", &relay_url, "--dir", "sideways"]);
    assert_eq!(out.code, 2, "{}", out.all());
    let out = st.alice(&[
        "peers",
        "add",
        &relay_url,
        "--filter",
        "{\"kinds\":",
        "--json",
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert_eq!(out.json()["error_kind"], "invalid", "{}", out.all());

    // The list, in text and JSON, redacted.
    let out = st.alice(&["peers", "list"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let mut listed: Vec<&str> = out.stdout.lines().collect();
    listed.sort();
    let mut want = vec![relay_url.as_str(), "ws://127.0.0.1:9/?<redacted>"];
    want.sort();
    assert_eq!(listed, want, "{}", out.all());
    let out = st.alice(&["peers", "list", "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.json_lines().len(), 2, "{}", out.all());
    assert_no_secret("peers list --json", &out.all());

    // Trigger the relay; its state shows the finished sync and what it moved.
    let out = st.alice(&["peers", "trigger", &relay_url]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("triggered"), "{}", out.all());
    let v = st.wait_peer(&relay_url, "the triggered sync's result", |v| {
        v["last_sync"].as_i64().unwrap_or(0) > 0
    });
    assert_eq!(v["found"], true, "{v}");
    assert_eq!(v["status"], "idle", "{v}");
    assert_eq!(
        v["events_synced"].as_i64(),
        Some(events.len() as i64),
        "{v}"
    );
    assert_eq!(v["consecutive_failures"].as_i64(), Some(0), "{v}");
    assert_eq!(v["direction"], "down", "{v}");
    assert_eq!(v["owner"], "alice", "{v}");
    assert!(v["next_attempt_in"].as_i64().is_some(), "{v}");

    // The human status of one peer and of all.
    let out = st.alice(&["peers", "status", &relay_url]);
    assert_eq!(out.code, 0, "{}", out.all());
    for needle in [
        "status: idle",
        &format!("events synced: {}", events.len()),
        "consecutive failures: 0",
        "next attempt: ",
    ] {
        assert!(
            out.stdout.contains(needle),
            "no {needle:?} in:\n{}",
            out.all()
        );
    }
    let out = st.alice(&["peers", "status"]);
    assert_eq!(out.code, 0, "{}", out.all());
    for needle in [
        "background sync: stopped",
        "peers: 2",
        "NEXT ATTEMPT",
        "LAST ERROR",
        relay_url.as_str(),
        "ws://127.0.0.1:9/?<redacted>",
    ] {
        assert!(
            out.stdout.contains(needle),
            "no {needle:?} in:\n{}",
            out.all()
        );
    }
    assert_no_secret("peers status", &out.all());
    let out = st.alice(&["peers", "status", "--json"]);
    let v = out.json();
    assert_eq!(v["peer_count"].as_i64(), Some(2), "{v}");
    assert!(v["last_sync"].as_i64().unwrap_or(0) > 0, "{v}");
    assert_no_secret("peers status --json", &out.all());

    // Not a managed peer: exit 1, said plainly; found=false in JSON.
    let out = st.alice(&["peers", "status", "ws://127.0.0.1:1/"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("not a managed peer"), "{}", out.all());
    let out = st.alice(&["peers", "status", "ws://127.0.0.1:1/", "--json"]);
    assert_eq!(
        (out.code, &out.json()["found"]),
        (1, &Value::Bool(false)),
        "{}",
        out.all()
    );
    let out = st.alice(&["peers", "trigger", "ws://127.0.0.1:1/"]);
    assert_eq!(out.code, 1, "{}", out.all());

    // The background sync is one of alice's syncs.
    let out = st.alice(&["syncs", "list", "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let syncs = out.json_lines();
    let ours = syncs
        .iter()
        .find(|s| s["progress"]["peer_url"] == relay_url.as_str())
        .unwrap_or_else(|| panic!("the triggered sync is not listed: {}", out.all()));
    assert_eq!(
        (&ours["admin"], &ours["running"], &ours["direction"]),
        (
            &Value::from("alice"),
            &Value::Bool(false),
            &Value::from("down")
        ),
        "{ours}"
    );
    assert_eq!(ours["progress"]["complete"], true, "{ours}");
    assert_eq!(
        ours["progress"]["fetched"].as_u64(),
        Some(events.len() as u64),
        "{ours}"
    );
    let id = ours["sync_id"].as_str().expect("sync_id").to_string();
    let out = st.alice(&["syncs", "list"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.lines().next().unwrap_or("").starts_with("SYNC"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains(&id) && out.stdout.contains("complete"),
        "{}",
        out.all()
    );

    let out = st.alice(&["syncs", "status", &id, "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.json()["sync_id"], id.as_str());
    assert_eq!(
        out.json()["progress"]["fetched"].as_u64(),
        Some(events.len() as u64)
    );
    let out = st.alice(&["syncs", "status", &id]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("state: complete"), "{}", out.all());
    assert!(
        out.stdout.contains(&format!("fetched {}", events.len())),
        "{}",
        out.all()
    );
    let out = st.alice(&["syncs", "status", "0123456789abcdef01234567"]);
    assert_eq!(out.code, 1, "{}", out.all());

    // Cancel: a finished or unknown (well-formed) id cancels nothing (exit 1); a malformed one
    // is a usage error.
    let out = st.alice(&["syncs", "cancel", "0123456789abcdef01234567"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("not cancelled"), "{}", out.all());
    let out = st.alice(&["syncs", "cancel", &id, "--json"]);
    assert_eq!(
        (out.code, &out.json()["cancelled"]),
        (1, &Value::Bool(false)),
        "{}",
        out.all()
    );
    let out = st.alice(&["syncs", "cancel", "not-a-sync-id"]);
    assert_eq!(out.code, 2, "{}", out.all());

    // Start and stop the loop.
    let out = st.alice(&["peers", "start"]);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "background sync started"),
        "{}",
        out.all()
    );
    assert_eq!(
        st.alice(&["peers", "status", "--json"]).json()["active"],
        true
    );
    let out = st.alice(&["peers", "stop", "--json"]);
    assert_eq!(
        (out.code, &out.json()["active"]),
        (0, &Value::Bool(false)),
        "{}",
        out.all()
    );
    assert_eq!(
        st.alice(&["peers", "status", "--json"]).json()["active"],
        false
    );

    // Remove the secret one by its URL as given; again: not found.
    let out = st.alice(&["peers", "remove", secret_url]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        out.stdout.trim(),
        "removed peer ws://127.0.0.1:9/?<redacted>"
    );
    let out = st.alice(&["peers", "list"]);
    assert_eq!(out.stdout.trim(), relay_url, "{}", out.all());
    let out = st.alice(&["peers", "remove", secret_url, "--json"]);
    assert_eq!(
        (out.code, &out.json()["error_kind"]),
        (1, &Value::from("not_found")),
        "{}",
        out.all()
    );
    assert_no_secret("a second peers remove", &out.all());

    // The same flags as `orly sync`, not the variables: the same answers.
    let with_flags = run(
        &[
            "peers",
            "list",
            "--server",
            &st.svc.addr,
            "--ca",
            s(&st.fx.root.join("ca.pem")),
            "--cert",
            s(&st.alice.cert),
            "--key",
            s(&st.alice.key),
            "--token-file",
            s(&st.alice.token),
        ],
        &[],
        Stdio::piped(),
    );
    assert_eq!(
        (with_flags.code, with_flags.stdout.trim()),
        (0, relay_url.as_str()),
        "{}",
        with_flags.all()
    );

    // Bob holds no `manage_peers`: refused, exit 3, and told why. His syncs are his own.
    for args in [
        &["peers", "list"][..],
        &["peers", "add", "ws://127.0.0.1:9/"],
        &["peers", "status"],
        &["peers", "start"],
    ] {
        let out = st.run_as(&st.bob, args);
        assert_eq!(out.code, 3, "bob: orly {args:?}: {}", out.all());
        assert!(
            out.stderr.contains("manage_peers"),
            "bob: orly {args:?} does not name the right: {}",
            out.all()
        );
    }
    let out = st.run_as(&st.bob, &["syncs", "list", "--json"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, ""),
        "bob sees alice's syncs: {}",
        out.all()
    );
    let out = st.run_as(&st.bob, &["syncs", "cancel", &id]);
    assert_eq!(out.code, 3, "bob cancels alice's sync: {}", out.all());

    // No token: authentication fails, exit 4.
    let mut env = st.env_of(&st.alice);
    env.retain(|(k, _)| *k != "ORLY_SYNC_TOKEN");
    let out = run(
        &["peers", "list", "--server", &st.svc.addr],
        &env,
        Stdio::piped(),
    );
    assert_eq!(out.code, 4, "{}", out.all());
    // Nothing listening: unreachable, exit 6.
    let out = run(
        &["syncs", "list", "--server", "127.0.0.1:9"],
        &[],
        Stdio::piped(),
    );
    assert_eq!(out.code, 6, "{}", out.all());
    assert!(
        out.stderr
            .contains("Failed to connect to sync service at 127.0.0.1:9"),
        "{}",
        out.all()
    );
}

/// The operator's peers (ORLY_SYNC_NEGENTROPY_PEERS) may hold query secrets (user information
/// is refused at start-up, as by AddPeer): the list, the states and the syncs show them
/// redacted, whatever their syncs did.
#[test]
fn operator_peer_secrets_are_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = relay(&tmp.path().join("relay"), &[]);
    let port = relay.addr.rsplit(':').next().unwrap().to_string();
    let url = format!("ws://127.0.0.1:{port}/?token=q-s3cret");
    let st = setup(Some(&url));
    let shown = format!("ws://127.0.0.1:{port}/?<redacted>");

    let out = st.alice(&["peers", "list"]);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, shown.as_str()),
        "{}",
        out.all()
    );
    // The loop runs from start-up with operator peers; wait until its first attempt is over.
    let v = st.wait_peer(&url, "the operator peer's first attempt", |v| {
        v["status"] != "syncing"
            && (v["last_sync"].as_i64() > Some(0) || v["consecutive_failures"].as_i64() > Some(0))
    });
    assert_eq!(v["peer_url"], shown.as_str(), "{v}");
    assert!(v["owner"].is_null(), "an operator peer has no owner: {v}");
    for args in [
        vec!["peers", "list", "--json"],
        vec!["peers", "status"],
        vec!["peers", "status", "--json"],
        vec!["peers", "status", &url],
        vec!["peers", "status", &shown, "--json"],
        vec!["syncs", "list", "--json"],
    ] {
        let out = st.alice(&args);
        assert_eq!(out.code, 0, "orly {args:?}: {}", out.all());
        assert_no_secret(&format!("orly {args:?}"), &out.all());
    }
    let out = st.alice(&["peers", "status", "--json"]);
    assert_eq!(out.json()["active"], true, "{}", out.all());
}

/// `orly peers list | head -c 1` and `| true`: a reader gone early ends the command quietly,
/// with the exit code it has when read; a failure still says why on stderr.
#[test]
fn a_reader_gone_early_costs_no_panic() {
    let st = setup(None);
    let out = st.alice(&["peers", "add", "ws://127.0.0.1:9/", "--dir", "down"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let env = st.env_of(&st.alice);
    for args in [
        vec!["peers", "list"],
        vec!["peers", "list", "--json"],
        vec!["peers", "status"],
        vec!["peers", "status", "ws://127.0.0.1:9/"],
        vec!["syncs", "list"],
        vec!["peers", "status", "ws://127.0.0.1:1/"],
    ] {
        let expected = if args.contains(&"ws://127.0.0.1:1/") {
            1
        } else {
            0
        };
        let mut a = args.clone();
        a.extend(["--server", &st.svc.addr]);
        let out = run(&a, &env, closed_pipe());
        assert!(
            !out.stderr.contains("panicked") && !out.stderr.contains("Broken pipe"),
            "orly {args:?} with its reader gone wrote:\n{}",
            out.stderr
        );
        assert_eq!(
            out.code, expected,
            "orly {args:?} with its reader gone: {}",
            out.stderr
        );
    }
    // `| head -c 1`: the reader takes one byte and goes.
    let mut child = Command::new(bin("orly"))
        .args(["peers", "status", "--server", &st.svc.addr])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn orly");
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).expect("one byte");
    drop(stdout);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < RUN_LIMIT,
            "orly peers status hangs with its reader gone"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A background sync held open by a relay that never answers: listed as running, cancelled by
/// its id (exit 0), then shown failed as cancelled; the peer's state counts the failure and
/// says when it retries.
#[test]
fn a_running_background_sync_is_cancelled_by_id() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stall, _task) = rt.block_on(stalling_relay());
    let url = format!("ws://{stall}/");
    let st = setup(None);
    assert_eq!(st.alice(&["peers", "add", &url]).code, 0);
    assert_eq!(
        st.alice(&["peers", "trigger"]).code,
        0,
        "trigger of every peer"
    );

    let start = Instant::now();
    let id = loop {
        let out = st.alice(&["syncs", "list", "--json"]);
        assert_eq!(out.code, 0, "{}", out.all());
        let running = out
            .json_lines()
            .into_iter()
            .find(|s| s["running"] == true && s["progress"]["peer_url"] == url.as_str());
        if let Some(s) = running {
            break s["sync_id"].as_str().expect("sync_id").to_string();
        }
        assert!(
            start.elapsed() < SYNC_WAIT,
            "no running sync with {url}: {}",
            out.all()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = st.alice(&["syncs", "list"]);
    assert!(
        out.stdout.contains(&format!("{id}  running")),
        "{}",
        out.all()
    );

    let out = st.alice(&["syncs", "cancel", &id]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.stdout.trim(), format!("sync {id} cancelled"));

    let v = st.wait_peer(&url, "the cancelled sync's failure", |v| {
        v["consecutive_failures"].as_i64() == Some(1)
    });
    assert_eq!(v["status"], "error", "{v}");
    assert!(
        v["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
    assert!(
        v["next_attempt_in"].as_i64().is_some_and(|n| n > 0),
        "a backoff: {v}"
    );
    let out = st.alice(&["syncs", "status", &id, "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let v = out.json();
    assert_eq!(
        (&v["running"], &v["progress"]["error_kind"]),
        (&Value::Bool(false), &Value::from("cancelled")),
        "{v}"
    );
    let out = st.alice(&["syncs", "status", &id]);
    assert!(
        out.stdout.contains("state: failed (cancelled)"),
        "{}",
        out.all()
    );
    let out = st.alice(&["peers", "status"]);
    assert!(
        out.stdout.contains(" s)") && out.stdout.contains("(in "),
        "the next attempt as a time and a wait: {}",
        out.all()
    );
    assert!(out.stdout.contains("error"), "{}", out.all());
}
