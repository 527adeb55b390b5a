//! The real `orly-relay` binary, spoken to directly: NIP-11 over raw HTTP/1.1, NIP-01 and NIP-77
//! over tokio-tungstenite. Every wait is bounded.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use negentropy::{Id, Negentropy, NegentropyStorageVector};
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const T0: u64 = 1_700_000_000;
const WAIT: Duration = Duration::from_secs(15);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Client {
    ws: Ws,
}

impl Client {
    async fn connect(addr: &str) -> Self {
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async(format!("ws://{addr}")),
        )
        .await
        .expect("connect timed out")
        .expect("connect");
        Self { ws }
    }

    async fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string()).await;
    }

    async fn send_raw(&mut self, text: &str) {
        tokio::time::timeout(WAIT, self.ws.send(Message::Text(text.to_string().into())))
            .await
            .expect("send timed out")
            .expect("send");
    }

    /// The next message other than the relay's NIP-42 `AUTH` challenge; None on timeout.
    async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("relay sent non-JSON ({e}): {t}"));
                    if v[0] == "AUTH" {
                        continue;
                    }
                    return Some(v);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    async fn recv(&mut self) -> Value {
        self.recv_within(WAIT)
            .await
            .expect("no message from the relay in time")
    }

    /// Sends `v` and returns the reply.
    async fn ask(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Stored events of a REQ, until its EOSE.
    async fn req(&mut self, sub: &str, filters: &[Value]) -> Vec<Event> {
        let mut msg = vec![json!("REQ"), json!(sub)];
        msg.extend(filters.iter().cloned());
        self.send(Value::Array(msg)).await;
        let mut got = Vec::new();
        loop {
            let v = self.recv().await;
            match v[0].as_str() {
                Some("EVENT") if v[1] == sub => {
                    got.push(Event::from_value(v[2].clone()).expect("event parses"))
                }
                Some("EOSE") if v[1] == sub => return got,
                _ => panic!("unexpected during REQ {sub}: {v}"),
            }
        }
    }
}

fn ev_json(e: &Event) -> Value {
    serde_json::to_value(e).unwrap()
}

fn ids_set(evs: &[Event]) -> BTreeSet<String> {
    evs.iter().map(Event::id_hex).collect()
}

fn keys(i: u64) -> Keys {
    Keys::from_seed(b"relay-protocol", i)
}

/// An empty store's relay, or one over `events`.
fn start(tmp: &std::path::Path, events: &[Event], extra: &[&str]) -> Proc {
    let dir = tmp.join("store");
    if !events.is_empty() {
        import(&dir, events);
    }
    relay(&dir, extra)
}

/// The initial NEG-OPEN message of a client holding `events`.
fn neg_initial(events: &[Event]) -> (Negentropy<'static, NegentropyStorageVector>, String) {
    let mut s = NegentropyStorageVector::new();
    for e in events {
        s.insert(e.created_at, Id::from_byte_array(e.id)).unwrap();
    }
    s.seal().unwrap();
    let mut neg = Negentropy::owned(s, 0).unwrap();
    let init = neg.initiate().unwrap();
    (neg, hex::encode(init))
}

// ---------------------------------------------------------------------------------------------

#[test]
fn nip11_document_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start(
        tmp.path(),
        &[],
        &["--max-message-bytes", "200000", "--max-neg-records", "1234"],
    );
    let mut tcp = std::net::TcpStream::connect(&relay.addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "GET / HTTP/1.1\r\nHost: {}\r\nAccept: application/nostr+json\r\nConnection: close\r\n\r\n",
        relay.addr
    )
    .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).expect("read NIP-11 response");
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let head_lc = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head_lc.contains("content-type: application/nostr+json"),
        "{head}"
    );
    assert!(head_lc.contains("access-control-allow-origin: *"), "{head}");
    let doc: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let nips: Vec<u64> = doc["supported_nips"]
        .as_array()
        .expect("supported_nips")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    for n in [1, 11, 42, 77] {
        assert!(nips.contains(&n), "NIP-{n} missing: {doc}");
    }
    assert_eq!(doc["limitation"]["max_message_length"], 200_000, "{doc}");
    assert_eq!(doc["negentropy"]["max_records"], 1234, "{doc}");

    // Without the Accept header it is not the NIP-11 document.
    let mut tcp = std::net::TcpStream::connect(&relay.addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        relay.addr
    )
    .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).unwrap();
    assert!(!raw.contains("supported_nips"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ok_duplicate_and_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start(tmp.path(), &[], &[]);
    let mut c = Client::connect(&relay.addr).await;
    let e = sign_event(&keys(0), T0, 1, vec![], "hello");
    let id = e.id_hex();

    let ok = c.ask(json!(["EVENT", ev_json(&e)])).await;
    assert_eq!(ok, json!(["OK", id, true, ""]));
    let dup = c.ask(json!(["EVENT", ev_json(&e)])).await;
    assert_eq!(
        (&dup[0], &dup[1], &dup[2]),
        (&json!("OK"), &json!(id), &json!(true))
    );
    assert!(dup[3].as_str().unwrap().starts_with("duplicate:"), "{dup}");

    let mut bad_sig = sign_event(&keys(0), T0 + 1, 1, vec![], "forged");
    bad_sig.sig[3] ^= 1;
    let r = c.ask(json!(["EVENT", ev_json(&bad_sig)])).await;
    assert_eq!(
        (&r[0], &r[1], &r[2]),
        (&json!("OK"), &json!(bad_sig.id_hex()), &json!(false))
    );
    assert!(r[3].as_str().unwrap().starts_with("invalid:"), "{r}");

    let mut bad_id = sign_event(&keys(0), T0 + 2, 1, vec![], "original");
    bad_id.content = "altered".into();
    let r = c.ask(json!(["EVENT", ev_json(&bad_id)])).await;
    assert_eq!(r[2], false, "{r}");
    assert!(r[3].as_str().unwrap().starts_with("invalid:"), "{r}");

    // Only the genuine event is stored.
    let got = c.req("all", &[json!({})]).await;
    assert_eq!(got, vec![e]);
}

/// An `OK` a frame must get: (id, accepted, message prefix).
type Expected = (String, bool, &'static str);

/// A burst of frames (as a sync uploading sends them) is stored in batches by the relay, their
/// signatures checked in pieces side by side: every EVENT still gets its own OK, in order; a
/// REQ in the middle sees exactly the events sent before it; refusals (a bad signature, a
/// malformed event) and replaceable rules inside one burst are per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_bursts_are_answered_in_order_one_ok_each() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start(tmp.path(), &[], &[]);
    let mut c = Client::connect(&relay.addr).await;
    let notes: Vec<Event> = (0..300)
        .map(|i| sign_event(&keys(1), T0 + i, 1, vec![], &format!("burst {i}")))
        .collect();
    let profile_old = sign_event(&keys(2), T0, 0, vec![], "old profile");
    let profile_new = sign_event(&keys(2), T0 + 5, 0, vec![], "new profile");
    // (frame, expected reply: Some((id, accepted, message prefix)) for an EVENT)
    let mut frames: Vec<(Value, Option<Expected>)> = Vec::new();
    for (i, e) in notes.iter().enumerate() {
        if i == 150 {
            let ids = [notes[149].id_hex(), notes[151].id_hex()];
            frames.push((json!(["REQ", "mid", {"ids": ids}]), None));
        }
        if i % 50 == 7 {
            let mut bad = e.clone();
            bad.sig[0] ^= 1;
            frames.push((
                json!(["EVENT", ev_json(&bad)]),
                Some((e.id_hex(), false, "invalid:")),
            ));
            continue;
        }
        if i % 50 == 21 {
            // Malformed, not only badly signed: refused under the id it was sent with.
            let mut bad = ev_json(e);
            bad["kind"] = json!("one");
            frames.push((json!(["EVENT", bad]), Some((e.id_hex(), false, "invalid:"))));
            continue;
        }
        frames.push((json!(["EVENT", ev_json(e)]), Some((e.id_hex(), true, ""))));
        if i % 50 == 13 {
            frames.push((
                json!(["EVENT", ev_json(e)]),
                Some((e.id_hex(), true, "duplicate:")),
            ));
        }
    }
    for (p, ok, why) in [
        (&profile_new, true, ""),
        (&profile_old, false, "duplicate:"),
    ] {
        frames.push((json!(["EVENT", ev_json(p)]), Some((p.id_hex(), ok, why))));
    }
    for (f, _) in &frames {
        c.send(f.clone()).await;
    }
    // "mid" stays open: event 151, stored after it started, reaches it live, once, at some
    // point after its EOSE.
    let mut live_mid = Vec::new();
    let next = async |c: &mut Client, live_mid: &mut Vec<Value>| loop {
        let r = c.recv().await;
        if r[0] == "EVENT" && r[1] == "mid" && !live_mid.is_empty() {
            live_mid.push(r);
        } else {
            return r;
        }
    };
    for (f, want) in &frames {
        match want {
            Some((id, ok, prefix)) => {
                let r = next(&mut c, &mut live_mid).await;
                assert_eq!(
                    (&r[0], &r[1], &r[2]),
                    (&json!("OK"), &json!(id), &json!(ok)),
                    "{r} for {f}"
                );
                assert!(r[3].as_str().unwrap().starts_with(prefix), "{r}");
            }
            None => {
                let r = c.recv().await;
                assert_eq!(
                    r,
                    json!(["EVENT", "mid", ev_json(&notes[149])]),
                    "only what came before"
                );
                assert_eq!(c.recv().await, json!(["EOSE", "mid"]));
                live_mid.push(json!("eose"));
            }
        }
    }
    if live_mid.len() == 1 {
        live_mid.push(c.recv().await);
    }
    let live_151 = json!(["EVENT", "mid", ev_json(&notes[151])]);
    assert_eq!(live_mid, vec![json!("eose"), live_151]);
    c.send(json!(["CLOSE", "mid"])).await;
    let stored = c.req("all", &[json!({"kinds": [1]})]).await;
    let want: Vec<&Event> = notes
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 50 != 7 && i % 50 != 21)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(ids_set(&stored), want.iter().map(|e| e.id_hex()).collect());
    let profiles = c.req("p", &[json!({"kinds": [0]})]).await;
    assert_eq!(profiles, vec![profile_new]);
}

/// A `NEG-OPEN` sent right after a burst, without waiting for its `OK`s, reconciles against a
/// set that holds the burst: the relay stores (and answers) what came first before it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neg_open_right_after_a_burst_sees_the_burst() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start(tmp.path(), &[], &[]);
    let mut c = Client::connect(&relay.addr).await;
    let burst: Vec<Event> = (0..600)
        .map(|i| sign_event(&keys(3), T0 + i, 1, vec![], &format!("unsaved {i}")))
        .collect();
    for e in &burst {
        c.send(json!(["EVENT", ev_json(e)])).await;
    }
    let (mut neg, init) = neg_initial(&[]);
    c.send(json!(["NEG-OPEN", "after", {}, init])).await;
    let mut oks = 0;
    let mut need: Vec<Id> = Vec::new();
    loop {
        let r = c.recv().await;
        match r[0].as_str() {
            Some("OK") => {
                assert_eq!(r[1], json!(burst[oks].id_hex()), "OKs in order: {r}");
                assert_eq!(r[2], json!(true), "{r}");
                oks += 1;
            }
            Some("NEG-MSG") => {
                assert_eq!(oks, burst.len(), "every OK before the NEG-MSG");
                let msg = hex::decode(r[2].as_str().unwrap()).unwrap();
                let (mut have, mut needed) = (Vec::new(), Vec::new());
                let next = neg
                    .reconcile_with_ids(&msg, &mut have, &mut needed)
                    .unwrap();
                need.extend(needed);
                match next {
                    Some(m) => c.send(json!(["NEG-MSG", "after", hex::encode(m)])).await,
                    None => break,
                }
            }
            _ => panic!("unexpected: {r}"),
        }
    }
    let want: BTreeSet<String> = ids_set(&burst);
    let got: BTreeSet<String> = need.iter().map(|id| hex::encode(id.as_bytes())).collect();
    assert_eq!(got, want, "the relay's set holds the whole burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_stored_then_eose_then_live_and_close_stops_live() {
    let tmp = tempfile::tempdir().unwrap();
    let stored: Vec<Event> = (0..6)
        .map(|i| {
            sign_event(
                &keys(1),
                T0 + i,
                if i % 2 == 0 { 1 } else { 7 },
                vec![],
                &format!("stored {i}"),
            )
        })
        .collect();
    let relay = start(tmp.path(), &stored, &[]);
    let mut a = Client::connect(&relay.addr).await;
    let mut b = Client::connect(&relay.addr).await;

    let got = a.req("s1", &[json!({"kinds": [1]})]).await;
    let want: Vec<Event> = stored.iter().filter(|e| e.kind == 1).cloned().collect();
    assert_eq!(ids_set(&got), ids_set(&want));
    assert_eq!(got.len(), want.len(), "no duplicates");

    // Live: a non-matching event is not pushed; a matching one is.
    let other = sign_event(&keys(2), T0 + 100, 7, vec![], "not for s1");
    let live = sign_event(&keys(2), T0 + 101, 1, vec![], "live for s1");
    assert_eq!(b.ask(json!(["EVENT", ev_json(&other)])).await[2], true);
    assert_eq!(b.ask(json!(["EVENT", ev_json(&live)])).await[2], true);
    let pushed = a.recv().await;
    assert_eq!(pushed, json!(["EVENT", "s1", ev_json(&live)]));

    // CLOSE s1, then open s2 (same filter): s2 sees new events, s1 sees nothing more.
    a.send(json!(["CLOSE", "s1"])).await;
    let after_close = sign_event(&keys(2), T0 + 102, 1, vec![], "after close");
    assert_eq!(
        b.ask(json!(["EVENT", ev_json(&after_close)])).await[2],
        true
    );
    // (An event for s1 arriving here fails inside `req` as unexpected.)
    let got = a
        .req("s2", &[json!({"kinds": [1], "since": T0 + 102})])
        .await;
    assert_eq!(got, vec![after_close]);
    let mut seen_s1 = Vec::new();
    let last = sign_event(&keys(2), T0 + 103, 1, vec![], "last");
    assert_eq!(b.ask(json!(["EVENT", ev_json(&last)])).await[2], true);
    loop {
        let v = a.recv().await;
        if v[1] == "s1" {
            seen_s1.push(v.clone());
        }
        if v == json!(["EVENT", "s2", ev_json(&last)]) {
            break;
        }
    }
    // Anything still in flight for s1 would have been queued before `last` reached s2.
    while let Some(v) = a.recv_within(Duration::from_millis(300)).await {
        if v[1] == "s1" {
            seen_s1.push(v);
        }
    }
    assert!(seen_s1.is_empty(), "events after CLOSE: {seen_s1:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_errors_and_subscription_limit_give_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start(tmp.path(), &[], &[]);
    let mut c = Client::connect(&relay.addr).await;
    for (i, bad) in [
        json!({"kinds": "1"}),
        json!({"kinds": [70000]}),
        json!({"ids": ["zz"]}),
        json!({"authors": ["abc"]}),
        json!({"#tt": ["x"]}),
        json!({"since": -1}),
        json!({"frobnicate": 1}),
        json!("not an object"),
    ]
    .into_iter()
    .enumerate()
    {
        let sub = format!("bad-{i}");
        let r = c.ask(json!(["REQ", sub, bad])).await;
        assert_eq!(
            (&r[0], &r[1]),
            (&json!("CLOSED"), &json!(sub)),
            "{bad}: {r}"
        );
        assert!(r[2].as_str().unwrap().starts_with("invalid:"), "{bad}: {r}");
    }
    let r = c.ask(json!(["REQ", "no-filter"])).await;
    assert_eq!(r[0], "CLOSED", "{r}");

    // 32 open subscriptions are fine; the 33rd is refused; closing one makes room.
    for i in 0..32 {
        assert!(
            c.req(&format!("sub-{i}"), &[json!({"kinds": [1]})])
                .await
                .is_empty()
        );
    }
    let r = c.ask(json!(["REQ", "sub-32", {"kinds": [1]}])).await;
    assert_eq!((&r[0], &r[1]), (&json!("CLOSED"), &json!("sub-32")), "{r}");
    assert!(!r[2].as_str().unwrap().is_empty(), "{r}");
    // Re-using an open id replaces it, and does not count as another.
    assert!(c.req("sub-5", &[json!({"kinds": [7]})]).await.is_empty());
    c.send(json!(["CLOSE", "sub-0"])).await;
    assert!(c.req("sub-32", &[json!({"kinds": [1]})]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_event_and_malformed_json_leave_the_connection_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start(tmp.path(), &[], &[]);
    let mut c = Client::connect(&relay.addr).await;

    let huge = sign_event(&keys(3), T0, 1, vec![], &"x".repeat(300_000));
    let r = c.ask(json!(["EVENT", ev_json(&huge)])).await;
    assert_eq!(
        (&r[0], &r[1], &r[2]),
        (&json!("OK"), &json!(huge.id_hex()), &json!(false)),
        "{r}"
    );
    assert!(!r[3].as_str().unwrap().is_empty());

    for junk in [
        "{not json",
        "[\"EVENT\",",
        "",
        "null",
        "42",
        "{}",
        "[]",
        "[1,2]",
        "[\"WHAT\"]",
    ] {
        c.send_raw(junk).await;
        let r = c.recv().await;
        assert_eq!(r[0], "NOTICE", "{junk:?}: {r}");
    }
    let small = sign_event(&keys(3), T0 + 1, 1, vec![], "small");
    assert_eq!(c.ask(json!(["EVENT", ev_json(&small)])).await[2], true);
    assert_eq!(c.req("after", &[json!({})]).await, vec![small]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neg_open_unsupported_version_gets_one_byte_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start(tmp.path(), &notes("neg-version", 5, T0), &[]);
    let mut c = Client::connect(&relay.addr).await;
    let r = c.ask(json!(["NEG-OPEN", "v", {}, "62"])).await;
    assert_eq!(r, json!(["NEG-MSG", "v", "61"]));
    // Also with a body after the unknown version byte.
    let r = c.ask(json!(["NEG-OPEN", "v2", {}, "6200112233"])).await;
    assert_eq!(r, json!(["NEG-MSG", "v2", "61"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neg_garbage_gets_neg_err_and_connection_stays_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let evs = notes("neg-garbage", 20, T0);
    let relay = start(tmp.path(), &evs, &[]);
    let mut c = Client::connect(&relay.addr).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut garbage: Vec<String> = vec![
        "zz".into(),
        "abc".into(),
        "ff00ff".into(),
        "00".into(),
        String::new(),
        // Mode 7 does not exist.
        "61000007".into(),
        // An IdList promising 3 ids, carrying one.
        format!("6100000203{}", "ab".repeat(32)),
    ];
    for len in [8usize, 64, 500] {
        let mut b = vec![0u8; len];
        rng.fill_bytes(&mut b);
        b[0] = 0x70 | (b[0] & 0x0f);
        garbage.push(hex::encode(b));
    }
    for (i, g) in garbage.iter().enumerate() {
        let sub = format!("g{i}");
        let r = c.ask(json!(["NEG-OPEN", sub, {}, g])).await;
        assert_eq!(
            (&r[0], &r[1]),
            (&json!("NEG-ERR"), &json!(sub)),
            "{g:?}: {r}"
        );
        assert!(!r[2].as_str().unwrap_or("").is_empty(), "{r}");
    }
    // Wrong shapes of NEG-OPEN itself.
    c.send(json!(["NEG-OPEN", "x"])).await;
    assert_eq!(c.recv().await[0], "NOTICE");
    c.send(json!(["NEG-OPEN", "x", "not a filter", "61"])).await;
    let r = c.recv().await;
    assert_eq!(r[0], "NEG-ERR", "{r}");

    // Still usable: a real reconciliation over the kind 7 subset works.
    let (mut neg, init) = neg_initial(&[]);
    let mut msg = c.ask(json!(["NEG-OPEN", "ok", {"kinds": [7]}, init])).await;
    let (mut have, mut need) = (Vec::new(), Vec::new());
    loop {
        assert_eq!(msg[0], "NEG-MSG", "{msg}");
        let bytes = hex::decode(msg[2].as_str().unwrap()).unwrap();
        match neg
            .reconcile_with_ids(&bytes, &mut have, &mut need)
            .unwrap()
        {
            Some(next) => msg = c.ask(json!(["NEG-MSG", "ok", hex::encode(next)])).await,
            None => break,
        }
    }
    let need: BTreeSet<String> = need.iter().map(|i| hex::encode(i.as_bytes())).collect();
    let want: BTreeSet<String> = evs
        .iter()
        .filter(|e| e.kind == 7)
        .map(Event::id_hex)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(need, want);
    assert!(have.is_empty());
}

/// A message cut short (a varint with its continuation bit set at the end, a bound without its
/// mode) is malformed: the reference implementations fail with "premature end"; the relay must
/// answer NEG-ERR rather than read the missing bytes as zeros.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neg_open_with_truncated_message_gets_neg_err() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start(tmp.path(), &notes("neg-truncated", 20, T0), &[]);
    let mut c = Client::connect(&relay.addr).await;
    let mut wrong = Vec::new();
    for (i, g) in ["6181", "614f", "610000", "6100", "61000001abcd"]
        .iter()
        .enumerate()
    {
        let sub = format!("t{i}");
        let r = c.ask(json!(["NEG-OPEN", sub, {}, g])).await;
        if r[0] != "NEG-ERR" {
            wrong.push((g.to_string(), r));
        }
    }
    assert!(
        wrong.is_empty(),
        "truncated messages answered as valid: {wrong:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neg_session_limit_unknown_sub_and_close() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = start(tmp.path(), &notes("neg-sessions", 10, T0), &[]);
    let mut c = Client::connect(&relay.addr).await;
    let (_, init) = neg_initial(&[]);

    let r = c.ask(json!(["NEG-MSG", "nobody", "61"])).await;
    assert_eq!((&r[0], &r[1]), (&json!("NEG-ERR"), &json!("nobody")), "{r}");

    for i in 0..8 {
        let r = c.ask(json!(["NEG-OPEN", format!("n{i}"), {}, init])).await;
        assert_eq!(
            (&r[0], &r[1]),
            (&json!("NEG-MSG"), &json!(format!("n{i}"))),
            "{r}"
        );
    }
    let r = c.ask(json!(["NEG-OPEN", "n8", {}, init])).await;
    assert_eq!(
        (&r[0], &r[1]),
        (&json!("NEG-ERR"), &json!("n8")),
        "ninth session: {r}"
    );
    // Re-opening an open id replaces that session: allowed at the limit.
    let r = c.ask(json!(["NEG-OPEN", "n3", {}, init])).await;
    assert_eq!(r[0], "NEG-MSG", "{r}");
    // The sessions are alive.
    let r = c.ask(json!(["NEG-MSG", "n1", init])).await;
    assert_eq!((&r[0], &r[1]), (&json!("NEG-MSG"), &json!("n1")), "{r}");

    // NEG-CLOSE frees a place, and the closed id is gone.
    c.send(json!(["NEG-CLOSE", "n0"])).await;
    let r = c.ask(json!(["NEG-OPEN", "n8", {}, init])).await;
    assert_eq!(
        (&r[0], &r[1]),
        (&json!("NEG-MSG"), &json!("n8")),
        "after NEG-CLOSE: {r}"
    );
    let r = c.ask(json!(["NEG-MSG", "n0", init])).await;
    assert_eq!((&r[0], &r[1]), (&json!("NEG-ERR"), &json!("n0")), "{r}");

    // Sessions belong to their connection: a second one starts with none.
    let mut d = Client::connect(&relay.addr).await;
    let r = d.ask(json!(["NEG-MSG", "n1", init])).await;
    assert_eq!(r[0], "NEG-ERR", "{r}");
    for i in 0..8 {
        let r = d.ask(json!(["NEG-OPEN", format!("d{i}"), {}, init])).await;
        assert_eq!(r[0], "NEG-MSG", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neg_max_records_blocked_with_the_maximum() {
    let tmp = tempfile::tempdir().unwrap();
    let evs = notes("neg-max", 12, T0);
    let kind7 = evs.iter().filter(|e| e.kind == 7).count();
    assert!(kind7 > 0 && kind7 <= 5);
    let relay = start(tmp.path(), &evs, &["--max-neg-records", "5"]);
    let mut c = Client::connect(&relay.addr).await;
    let (_, init) = neg_initial(&[]);
    // Sets loaded into memory are capped: 9 kind-1 notes, 8 tagged "nostr".
    for (sub, filter) in [
        ("big", json!({"kinds": [1]})),
        ("tags", json!({"#t": ["nostr"]})),
    ] {
        let r = c.ask(json!(["NEG-OPEN", sub, filter, init])).await;
        assert_eq!((&r[0], &r[1]), (&json!("NEG-ERR"), &json!(sub)), "{r}");
        assert!(r[2].as_str().unwrap().starts_with("blocked:"), "{r}");
        assert_eq!(r[3], 5, "the maximum as 4th element: {r}");
    }
    // Within the maximum: served.
    let r = c
        .ask(json!(["NEG-OPEN", "small", {"kinds": [7]}, init]))
        .await;
    assert_eq!((&r[0], &r[1]), (&json!("NEG-MSG"), &json!("small")), "{r}");
    // The whole store and time ranges come from the persistent index, at no memory per
    // item: not capped (12 events here).
    for (sub, filter) in [("all", json!({})), ("range", json!({"since": T0 + 1}))] {
        let r = c.ask(json!(["NEG-OPEN", sub, filter, init])).await;
        assert_eq!((&r[0], &r[1]), (&json!("NEG-MSG"), &json!(sub)), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_never_kills_the_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let evs = notes("garbage", 5, T0);
    let mut relay = start(tmp.path(), &evs, &[]);
    let addr = relay.addr.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);

    // Raw TCP garbage and broken HTTP, each on its own connection.
    for i in 0..20 {
        let mut bytes = vec![0u8; rng.random_range(1..4000)];
        rng.fill_bytes(&mut bytes);
        if i % 4 == 0 {
            bytes = format!(
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\n\r\n",
                "%".repeat(i)
            )
            .into_bytes();
        }
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            s.set_write_timeout(Some(WAIT)).unwrap();
            let _ = s.write_all(&bytes);
        }
    }

    let c = Client::connect(&addr).await;
    let (mut sink, mut stream) = c.ws.split();
    // Drain replies concurrently so the relay never blocks on us; report the EOSE we wait for.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(16);
    let reader = tokio::spawn(async move {
        let mut count = 0usize;
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Text(t) = m {
                count += 1;
                let v: Value = serde_json::from_str(t.as_str()).expect("relay replies are JSON");
                if v[0] == "EOSE" && v[1] == "alive" {
                    let _ = tx.send(v).await;
                }
            }
        }
        count
    });
    let words = [
        "EVENT",
        "REQ",
        "CLOSE",
        "AUTH",
        "NEG-OPEN",
        "NEG-MSG",
        "NEG-CLOSE",
        "COUNT",
        "",
    ];
    let rand_value = |rng: &mut rand::rngs::StdRng| -> Value {
        match rng.random_range(0..7) {
            0 => json!(rng.random::<i64>()),
            1 => json!(rng.random::<f64>()),
            2 => json!(hex::encode(rng.random::<[u8; 16]>())),
            3 => {
                json!({"kinds": [rng.random::<u32>()], "ids": [hex::encode(rng.random::<[u8; 32]>())]})
            }
            4 => json!({"id": hex::encode(rng.random::<[u8; 32]>()), "sig": 5}),
            5 => Value::Null,
            _ => json!([[], {}, "x"]),
        }
    };
    for i in 0..400 {
        let msg = match i % 5 {
            0 => {
                let mut s = String::new();
                for _ in 0..rng.random_range(0..200) {
                    s.push(char::from_u32(rng.random_range(1..0x2FFF)).unwrap_or('?'));
                }
                Message::Text(s.into())
            }
            1 => {
                let mut b = vec![0u8; rng.random_range(0..500)];
                rng.fill_bytes(&mut b);
                Message::Binary(b.into())
            }
            2 | 3 => {
                let mut arr = vec![json!(words[rng.random_range(0..words.len())])];
                for _ in 0..rng.random_range(0..5) {
                    arr.push(rand_value(&mut rng));
                }
                Message::Text(Value::Array(arr).to_string().into())
            }
            _ => Message::Ping(vec![1, 2, 3].into()),
        };
        tokio::time::timeout(WAIT, sink.send(msg))
            .await
            .expect("send timed out")
            .expect("the relay closed the connection on garbage");
    }
    // The same connection still answers.
    let req = json!(["REQ", "alive", {"kinds": [1, 7]}]).to_string();
    tokio::time::timeout(WAIT, sink.send(Message::Text(req.into())))
        .await
        .unwrap()
        .unwrap();
    let eose = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("no EOSE after garbage");
    assert_eq!(eose, Some(json!(["EOSE", "alive"])));
    let _ = sink.close().await;
    let replies = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert!(
        replies > 100,
        "garbage should be answered with NOTICEs etc: {replies}"
    );

    // The process is alive and a new connection is served normally.
    assert!(relay.child.try_wait().unwrap().is_none(), "relay exited");
    let mut c = Client::connect(&addr).await;
    assert_eq!(ids_set(&c.req("fresh", &[json!({})]).await), ids_set(&evs));
}

/// The first text frame of a new connection after a `REQ`.
async fn first_frame_after_req(addr: &str) -> Value {
    let mut c = Client::connect(addr).await;
    c.send(json!(["REQ", "first", {"limit": 1}])).await;
    loop {
        let frame = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("no frame in time");
        match frame {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// A NIP-42 challenge only where the relay asks for AUTH: a relay without auth settings sends
/// none (a client such as nostr-sdk answers every challenge by default and, with no signer,
/// gives up the subscriptions it had open), while one requiring AUTH sends it on connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_challenge_only_when_auth_is_required() {
    let tmp = tempfile::tempdir().unwrap();
    let open = start(tmp.path(), &[], &[]);
    let first = first_frame_after_req(&open.addr).await;
    assert_eq!(
        first[0], "EOSE",
        "no challenge without auth settings: {first}"
    );
    let tmp2 = tempfile::tempdir().unwrap();
    for flag in ["--auth-read", "--auth-write", "--auth-sync"] {
        let guarded = start(tmp2.path(), &[], &[flag]);
        let first = first_frame_after_req(&guarded.addr).await;
        assert_eq!(
            first[0], "AUTH",
            "{flag}: the challenge comes first: {first}"
        );
        assert!(first[1].as_str().is_some_and(|c| c.len() >= 16), "{first}");
        drop(guarded);
    }
}
