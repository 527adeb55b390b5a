//! `orly sync` (direct mode) against a real `orly-relay`, in every direction, with filters.
//!
//! Expectations are computed here from the generated events with a matcher written for the test
//! (not orly's `Filter`), then compared with both stores after the sync, exported by `orly export`.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000;

/// Runs `orly` with a hard deadline; returns (exit code, stdout, stderr).
fn orly_bounded(args: &[&str], envs: &[(&str, &str)], limit: Duration) -> (i32, String, String) {
    let mut cmd = Command::new(bin("orly"));
    cmd.args(args)
        .env_remove("ORLY_DATA_DIR")
        .env_remove("ORLY_SYNC_AUTH_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn orly");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait orly") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orly {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        to.join().unwrap(),
        te.join().unwrap(),
    )
}

/// `orly sync URL --json ...`; returns (exit code, final JSON line, stderr).
fn sync_json(
    url: &str,
    local: &Path,
    filter: &str,
    dir: &str,
    extra: &[&str],
) -> (i32, Value, String) {
    let mut args = vec![
        "sync",
        url,
        "--data-dir",
        local.to_str().unwrap(),
        "--filter",
        filter,
        "--dir",
        dir,
        "--json",
        "--timeout",
        "30",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = orly_bounded(&args, &[], Duration::from_secs(120));
    let last = out
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no JSON output (exit {code}); stderr: {err}"));
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("final line is not JSON ({e}): {last:?}"));
    (code, v, err)
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing from {v}"))
}

/// Asserts a successful final progress line.
fn assert_complete(code: i32, v: &Value, err: &str, what: &str) {
    assert_eq!(code, 0, "{what}: exit {code}, final {v}, stderr: {err}");
    assert_eq!(v["complete"], true, "{what}: {v}");
    assert!(v.get("error").is_none(), "{what}: {v}");
    assert!(!err.contains("panicked"), "{what}: {err}");
}

fn author(i: u64) -> Keys {
    Keys::from_seed(b"sync-filters-author", i)
}

/// Regular events over 4 authors, kinds 1/7/1111, `t` tags rust/nostr/sync (some with two),
/// created_at spread in steps of 10 s from `base`.
fn dataset(label: &str, count: u64, base: u64) -> Vec<Event> {
    let topics = ["rust", "nostr", "sync"];
    (0..count)
        .map(|i| {
            let keys = author(i % 4);
            let kind = [1u16, 7, 1111][(i % 3) as usize];
            let mut tags = vec![vec!["t".to_string(), topics[(i % 3) as usize].to_string()]];
            if i % 5 == 0 {
                tags.push(vec!["t".into(), topics[((i + 1) % 3) as usize].into()]);
            }
            if i % 7 == 0 {
                tags.push(vec!["p".into(), hex::encode(author(3).pubkey)]);
            }
            sign_event(
                &keys,
                base + i * 10,
                kind,
                tags,
                &format!("{label} event {i}"),
            )
        })
        .collect()
}

/// A selection written for the test: its JSON for `--filter` and an independent matcher.
#[derive(Clone, Default)]
struct Sel {
    name: &'static str,
    kinds: Option<Vec<u16>>,
    authors: Option<Vec<u64>>,
    topics: Option<Vec<&'static str>>,
    since: Option<u64>,
    until: Option<u64>,
    /// Passed as `--since` on the command line rather than in the filter.
    cli_since: Option<u64>,
}

impl Sel {
    fn json(&self) -> String {
        let mut m = serde_json::Map::new();
        if let Some(k) = &self.kinds {
            m.insert("kinds".into(), serde_json::json!(k));
        }
        if let Some(a) = &self.authors {
            let v: Vec<String> = a.iter().map(|i| hex::encode(author(*i).pubkey)).collect();
            m.insert("authors".into(), serde_json::json!(v));
        }
        if let Some(t) = &self.topics {
            m.insert("#t".into(), serde_json::json!(t));
        }
        if let Some(s) = self.since {
            m.insert("since".into(), s.into());
        }
        if let Some(u) = self.until {
            m.insert("until".into(), u.into());
        }
        Value::Object(m).to_string()
    }

    fn extra(&self) -> Vec<String> {
        match self.cli_since {
            Some(s) => vec!["--since".into(), s.to_string()],
            None => vec![],
        }
    }

    fn matches(&self, e: &Event) -> bool {
        let since = self.since.max(self.cli_since);
        if since.is_some_and(|s| e.created_at < s) || self.until.is_some_and(|u| e.created_at > u) {
            return false;
        }
        if let Some(k) = &self.kinds
            && !k.contains(&e.kind)
        {
            return false;
        }
        if let Some(a) = &self.authors
            && !a.iter().any(|i| author(*i).pubkey == e.pubkey)
        {
            return false;
        }
        if let Some(t) = &self.topics {
            let has = e
                .tags
                .iter()
                .any(|tag| tag.len() >= 2 && tag[0] == "t" && t.contains(&tag[1].as_str()));
            if !has {
                return false;
            }
        }
        true
    }
}

fn selections() -> Vec<Sel> {
    vec![
        Sel {
            name: "everything",
            ..Default::default()
        },
        Sel {
            name: "kinds",
            kinds: Some(vec![1]),
            ..Default::default()
        },
        Sel {
            name: "authors",
            authors: Some(vec![0, 2]),
            ..Default::default()
        },
        Sel {
            name: "tags",
            topics: Some(vec!["rust", "sync"]),
            ..Default::default()
        },
        Sel {
            name: "since-until",
            since: Some(T0 + 100),
            until: Some(T0 + 300),
            ..Default::default()
        },
        Sel {
            name: "combination",
            kinds: Some(vec![1, 7]),
            authors: Some(vec![1, 3]),
            topics: Some(vec!["nostr"]),
            since: Some(T0 + 50),
            ..Default::default()
        },
        Sel {
            name: "cli-since-and-kind",
            kinds: Some(vec![7, 1111]),
            cli_since: Some(T0 + 200),
            until: Some(T0 + 350),
            ..Default::default()
        },
    ]
}

fn sorted_ids<'a>(it: impl IntoIterator<Item = &'a Event>) -> Vec<String> {
    let s: BTreeSet<String> = it.into_iter().map(|e| e.id_hex()).collect();
    s.into_iter().collect()
}

/// One direction over every selection; each selection on fresh stores.
fn run_direction(dir: &str) {
    let shared = dataset("shared", 30, T0);
    let only_local = dataset("local", 40, T0 + 3);
    let only_remote = dataset("remote", 40, T0 + 7);
    let fetches = matches!(dir, "down" | "both");
    let uploads = matches!(dir, "up" | "both");

    for sel in selections() {
        let what = format!("dir {dir}, filter {} {}", sel.name, sel.json());
        let tmp = tempfile::tempdir().unwrap();
        let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
        let local_init = [shared.clone(), only_local.clone()].concat();
        let remote_init = [shared.clone(), only_remote.clone()].concat();
        import(&local, &local_init);
        import(&remote, &remote_init);

        let to_fetch: Vec<&Event> = only_remote.iter().filter(|e| sel.matches(e)).collect();
        let to_send: Vec<&Event> = only_local.iter().filter(|e| sel.matches(e)).collect();
        // The selections are chosen so each moves something, but not everything.
        assert!(
            !to_fetch.is_empty() && !to_send.is_empty(),
            "{what}: empty selection"
        );
        if sel.name != "everything" {
            assert!(
                to_fetch.len() < only_remote.len(),
                "{what}: selects everything"
            );
        }

        let want_local = sorted_ids(
            local_init
                .iter()
                .chain(to_fetch.iter().copied().filter(|_| fetches)),
        );
        let want_remote = sorted_ids(
            remote_init
                .iter()
                .chain(to_send.iter().copied().filter(|_| uploads)),
        );

        let relay = relay(&remote, &[]);
        let url = format!("ws://{}", relay.addr);
        let filter = sel.json();
        let extra = sel.extra();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();

        let (code, v, err) = sync_json(&url, &local, &filter, dir, &extra);
        assert_complete(code, &v, &err, &what);
        assert_eq!(n(&v, "need"), to_fetch.len() as u64, "{what}: need in {v}");
        assert_eq!(n(&v, "have"), to_send.len() as u64, "{what}: have in {v}");
        let want_fetched = if fetches { to_fetch.len() as u64 } else { 0 };
        let want_sent = if uploads { to_send.len() as u64 } else { 0 };
        assert_eq!(n(&v, "fetched"), want_fetched, "{what}: fetched in {v}");
        assert_eq!(n(&v, "sent"), want_sent, "{what}: sent in {v}");
        assert_eq!(
            (n(&v, "skipped"), n(&v, "dropped"), n(&v, "rejected")),
            (0, 0, 0),
            "{what}: {v}"
        );
        assert!(n(&v, "round") >= 1, "{what}: {v}");
        assert_eq!(
            ids(&local),
            want_local,
            "{what}: local store after first run"
        );

        // A second run has nothing left to move in the synced direction(s).
        let (code, v2, err) = sync_json(&url, &local, &filter, dir, &extra);
        assert_complete(code, &v2, &err, &format!("{what} (second run)"));
        assert_eq!(
            (n(&v2, "fetched"), n(&v2, "sent")),
            (0, 0),
            "{what}: second run {v2}"
        );
        let (want_have, want_need) = match dir {
            "down" => (to_send.len() as u64, 0),
            "up" => (0, to_fetch.len() as u64),
            "both" => (0, 0),
            _ => (to_send.len() as u64, to_fetch.len() as u64),
        };
        assert_eq!(
            (n(&v2, "have"), n(&v2, "need")),
            (want_have, want_need),
            "{what}: second run {v2}"
        );

        let st = relay.terminate();
        assert!(st.success(), "{what}: relay exit {st:?}");
        assert_eq!(ids(&local), want_local, "{what}: local store");
        assert_eq!(ids(&remote), want_remote, "{what}: remote store");
    }
}

#[test]
fn direction_down_with_filters() {
    run_direction("down");
}

#[test]
fn direction_up_with_filters() {
    run_direction("up");
}

#[test]
fn direction_both_with_filters() {
    run_direction("both");
}

#[test]
fn direction_none_reports_differences_and_moves_nothing() {
    run_direction("none");
}

/// Remote holds an older kind 0 that local has superseded: the first down sync fetches it once
/// and the store refuses it (skipped); later syncs do not fetch it again.
#[test]
fn superseded_replaceable_is_not_fetched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let alice = Keys::from_seed(b"replaceable", 0);
    // Large content so a re-fetch would show in the byte counters.
    let big = "x".repeat(100_000);
    let old_meta = sign_event(&alice, T0, 0, vec![], &format!("{{\"about\":\"{big}\"}}"));
    let new_meta = sign_event(&alice, T0 + 1000, 0, vec![], "{\"name\":\"alice\"}");
    let notes_r = dataset("replaceable-remote", 10, T0);
    import(&local, std::slice::from_ref(&new_meta));
    import(&remote, &[vec![old_meta.clone()], notes_r.clone()].concat());

    let relay = relay(&remote, &[]);
    let url = format!("ws://{}", relay.addr);

    let (code, v1, err) = sync_json(&url, &local, "{}", "down", &[]);
    assert_complete(code, &v1, &err, "first run");
    assert_eq!(n(&v1, "need"), 11, "{v1}");
    assert_eq!(n(&v1, "have"), 1, "{v1}");
    assert_eq!(n(&v1, "fetched"), 10, "{v1}");
    assert_eq!(
        n(&v1, "skipped"),
        1,
        "the superseded kind 0 is skipped: {v1}"
    );
    assert!(
        n(&v1, "bytes_received") > 100_000,
        "first run did fetch the old kind 0: {v1}"
    );
    let mut want = ids_of(&[vec![new_meta.clone()], notes_r.clone()].concat());
    want.sort();
    assert_eq!(ids(&local), want);

    for run in 2..=3 {
        let (code, v, err) = sync_json(&url, &local, "{}", "down", &[]);
        assert_complete(code, &v, &err, &format!("run {run}"));
        assert_eq!(n(&v, "fetched"), 0, "run {run}: {v}");
        assert_eq!(
            n(&v, "need"),
            1,
            "run {run}: the relay still has the old kind 0: {v}"
        );
        assert_eq!(n(&v, "skipped"), 1, "run {run}: reported as skipped: {v}");
        assert!(
            n(&v, "bytes_received") < 50_000,
            "run {run}: the superseded event was fetched again: {v}"
        );
        assert_eq!(ids(&local), want, "run {run}");
    }
    // Only the newer version is served by the local store.
    assert_eq!(
        ids_matching(&local, r#"{"kinds":[0]}"#),
        vec![new_meta.id_hex()]
    );
    drop(relay);
}

/// A kind 5 synced down removes its target here, and the target does not come back from a
/// stale relay; syncing both ways then carries the deletion to that relay.
#[test]
fn deletion_synced_down_removes_target_and_it_stays_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    let remote = tmp.path().join("remote");
    let stale = tmp.path().join("stale");
    let bob = Keys::from_seed(b"deletion", 0);
    let target = sign_event(&bob, T0 + 10, 1, vec![], "regrettable");
    let keep = sign_event(&bob, T0 + 11, 1, vec![], "fine");
    let deletion = sign_event(
        &bob,
        T0 + 20,
        5,
        vec![vec!["e".into(), target.id_hex()]],
        "",
    );
    let others = dataset("deletion-others", 6, T0);
    import(&local, &[target.clone(), keep.clone()]);
    import(
        &remote,
        &[vec![target.clone(), deletion.clone()], others.clone()].concat(),
    );
    import(&stale, &[target.clone(), keep.clone()]);
    // The remote applied the deletion on import.
    let mut remote_want = ids_of(&[vec![deletion.clone()], others.clone()].concat());
    remote_want.sort();
    assert_eq!(ids(&remote), remote_want);

    let relay_r = relay(&remote, &[]);
    let url = format!("ws://{}", relay_r.addr);
    let (code, v, err) = sync_json(&url, &local, "{}", "down", &[]);
    assert_complete(code, &v, &err, "deletion down");
    assert_eq!(n(&v, "fetched"), 7, "{v}");
    let mut want = ids_of(&[vec![keep.clone(), deletion.clone()], others.clone()].concat());
    want.sort();
    assert_eq!(ids(&local), want, "target removed, deletion stored");

    let (code, v, err) = sync_json(&url, &local, "{}", "down", &[]);
    assert_complete(code, &v, &err, "deletion down, second run");
    assert_eq!((n(&v, "fetched"), n(&v, "need")), (0, 0), "{v}");
    assert_eq!(ids(&local), want);
    drop(relay_r);

    // A stale relay still has the target: it is known as deleted here, so it is not fetched.
    let relay_s = relay(&stale, &[]);
    let url = format!("ws://{}", relay_s.addr);
    let (code, v, err) = sync_json(&url, &local, "{}", "down", &[]);
    assert_complete(code, &v, &err, "stale relay down");
    assert_eq!(n(&v, "need"), 1, "{v}");
    assert_eq!((n(&v, "fetched"), n(&v, "skipped")), (0, 1), "{v}");
    assert_eq!(ids(&local), want, "the deleted target came back");

    // Both ways: the deletion (and the others) go up, the target stays gone here.
    let (code, v, err) = sync_json(&url, &local, "{}", "both", &[]);
    assert_complete(code, &v, &err, "stale relay both");
    assert_eq!(n(&v, "fetched"), 0, "{v}");
    assert_eq!(n(&v, "sent"), 7, "deletion + 6 others uploaded: {v}");
    assert_eq!(ids(&local), want);
    let st = relay_s.terminate();
    assert!(st.success());
    assert_eq!(ids(&stale), want, "the stale relay applied the deletion");
}
