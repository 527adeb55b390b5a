//! Concurrent writers on one PostgreSQL database end exactly where one writer would: the same
//! replaceable and addressable families, deletions racing their targets, and the same events
//! pulled twice, written at once by two `orly import` processes and by four in-process stores
//! (each its own connection pool, in small batches, in different orders). The end state is
//! compared with fjall fed by one writer: same events exported, no duplicate rows, every bucket
//! sum equal to a recount (`orly stats --check`). Also: a database of a newer schema is refused,
//! `stats --check` finds a broken bucket, and a hot standby serves reads and refuses writes.

mod common;
#[path = "common/postgres.rs"]
mod pg;

use common::*;
use orly::store::postgres::{PgConfig, PgTarget};
use orly::store::{PgStore, Store, StoreError};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn tag(a: &str, b: &str) -> Vec<String> {
    vec![a.to_string(), b.to_string()]
}

/// Families with many versions (ties in time included), notes and their deletions, addresses
/// and theirs. (No `e` deletion of a replaceable event: its end state depends on arrival order
/// even for one writer.)
fn corpus(n_authors: u64) -> Vec<Event> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut out = Vec::new();
    for a in 0..n_authors {
        let k = Keys::from_seed(b"conc", a);
        let pk = hex::encode(k.pubkey);
        for v in 0..6u64 {
            let t = 1000 + rng.random_range(0..4);
            out.push(sign_event(&k, t, 0, vec![], &format!("profile {v}")));
            out.push(sign_event(&k, t, 10002, vec![], &format!("relays {v}")));
            for d in ["x", "y"] {
                let t = 1000 + rng.random_range(0..6);
                out.push(sign_event(
                    &k,
                    t,
                    30023,
                    vec![tag("d", d)],
                    &format!("{d}{v}"),
                ));
            }
        }
        let notes: Vec<Event> = (0..8u64)
            .map(|i| sign_event(&k, 900 + i * 300, 1, vec![tag("t", "n")], &format!("n{i}")))
            .collect();
        let del = sign_event(
            &k,
            1003,
            5,
            vec![
                tag("e", &notes[1].id_hex()),
                tag("e", &notes[4].id_hex()),
                tag("a", &format!("30023:{pk}:x")),
            ],
            "",
        );
        out.extend(notes);
        out.push(del);
    }
    out
}

fn shuffled(evs: &[Event], seed: u64) -> Vec<Event> {
    let mut v = evs.to_vec();
    v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    v
}

fn check_clean(url: &str) {
    let (code, out, err) = orly_env(
        &["stats", "--check", "--json"],
        &[("ORLY_DB_TYPE", "postgres"), ("ORLY_POSTGRES_URL", url)],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["integrity"]["problems"], serde_json::json!([]), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_writers_in_small_batches_end_where_one_writer_would() {
    let evs = corpus(12);
    let want = pg::one_writer(&evs).await;
    let url = tokio::task::spawn_blocking(|| pg::cluster().database())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (url, mine) = (url.clone(), shuffled(&evs, 100 + w));
        tasks.push(tokio::spawn(async move {
            let s = pg::open_store(&url).await;
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut rest = mine.as_slice();
            while !rest.is_empty() {
                let n = rng.random_range(1..=12).min(rest.len());
                let (batch, more) = rest.split_at(n);
                s.save(batch.to_vec()).await.expect("concurrent save");
                rest = more;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = pg::open_store(&url).await;
    assert_eq!(pg::export(&s).await, want);
    let db = pg::db_name(&url);
    let dup = tokio::task::spawn_blocking(move || {
        pg::cluster().psql(&db, "SELECT count(*) - count(DISTINCT id) FROM events")
    })
    .await
    .unwrap();
    assert_eq!(dup.trim(), "0");
    let u = url.clone();
    tokio::task::spawn_blocking(move || check_clean(&u))
        .await
        .unwrap();
}

#[test]
fn two_import_processes_end_where_one_writer_would() {
    let evs = corpus(300);
    assert!(evs.len() > 2 * 4096, "more than one import batch each");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let want = rt.block_on(pg::one_writer(&evs));
    let tmp = tempfile::tempdir().unwrap();
    let url = pg::cluster().database();
    let mut kids = Vec::new();
    for seed in [1, 2] {
        let f = tmp.path().join(format!("{seed}.jsonl"));
        write_jsonl(&f, &shuffled(&evs, seed));
        kids.push(
            std::process::Command::new(bin("orly"))
                .arg("import")
                .arg(&f)
                .env("ORLY_DB_TYPE", "postgres")
                .env("ORLY_POSTGRES_URL", &url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    let got = rt.block_on(async { pg::export(&pg::open_store(&url).await).await });
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    check_clean(&url);
}

#[test]
fn newer_schema_refused_and_broken_bucket_found() {
    let url = pg::cluster().database();
    let db = pg::db_name(&url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = pg::open_store(&url).await;
        s.save(corpus(1)).await.unwrap();
    });
    check_clean(&url);
    pg::cluster().psql(
        &db,
        "UPDATE neg_buckets SET count = count + 1 WHERE bucket = (SELECT min(bucket) FROM neg_buckets)",
    );
    let env = [
        ("ORLY_DB_TYPE", "postgres"),
        ("ORLY_POSTGRES_URL", url.as_str()),
    ];
    let (code, out, _) = orly_env(&["stats", "--check"], &env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("neg_buckets: bucket"), "{out}");
    pg::cluster().psql(
        &db,
        "INSERT INTO orly_schema_history (version, name, applied_on, checksum) \
         VALUES (99, 'future', 'now', '0')",
    );
    let err = rt
        .block_on(PgStore::open(&PgConfig {
            primary: PgTarget::parse("test", &url, None).unwrap(),
            read: None,
        }))
        .unwrap_err();
    assert!(err.to_string().contains("newer orly"), "{err}");
    let (code, _, err) = orly_env(&["stats"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("schema is version 99"), "{err}");
}

#[test]
fn a_hot_standby_serves_reads_and_refuses_writes() {
    let primary = pg::cluster();
    let url = primary.database();
    let db = pg::db_name(&url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let evs = corpus(2);
    rt.block_on(async { pg::open_store(&url).await.save(evs.clone()).await.unwrap() });
    let standby = primary.standby();
    let s_url = standby.url(&db);
    // Reads through ORLY_POSTGRES_READ_URL, and a store opened on the standby alone.
    let want = rt.block_on(pg::one_writer(&evs));
    let both = rt.block_on(PgStore::open(&PgConfig {
        primary: PgTarget::parse("test", &url, None).unwrap(),
        read: Some(PgTarget::parse("test", &s_url, None).unwrap()),
    }));
    let both = both.unwrap();
    assert_eq!(rt.block_on(pg::export(&both)), want);
    let only = rt.block_on(pg::open_store(&s_url));
    assert_eq!(rt.block_on(pg::export(&only)), want);
    let more = sign_event(&Keys::from_seed(b"sb", 1), 5000, 1, vec![], "late");
    match rt.block_on(only.save(vec![more.clone()])) {
        Err(StoreError::Refused(why)) => assert!(why.contains("hot standby"), "{why}"),
        other => panic!("a standby must refuse writes: {other:?}"),
    }
    // A write on the primary reaches the standby's readers.
    rt.block_on(both.save(vec![more.clone()])).unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if !rt
            .block_on(only.get_by_ids(vec![more.id]))
            .unwrap()
            .is_empty()
        {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(seen, "replication reached the standby");
    // NIP-77 sessions run on the standby: the relay over it agrees with the primary's store.
    let r = spawn_service(
        "orly-relay",
        &["--listen", "127.0.0.1:0"],
        &[("ORLY_DB_TYPE", "postgres"), ("ORLY_POSTGRES_URL", &s_url)],
    );
    // A client publishing to the relay over the standby is told why it was refused.
    let refused = sign_event(&Keys::from_seed(b"sb", 2), 5001, 1, vec![], "refused");
    rt.block_on(async {
        use nostr_sdk::prelude::*;
        let c = Client::default();
        c.add_relay(format!("ws://{}", r.addr)).await.unwrap();
        let up = c.try_connect(std::time::Duration::from_secs(10)).await;
        assert!(up.failed.is_empty(), "{:?}", up.failed);
        let n = nostr_sdk::Event::from_json(refused.to_json()).unwrap();
        let out = c.send_event(&n).await;
        let why = match out {
            Ok(o) => format!("{:?}", o.failed),
            Err(e) => e.to_string(),
        };
        assert!(
            why.contains("blocked: read-only") && why.contains("hot standby"),
            "{why}"
        );
    });
    let url2 = primary.database();
    let env2 = [
        ("ORLY_DB_TYPE", "postgres"),
        ("ORLY_POSTGRES_URL", url2.as_str()),
    ];
    let (code, out, err) = orly_env(&["sync", &format!("ws://{}", r.addr), "--json"], &env2);
    assert_eq!(code, 0, "{out}{err}");
    let copy = rt.block_on(async { pg::export(&pg::open_store(&url2).await).await });
    assert_eq!(copy, rt.block_on(pg::export(&both)));
    r.terminate();
}
