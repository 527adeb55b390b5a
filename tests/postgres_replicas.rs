//! The replica test of the PostgreSQL store, with the real binaries: one database, two
//! `orly-relay` processes and two secured `orly-sync-negentropy` processes over it (mTLS, tokens,
//! policy, each its own audit directory and peer state), all four started at once. Three outside
//! relays — two `orly-relay` over their own fjall directories and a nostr-relay-builder relay —
//! hold different and overlapping events, and, split between them, the versions of one
//! replaceable family (a tie in time included), of two addressable ones, and a deletion (by id
//! and by address) whose targets sit on the other relays; and the same races for thirty more
//! authors.
//!
//! Syncs run through both services at once, down and both ways, the same relay through both
//! services at the same time. Then:
//!
//! - the database holds exactly what one writer fed every event would (newest wins, ties to the
//!   lowest id, deleted events gone), with no duplicate row, no row of a deleted id, and a clean
//!   `orly stats --check`;
//! - each sync accounts once for every id that differed (fetched, skipped, already had, sent,
//!   refused, undelivered), exactly, also when another sync replaced or deleted an id before
//!   this one uploaded it (then already had); and
//!   the fetched counts of the concurrent syncs add up to what the database gained (each new
//!   event counted by one sync, plus at most the versions a later one replaced or deleted);
//! - nostr-sdk clients reading from either `orly-relay` see that same id set;
//! - the relays synced both ways received the database's events, and after a second round hold
//!   what the database holds; that round, and a relay offering only deleted and superseded
//!   versions through both services at once, store nothing;
//! - each service's audit log verifies and holds exactly its own syncs: one allowed decision and
//!   one finished record per call, traced, with the counts its caller was shown.
//!
//! Everything listens on 127.0.0.1 port 0; every wait is bounded.

mod common;
#[path = "common/gateway.rs"]
mod gateway;
#[path = "common/nrb.rs"]
mod nrb;
#[path = "common/postgres.rs"]
mod pg;

use common::{Event, Keys, Proc, ids, import, notes, orly_env, sign_event};
use gateway::*;
use nrb::{db_ids, local_relay, no_rate_limit};
use orly::proto::orlysync::negentropy::v1 as npb;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

type Ids = BTreeSet<String>;

/// Bound on the whole test (it takes well under a minute).
const WHOLE_TEST: Duration = Duration::from_secs(240);
/// Base time of the events.
const T: u64 = 1_760_000_000;

fn tag(a: &str, b: &str) -> Vec<String> {
    vec![a.to_string(), b.to_string()]
}

fn set(events: &[Event]) -> Ids {
    events.iter().map(Event::id_hex).collect()
}

fn pg_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ORLY_DB_TYPE", "postgres".into()),
        ("ORLY_POSTGRES_URL", url.into()),
    ]
}

fn ids_of_lines(lines: &[String]) -> Ids {
    lines
        .iter()
        .map(|l| Event::from_json(l.as_bytes()).unwrap().id_hex())
        .collect()
}

/// What the outside relays and the database start with.
struct World {
    /// In the database before any sync.
    own: Vec<Event>,
    /// The regular part of `own` (what every relay synced both ways must receive).
    own_notes: Vec<Event>,
    a: Vec<Event>,
    b: Vec<Event>,
    c: Vec<Event>,
    /// The version of each family that wins (newest, ties to the lowest id; not deleted), and
    /// the deletion.
    winners: Ids,
    /// Every version that loses (superseded or deleted).
    losers: Vec<Event>,
    /// One losing version per family, for the relay that offers only those.
    stale: Vec<Event>,
    /// Ids that must never be stored: the deletion's targets.
    deleted: Ids,
}

fn world() -> World {
    let own_notes = notes("replica-own", 25, T - 100_000);
    let shared = notes("replica-shared", 60, T - 90_000);
    let only_a = notes("replica-only-a", 150, T - 80_000);
    let only_b = notes("replica-only-b", 150, T - 70_000);
    let only_c = notes("replica-only-c", 150, T - 60_000);
    let ab = notes("replica-ab", 40, T - 50_000);
    let bc = notes("replica-bc", 40, T - 40_000);

    // One author's replaceable and addressable families, split between the relays.
    let r = Keys::from_seed(b"replica-families", 0);
    let k0_own = sign_event(&r, T + 1, 0, vec![], "profile in the database");
    let k0_a = sign_event(&r, T + 10, 0, vec![], "profile from a");
    let k0_b = sign_event(&r, T + 10, 0, vec![], "profile from b"); // a tie with a's
    let k0_c = sign_event(&r, T + 5, 0, vec![], "profile from c (older)");
    let k3_a = sign_event(&r, T + 20, 3, vec![tag("p", &"ab".repeat(32))], "");
    let k3_b = sign_event(&r, T + 30, 3, vec![tag("p", &"cd".repeat(32))], "");
    let list_a = sign_event(&r, T + 40, 30000, vec![tag("d", "list")], "list from a");
    let list_b = sign_event(&r, T + 40, 30000, vec![tag("d", "list")], "list from b");
    let x_a = sign_event(&r, T + 45, 30001, vec![tag("d", "x")], "x from a (older)");
    let x_c = sign_event(&r, T + 50, 30001, vec![tag("d", "x")], "x from c");

    // A deletion on b, of a note on a and c and of an address whose older version is on a and
    // newer version (after the deletion) on c.
    let x = Keys::from_seed(b"replica-deleter", 0);
    let xpk = hex::encode(x.pubkey);
    let doomed = sign_event(&x, T + 60, 1, vec![], "deleted on relay b");
    let gone_old = sign_event(
        &x,
        T + 90,
        30002,
        vec![tag("d", "gone")],
        "deleted by address",
    );
    let gone_new = sign_event(
        &x,
        T + 110,
        30002,
        vec![tag("d", "gone")],
        "after the deletion",
    );
    let del = sign_event(
        &x,
        T + 100,
        5,
        vec![
            tag("e", &doomed.id_hex()),
            tag("a", &format!("30002:{xpk}:gone")),
        ],
        "",
    );

    let (bulk_a, bulk_b, bulk_c) = contested(30);
    let cat = |parts: &[&[Event]]| parts.concat();
    // Of the tied versions, the one with the higher id loses.
    let higher = |x: &Event, y: &Event| if x.id < y.id { y.clone() } else { x.clone() };
    let lower = |x: &Event, y: &Event| if x.id < y.id { x.clone() } else { y.clone() };
    let winners = set(&[
        lower(&k0_a, &k0_b),
        k3_b.clone(),
        lower(&list_a, &list_b),
        x_c.clone(),
        gone_new.clone(),
        del.clone(),
    ]);
    // One loser per family (a relay keeps one version of each).
    let stale = vec![
        higher(&k0_a, &k0_b),
        k3_a.clone(),
        higher(&list_a, &list_b),
        x_a.clone(),
        doomed.clone(),
        gone_old.clone(),
    ];
    let losers = cat(&[&stale, &[k0_c.clone(), k0_own.clone()]]);
    World {
        own: cat(&[&own_notes, &[k0_own]]),
        a: cat(&[
            &bulk_a,
            &shared,
            &only_a,
            &ab,
            &[k0_a, k3_a, list_a, x_a, doomed.clone(), gone_old.clone()],
        ]),
        b: cat(&[
            &bulk_b,
            &shared,
            &only_b,
            &ab,
            &bc,
            &[k0_b, k3_b, list_b, del],
        ]),
        c: cat(&[
            &bulk_c,
            &shared,
            &only_c,
            &bc,
            &[k0_c, x_c, doomed.clone(), gone_new],
        ]),
        own_notes,
        winners,
        losers,
        stale,
        deleted: set(&[doomed, gone_old]),
    }
}

/// More of the same races, for `n` authors, as (relay a's, relay b's, relay c's) events: a
/// profile tied in time between a and b, a follow list and an addressable event newer on a for
/// even authors and on b for odd ones, and a note on a and c that a deletion on b deletes.
fn contested(n: u64) -> (Vec<Event>, Vec<Event>, Vec<Event>) {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let k = Keys::from_seed(b"replica-contested", i);
        let (ta, tb) = if i % 2 == 0 {
            (T + 8, T + 7)
        } else {
            (T + 7, T + 8)
        };
        a.push(sign_event(&k, T + 3, 0, vec![], &format!("a {i}")));
        b.push(sign_event(&k, T + 3, 0, vec![], &format!("b {i}")));
        a.push(sign_event(&k, ta, 3, vec![], &format!("a {i}")));
        b.push(sign_event(&k, tb, 3, vec![], &format!("b {i}")));
        a.push(sign_event(&k, ta, 30023, vec![tag("d", "post")], "a"));
        b.push(sign_event(&k, tb, 30023, vec![tag("d", "post")], "b"));
        let note = sign_event(&k, T + 2, 1, vec![], &format!("doomed {i}"));
        b.push(sign_event(&k, T + 9, 5, vec![tag("e", &note.id_hex())], ""));
        a.push(note.clone());
        c.push(note);
    }
    (a, b, c)
}

/// One secured sync service over the database at `url`, with its own audit directory and
/// peer state under the fixture's root (the fixture's `ORLY_AUDIT_DIR` is overridden).
fn replica_command(fx: &Fixture, n: u32, url: &str) -> std::process::Command {
    let mut env = fx.env();
    env.push(("ORLY_AUDIT_DIR", audit_dir(fx, n).display().to_string()));
    env.push((
        "ORLY_SYNC_NEGENTROPY_STATE_DIR",
        fx.root.join(format!("state-{n}")).display().to_string(),
    ));
    env.extend(pg_env(url));
    service_command(
        &["--listen", "127.0.0.1:0"],
        &env,
        SERVICE_LOG,
        &fx.log_path(n),
    )
}

fn audit_dir(fx: &Fixture, n: u32) -> PathBuf {
    fx.root.join(format!("audit-{n}"))
}

/// An `orly-relay` over the database at `url`.
fn pg_relay(url: &str) -> Proc {
    let env = pg_env(url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::spawn_service("orly-relay", &["--listen", "127.0.0.1:0"], &env)
}

/// The ids a nostr-sdk client reads from the relay at `addr` (everything, bounded).
async fn read_ids(addr: &str) -> Ids {
    use nostr_sdk::prelude::*;
    // The relay sends an AUTH challenge on connect; a client without a signer that answered it
    // would fail its subscriptions ("authentication failed"), depending on which came first.
    let c = Client::builder()
        .opts(ClientOptions::new().automatic_authentication(false))
        .build();
    c.add_relay(format!("ws://{addr}")).await.unwrap();
    let up = c.try_connect(Duration::from_secs(10)).await;
    assert!(
        up.failed.is_empty() && !up.success.is_empty(),
        "connect to {addr}: {:?}",
        up.failed
    );
    let relay = c.relay(format!("ws://{addr}")).await.unwrap();
    // A stream to the relay's EOSE (bounded), every event checked by nostr-sdk; any error fails.
    let mut stream = relay
        .stream_events(
            nostr_sdk::Filter::new(),
            Duration::from_secs(10),
            ReqExitPolicy::ExitOnEOSE,
        )
        .await
        .unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    let mut seen = Ids::new();
    while let Some(e) = stream.next().await {
        let e = e.unwrap_or_else(|e| panic!("read from {addr}: {e}"));
        seen.insert(e.id.to_hex());
    }
    c.disconnect().await;
    seen
}

/// One planned call: which service, which relay, which direction.
struct Call {
    svc: usize,
    peer: String,
    dir: npb::Direction,
    trace: String,
}

/// The calls' last progress messages, in order; runs them all at once. Each must complete and
/// account exactly for every id that differed.
async fn run_at_once(
    chans: &[tonic::transport::Channel],
    token: &str,
    calls: &[Call],
    fx: &Fixture,
) -> Vec<npb::SyncProgress> {
    let futs = calls.iter().map(|c| {
        let ch = chans[c.svc].clone();
        let body = sync_req(&c.peer, c.dir, 20);
        async move { sync_call_traced(&ch, Some(token), &c.trace, body).await }
    });
    let results = futures_util::future::join_all(futs).await;
    let mut last = Vec::new();
    for (c, r) in calls.iter().zip(results) {
        let msgs = r.unwrap_or_else(|st| {
            panic!(
                "sync {} {:?} through service {} refused: {st:?}\n{}",
                c.peer,
                c.dir,
                c.svc + 1,
                tail(&fx.log_text(c.svc as u32 + 1), 30)
            )
        });
        let m = msgs.last().cloned().expect("at least one progress message");
        assert!(
            m.complete && m.error.is_empty(),
            "sync {} {:?} through service {} did not complete: {m:?}\n{}",
            c.peer,
            c.dir,
            c.svc + 1,
            tail(&fx.log_text(c.svc as u32 + 1), 30)
        );
        // Every id that differed is accounted for once: each needed one fetched, skipped or
        // already had (stored first by another sync); with uploads, each one the store had
        // sent, refused or already had by the peer. Nothing is dropped: every event is valid.
        let uploads = c.dir == npb::Direction::Both;
        let moved = m.need_count + if uploads { m.have_count } else { 0 };
        // An id of `have` that another sync replaced or deleted here before this sync read
        // its upload batch is `already_had` (the sides agree on it); a needed id the relay did
        // not send is `undelivered`. Exact in every round.
        let counted = m.fetched_count
            + m.skipped_count
            + m.already_had_count
            + m.sent_count
            + m.rejected_count
            + m.undelivered_count;
        assert!(
            m.dropped_count == 0 && (uploads || m.sent_count == 0) && moved == counted,
            "sync {} {:?} through service {}: {moved} ids differed, {counted} accounted for: \
             {m:?}",
            c.peer,
            c.dir,
            c.svc + 1
        );
        last.push(m);
    }
    last
}

/// The database's content (newest first), checked against one writer's.
async fn db_export(url: &str) -> Vec<String> {
    pg::export(&pg::open_store(url).await).await
}

fn psql(url: &str, sql: &str) -> String {
    pg::cluster()
        .psql(&pg::db_name(url), sql)
        .trim()
        .to_string()
}

/// No duplicate rows, no row of a deleted id, one stored version per family, and a clean
/// `orly stats --check`.
fn check_database(url: &str) {
    let checks = [
        (
            "duplicate ids",
            "SELECT count(*) - count(DISTINCT id) FROM events",
        ),
        (
            "rows of deleted ids",
            "SELECT count(*) FROM events e JOIN tombstones t ON t.id = e.id",
        ),
        (
            "superseded versions still stored",
            "SELECT count(*) FROM events e JOIN superseded s ON s.id = e.id",
        ),
        (
            "replaceable families with more than one version",
            "SELECT count(*) FROM (SELECT pubkey, kind FROM events \
             WHERE kind IN (0, 3) OR kind BETWEEN 10000 AND 19999 \
             GROUP BY pubkey, kind HAVING count(*) > 1) f",
        ),
        (
            "addressable families with more than one version",
            "SELECT count(*) FROM (SELECT 1 FROM (SELECT pubkey, kind, \
             (SELECT t->>1 FROM jsonb_array_elements(raw::jsonb->'tags') t \
              WHERE t->>0 = 'd' LIMIT 1) AS d FROM events \
             WHERE kind BETWEEN 30000 AND 39999) e \
             GROUP BY pubkey, kind, d HAVING count(*) > 1) f",
        ),
    ];
    for (what, sql) in checks {
        let got = psql(url, sql);
        assert_eq!(got, "0", "{what}");
    }
    let (code, out, err) = orly_env(
        &["stats", "--check", "--json"],
        &[("ORLY_DB_TYPE", "postgres"), ("ORLY_POSTGRES_URL", url)],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["integrity"]["problems"], serde_json::json!([]), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_over_one_database_end_where_one_writer_would() {
    tokio::time::timeout(WHOLE_TEST, replicas())
        .await
        .expect("test exceeded its time limit");
}

async fn replicas() {
    let w = world();
    let everything = [w.own.clone(), w.a.clone(), w.b.clone(), w.c.clone()].concat();
    let want = pg::one_writer(&everything).await;
    let want_ids = ids_of_lines(&want);
    assert!(want_ids.is_disjoint(&w.deleted));
    assert!(want_ids.is_disjoint(&set(&w.losers)));
    assert!(want_ids.is_superset(&w.winners));

    let fx = Fixture::with_policy(&policy_toml("", &[AdminSpec::open("alice")]));
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let url = tokio::task::block_in_place(|| {
        let url = pg::cluster().database();
        let f = tmp.path().join("own.jsonl");
        common::write_jsonl(&f, &w.own);
        let (code, _, err) = orly_env(
            &["import", f.to_str().unwrap()],
            &[("ORLY_DB_TYPE", "postgres"), ("ORLY_POSTGRES_URL", &url)],
        );
        assert_eq!(code, 0, "{err}");
        import(&dir_a, &w.a);
        import(&dir_b, &w.b);
        url
    });
    let initial = ids_of_lines(&db_export(&url).await);
    assert_eq!(initial, set(&w.own));

    // The four processes over the database, started at once (their migrations take turns).
    let (relays, services) = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let r: Vec<_> = (0..2).map(|_| s.spawn(|| pg_relay(&url))).collect();
            let v: Vec<_> = (1..=2u32)
                .map(|n| {
                    let (fx, url) = (&fx, &url);
                    s.spawn(move || start_command(replica_command(fx, n, url), &fx.log_path(n)))
                })
                .collect();
            let r: Vec<Proc> = r.into_iter().map(|h| h.join().unwrap()).collect();
            let v: Vec<Proc> = v.into_iter().map(|h| h.join().unwrap()).collect();
            (r, v)
        })
    });
    let (out_a, out_b) =
        tokio::task::block_in_place(|| (common::relay(&dir_a, &[]), common::relay(&dir_b, &[])));
    let out_c = local_relay(&w.c, no_rate_limit()).await;
    let (peer_a, peer_b, peer_c) = (
        format!("ws://{}", out_a.addr),
        format!("ws://{}", out_b.addr),
        out_c.url.clone(),
    );

    let alice = fx.client("alice");
    let token = fx.token("alice", &alice);
    let mut chans = Vec::new();
    for s in &services {
        chans.push(connect(&s.addr, &fx.ca_pem, &alice).await);
    }
    let mut n_trace = 0;
    let mut call = |svc: usize, peer: &str, dir: npb::Direction| {
        n_trace += 1;
        Call {
            svc,
            peer: peer.to_string(),
            dir,
            trace: trace_id(n_trace),
        }
    };
    use npb::Direction::{Both, Down};

    // --- Round one: six syncs at once, each relay through both services.
    let round1 = vec![
        call(0, &peer_a, Down),
        call(1, &peer_a, Both),
        call(0, &peer_b, Both),
        call(1, &peer_b, Both),
        call(0, &peer_c, Both),
        call(1, &peer_c, Down),
    ];
    let last1 = run_at_once(&chans, &token, &round1, &fx).await;
    let got = db_export(&url).await;
    assert_eq!(
        got.len(),
        want.len(),
        "the database holds {} events, one writer {}",
        got.len(),
        want.len()
    );
    assert_eq!(got, want, "the database is not where one writer would be");
    tokio::task::block_in_place(|| check_database(&url));

    // Every new event was counted by one sync; more only for versions replaced or deleted later.
    let gained = want_ids.difference(&initial).count() as i64;
    let dropped_later = set(&[w.a.clone(), w.b.clone(), w.c.clone()].concat())
        .difference(&want_ids)
        .count() as i64;
    let fetched: i64 = last1.iter().map(|m| m.fetched_count).sum();
    assert!(
        fetched >= gained && fetched <= gained + dropped_later,
        "the syncs fetched {fetched} in all; the database gained {gained} (plus at most \
         {dropped_later} replaced or deleted later): {last1:#?}"
    );

    // The relays synced both ways received the database's own events.
    let own = set(&w.own_notes);
    for (name, addr) in [("a", &out_a.addr), ("b", &out_b.addr)] {
        let held = read_ids(addr).await;
        assert!(
            own.is_subset(&held),
            "relay {name} lacks {} of the database's events (holds {}); round one: {last1:#?}",
            own.difference(&held).count(),
            held.len()
        );
    }
    let held_c = db_ids(&out_c.db).await;
    assert!(
        own.is_subset(&held_c),
        "relay c lacks {} of the database's events",
        own.difference(&held_c).count()
    );

    // --- Round two: each relay both ways once more, at once: nothing comes back.
    let round2 = vec![
        call(0, &peer_a, Both),
        call(1, &peer_b, Both),
        call(0, &peer_c, Both),
    ];
    let last2 = run_at_once(&chans, &token, &round2, &fx).await;
    for m in &last2 {
        assert_eq!(m.fetched_count, 0, "a second round stored something: {m:?}");
    }
    assert_eq!(db_export(&url).await, want, "after round two");

    // --- A relay offering only superseded and deleted versions, through both services at once.
    let stale = local_relay(&w.stale, no_rate_limit()).await;
    let round3 = vec![call(0, &stale.url, Down), call(1, &stale.url, Down)];
    let last3 = run_at_once(&chans, &token, &round3, &fx).await;
    for m in &last3 {
        assert_eq!(m.fetched_count, 0, "a stale version was stored: {m:?}");
    }
    assert_eq!(db_export(&url).await, want, "after the stale relay");
    tokio::task::block_in_place(|| check_database(&url));

    // nostr-sdk clients read the same ids from both relays over the database.
    for r in &relays {
        let seen = read_ids(&r.addr).await;
        assert_eq!(
            seen.len(),
            want_ids.len(),
            "orly-relay {} serves {} events, the database holds {}",
            r.addr,
            seen.len(),
            want_ids.len()
        );
        assert_eq!(seen, want_ids, "orly-relay {}", r.addr);
    }

    // The outside relays after round two: the orly-relays hold what the database holds; the
    // nostr-relay-builder relay at least that.
    let held_c = db_ids(&out_c.db).await;
    assert!(
        want_ids.is_subset(&held_c),
        "relay c lacks {:?}",
        want_ids.difference(&held_c).collect::<Vec<_>>()
    );
    tokio::task::block_in_place(|| {
        drop(out_a);
        drop(out_b);
        for (name, dir) in [("a", &dir_a), ("b", &dir_b)] {
            let held: Ids = ids(dir).into_iter().collect();
            assert_eq!(held, want_ids, "relay {name} after two rounds both ways");
        }
    });

    // Each service's audit log: verifies, and holds exactly its own syncs.
    let rounds: Vec<(&Call, &npb::SyncProgress)> = round1
        .iter()
        .zip(&last1)
        .chain(round2.iter().zip(&last2))
        .chain(round3.iter().zip(&last3))
        .collect();
    let mut spans = BTreeMap::new();
    for (i, svc) in services.into_iter().enumerate() {
        svc.terminate();
        let dir = audit_dir(&fx, i as u32 + 1);
        check_audit(&fx, &dir, i, &rounds, &mut spans);
    }
    // The race was real: in round one, the two syncs of each relay (one per service) overlapped
    // (each allowed before the other finished; the audit times have milliseconds).
    for (x, y) in round1.iter().zip(round1.iter().skip(1)).step_by(2) {
        assert_eq!(x.peer, y.peer);
        let ((dx, fin_x), (dy, fin_y)) = (&spans[&x.trace], &spans[&y.trace]);
        assert!(
            dx <= fin_y && dy <= fin_x,
            "the syncs of {} through the two services did not overlap: {dx}..{fin_x}, {dy}..{fin_y}",
            x.peer
        );
    }
}

/// `dir` verifies, and its sync records are exactly the calls made through service `svc`: per
/// call one allowed decision starting a sync and one finished record naming it, with the
/// caller's trace id, peer, direction and the counts the caller was shown. Adds each call's
/// (decision time, finished time) to `spans`, by trace id.
fn check_audit(
    fx: &Fixture,
    dir: &Path,
    svc: usize,
    calls: &[(&Call, &npb::SyncProgress)],
    spans: &mut BTreeMap<String, (String, String)>,
) {
    let (code, out) = fx.verify(dir);
    assert_eq!(code, 0, "audit log of service {}: {out}", svc + 1);
    let recs = audit_records(dir);
    let by_seq: BTreeMap<u64, &Value> = recs
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r))
        .collect();
    let finished: Vec<&Value> = recs
        .iter()
        .filter(|r| s(r, "event") == "sync_finished")
        .collect();
    let mine: Vec<&(&Call, &npb::SyncProgress)> =
        calls.iter().filter(|(c, _)| c.svc == svc).collect();
    let traces = |v: &mut dyn Iterator<Item = String>| v.collect::<BTreeSet<String>>();
    assert_eq!(
        traces(&mut finished.iter().map(|r| s(r, "trace_id"))),
        traces(&mut mine.iter().map(|(c, _)| c.trace.clone())),
        "service {}: the finished syncs in its log are not the calls made through it",
        svc + 1
    );
    assert_eq!(finished.len(), mine.len(), "service {}", svc + 1);
    for (c, last) in mine {
        let f = finished
            .iter()
            .find(|r| s(r, "trace_id") == c.trace)
            .unwrap();
        let what = format!("service {}, sync {} {:?}: {f}", svc + 1, c.peer, c.dir);
        let dir_name = match c.dir {
            npb::Direction::Both => "both",
            _ => "down",
        };
        assert_eq!(s(f, "direction"), dir_name, "{what}");
        assert!(s(f, "peer").starts_with(&c.peer), "{what}");
        assert_eq!(s(f, "admin"), "alice", "{what}");
        assert!(f.get("error").is_none(), "{what}");
        assert_eq!(f["counts"]["fetched"], last.fetched_count, "{what}");
        assert_eq!(f["counts"]["sent"], last.sent_count, "{what}");
        let seq = f["decision_seq"].as_u64().expect("decision_seq");
        let d = by_seq
            .get(&seq)
            .unwrap_or_else(|| panic!("no decision {seq}: {what}"));
        assert_eq!(s(d, "event"), "decision", "{what}");
        assert_eq!(d["allowed"], true, "{what}");
        assert_eq!(d["starts_sync"], true, "{what}");
        assert_eq!(s(d, "trace_id"), c.trace, "{what}");
        spans.insert(c.trace.clone(), (s(d, "time"), s(f, "time")));
    }
    let starts = recs.iter().filter(|r| r["starts_sync"] == true).count();
    assert_eq!(
        starts,
        finished.len(),
        "service {}: a sync never finished",
        svc + 1
    );
}
