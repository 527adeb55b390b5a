//! One store conformance suite, run unchanged against every engine behind the `Store` trait:
//! fjall in a temp dir, `orly-db` (the real binary, over gRPC) and PostgreSQL (a private cluster
//! this test starts). Each case gets a fresh store; what it asserts is what relays and syncs
//! rely on: NIP-01 storage semantics, filter results and their order, counts, `known`, and
//! negentropy sets (indexed for time ranges, equal fingerprints, one round for equal stores).

mod common;
#[path = "common/postgres.rs"]
mod pg;

use common::{Event, Keys, sign_event};
use futures_util::StreamExt;
use orly::event::Filter;
use orly::store::postgres::{PgConfig, PgTarget};
use orly::store::{FjallStore, Order, PgStore, RemoteStore, SaveOutcome, Store};
use std::sync::Arc;

/// A store under test and whatever keeps it alive.
struct Under {
    store: Arc<dyn Store>,
    _keep: Box<dyn std::any::Any + Send>,
}

#[derive(Clone, Copy, Debug)]
enum Engine {
    Fjall,
    OrlyDb,
    Postgres,
}

async fn fresh(engine: Engine) -> Under {
    match engine {
        Engine::Fjall => {
            let dir = tempfile::tempdir().unwrap();
            let s = FjallStore::open(dir.path()).unwrap();
            Under {
                store: Arc::new(s),
                _keep: Box::new(dir),
            }
        }
        Engine::OrlyDb => {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().to_str().unwrap().to_string();
            let db = tokio::task::spawn_blocking(move || {
                common::spawn_service(
                    "orly-db",
                    &["--listen", "127.0.0.1:0", "--data-dir", &p],
                    &[],
                )
            })
            .await
            .unwrap();
            let s = RemoteStore::connect(&db.addr, None).await.unwrap();
            Under {
                store: Arc::new(s),
                _keep: Box::new((db, dir)),
            }
        }
        Engine::Postgres => {
            let url = tokio::task::spawn_blocking(|| pg::cluster().database())
                .await
                .unwrap();
            let cfg = PgConfig {
                primary: PgTarget::parse("test", &url, None).unwrap(),
                read: None,
            };
            Under {
                store: Arc::new(PgStore::open(&cfg).await.unwrap()),
                _keep: Box::new(()),
            }
        }
    }
}

fn ev(k: &Keys, at: u64, kind: u16, tags: Vec<Vec<String>>, content: &str) -> Event {
    sign_event(k, at, kind, tags, content)
}

fn tag(a: &str, b: &str) -> Vec<String> {
    vec![a.to_string(), b.to_string()]
}

async fn query(s: &dyn Store, f: &Filter, order: Order) -> Vec<Event> {
    s.query(f.clone(), order)
        .map(|e| e.expect("query"))
        .collect()
        .await
}

async fn all(s: &dyn Store) -> Vec<Event> {
    query(s, &Filter::default(), Order::OldestFirst).await
}

async fn save(s: &dyn Store, evs: Vec<Event>) -> Vec<SaveOutcome> {
    s.save(evs).await.expect("save")
}

async fn duplicates_and_ephemeral(s: &dyn Store) {
    let k = Keys::from_seed(b"c", 0);
    let a = ev(&k, 10, 1, vec![], "a");
    let eph = ev(&k, 10, 20001, vec![], "e");
    use SaveOutcome::*;
    assert_eq!(
        save(s, vec![a.clone(), a.clone(), eph]).await,
        vec![Accepted, Duplicate, Ephemeral]
    );
    assert_eq!(save(s, vec![a.clone()]).await, vec![Duplicate]);
    assert_eq!(all(s).await, vec![a]);
}

async fn replaceable_newest_wins_ties_lowest_id(s: &dyn Store) {
    use SaveOutcome::*;
    let k = Keys::from_seed(b"c", 1);
    let old = ev(&k, 10, 0, vec![], "old");
    let new = ev(&k, 20, 0, vec![], "new");
    assert_eq!(save(s, vec![old.clone()]).await, vec![Accepted]);
    assert_eq!(save(s, vec![new.clone()]).await, vec![Replaced]);
    assert_eq!(save(s, vec![old.clone()]).await, vec![Superseded]);
    assert_eq!(all(s).await, vec![new.clone()]);
    assert_eq!(
        s.known(vec![old.id, new.id, [9; 32]]).await.unwrap(),
        vec![true, true, false]
    );
    let t1 = ev(&k, 30, 10002, vec![], "x");
    let t2 = ev(&k, 30, 10002, vec![], "y");
    let (lo, hi) = if t1.id < t2.id { (t1, t2) } else { (t2, t1) };
    assert_eq!(
        save(s, vec![hi.clone(), lo.clone()]).await,
        vec![Accepted, Replaced]
    );
    assert_eq!(save(s, vec![hi.clone()]).await, vec![Superseded]);
    let f = Filter::from_json(r#"{"kinds":[10002]}"#).unwrap();
    assert_eq!(s.neg_items(f).await.unwrap(), vec![(30, lo.id)]);
}

async fn addressable_per_d_tag_and_deletions(s: &dyn Store) {
    use SaveOutcome::*;
    let k = Keys::from_seed(b"c", 2);
    let other = Keys::from_seed(b"c", 3);
    let a1 = ev(&k, 10, 30023, vec![tag("d", "a")], "a1");
    let b1 = ev(&k, 10, 30023, vec![tag("d", "b")], "b1");
    let a2 = ev(&k, 11, 30023, vec![tag("d", "a")], "a2");
    assert_eq!(
        save(s, vec![a1, b1.clone(), a2.clone()]).await,
        vec![Accepted, Accepted, Replaced]
    );
    let mine = ev(&k, 10, 1, vec![], "mine");
    let theirs = ev(&other, 10, 1, vec![], "theirs");
    save(s, vec![mine.clone(), theirs.clone()]).await;
    let addr = format!("30023:{}:a", hex::encode(k.pubkey));
    let del = ev(
        &k,
        20,
        5,
        vec![
            tag("e", &mine.id_hex()),
            tag("e", &theirs.id_hex()),
            tag("a", &addr),
        ],
        "",
    );
    assert_eq!(save(s, vec![del.clone()]).await, vec![Accepted]);
    let left: Vec<_> = all(s).await.into_iter().map(|e| e.id).collect();
    assert!(left.contains(&theirs.id), "another author's event stays");
    assert!(left.contains(&b1.id), "another address stays");
    assert!(!left.contains(&mine.id) && !left.contains(&a2.id));
    assert_eq!(
        save(s, vec![mine.clone(), a2.clone()]).await,
        vec![Deleted; 2]
    );
    assert_eq!(s.known(vec![mine.id, a2.id]).await.unwrap(), vec![true; 2]);
    // A deletion of a deletion is ignored; a newer version of the address comes back.
    let undel = ev(&k, 25, 5, vec![tag("e", &del.id_hex())], "");
    save(s, vec![undel]).await;
    assert_eq!(s.get_by_ids(vec![del.id]).await.unwrap(), vec![del.clone()]);
    let a3 = ev(&k, 30, 30023, vec![tag("d", "a")], "again");
    assert_eq!(save(s, vec![a3]).await, vec![Accepted]);
    // A deletion that arrives before its target keeps the target out.
    let later = ev(&k, 40, 1, vec![], "later");
    let pre = ev(&k, 41, 5, vec![tag("e", &later.id_hex())], "");
    assert_eq!(
        save(s, vec![pre, later.clone()]).await,
        vec![Accepted, Deleted]
    );
    assert!(s.get_by_ids(vec![later.id]).await.unwrap().is_empty());
}

/// Events with ties in time, several authors, kinds and tags.
fn corpus() -> Vec<Event> {
    let keys: Vec<Keys> = (0..3).map(|i| Keys::from_seed(b"q", i)).collect();
    (0..60u64)
        .map(|i| {
            let k = &keys[(i % 3) as usize];
            let kind = [1, 7, 1, 30000][(i % 4) as usize];
            let mut tags = vec![tag("t", if i % 5 == 0 { "x" } else { "y" })];
            if kind == 30000 {
                tags.push(tag("d", &i.to_string()));
            }
            if i % 7 == 0 {
                tags.push(tag("p", "pp"));
            }
            ev(k, 1000 + i / 2, kind, tags, &i.to_string())
        })
        .collect()
}

async fn filters_give_what_matches_in_order(s: &dyn Store) {
    let evs = corpus();
    save(s, evs.clone()).await;
    let pk = |i: u64| hex::encode(Keys::from_seed(b"q", i).pubkey);
    let filters = [
        "{}".to_string(),
        r#"{"kinds":[7]}"#.into(),
        r#"{"kinds":[1,30000],"since":1010,"until":1020}"#.into(),
        format!(r#"{{"authors":["{}"]}}"#, pk(0)),
        format!(r#"{{"authors":["{}","{}"],"kinds":[1]}}"#, pk(1), pk(2)),
        format!(r#"{{"authors":["{}"],"since":1005,"until":1016}}"#, pk(2)),
        r##"{"#t":["x"]}"##.into(),
        r##"{"#t":["x"],"#p":["pp"]}"##.into(),
        r##"{"kinds":[1],"#t":["y"],"until":1012}"##.into(),
        format!(
            r#"{{"ids":["{}","{}"]}}"#,
            evs[3].id_hex(),
            evs[40].id_hex()
        ),
        // Ids with other conditions, one of them not stored (read once each, then sorted).
        format!(
            r#"{{"ids":["{}","{}","{}","{}","{}"],"since":1008}}"#,
            evs[33].id_hex(),
            evs[1].id_hex(),
            evs[20].id_hex(),
            "ab".repeat(32),
            evs[7].id_hex()
        ),
        r#"{"since":1029}"#.into(),
        r#"{"kinds":[]}"#.into(),
        r#"{"since":20,"until":10}"#.into(),
    ];
    for text in &filters {
        let f = Filter::from_json(text).unwrap();
        let mut want: Vec<&Event> = evs.iter().filter(|e| f.matches(e)).collect();
        want.sort_by_key(|e| (e.created_at, e.id));
        let asc: Vec<_> = query(s, &f, Order::OldestFirst).await;
        assert_eq!(
            asc.iter().map(|e| e.id).collect::<Vec<_>>(),
            want.iter().map(|e| e.id).collect::<Vec<_>>(),
            "{text}"
        );
        let desc: Vec<_> = query(s, &f, Order::NewestFirst).await;
        let mut rev = asc.clone();
        rev.reverse();
        assert_eq!(desc, rev, "{text} newest first");
        for limit in [1u64, 3] {
            let mut fl = f.clone();
            fl.limit = Some(limit);
            let got = query(s, &fl, Order::NewestFirst).await;
            assert_eq!(
                got,
                rev.iter().take(limit as usize).cloned().collect::<Vec<_>>()
            );
        }
        assert_eq!(
            s.count(f.clone()).await.unwrap(),
            want.len() as u64,
            "{text}"
        );
        let items: Vec<_> = want.iter().map(|e| (e.created_at, e.id)).collect();
        assert_eq!(s.neg_items(f.clone()).await.unwrap(), items, "{text}");
    }
}

async fn negentropy_sets_and_one_round(s: &dyn Store) {
    let evs = corpus();
    save(s, evs.clone()).await;
    for text in [
        r#"{}"#,
        r#"{"since":1003,"until":1021}"#,
        r#"{"kinds":[1]}"#,
    ] {
        let f = Filter::from_json(text).unwrap();
        let mut items: Vec<_> = evs
            .iter()
            .filter(|e| f.matches(e))
            .map(|e| (e.created_at, e.id))
            .collect();
        items.sort();
        let mut want = orly::negentropy::VecStorage::from_pairs(items.clone());
        let f2 = f.clone();
        let mut got = s.neg_storage(f2, usize::MAX).await.unwrap();
        let n = items.len();
        use orly::negentropy::NegStorage;
        assert_eq!(got.size(), n, "{text}");
        // Off the runtime: an indexed set may read the store.
        let (got_fp, want_fp) = tokio::task::spawn_blocking(move || {
            let g: Vec<_> = [(0, n), (1, n / 2), (n / 3, n)]
                .iter()
                .map(|&(a, b)| got.fingerprint(a, b).unwrap())
                .collect();
            let w: Vec<_> = [(0, n), (1, n / 2), (n / 3, n)]
                .iter()
                .map(|&(a, b)| want.fingerprint(a, b).unwrap())
                .collect();
            (g, w)
        })
        .await
        .unwrap();
        assert_eq!(got_fp, want_fp, "{text}");
    }
    // Too many items for a loaded set is refused.
    let kinds = Filter::from_json(r#"{"kinds":[1]}"#).unwrap();
    assert!(s.neg_storage(kinds, 3).await.is_err());
    // Two equal stores agree in one round.
    let other = FjallStore::open(tempfile::tempdir().unwrap().path()).unwrap();
    other.save(evs.clone()).await.unwrap();
    let mut a = s
        .neg_session(Filter::default(), 0, usize::MAX)
        .await
        .unwrap();
    let mut b = other
        .neg_session(Filter::default(), 0, usize::MAX)
        .await
        .unwrap();
    let msg = a.initiate().await.unwrap();
    let reply = b.respond(msg).await.unwrap();
    let step = a.next(reply).await.unwrap();
    assert!(step.reply.is_none() && step.have.is_empty() && step.need.is_empty());
}

async fn run_suite(engine: Engine) {
    macro_rules! case {
        ($name:ident) => {{
            let u = fresh(engine).await;
            eprintln!("{engine:?}: {}", stringify!($name));
            $name(u.store.as_ref()).await;
        }};
    }
    case!(duplicates_and_ephemeral);
    case!(replaceable_newest_wins_ties_lowest_id);
    case!(addressable_per_d_tag_and_deletions);
    case!(filters_give_what_matches_in_order);
    case!(negentropy_sets_and_one_round);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_conforms() {
    run_suite(Engine::Fjall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_db_conforms() {
    run_suite(Engine::OrlyDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    run_suite(Engine::Postgres).await;
}
