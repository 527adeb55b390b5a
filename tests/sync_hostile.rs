//! `orly sync` (real child processes, direct mode) against hostile or broken relays: a scripted
//! fake relay inside the test (tokio-tungstenite on 127.0.0.1:0) and the real `orly-relay` for
//! AUTH and `blocked:` refusals. Every case checks the exit code, a clear error, no panic, and
//! that the events stored before the sync are all still there.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use negentropy::{Id, Negentropy, NegentropyStorageVector};
use rand::{RngCore, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const T0: u64 = 1_700_000_000;
const EXIT_OK: i32 = 0;
const EXIT_REFUSED: i32 = 3;
const EXIT_AUTH: i32 = 4;
const EXIT_TIMEOUT: i32 = 5;
const EXIT_INCOMPLETE: i32 = 6;
/// Completed, but the two sides still differ (events dropped, uploads refused).
const EXIT_DIFFER: i32 = 7;

// ---------------------------------------------------------------------------------------------
// Running `orly sync` as a child process, bounded.

/// `orly sync URL --data-dir LOCAL EXTRA...` with `envs`, bounded to 90 s.
async fn orly_sync(url: &str, local: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Out {
    let local = local.to_str().expect("UTF-8 path");
    let mut args = vec!["sync", url, "--data-dir", local];
    args.extend_from_slice(extra);
    run_orly_async(Duration::from_secs(90), &args, envs).await
}

/// Runs a sync that must fail: without `--json` (stderr carries the error) and with `--json`
/// (the final line carries it). Both must exit with `code` and mention `needle`.
async fn expect_failure(url: &str, local: &Path, extra: &[&str], code: i32, needle: &str) -> Out {
    let r = orly_sync(url, local, extra, &[]).await;
    r.no_panic();
    assert_eq!(
        r.code, code,
        "exit code; stderr:\n{}\nstdout:\n{}",
        r.stderr, r.stdout
    );
    assert!(
        r.stderr.contains("error:") && r.stderr.contains(needle),
        "stderr should name the error ({needle:?}):\n{}",
        r.stderr
    );
    let mut with_json = extra.to_vec();
    with_json.push("--json");
    let j = orly_sync(url, local, &with_json, &[]).await;
    j.no_panic();
    assert_eq!(j.code, code, "--json exit code; stdout:\n{}", j.stdout);
    let last = j.last_json();
    assert_eq!(last["complete"], false, "{last}");
    let err = last["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(needle),
        "JSON error should contain {needle:?}: {last}"
    );
    let kind = last["error_kind"].as_str().unwrap_or_default();
    let want_kind = match code {
        EXIT_REFUSED => "refused",
        EXIT_AUTH => "auth",
        EXIT_TIMEOUT => "timeout",
        _ => "incomplete",
    };
    assert_eq!(kind, want_kind, "{last}");
    r
}

/// A local store holding `pre`; returns its dir.
fn local_store(tmp: &Path, pre: &[Event]) -> std::path::PathBuf {
    let local = tmp.join("local");
    import(&local, pre);
    assert_eq!(ids(&local), ids_of(pre));
    local
}

// ---------------------------------------------------------------------------------------------
// The scripted fake relay.

type Ws = WebSocketStream<TcpStream>;

#[derive(Clone)]
enum OnNegOpen {
    /// Answers NIP-77 correctly over the script's events.
    Correct,
    /// Sends these raw text frames ("{sub}" replaced by the NEG-OPEN's subscription id).
    Reply(Vec<String>),
    /// Never answers anything.
    Silent,
}

#[derive(Clone)]
enum OnReq {
    /// Every asked event, then EOSE.
    Full,
    /// The first `full_reqs` REQs in full; the next gets `partial` events, then the TCP
    /// connection is shut down without a WebSocket close.
    CutAfter { full_reqs: usize, partial: usize },
    /// Junk around the asked events: an event nobody asked for, a copy of an asked event with
    /// a bad signature, one with altered content (id mismatch), an event on an unknown
    /// subscription, and a second copy of an asked event; then EOSE.
    Junk,
}

const JUNK_PER_REQ: usize = 5;

#[derive(Default)]
struct Log {
    reqs: usize,
    delivered: Vec<Event>,
    /// Junk with ids of its own (must not be stored).
    junk: Vec<Event>,
    /// Asked events that also got forged copies (the genuine one must be what is stored).
    forged: Vec<Event>,
    junk_sent: usize,
}

struct Script {
    events: Vec<Event>,
    neg: OnNegOpen,
    req: OnReq,
    log: Mutex<Log>,
}

struct Fake {
    url: String,
    script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_relay(events: Vec<Event>, neg: OnNegOpen, req: OnReq) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let script = Arc::new(Script {
        events,
        neg,
        req,
        log: Mutex::new(Log::default()),
    });
    let sc = script.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let sc = sc.clone();
            tokio::spawn(async move {
                if let Ok(Ok(ws)) = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio_tungstenite::accept_async(tcp),
                )
                .await
                {
                    serve(ws, sc).await;
                }
            });
        }
    });
    Fake { url, script, task }
}

async fn send(ws: &mut Ws, v: Value) -> bool {
    ws.send(Message::Text(v.to_string().into())).await.is_ok()
}

fn neg_storage(events: &[Event]) -> NegentropyStorageVector {
    let mut s = NegentropyStorageVector::with_capacity(events.len());
    for e in events {
        s.insert(e.created_at, Id::from_byte_array(e.id)).unwrap();
    }
    s.seal().unwrap();
    s
}

async fn serve(mut ws: Ws, sc: Arc<Script>) {
    let by_id: HashMap<String, Event> = sc.events.iter().map(|e| (e.id_hex(), e.clone())).collect();
    let mut sessions: HashMap<String, Negentropy<'static, NegentropyStorageVector>> =
        HashMap::new();
    loop {
        let text = match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return,
            Ok(Some(Ok(_))) => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let s = |i: usize| v.get(i).and_then(Value::as_str).unwrap_or("").to_string();
        match s(0).as_str() {
            "NEG-OPEN" => {
                let sub = s(1);
                match &sc.neg {
                    OnNegOpen::Silent => {}
                    OnNegOpen::Reply(frames) => {
                        for f in frames {
                            let _ = ws
                                .send(Message::Text(f.replace("{sub}", &sub).into()))
                                .await;
                        }
                    }
                    OnNegOpen::Correct => {
                        let mut neg = Negentropy::owned(neg_storage(&sc.events), 0).unwrap();
                        let msg = hex::decode(s(3)).expect("client NEG-OPEN hex");
                        let out = neg.reconcile(&msg).expect("client NEG-OPEN message");
                        sessions.insert(sub.clone(), neg);
                        send(&mut ws, json!(["NEG-MSG", sub, hex::encode(out)])).await;
                    }
                }
            }
            "NEG-MSG" => {
                let sub = s(1);
                if let Some(neg) = sessions.get_mut(&sub) {
                    let msg = hex::decode(s(2)).expect("client NEG-MSG hex");
                    let out = neg.reconcile(&msg).expect("client NEG-MSG message");
                    send(&mut ws, json!(["NEG-MSG", sub, hex::encode(out)])).await;
                }
            }
            "NEG-CLOSE" => {
                sessions.remove(&s(1));
            }
            "REQ" => {
                if matches!(sc.neg, OnNegOpen::Silent) {
                    continue;
                }
                let sub = s(1);
                let asked: Vec<Event> = v[2]["ids"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().and_then(|h| by_id.get(h)).cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                let n = {
                    let mut log = sc.log.lock().unwrap();
                    log.reqs += 1;
                    log.reqs
                };
                match sc.req {
                    OnReq::Full => {
                        for e in &asked {
                            send(&mut ws, json!(["EVENT", sub, e])).await;
                        }
                        sc.log.lock().unwrap().delivered.extend(asked);
                        send(&mut ws, json!(["EOSE", sub])).await;
                    }
                    OnReq::CutAfter { full_reqs, partial } => {
                        let cut = n > full_reqs;
                        let k = if cut {
                            partial.min(asked.len())
                        } else {
                            asked.len()
                        };
                        for e in &asked[..k] {
                            send(&mut ws, json!(["EVENT", sub, e])).await;
                        }
                        sc.log
                            .lock()
                            .unwrap()
                            .delivered
                            .extend(asked[..k].iter().cloned());
                        if !cut {
                            send(&mut ws, json!(["EOSE", sub])).await;
                            continue;
                        }
                        // Everything sent is flushed; now drop the TCP connection with no
                        // WebSocket close handshake, and wait for the client to go away.
                        let _ = ws.flush().await;
                        let _ = ws.get_mut().shutdown().await;
                        let _ = tokio::time::timeout(Duration::from_secs(10), async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        return;
                    }
                    OnReq::Junk => {
                        let Some(first) = asked.first().cloned() else {
                            send(&mut ws, json!(["EOSE", sub])).await;
                            continue;
                        };
                        let k = Keys::from_seed(b"junk", 0);
                        let unasked =
                            sign_event(&k, T0 + n as u64, 1, vec![], &format!("unasked {n}"));
                        let stray =
                            sign_event(&k, T0 + 500 + n as u64, 1, vec![], &format!("stray {n}"));
                        let mut bad_sig = first.clone();
                        bad_sig.sig[7] ^= 0x5a;
                        let mut bad_id = first.clone();
                        bad_id.content.push_str(" (altered)");
                        send(&mut ws, json!(["EVENT", sub, unasked])).await;
                        send(&mut ws, json!(["EVENT", sub, bad_sig])).await;
                        send(&mut ws, json!(["EVENT", sub, bad_id])).await;
                        send(&mut ws, json!(["EVENT", "nobody-asked", stray])).await;
                        for e in &asked {
                            send(&mut ws, json!(["EVENT", sub, e])).await;
                        }
                        send(&mut ws, json!(["EVENT", sub, first])).await;
                        {
                            let mut log = sc.log.lock().unwrap();
                            log.delivered.extend(asked);
                            log.junk.extend([unasked, stray]);
                            log.forged.push(first);
                            log.junk_sent += JUNK_PER_REQ;
                        }
                        send(&mut ws, json!(["EOSE", sub])).await;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Events stored locally before each hostile sync, and what the fake relay holds (a few shared).
fn fixture() -> (Vec<Event>, Vec<Event>, Vec<Event>) {
    let pre = notes("hostile-pre", 15, T0);
    let only_relay = notes("hostile-relay", 120, T0 + 1_000);
    let relay_set = [pre[..5].to_vec(), only_relay.clone()].concat();
    (pre, relay_set, only_relay)
}

// ---------------------------------------------------------------------------------------------
// Fake relay cases.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notice_or_closed_instead_of_neg_msg_is_a_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, relay_set, _) = fixture();
    let local = local_store(tmp.path(), &pre);
    for (frame, text) in [
        (
            r#"["NOTICE","negentropy is disabled on this relay (code 17)"]"#,
            "negentropy is disabled on this relay (code 17)",
        ),
        (
            r#"["CLOSED","{sub}","restricted: sync is for members only"]"#,
            "restricted: sync is for members only",
        ),
    ] {
        let fake = fake_relay(
            relay_set.clone(),
            OnNegOpen::Reply(vec![frame.to_string()]),
            OnReq::Full,
        )
        .await;
        let r = expect_failure(&fake.url, &local, &[], EXIT_REFUSED, text).await;
        assert!(r.stderr.contains("refused"), "{}", r.stderr);
        assert_eq!(fake.script.log.lock().unwrap().reqs, 0);
    }
    assert_eq!(ids(&local), ids_of(&pre));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_that_never_answers_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, relay_set, _) = fixture();
    let local = local_store(tmp.path(), &pre);

    // WebSocket handshake done, then silence.
    let fake = fake_relay(relay_set, OnNegOpen::Silent, OnReq::Full).await;
    let r = expect_failure(
        &fake.url,
        &local,
        &["--timeout", "2"],
        EXIT_TIMEOUT,
        "timed out",
    )
    .await;
    assert!(
        r.elapsed >= Duration::from_millis(1900) && r.elapsed < Duration::from_secs(20),
        "took {:?}",
        r.elapsed
    );

    // TCP accepted, WebSocket handshake never answered: the connect timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let r = expect_failure(&url, &local, &["--timeout", "2"], EXIT_TIMEOUT, "timed out").await;
    assert!(r.elapsed < Duration::from_secs(20), "took {:?}", r.elapsed);
    hold.abort();
    assert_eq!(ids(&local), ids_of(&pre));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_transfer_keeps_what_arrived() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, relay_set, only_relay) = fixture();
    let local = local_store(tmp.path(), &pre);
    let fake = fake_relay(
        relay_set,
        OnNegOpen::Correct,
        OnReq::CutAfter {
            full_reqs: 1,
            partial: 20,
        },
    )
    .await;
    let r = orly_sync(&fake.url, &local, &[], &[]).await;
    r.no_panic();
    assert_eq!(r.code, EXIT_INCOMPLETE, "stderr:\n{}", r.stderr);
    assert!(
        r.stderr.contains("error: incomplete"),
        "clear error expected:\n{}",
        r.stderr
    );
    let delivered = fake.script.log.lock().unwrap().delivered.clone();
    assert!(
        delivered.len() > 20 && delivered.len() < only_relay.len(),
        "the cut must happen part way: {} delivered",
        delivered.len()
    );
    assert!(
        r.stderr.contains(&format!("fetched {},", delivered.len())),
        "summary should count {} fetched:\n{}",
        delivered.len(),
        r.stderr
    );
    // Everything stored before, plus exactly what the relay delivered before cutting.
    assert_eq!(ids(&local), union(&pre, &delivered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, relay_set, _) = fixture();
    let local = local_store(tmp.path(), &pre);
    for frame in [
        r#"["NEG-MSG","{sub}","61"#,
        r#"{"NEG-MSG":"{sub}"}"#,
        r#"["NEG-MSG","{sub}",97]"#,
        r#"["HELLO","{sub}"]"#,
        "\u{1}\u{2} not json at all",
    ] {
        let fake = fake_relay(
            relay_set.clone(),
            OnNegOpen::Reply(vec![frame.to_string()]),
            OnReq::Full,
        )
        .await;
        let r = expect_failure(&fake.url, &local, &[], EXIT_INCOMPLETE, "malformed").await;
        assert!(
            r.elapsed < Duration::from_secs(20),
            "{frame}: {:?}",
            r.elapsed
        );
    }
    assert_eq!(ids(&local), ids_of(&pre));
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&x, rest) = b.split_first()?;
        *b = rest;
        v = (v << 7) | u64::from(x & 0x7f);
        if x & 0x80 == 0 {
            return Some(v);
        }
        if i == 9 {
            return None;
        }
    }
    None
}

fn take(b: &mut &[u8], n: usize) -> Option<()> {
    if b.len() < n {
        return None;
    }
    *b = &b[n..];
    Some(())
}

/// A strict reading of the NIP-77 v1 message structure, written for the test: Some(()) when
/// `msg` is well formed (version 0x61, then complete ranges: bound, mode, payload).
fn well_formed(msg: &[u8]) -> Option<()> {
    let (&version, mut b) = msg.split_first()?;
    if version != 0x61 {
        return None;
    }
    while !b.is_empty() {
        varint(&mut b)?;
        let len = varint(&mut b)?;
        if len > 32 {
            return None;
        }
        take(&mut b, len as usize)?;
        match varint(&mut b)? {
            0 => {}
            1 => take(&mut b, 16)?,
            2 => {
                let n = varint(&mut b)?;
                take(&mut b, usize::try_from(n).ok()?.checked_mul(32)?)?;
            }
            _ => return None,
        }
    }
    Some(())
}

/// The strict reader above accepts every message the negentropy crate really produces (both
/// sides, with and without a frame limit), so the payloads it calls malformed truly are.
#[test]
fn strict_reader_accepts_real_messages() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut items = Vec::new();
    for i in 0..6000u64 {
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        items.push((T0 + i / 3, id));
    }
    let storage = |keep: &dyn Fn(usize) -> bool| {
        let mut s = NegentropyStorageVector::new();
        for (i, (t, id)) in items.iter().enumerate() {
            if keep(i) {
                s.insert(*t, Id::from_byte_array(*id)).unwrap();
            }
        }
        s.seal().unwrap();
        s
    };
    for limit in [0u64, 4096, 60_000] {
        let mut client = Negentropy::owned(storage(&|i| i % 97 != 0), limit).unwrap();
        let mut server = Negentropy::owned(storage(&|i| i % 89 != 0), limit).unwrap();
        let mut msg = client.initiate().unwrap();
        let (mut have, mut need) = (Vec::new(), Vec::new());
        let mut rounds = 0;
        loop {
            assert!(well_formed(&msg).is_some(), "client message, limit {limit}");
            let reply = server.reconcile(&msg).unwrap();
            assert!(
                well_formed(&reply).is_some(),
                "server message, limit {limit}"
            );
            rounds += 1;
            match client
                .reconcile_with_ids(&reply, &mut have, &mut need)
                .unwrap()
            {
                Some(next) => msg = next,
                None => break,
            }
            assert!(rounds < 1000);
        }
        assert!(!have.is_empty() && !need.is_empty());
    }
    assert!(well_formed(&[0x61]).is_some());
}

/// Runs each NEG-MSG payload against a fresh fake relay; returns the cases that did not end
/// with exit 6 and a clear error naming `needle`, as (payload, exit code, stderr).
async fn neg_payload_failures(payloads: &[(String, &str)]) -> Vec<(String, i32, String)> {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, relay_set, _) = fixture();
    let local = local_store(tmp.path(), &pre);
    let mut wrong = Vec::new();
    for (payload, needle) in payloads {
        // Precondition: the payload really is malformed.
        if let Ok(bytes) = hex::decode(payload) {
            assert!(
                well_formed(&bytes).is_none(),
                "test payload {payload} is a well-formed message"
            );
        }
        let frame = format!(r#"["NEG-MSG","{{sub}}","{payload}"]"#);
        let fake = fake_relay(
            relay_set.clone(),
            OnNegOpen::Reply(vec![frame]),
            OnReq::Full,
        )
        .await;
        let r = orly_sync(&fake.url, &local, &["--timeout", "10"], &[]).await;
        r.no_panic();
        let clear = r.stderr.contains("error: incomplete") && r.stderr.contains(needle);
        if r.code != EXIT_INCOMPLETE || !clear {
            wrong.push((payload.clone(), r.code, r.stderr.clone()));
        }
    }
    assert_eq!(ids(&local), ids_of(&pre));
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_negentropy_message_is_incomplete() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    let mut payloads: Vec<(String, &str)> = vec![
        ("zz-not-hex".into(), "hex"),
        ("abc".into(), "hex"),
        // Protocol version the initiator does not speak, and out of the version range.
        ("62".into(), "negentropy"),
        ("ff".into(), "negentropy"),
        // No version byte at all.
        ("".into(), "negentropy"),
        // Mode 7 does not exist.
        ("61000007".into(), "negentropy"),
        // An IdList claiming 3 ids with only one present.
        (format!("61000002{}{}", "03", "ab".repeat(32)), "negentropy"),
        // A fingerprint cut short.
        (format!("61000001{}", "cd".repeat(8)), "negentropy"),
    ];
    for len in [16usize, 64, 300] {
        let mut b = vec![0u8; len];
        rng.fill_bytes(&mut b);
        b[0] = 0x70 | (b[0] & 0x0f); // outside 0x60..=0x6f
        payloads.push((hex::encode(&b), "negentropy"));
    }
    let wrong = neg_payload_failures(&payloads).await;
    assert!(
        wrong.is_empty(),
        "not refused as bad negentropy messages: {wrong:#?}"
    );
}

/// Truncated messages (a varint cut short, a bound without its mode) are malformed, as the
/// reference implementations say ("premature end of varint"); they must not be read as
/// "nothing differs" and end the sync as complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_negentropy_message_is_incomplete() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(61);
    let mut payloads: Vec<(String, &str)> = vec![
        // Timestamp varint with its continuation bit set, then the end.
        ("6181".into(), "negentropy"),
        // A bound's timestamp, then nothing: no id length, no mode.
        ("614f".into(), "negentropy"),
        // A bound without its mode.
        ("610000".into(), "negentropy"),
    ];
    // The right version byte and a random body.
    for len in [1usize, 2, 3, 8, 40, 300] {
        let mut b = vec![0x61u8; len + 1];
        rng.fill_bytes(&mut b[1..]);
        payloads.push((hex::encode(&b), "negentropy"));
    }
    let wrong = neg_payload_failures(&payloads).await;
    assert!(
        wrong.is_empty(),
        "accepted as valid negentropy messages: {wrong:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unasked_and_forged_events_are_dropped_and_the_sync_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, relay_set, only_relay) = fixture();
    let local = local_store(tmp.path(), &pre);
    let fake = fake_relay(relay_set, OnNegOpen::Correct, OnReq::Junk).await;
    let r = orly_sync(&fake.url, &local, &["--json"], &[]).await;
    r.no_panic();
    // Completed, but what was dropped never reached the store: a cron job must see it.
    assert_eq!(
        r.code, EXIT_DIFFER,
        "stderr:\n{}\nstdout:\n{}",
        r.stderr, r.stdout
    );
    let last = r.last_json();
    let log = fake.script.log.lock().unwrap();
    assert!(log.reqs >= 2, "several REQ batches expected: {}", log.reqs);
    assert_eq!(last["complete"], true, "{last}");
    assert_eq!(last["differs"], json!(["dropped"]), "{last}");
    assert_eq!(last["need"], only_relay.len() as u64, "{last}");
    assert_eq!(last["fetched"], only_relay.len() as u64, "{last}");
    assert_eq!(last["dropped"], log.junk_sent as u64, "{last}");
    assert_eq!(log.junk_sent, JUNK_PER_REQ * log.reqs);
    let stored = ids(&local);
    assert_eq!(stored, union(&pre, &only_relay));
    for j in &log.junk {
        assert!(
            !stored.contains(&j.id_hex()),
            "junk stored: {}",
            j.to_json()
        );
    }
    // The genuine versions of forged events are the ones stored.
    assert_eq!(log.forged.len(), log.reqs);
    let forged_ids: Vec<String> = log.forged.iter().map(Event::id_hex).collect();
    let (code, out, err) = orly(&[
        "export",
        "--filter",
        &json!({ "ids": forged_ids }).to_string(),
        "--data-dir",
        local.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut got: Vec<Event> = out
        .lines()
        .map(|l| Event::from_json_verified(l.as_bytes()).expect("stored event verifies"))
        .collect();
    let mut want = log.forged.clone();
    got.sort_by_key(|e| e.id);
    want.sort_by_key(|e| e.id);
    assert_eq!(got, want);
}

/// Without `--json` the summary line names why the sides still differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_events_are_named_in_the_summary_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, relay_set, _) = fixture();
    let local = local_store(tmp.path(), &pre);
    let fake = fake_relay(relay_set, OnNegOpen::Correct, OnReq::Junk).await;
    let r = orly_sync(&fake.url, &local, &[], &[]).await;
    r.no_panic();
    assert_eq!(r.code, EXIT_DIFFER, "stderr:\n{}", r.stderr);
    let dropped = fake.script.log.lock().unwrap().junk_sent;
    assert!(
        r.stderr.contains(&format!(
            "sync complete, but {dropped} events dropped (failed verification or not asked for):"
        )),
        "summary should name the cause:\n{}",
        r.stderr
    );
}

/// Client mode tells the same truth: the sync service runs the job against the same relay,
/// and `orly sync --server` exits 7 with the cause in its summary and its JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_events_exit_7_in_client_mode_too() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, relay_set, only_relay) = fixture();
    let store = local_store(tmp.path(), &pre);
    let fake = fake_relay(relay_set, OnNegOpen::Correct, OnReq::Junk).await;
    let svc = sync_service(&store);
    let args = ["sync", &fake.url, "--server", &svc.addr, "--json"];
    let r = run_orly_async(Duration::from_secs(90), &args, &[]).await;
    r.no_panic();
    assert_eq!(
        r.code, EXIT_DIFFER,
        "stderr:\n{}\nstdout:\n{}",
        r.stderr, r.stdout
    );
    let last = r.last_json();
    let junk_sent = fake.script.log.lock().unwrap().junk_sent as u64;
    assert!(junk_sent > 0);
    assert_eq!(last["complete"], true, "{last}");
    assert_eq!(last["dropped"], junk_sent, "{last}");
    assert_eq!(last["fetched"], only_relay.len() as u64, "{last}");
    assert_eq!(last["differs"], json!(["dropped"]), "{last}");
    drop(svc);
    assert_eq!(ids(&store), union(&pre, &only_relay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_size_blocked_refusal_ends_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, relay_set, _) = fixture();
    let local = local_store(tmp.path(), &pre);
    let fake = fake_relay(
        relay_set,
        OnNegOpen::Reply(vec![
            r#"["NEG-ERR","{sub}","blocked: this pubkey is banned from syncing"]"#.into(),
        ]),
        OnReq::Full,
    )
    .await;
    let r = expect_failure(
        &fake.url,
        &local,
        &[],
        EXIT_REFUSED,
        "blocked: this pubkey is banned from syncing",
    )
    .await;
    assert!(r.stderr.contains("refused by relay"), "{}", r.stderr);
    assert_eq!(fake.script.log.lock().unwrap().reqs, 0);
    assert_eq!(ids(&local), ids_of(&pre));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_incomplete_and_quick() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre, _, _) = fixture();
    let local = local_store(tmp.path(), &pre);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}");
    let r = expect_failure(&url, &local, &[], EXIT_INCOMPLETE, "cannot connect").await;
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
    assert_eq!(ids(&local), ids_of(&pre));
}

// ---------------------------------------------------------------------------------------------
// Real orly-relay: AUTH and `blocked:` for size.

const SECRET: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_SECRET: &str = "2222222222222222222222222222222222222222222222222222222222222222";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_requiring_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = notes("auth-pre", 8, T0);
    let remote_only = notes("auth-remote", 30, T0 + 100);
    let local = local_store(tmp.path(), &pre);
    let remote = tmp.path().join("remote");
    import(&remote, &remote_only);
    let me = Keys::from_hex(SECRET).unwrap();

    // Any authenticated key.
    let relay_p = relay(&remote, &["--auth-sync", "--auth-read", "--auth-write"]);
    let url = format!("ws://{}", relay_p.addr);
    let r = expect_failure(&url, &local, &[], EXIT_AUTH, "auth-required").await;
    assert!(r.stderr.contains("ORLY_SYNC_AUTH_KEY"), "{}", r.stderr);
    assert_eq!(ids(&local), ids_of(&pre));

    let r = orly_sync(
        &url,
        &local,
        &["--dir", "both", "--json"],
        &[("ORLY_SYNC_AUTH_KEY", SECRET)],
    )
    .await;
    r.no_panic();
    assert_eq!(
        r.code, EXIT_OK,
        "stderr:\n{}\nstdout:\n{}",
        r.stderr, r.stdout
    );
    let last = r.last_json();
    assert_eq!(
        (last["fetched"].as_u64(), last["sent"].as_u64()),
        (Some(30), Some(8)),
        "{last}"
    );
    let all = union(&pre, &remote_only);
    assert_eq!(ids(&local), all);
    assert!(relay_p.terminate().success());
    assert_eq!(ids(&remote), all);

    // Only another key is allowed: our AUTH is accepted, then the relay refuses this pubkey
    // ("restricted:"), a policy refusal of an authenticated client: exit 3, not 4.
    let other = Keys::from_hex(OTHER_SECRET).unwrap();
    let relay_p = relay(
        &remote,
        &["--auth-sync", "--auth-pubkey", &hex::encode(other.pubkey)],
    );
    let url = format!("ws://{}", relay_p.addr);
    let key_file = tmp.path().join("auth.key");
    std::fs::write(&key_file, format!("{SECRET}\n")).unwrap();
    let kf = key_file.to_str().unwrap();
    expect_failure(
        &url,
        &local,
        &["--auth-key-file", kf],
        EXIT_REFUSED,
        "restricted",
    )
    .await;
    drop(relay_p);

    // Our key listed: the key file works.
    let relay_p = relay(
        &remote,
        &["--auth-sync", "--auth-pubkey", &hex::encode(me.pubkey)],
    );
    let url = format!("ws://{}", relay_p.addr);
    let r = orly_sync(&url, &local, &["--auth-key-file", kf, "--json"], &[]).await;
    assert_eq!(r.code, EXIT_OK, "stderr:\n{}", r.stderr);
    assert_eq!(r.last_json()["have"], 0);
    assert_eq!(r.last_json()["need"], 0);
    drop(relay_p);

    // The relay rejects our AUTH event itself (its relay tag names another relay): exit 4.
    let relay_p = relay(
        &remote,
        &["--auth-sync", "--public-url", "wss://relay.example.com"],
    );
    let url = format!("ws://{}", relay_p.addr);
    let r = orly_sync(&url, &local, &[], &[("ORLY_SYNC_AUTH_KEY", SECRET)]).await;
    r.no_panic();
    assert_eq!(r.code, EXIT_AUTH, "stderr:\n{}", r.stderr);
    assert!(
        r.stderr.contains("error: authentication failed"),
        "{}",
        r.stderr
    );
    drop(relay_p);
    assert_eq!(ids(&local), all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_refusal_splits_and_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = notes("split-pre", 10, T0 - 50_000);
    let local = local_store(tmp.path(), &pre);
    let remote = tmp.path().join("remote");
    let big = notes("split-remote", 500, T0);
    import(&remote, &big);
    let relay_p = relay(&remote, &["--max-neg-records", "50"]);
    let url = format!("ws://{}", relay_p.addr);
    // A kinds filter: its set is loaded into memory, so the relay's cap applies (the whole
    // store and time ranges come from the persistent index, uncapped).
    let kind1: Vec<Event> = big.iter().filter(|e| e.kind == 1).cloned().collect();
    assert!(kind1.len() > 50);
    let args = ["--json", "--filter", r#"{"kinds":[1]}"#];
    let r = orly_sync(&url, &local, &args, &[]).await;
    r.no_panic();
    assert_eq!(
        r.code, EXIT_OK,
        "stderr:\n{}\nstdout:\n{}",
        r.stderr, r.stdout
    );
    let last = r.last_json();
    assert_eq!(last["complete"], true, "{last}");
    assert_eq!(last["fetched"], kind1.len(), "{last}");
    assert_eq!(last["need"], kind1.len(), "{last}");
    assert!(last["splits"].as_u64().unwrap_or(0) > 0, "{last}");
    assert_eq!(ids(&local), union(&pre, &kind1));

    // Converged: the split path also ends with nothing to do.
    let r = orly_sync(&url, &local, &args, &[]).await;
    assert_eq!(r.code, EXIT_OK, "stderr:\n{}", r.stderr);
    let last = r.last_json();
    assert_eq!(
        (last["fetched"].as_u64(), last["need"].as_u64()),
        (Some(0), Some(0)),
        "{last}"
    );
    drop(relay_p);
}
