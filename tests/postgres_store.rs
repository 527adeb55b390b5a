//! `ORLY_DB_TYPE=postgres` end to end, on a private PostgreSQL cluster this test starts: the
//! `orly` store commands (the same file imported into fjall and PostgreSQL exports the same
//! lines), two `orly-relay` processes over one database (a nostr-sdk client publishes to one and
//! reads from the other), `orly sync` into a PostgreSQL store (a second sync of equal stores is
//! one round), the launcher starting no orly-db, and the indexes the main REQ shapes use.

mod common;
#[path = "common/postgres.rs"]
mod pg;

use common::*;
use orly::event::Filter;
use orly::store::postgres::{PgConfig, PgTarget};
use orly::store::{Order, PgStore};
use std::path::Path;
use std::time::Duration;

fn pg_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ORLY_DB_TYPE", "postgres".into()),
        ("ORLY_POSTGRES_URL", url.into()),
    ]
}

fn with<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A generated corpus with replaceable and addressable kinds, as a JSONL file.
fn corpus(dir: &Path, count: u64) -> std::path::PathBuf {
    let (code, out, err) = orly(&[
        "gen",
        "--count",
        &count.to_string(),
        "--authors",
        "20",
        "--kinds",
        "0,1,3,7,30023",
    ]);
    assert_eq!(code, 0, "{err}");
    let p = dir.join("events.jsonl");
    std::fs::write(&p, out).unwrap();
    p
}

#[test]
fn store_commands_match_fjall_and_relays_share_one_database() {
    let tmp = tempfile::tempdir().unwrap();
    let file = corpus(tmp.path(), 2000);
    let file = file.to_str().unwrap();
    let url = pg::cluster().database();
    // The password file is read (trust auth ignores it); its content never appears in output.
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let mut env = pg_env(&url);
    env.push(("ORLY_POSTGRES_PASSWORD_FILE", pw.to_str().unwrap().into()));
    let env = with(&env);

    let fjall = tmp.path().join("fjall");
    let fj = fjall.to_str().unwrap();
    let (code, _, err) = orly(&["import", file, "--data-dir", fj]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err_pg) = orly_env(&["import", file], &env);
    assert_eq!(code, 0, "{err_pg}");
    // Same outcomes line (accepted/replaced/superseded...) on both engines.
    let summary = |e: &str| {
        e.lines()
            .find(|l| l.contains("imported"))
            .map(|l| l.split(": ").nth(1).unwrap_or("").to_string())
    };
    assert_eq!(summary(&err), summary(&err_pg));
    assert!(!err_pg.contains("s3cret"));
    for order in [&[][..], &["--ascending"][..]] {
        let mut a = vec!["export", "--data-dir", fj];
        a.extend_from_slice(order);
        let (_, want, _) = orly(&a);
        let mut b = vec!["export"];
        b.extend_from_slice(order);
        let (code, got, err) = orly_env(&b, &env);
        assert_eq!(code, 0, "{err}");
        assert!(want.lines().count() > 500);
        assert_eq!(got, want, "export {order:?}");
    }
    let (code, out, err) = orly_env(&["stats", "--check", "--json"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let pg: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let (_, out, _) = orly(&["stats", "--json", "--data-dir", fj]);
    let fj_stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(pg["stats"]["events"], fj_stats["stats"]["events"]);
    assert_eq!(pg["stats"]["by_kind"], fj_stats["stats"]["by_kind"]);
    assert_eq!(pg["integrity"]["problems"], serde_json::json!([]));

    // Two relays over the one database: what one accepts, the other serves.
    let r1 = spawn_service("orly-relay", &["--listen", "127.0.0.1:0"], &env);
    let r2 = spawn_service("orly-relay", &["--listen", "127.0.0.1:0"], &env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let k = Keys::from_seed(b"pg-relay", 1);
    let note = sign_event(&k, 1_760_000_100, 1, vec![], "through relay one");
    rt.block_on(async {
        use nostr_sdk::prelude::*;
        let c1 = Client::default();
        c1.add_relay(format!("ws://{}", r1.addr)).await.unwrap();
        let up = c1.try_connect(Duration::from_secs(10)).await;
        assert!(
            up.failed.is_empty() && !up.success.is_empty(),
            "{:?}",
            up.failed
        );
        let n = nostr_sdk::Event::from_json(note.to_json()).unwrap();
        let out = c1.send_event(&n).await.expect("publish to relay one");
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        let c2 = Client::default();
        c2.add_relay(format!("ws://{}", r2.addr)).await.unwrap();
        let up = c2.try_connect(Duration::from_secs(10)).await;
        assert!(
            up.failed.is_empty() && !up.success.is_empty(),
            "{:?}",
            up.failed
        );
        // nostr-sdk may report the send before relay one's OK: ask relay two until it serves
        // the event (bounded).
        let mut got = 0;
        for _ in 0..50 {
            got = c2
                .fetch_events(nostr_sdk::Filter::new().id(n.id), Duration::from_secs(10))
                .await
                .expect("fetch from relay two")
                .len();
            if got > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got, 1, "relay two serves what relay one stored");
    });

    // orly sync down from relay two into another PostgreSQL database, then again: one round.
    let url2 = pg::cluster().database();
    let env2 = pg_env(&url2);
    let env2 = with(&env2);
    let relay_url = format!("ws://{}", r2.addr);
    let (code, out, err) = orly_env(&["sync", &relay_url, "--json"], &env2);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = orly_env(&["sync", &relay_url, "--json"], &env2);
    assert_eq!(code, 0, "{out}{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(
        last["round"], 1,
        "equal stores reconcile in one round: {last}"
    );
    assert_eq!(last["fetched"], 0, "{last}");
    let (_, a, _) = orly_env(&["export"], &env);
    let (_, b, _) = orly_env(&["export"], &env2);
    assert_eq!(a, b);
    r1.terminate();
    r2.terminate();
}

#[test]
fn launcher_over_postgres_starts_no_orly_db() {
    let url = pg::cluster().database();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orly-launcher"));
    cmd.env("ORLY_DB_TYPE", "postgres")
        .env("ORLY_POSTGRES_URL", &url)
        .env("ORLY_RELAY_LISTEN", "127.0.0.1:0")
        .env("ORLY_DB_LISTEN", "127.0.0.1:0")
        .env_remove("ORLY_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn launcher");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let done = l.contains("all services ready");
                lines.push(l);
                if done {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(text.contains("all services ready"), "{text}");
    assert!(text.contains("orly-relay ready"), "{text}");
    assert!(
        !text.contains("orly-db ready"),
        "no orly-db with postgres: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_filter_shapes_use_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = corpus(tmp.path(), 6000);
    let url = tokio::task::spawn_blocking(|| pg::cluster().database())
        .await
        .unwrap();
    let env = pg_env(&url);
    let (code, _, err) = orly_env(&["import", file.to_str().unwrap()], &with(&env));
    assert_eq!(code, 0, "{err}");
    let db = pg::db_name(&url);
    tokio::task::spawn_blocking(move || pg::cluster().psql(&db, "ANALYZE"))
        .await
        .unwrap();
    let store = PgStore::open(&PgConfig {
        primary: PgTarget::parse("test", &url, None).unwrap(),
        read: None,
    })
    .await
    .unwrap();
    let author = hex::encode(Keys::from_seed(b"x", 0).pubkey);
    let cases = [
        (r#"{"limit":100}"#.to_string(), "events_by_time"),
        (
            r#"{"since":1759000000,"until":1759100000}"#.into(),
            "events_by_time",
        ),
        (r#"{"kinds":[7],"limit":100}"#.into(), "Index"),
        (r#"{"kinds":[7],"since":1759990000}"#.into(), "Index"),
        (
            format!(r#"{{"authors":["{author}"],"limit":100}}"#),
            "events_by_author_kind",
        ),
        (
            format!(r#"{{"authors":["{author}"],"kinds":[1]}}"#),
            "events_by_author_kind",
        ),
        (
            r##"{"#p":["00"],"limit":50}"##.into(),
            "event_tags_by_value",
        ),
        (
            format!(r#"{{"ids":["{}"]}}"#, "ab".repeat(32)),
            "events_pkey",
        ),
    ];
    for (text, index) in cases {
        let f = Filter::from_json(&text).unwrap();
        let plan = store.explain(&f, Order::NewestFirst).await.unwrap();
        assert!(plan.contains(index), "{text} should use {index}:\n{plan}");
        assert!(!plan.contains("Seq Scan on events"), "{text}:\n{plan}");
        assert!(!plan.contains("Seq Scan on event_tags"), "{text}:\n{plan}");
    }
}

#[test]
fn migrate_fjall_to_postgres_and_back_resumably() {
    let tmp = tempfile::tempdir().unwrap();
    let file = corpus(tmp.path(), 3000);
    let src = tmp.path().join("src");
    let src_s = src.to_str().unwrap();
    let (code, _, err) = orly(&["import", file.to_str().unwrap(), "--data-dir", src_s]);
    assert_eq!(code, 0, "{err}");
    let (_, want, _) = orly(&["export", "--data-dir", src_s]);
    let lines: Vec<&str> = want.lines().collect();
    assert!(lines.len() > 1000);

    // A checkpoint in the middle (as a stopped copy leaves): only what follows it is copied.
    let url = pg::cluster().database();
    let env = pg_env(&url);
    let env = with(&env);
    let mid: serde_json::Value = serde_json::from_str(lines[lines.len() / 2]).unwrap();
    let ck = tmp.path().join("ck");
    std::fs::write(
        &ck,
        format!("{} {}\n", mid["created_at"], mid["id"].as_str().unwrap()),
    )
    .unwrap();
    let mut args = vec!["migrate", "--to", "postgres", "--data-dir", src_s];
    args.extend(["--checkpoint", ck.to_str().unwrap()]);
    let (code, _, err) = orly_env(&args, &env);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(resumed)"), "{err}");
    assert!(
        !ck.exists(),
        "the checkpoint is removed when the copy is done"
    );
    let (_, half, _) = orly_env(&["export"], &env);
    // Newest first: the first half of the lines, down to (not including) the checkpoint.
    assert_eq!(half.lines().collect::<Vec<_>>(), lines[..lines.len() / 2]);
    // Then the whole copy (the copied half counts as already there).
    let (code, _, err) = orly_env(&["migrate", "--to", "postgres", "--data-dir", src_s], &env);
    assert_eq!(code, 0, "{err}");
    let (_, got, _) = orly_env(&["export"], &env);
    assert_eq!(got, want);
    let (code, out, _) = orly_env(&["stats", "--check", "--json"], &env);
    assert_eq!(code, 0, "{out}");

    // And back into a fresh fjall directory.
    let back = tmp.path().join("back");
    let back_s = back.to_str().unwrap();
    let (code, _, err) = orly_env(&["migrate", "--to", "fjall", "--data-dir", back_s], &env);
    assert_eq!(code, 0, "{err}");
    let (_, again, _) = orly(&["export", "--data-dir", back_s]);
    assert_eq!(again, want);
    let (code, out, _) = orly(&["stats", "--check", "--json", "--data-dir", back_s]);
    assert_eq!(code, 0, "{out}");
    let a: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let (_, out, _) = orly_env(&["stats", "--check", "--json"], &env);
    let b: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(a["stats"]["by_kind"], b["stats"]["by_kind"]);
    assert_eq!(a["integrity"]["problems"], b["integrity"]["problems"]);
}
