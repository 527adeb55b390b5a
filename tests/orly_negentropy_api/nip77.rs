//! NIP-77 for a relay through `HandleNegOpen`/`HandleNegMsg`: the same have/need sets and rounds
//! as the same client over WebSocket against orly-relay on the same events, under each kind of
//! filter; the same answers to odd messages and past the per-connection session cap; idle
//! sessions expire while busy ones stay.

use super::common::*;
use super::gateway::*;
use super::harness::*;

use futures_util::{SinkExt, StreamExt};
use orly::negentropy::Item;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn items_of(events: &[Event]) -> Vec<Item> {
    events
        .iter()
        .map(|e| Item {
            t: e.created_at,
            id: e.id,
        })
        .collect()
}

fn hexes(ids: &[[u8; 32]]) -> BTreeSet<String> {
    ids.iter().map(hex::encode).collect()
}

/// A WebSocket NIP-77 client of orly-relay.
struct Ws {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    async fn connect(addr: &str) -> Self {
        let (ws, _) = tokio::time::timeout(
            CALL_LIMIT,
            tokio_tungstenite::connect_async(format!("ws://{addr}")),
        )
        .await
        .expect("connect timed out")
        .expect("connect");
        Ws { ws }
    }

    /// Sends `v`; returns the relay's next message other than an `AUTH` challenge.
    async fn ask(&mut self, v: Value) -> Value {
        tokio::time::timeout(
            CALL_LIMIT,
            self.ws.send(Message::Text(v.to_string().into())),
        )
        .await
        .expect("send timed out")
        .expect("send");
        loop {
            let frame = tokio::time::timeout(CALL_LIMIT, self.ws.next())
                .await
                .expect("no answer from the relay in time");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("relay sends JSON");
                    if v[0] != "AUTH" {
                        return v;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }
}

/// What a reconciliation found: ids the client has and the other side lacks, and ids it needs.
#[derive(Debug, PartialEq)]
struct Found {
    have: BTreeSet<String>,
    need: BTreeSet<String>,
}

/// Reconciles `items` (as the initiator) with orly-relay over WebSocket, under `filter` (NIP-01
/// JSON). Returns the sets and the rounds.
async fn over_websocket(addr: &str, items: &[Item], filter: &Value) -> (Found, usize) {
    let mut ws = Ws::connect(addr).await;
    let mut client = initiator(items);
    let init = hex::encode(client.initiate().unwrap());
    let mut answer = ws.ask(json!(["NEG-OPEN", "w", filter, init])).await;
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    loop {
        assert_eq!(answer[0], "NEG-MSG", "{answer}");
        rounds += 1;
        let msg = hex::decode(answer[2].as_str().unwrap()).unwrap();
        match client.next(&msg, &mut have, &mut need).unwrap() {
            Some(next) => answer = ws.ask(json!(["NEG-MSG", "w", hex::encode(next)])).await,
            None => break,
        }
    }
    let _ = ws
        .ws
        .send(Message::Text(json!(["NEG-CLOSE", "w"]).to_string().into()))
        .await;
    (
        Found {
            have: hexes(&have),
            need: hexes(&need),
        },
        rounds,
    )
}

/// Reconciles `items` (as the initiator) with the service through HandleNegOpen/HandleNegMsg,
/// as a relay hands them over for its client `conn`/`sub`; the session stays open. Returns the
/// sets and the rounds.
async fn through_service(
    c: &mut Caller,
    conn: &str,
    sub: &str,
    items: &[Item],
    filter: Option<api::Filter>,
) -> (Found, usize) {
    let mut client = initiator(items);
    let init = client.initiate().unwrap();
    let r = c
        .neg_open(conn, sub, filter, init)
        .await
        .expect("HandleNegOpen");
    assert_eq!(r.error, "", "{r:?}");
    let (mut reply, mut complete) = (r.message, r.complete);
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut rounds = 1;
    while let Some(next) = client.next(&reply, &mut have, &mut need).unwrap() {
        assert!(
            !complete,
            "round {rounds}: complete=true, but the client has more to ask"
        );
        let r = c.neg_msg(conn, sub, next).await.expect("HandleNegMsg");
        assert_eq!(r.error, "", "round {rounds}: {r:?}");
        assert!(
            r.have_ids.is_empty() && r.need_ids.is_empty(),
            "the responder learns no ids: {r:?}"
        );
        (reply, complete) = (r.message, r.complete);
        rounds += 1;
    }
    (
        Found {
            have: hexes(&have),
            need: hexes(&need),
        },
        rounds,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_through_the_service_matches_orly_relay() {
    tokio::time::timeout(TEST_LIMIT, delegation())
        .await
        .expect("test exceeded its time limit");
}

async fn delegation() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("relay", ALL_RIGHTS)]));
    // The same 400 events in orly-relay's store and in the service's; the client holds 250 of
    // them and 40 items of its own.
    let events = notes("orly-neg-77", 400, T0);
    let rl = relay_with(&fx, "relay", &events);
    let svc = service(&fx, &events, &[]);
    let mut c = Caller::new(&fx, &svc.addr, "relay").await;
    let mut client_items = items_of(&events[..250]);
    client_items.extend((0..40u8).map(|i| Item {
        t: T0 + 7 * u64::from(i),
        id: [i.wrapping_mul(37) ^ 0x5a; 32],
    }));
    let own: BTreeSet<String> = client_items[250..]
        .iter()
        .map(|i| hex::encode(i.id))
        .collect();

    // Every event (the persistent index), a time range (the index's range sums), kind 1 and
    // tag t=rust (sets the store loads).
    let (since, until) = (T0 + 100, T0 + 300);
    type Case = (
        &'static str,
        Value,
        Option<api::Filter>,
        Box<dyn Fn(&Event) -> bool>,
    );
    let cases: Vec<Case> = vec![
        ("no filter", json!({}), None, Box::new(|_| true)),
        (
            "since/until",
            json!({"since": since, "until": until}),
            Some(api::Filter {
                since: Some(since as i64),
                until: Some(until as i64),
                ..Default::default()
            }),
            Box::new(move |e| (since..=until).contains(&e.created_at)),
        ),
        (
            "kinds [1]",
            json!({"kinds": [1]}),
            Some(api::Filter {
                kinds: vec![1],
                ..Default::default()
            }),
            Box::new(|e| e.kind == 1),
        ),
        (
            "#t rust",
            json!({"#t": ["rust"]}),
            Some(api::Filter {
                tags: [(
                    "t".to_string(),
                    api::TagSet {
                        values: vec![b"rust".to_vec()],
                    },
                )]
                .into(),
                ..Default::default()
            }),
            Box::new(|e| {
                e.tags
                    .iter()
                    .any(|t| t.len() >= 2 && t[0] == "t" && t[1] == "rust")
            }),
        ),
    ];
    for (name, filter_json, filter_pb, wanted) in cases {
        let (ws, ws_rounds) = over_websocket(&rl.addr, &client_items, &filter_json).await;
        let sub = format!("sub {name}");
        let (grpc, rounds) =
            through_service(&mut c, "relay-conn-1", &sub, &client_items, filter_pb).await;
        assert_eq!(grpc, ws, "{name}: the service and orly-relay disagree");
        assert_eq!(rounds, ws_rounds, "{name}: rounds");
        assert!(
            rounds >= 2,
            "{name}: a reconciliation of more than one round"
        );
        // What a correct responder says: the client needs the matching events it lacks, and
        // has its own items and the events it holds that do not match.
        let need: BTreeSet<String> = events[250..]
            .iter()
            .filter(|e| wanted(e))
            .map(Event::id_hex)
            .collect();
        let mut have = own.clone();
        have.extend(
            events[..250]
                .iter()
                .filter(|e| !wanted(e))
                .map(Event::id_hex),
        );
        assert!(!need.is_empty(), "{name}: a case with something to fetch");
        assert_eq!(grpc.need, need, "{name}: need");
        assert_eq!(grpc.have, have, "{name}: have");

        // Listed while open, with its ids and rounds; gone after HandleNegClose.
        let listed = c.sessions().await.expect("ListSessions");
        let s = listed
            .iter()
            .find(|s| s.subscription_id == sub)
            .unwrap_or_else(|| panic!("{name}: session not listed: {listed:?}"));
        assert_eq!(s.connection_id, "relay-conn-1");
        assert_eq!(s.round_count as usize, rounds, "{name}: {s:?}");
        assert!(
            s.created_at > 0 && s.last_activity >= s.created_at,
            "{name}: {s:?}"
        );
        c.neg_close("relay-conn-1", &sub)
            .await
            .expect("HandleNegClose");
        let listed = c.sessions().await.unwrap();
        assert!(
            listed.iter().all(|s| s.subscription_id != sub),
            "{name}: closed but listed: {listed:?}"
        );
        let r = c.neg_msg("relay-conn-1", &sub, vec![0x61]).await.unwrap();
        assert!(r.error.starts_with("closed:"), "{name}: after close: {r:?}");
    }
}

/// What a NIP-77 answer was: the message, or the reason's machine-readable prefix.
#[derive(Debug, PartialEq)]
enum Answer {
    Message(Vec<u8>),
    Refused(String),
}

fn prefix(reason: &str) -> String {
    reason.split(':').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip77_through_the_service_answers_odd_messages_as_orly_relay() {
    tokio::time::timeout(TEST_LIMIT, odd_messages())
        .await
        .expect("test exceeded its time limit");
}

async fn odd_messages() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("relay", ALL_RIGHTS)]));
    let events = notes("orly-neg-odd", 60, T0);
    let rl = relay_with(&fx, "relay", &events);
    let svc = service(&fx, &events, &[]);
    let mut c = Caller::new(&fx, &svc.addr, "relay").await;
    let mut ws = Ws::connect(&rl.addr).await;
    let good = initiator(&items_of(&events[..30])).initiate().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("another protocol version", vec![0x62]),
        ("version only", vec![0x61]),
        ("a valid first message", good),
        ("an unknown mode", hex::decode("61000007").unwrap()),
        ("a varint cut short", hex::decode("6181").unwrap()),
        ("an id list promising more ids", {
            let mut m = hex::decode("6100000203").unwrap();
            m.extend([0xab; 32]);
            m
        }),
        ("empty", vec![]),
    ];
    let mut failures = Vec::new();
    for (i, (what, msg)) in cases.into_iter().enumerate() {
        let sub = format!("odd{i}");
        let v = ws
            .ask(json!(["NEG-OPEN", sub, {}, hex::encode(&msg)]))
            .await;
        let relay = match v[0].as_str() {
            Some("NEG-MSG") => Answer::Message(hex::decode(v[2].as_str().unwrap()).unwrap()),
            Some("NEG-ERR") => Answer::Refused(prefix(v[2].as_str().unwrap())),
            _ => panic!("{what}: unexpected answer {v}"),
        };
        let r = c
            .neg_open("odd-conn", &sub, None, msg)
            .await
            .unwrap_or_else(|st| panic!("{what}: HandleNegOpen failed: {st:?}"));
        let service = if r.error.is_empty() {
            Answer::Message(r.message)
        } else {
            Answer::Refused(prefix(&r.error))
        };
        if service != relay {
            failures.push(format!(
                "{what}: orly-relay {relay:?}, the service {service:?}"
            ));
        }
    }
    // Sessions per client connection: the same cap, the same answer past it.
    let init = || hex::encode(initiator(&[]).initiate().unwrap());
    let mut ws = Ws::connect(&rl.addr).await;
    let (mut relay_first, mut service_first) = (None, None);
    for i in 0..12 {
        let sub = format!("cap{i}");
        let v = ws.ask(json!(["NEG-OPEN", sub, {}, init()])).await;
        if v[0] == "NEG-ERR" && relay_first.is_none() {
            relay_first = Some((i, prefix(v[2].as_str().unwrap())));
        }
        let r = c
            .neg_open("cap-conn", &sub, None, hex::decode(init()).unwrap())
            .await
            .unwrap();
        if !r.error.is_empty() && service_first.is_none() {
            service_first = Some((i, prefix(&r.error)));
        }
    }
    if relay_first.is_none() || relay_first != service_first {
        failures.push(format!(
            "the per-connection cap: orly-relay refused first at {relay_first:?}, the service at \
             {service_first:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire() {
    tokio::time::timeout(TEST_LIMIT, expiry())
        .await
        .expect("test exceeded its time limit");
}

async fn expiry() {
    let fx = Fixture::with_policy(&policy_toml("", &[admin("relay", ALL_RIGHTS)]));
    let events = notes("orly-neg-idle", 300, T0);
    let svc = service(
        &fx,
        &events,
        &[("ORLY_SYNC_NEGENTROPY_SESSION_TIMEOUT", "1s")],
    );
    let mut c = Caller::new(&fx, &svc.addr, "relay").await;
    // A client holding half the events: the first reply leaves more to ask.
    let mut client = initiator(&items_of(&events[..150]));
    let init = client.initiate().unwrap();
    let opened = Instant::now();
    let r = c.neg_open("idle-conn", "idle", None, init).await.unwrap();
    assert_eq!(r.error, "", "{r:?}");
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let next = client
        .next(&r.message, &mut have, &mut need)
        .unwrap()
        .expect("more to ask after the first reply");
    assert!(
        c.sessions()
            .await
            .unwrap()
            .iter()
            .any(|s| s.subscription_id == "idle"),
        "the session is listed once opened"
    );
    // Another session of the same client talks every 300 ms: it is not idle, so it stays.
    let r = c
        .neg_open(
            "idle-conn",
            "busy",
            None,
            initiator(&[]).initiate().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.error, "", "{r:?}");
    let start = Instant::now();
    loop {
        let r = c.neg_msg("idle-conn", "busy", vec![0x61]).await.unwrap();
        assert_eq!(
            r.error,
            "",
            "the busy session after {:?}: {r:?}",
            start.elapsed()
        );
        let listed = c.sessions().await.expect("ListSessions");
        if listed.iter().all(|s| s.subscription_id != "idle") {
            assert!(
                listed.iter().any(|s| s.subscription_id == "busy"),
                "a session with a message every 300 ms expired: {listed:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the idle session never expired: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(1),
        "expired after {:?}, before its idle timeout",
        opened.elapsed()
    );
    let r = c.neg_msg("idle-conn", "idle", next).await.unwrap();
    assert!(r.error.starts_with("closed:"), "after expiry: {r:?}");
    assert!(r.message.is_empty() && !r.complete, "{r:?}");
}
