//! Interop with NIP-77 code nobody here wrote (rust-nostr 0.44):
//!
//! 1. `orly sync` (the real CLI, direct mode) against a `nostr-relay-builder` `LocalRelay` running
//!    in this process over a `MemoryDatabase` that stores events;
//! 2. `nostr-sdk`'s `Client::sync` against the real `orly-relay` binary.
//!
//! Every case checks the exact id sets on both sides afterwards, and that a second sync moves
//! nothing. Everything listens on 127.0.0.1 port 0 and every wait is bounded.
//!
//! Events cross between the two type systems as NIP-01 JSON only.

mod common;
use common::*;
#[path = "common/nrb.rs"]
mod nrb;
use nrb::*;

use nostr_relay_builder::RelayBuilder;
use nostr_relay_builder::builder::RateLimit;
use nostr_sdk::prelude::{
    Client, Filter as NFilter, JsonUtil, Kind, MemoryDatabase, Reconciliation, SyncDirection,
    SyncOptions,
};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;

fn set(events: &[Event]) -> Ids {
    events.iter().map(|e| e.id_hex()).collect()
}

fn union(parts: &[&Ids]) -> Ids {
    parts.iter().flat_map(|s| s.iter().cloned()).collect()
}

fn store_ids(dir: &Path) -> Ids {
    ids(dir).into_iter().collect()
}

fn of_kind(events: &[Event], kind: u16) -> Vec<Event> {
    events.iter().filter(|e| e.kind == kind).cloned().collect()
}

/// The three sets every case uses: shared by both sides, only on the relay, only on the client.
struct Sets {
    shared: Vec<Event>,
    remote: Vec<Event>,
    local: Vec<Event>,
}

impl Sets {
    fn new(tag: &str, shared: usize, remote: usize, local: usize) -> Self {
        Self {
            shared: notes(&format!("{tag}-shared"), shared, 1_700_000_000),
            remote: notes(&format!("{tag}-remote"), remote, 1_700_100_000),
            local: notes(&format!("{tag}-local"), local, 1_700_200_000),
        }
    }
    /// `total` events over the same time span, every `every`-th one only on the relay and the
    /// next one only on the client: differences scattered through the whole range, so the
    /// reconciliation needs several rounds.
    fn scattered(tag: &str, total: usize, every: usize) -> Self {
        let mut s = Self {
            shared: Vec::new(),
            remote: Vec::new(),
            local: Vec::new(),
        };
        for (i, e) in notes(tag, total, 1_690_000_000).into_iter().enumerate() {
            match i % every {
                0 => s.remote.push(e),
                1 => s.local.push(e),
                _ => s.shared.push(e),
            }
        }
        s
    }
    fn remote_side(&self) -> Vec<Event> {
        [self.shared.clone(), self.remote.clone()].concat()
    }
    fn local_side(&self) -> Vec<Event> {
        [self.shared.clone(), self.local.clone()].concat()
    }
}

/// One `orly sync --dir DIR` against a LocalRelay holding A = shared + remote, with a fresh
/// local store holding B = shared + local, then a second run that must move nothing.
async fn orly_vs_local_relay(dir: &str, filter: &str, kind: Option<u16>) -> Value {
    let tag = format!("lr-{dir}-{}", kind.map_or("all".into(), |k| k.to_string()));
    orly_vs_local_relay_with(dir, filter, kind, Sets::new(&tag, 40, 130, 110)).await
}

async fn orly_vs_local_relay_with(dir: &str, filter: &str, kind: Option<u16>, s: Sets) -> Value {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("local");
    import(&store, &s.local_side());
    let relay = local_relay(&s.remote_side(), no_rate_limit()).await;

    // What the filter selects of each difference (the shared part is never moved).
    let pick = |ev: &[Event]| match kind {
        Some(k) => of_kind(ev, k),
        None => ev.to_vec(),
    };
    let (remote_moving, local_moving) = (set(&pick(&s.remote)), set(&pick(&s.local)));
    let fetches = matches!(dir, "down" | "both");
    let uploads = matches!(dir, "up" | "both");

    let (code, first, err, took) = orly_sync(&relay.url, &store, dir, filter).await;
    let last = first.clone();
    assert_eq!(code, 0, "orly sync --dir {dir} failed: {last} / {err}");
    assert_eq!(last["complete"], true, "{last}");
    assert_eq!(n(&last, "need"), remote_moving.len() as u64, "{last}");
    assert_eq!(n(&last, "have"), local_moving.len() as u64, "{last}");
    let want_fetched = if fetches { remote_moving.len() } else { 0 };
    let want_sent = if uploads { local_moving.len() } else { 0 };
    assert_eq!(n(&last, "fetched"), want_fetched as u64, "{last}");
    assert_eq!(n(&last, "sent"), want_sent as u64, "{last}");
    assert_eq!(
        (
            n(&last, "dropped"),
            n(&last, "rejected"),
            n(&last, "skipped")
        ),
        (0, 0, 0),
        "{last}"
    );
    println!(
        "orly sync --dir {dir} --filter {filter} vs LocalRelay: {took:?}, {} rounds, fetched {}, sent {}, {} B up / {} B down",
        n(&last, "round"),
        n(&last, "fetched"),
        n(&last, "sent"),
        n(&last, "bytes_sent"),
        n(&last, "bytes_received"),
    );

    let a = set(&s.remote_side());
    let b = set(&s.local_side());
    let want_local = if fetches {
        union(&[&b, &remote_moving])
    } else {
        b.clone()
    };
    let want_relay = if uploads {
        union(&[&a, &local_moving])
    } else {
        a.clone()
    };
    assert_eq!(
        db_ids(&relay.db).await,
        want_relay,
        "LocalRelay's set after --dir {dir}"
    );
    assert_eq!(
        store_ids(&store),
        want_local,
        "orly's set after --dir {dir}"
    );

    // Second run: nothing moves; what is still different is only what the direction leaves.
    let (code, last, err, took) = orly_sync(&relay.url, &store, dir, filter).await;
    assert_eq!(
        code, 0,
        "second orly sync --dir {dir} failed: {last} / {err}"
    );
    assert_eq!(last["complete"], true, "{last}");
    assert_eq!((n(&last, "fetched"), n(&last, "sent")), (0, 0), "{last}");
    let left_need = if fetches { 0 } else { remote_moving.len() };
    let left_have = if uploads { 0 } else { local_moving.len() };
    assert_eq!(n(&last, "need"), left_need as u64, "{last}");
    assert_eq!(n(&last, "have"), left_have as u64, "{last}");
    assert_eq!(db_ids(&relay.db).await, want_relay);
    assert_eq!(store_ids(&store), want_local);
    println!("  second run: {took:?}, {} rounds", n(&last, "round"));
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_down_against_nostr_relay_builder() {
    orly_vs_local_relay("down", "{}", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_up_against_nostr_relay_builder() {
    orly_vs_local_relay("up", "{}", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_both_against_nostr_relay_builder() {
    orly_vs_local_relay("both", "{}", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_both_with_kinds_filter_against_nostr_relay_builder() {
    orly_vs_local_relay("both", r#"{"kinds":[7]}"#, Some(7)).await;
}

/// 10 500 events, 500 differences each way spread through the whole time range: several
/// negentropy rounds against the LocalRelay's 60 000-byte frame limit, transfers interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_both_multi_round_against_nostr_relay_builder() {
    let first = orly_vs_local_relay_with(
        "both",
        "{}",
        None,
        Sets::scattered("lr-scattered", 10_500, 21),
    )
    .await;
    assert!(n(&first, "round") >= 2, "expected several rounds: {first}");
}

/// Replaceable (kind 0) and addressable (kind 30000) versions on opposite sides: each side ends
/// with only the newest version, and a second run finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_both_converges_replaceables_with_nostr_relay_builder() {
    orly::init_crypto();
    let k = Keys::from_seed(b"interop-replaceable", 0);
    let d = vec![vec!["d".to_string(), "list".to_string()]];
    let meta_old = sign_event(&k, 1_700_000_100, 0, vec![], r#"{"name":"old"}"#);
    let meta_new = sign_event(&k, 1_700_000_200, 0, vec![], r#"{"name":"new"}"#);
    let addr_old = sign_event(&k, 1_700_000_100, 30000, d.clone(), "old");
    let addr_new = sign_event(&k, 1_700_000_200, 30000, d, "new");
    let plain = notes("lr-repl-shared", 10, 1_700_000_000);

    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("local");
    // orly: newer metadata, older list. Relay: older metadata, newer list.
    import(
        &store,
        &[plain.clone(), vec![meta_new.clone(), addr_old.clone()]].concat(),
    );
    let relay = local_relay(
        &[plain.clone(), vec![meta_old.clone(), addr_new.clone()]].concat(),
        no_rate_limit(),
    )
    .await;

    let (code, last, err, _) = orly_sync(&relay.url, &store, "both", "{}").await;
    assert_eq!(code, 0, "{last} / {err}");
    assert_eq!(last["complete"], true, "{last}");
    let want = union(&[&set(&plain), &set(&[meta_new, addr_new])]);
    assert_eq!(
        store_ids(&store),
        want,
        "orly keeps only the newest versions"
    );
    assert_eq!(
        db_ids(&relay.db).await,
        want,
        "LocalRelay keeps only the newest versions"
    );

    let (code, last, err, _) = orly_sync(&relay.url, &store, "both", "{}").await;
    assert_eq!(code, 0, "{last} / {err}");
    assert_eq!(
        (
            n(&last, "have"),
            n(&last, "need"),
            n(&last, "fetched"),
            n(&last, "sent")
        ),
        (0, 0, 0, 0),
        "second run: {last}"
    );
}

/// The builder's default rate limit (60 EVENTs a minute per connection) refuses part of a
/// 100-event upload with `OK false "rate-limited: ..."`: orly must count exactly the refusals,
/// and the relay must hold exactly what orly counted as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_up_counts_rate_limited_refusals_from_nostr_relay_builder() {
    orly::init_crypto();
    let s = Sets::new("lr-ratelimit", 5, 0, 100);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("local");
    import(&store, &s.local_side());
    let relay = local_relay(&s.remote_side(), RateLimit::default()).await;

    let (code, last, err, _) = orly_sync(&relay.url, &store, "up", "{}").await;
    println!("rate-limited upload: exit {code}, final {last}");
    assert!(!err.contains("panicked"), "orly panicked: {err}");
    let (sent, rejected) = (n(&last, "sent"), n(&last, "rejected"));
    assert_eq!(n(&last, "have"), 100, "{last}");
    assert_eq!(
        sent + rejected,
        100,
        "every upload is answered and counted: {last}"
    );
    assert!(
        rejected > 0,
        "the default rate limit should refuse some: {last}"
    );
    // Completed, but the relay lacks what it refused: exit 7, the cause named in the JSON.
    assert_eq!(code, 7, "{last} / {err}");
    assert_eq!(last["complete"], true, "{last}");
    assert_eq!(last["differs"], serde_json::json!(["rejected"]), "{last}");
    let on_relay = db_ids(&relay.db).await;
    assert_eq!(
        on_relay.len() as u64,
        5 + sent,
        "relay holds the shared events plus exactly the accepted uploads"
    );
    assert!(set(&s.shared).is_subset(&on_relay));
    assert!(on_relay.is_subset(&set(&s.local_side())));
}

/// The relay's reason for refusing uploads must reach the user: issue 3 says "a refused one is
/// reported", and `SyncJob` records it (`State::last_refusal`) but never reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_reports_the_relays_reason_for_refused_uploads() {
    orly::init_crypto();
    let s = Sets::new("lr-refusal-reason", 0, 0, 100);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("local");
    import(&store, &s.local_side());
    let relay = local_relay(&[], RateLimit::default()).await;
    // Human mode (no --json): the summary goes to stderr.
    let (code, out, err) = orly_async(
        &[
            "sync",
            &relay.url,
            "--dir",
            "up",
            "--timeout",
            "20",
            "--data-dir",
            store.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    println!("exit {code}\nstdout: {out}\nstderr: {err}");
    assert!(err.contains("refused uploads"), "{err}");
    assert!(
        err.contains("rate-limited"),
        "40 uploads were refused with OK false \"rate-limited: slow down\", but the reason is \
         nowhere in orly's report:\n{err}"
    );
}

/// NIP-42 against the builder's implementation: writes require AUTH. The builder answers each
/// unauthenticated EVENT with a fresh `AUTH` challenge and `OK false "auth-required: ..."`, and
/// keeps at most ~21 outstanding challenges (NIP-42: a challenge is valid until the next one).
/// orly must authenticate and get every event in.
async fn orly_up_with_write_auth(tag: &str, uploads: usize) {
    use nostr_relay_builder::builder::{RelayBuilderNip42, RelayBuilderNip42Mode};
    orly::init_crypto();
    let s = Sets::new(tag, 10, 0, uploads);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("local");
    import(&store, &s.local_side());
    let relay = local_relay_with(
        &s.remote_side(),
        RelayBuilder::default()
            .rate_limit(no_rate_limit())
            .nip42(RelayBuilderNip42 {
                mode: RelayBuilderNip42Mode::Write,
            }),
    )
    .await;
    let key = "11".repeat(32);
    let (code, last, err, took) = orly_sync_env(
        &relay.url,
        &store,
        "up",
        "{}",
        &[("ORLY_SYNC_AUTH_KEY", key.as_str())],
        Duration::from_secs(30),
    )
    .await;
    println!(
        "orly sync --dir up ({uploads} uploads) with NIP-42 (write) vs LocalRelay: exit {code}, {took:?}, {last}"
    );
    assert_eq!(code, 0, "{last} / {err}");
    assert_eq!(
        (n(&last, "sent"), n(&last, "rejected")),
        (uploads as u64, 0),
        "{last}"
    );
    assert_eq!(db_ids(&relay.db).await, set(&s.local_side()));
}

/// Fewer uploads than the builder keeps challenges: passes even with eager re-sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_up_authenticates_to_nostr_relay_builder_small() {
    orly_up_with_write_auth("lr-nip42-up-small", 15).await;
}

/// A full upload window (100 in flight) of auth-required refusals: every refusal brings a new
/// challenge, so orly must authenticate once with the latest challenge, wait for its OK, and
/// only then re-send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_up_authenticates_to_nostr_relay_builder() {
    orly_up_with_write_auth("lr-nip42-up", 150).await;
}

/// NIP-42 for reads: the builder answers REQ with `AUTH` + `CLOSED "auth-required: ..."` (its
/// NEG-OPEN is not gated). orly must authenticate and fetch everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_down_authenticates_to_nostr_relay_builder() {
    use nostr_relay_builder::builder::{RelayBuilderNip42, RelayBuilderNip42Mode};
    orly::init_crypto();
    let s = Sets::new("lr-nip42-down", 10, 400, 0);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("local");
    import(&store, &s.local_side());
    let relay = local_relay_with(
        &s.remote_side(),
        RelayBuilder::default()
            .rate_limit(no_rate_limit())
            .nip42(RelayBuilderNip42 {
                mode: RelayBuilderNip42Mode::Read,
            }),
    )
    .await;
    let key = "22".repeat(32);
    let (code, last, err, took) = orly_sync_env(
        &relay.url,
        &store,
        "down",
        "{}",
        &[("ORLY_SYNC_AUTH_KEY", key.as_str())],
        SYNC_LIMIT,
    )
    .await;
    println!(
        "orly sync --dir down with NIP-42 (read) vs LocalRelay: exit {code}, {took:?}, {last}"
    );
    assert_eq!(code, 0, "{last} / {err}");
    assert_eq!(n(&last, "fetched"), 400, "{last}");
    assert_eq!(store_ids(&store), set(&s.remote_side()));
}

// ---------------------------------------------------------------------------------------------
// nostr-sdk's Client::sync against the orly-relay binary.
// ---------------------------------------------------------------------------------------------

async fn sdk_client(url: &str, events: &[Event]) -> (Client, Arc<MemoryDatabase>) {
    let db = memory_db();
    fill(&db, events).await;
    let client = Client::builder().database(db.clone()).build();
    client.add_relay(url).await.expect("add_relay");
    let out = client.try_connect(Duration::from_secs(10)).await;
    assert!(
        out.failed.is_empty() && !out.success.is_empty(),
        "nostr-sdk could not connect to orly-relay at {url}: {:?}",
        out.failed
    );
    (client, db)
}

async fn sdk_sync(
    client: &Client,
    filter: NFilter,
    direction: SyncDirection,
) -> (Reconciliation, Duration) {
    let opts = SyncOptions::default()
        .direction(direction)
        .initial_timeout(Duration::from_secs(10));
    let t0 = Instant::now();
    let out = timeout(SYNC_LIMIT, client.sync(filter, &opts))
        .await
        .unwrap_or_else(|_| panic!("Client::sync {direction:?} did not finish"))
        .expect("Client::sync");
    let took = t0.elapsed();
    assert!(
        out.failed.is_empty(),
        "Client::sync {direction:?} failed against orly-relay: {:?}",
        out.failed
    );
    assert_eq!(out.success.len(), 1, "{out:?}");
    assert!(
        out.send_failures.values().all(|m| m.is_empty()),
        "orly-relay refused uploads: {:?}",
        out.send_failures
    );
    (out.val, took)
}

fn hexes<'a>(ids: impl IntoIterator<Item = &'a nostr_sdk::EventId>) -> Ids {
    ids.into_iter().map(|i| i.to_hex()).collect()
}

/// orly-relay over a store holding A = shared + remote; an sdk client holding B = shared + local.
async fn sdk_vs_orly_relay(direction: SyncDirection, kind: Option<u16>) {
    let tag = format!(
        "sdk-{direction:?}-{}",
        kind.map_or("all".into(), |k| k.to_string())
    );
    sdk_vs_orly_relay_with(direction, kind, Sets::new(&tag, 40, 150, 120)).await
}

async fn sdk_vs_orly_relay_with(direction: SyncDirection, kind: Option<u16>, s: Sets) {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("relay");
    import(&store, &s.remote_side());
    let relay = relay(&store, &[]);
    let url = format!("ws://{}", relay.addr);
    let (client, db) = sdk_client(&url, &s.local_side()).await;

    let filter = match kind {
        Some(k) => NFilter::new().kind(Kind::from(k)),
        None => NFilter::new(),
    };
    let pick = |ev: &[Event]| match kind {
        Some(k) => of_kind(ev, k),
        None => ev.to_vec(),
    };
    let (remote_moving, local_moving) = (set(&pick(&s.remote)), set(&pick(&s.local)));
    let fetches = matches!(direction, SyncDirection::Down | SyncDirection::Both);
    let uploads = matches!(direction, SyncDirection::Up | SyncDirection::Both);

    let (rec, took) = sdk_sync(&client, filter.clone(), direction).await;
    println!(
        "nostr-sdk sync {direction:?} filter {} vs orly-relay: {took:?}, local {}, remote {}, sent {}, received {}",
        filter.as_json(),
        rec.local.len(),
        rec.remote.len(),
        rec.sent.len(),
        rec.received.len()
    );
    assert_eq!(
        hexes(&rec.remote),
        remote_moving,
        "ids orly-relay has and the client lacks"
    );
    assert_eq!(
        hexes(&rec.local),
        local_moving,
        "ids the client has and orly-relay lacks"
    );
    let empty = Ids::new();
    assert_eq!(
        hexes(&rec.received),
        if fetches {
            remote_moving.clone()
        } else {
            empty.clone()
        },
        "received"
    );
    assert_eq!(
        hexes(&rec.sent),
        if uploads {
            local_moving.clone()
        } else {
            empty.clone()
        },
        "sent (accepted by orly-relay)"
    );
    let a = set(&s.remote_side());
    let b = set(&s.local_side());
    let want_client = if fetches {
        union(&[&b, &remote_moving])
    } else {
        b.clone()
    };
    let want_relay = if uploads {
        union(&[&a, &local_moving])
    } else {
        a.clone()
    };
    assert_eq!(
        db_ids(&db).await,
        want_client,
        "client database after {direction:?}"
    );

    // Second sync: nothing moves.
    let (rec, took) = sdk_sync(&client, filter, direction).await;
    println!("  second run: {took:?}");
    assert!(
        rec.sent.is_empty() && rec.received.is_empty(),
        "second sync moved: {rec:?}"
    );
    assert_eq!(
        hexes(&rec.remote),
        if fetches {
            empty.clone()
        } else {
            remote_moving.clone()
        }
    );
    assert_eq!(
        hexes(&rec.local),
        if uploads {
            empty.clone()
        } else {
            local_moving.clone()
        }
    );
    assert_eq!(db_ids(&db).await, want_client);

    let _ = timeout(Duration::from_secs(10), client.shutdown()).await;
    let st = relay.terminate();
    println!("  orly-relay stopped: {st:?}");
    assert_eq!(
        store_ids(&store),
        want_relay,
        "orly-relay's store after {direction:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_sync_down_against_orly_relay() {
    sdk_vs_orly_relay(SyncDirection::Down, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_sync_up_against_orly_relay() {
    sdk_vs_orly_relay(SyncDirection::Up, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_sync_both_against_orly_relay() {
    sdk_vs_orly_relay(SyncDirection::Both, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_sync_both_with_kinds_filter_against_orly_relay() {
    sdk_vs_orly_relay(SyncDirection::Both, Some(1)).await;
}

/// 10 500 events, 500 differences each way scattered through the range (several rounds from
/// nostr-sdk's 60 000-byte frames; orly-relay answers with its own, larger limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_sdk_sync_both_multi_round_against_orly_relay() {
    sdk_vs_orly_relay_with(
        SyncDirection::Both,
        None,
        Sets::scattered("sdk-scattered", 10_500, 21),
    )
    .await;
}
