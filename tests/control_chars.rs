//! Events whose content or tag values hold control characters, signed by nostr-sdk (code nobody
//! here wrote, which hashes serde_json's output: `\u00XX` for C0 controls without a short
//! escape, DEL raw). Every code point 0x00–0x1f and 0x7f, in content and in a tag value, must be
//! accepted by `orly import`, by `orly-relay` (`EVENT` → `OK true`) and by `orly sync` from a
//! nostr-relay-builder relay; the same events with one bit of their text changed are refused
//! everywhere, and a sync counts them as dropped.

mod common;
use common::*;
#[path = "common/nrb.rs"]
mod nrb;
use nrb::*;

use futures_util::{SinkExt, StreamExt};
use nostr_relay_builder::RelayBuilder;
use nostr_sdk::prelude::{EventBuilder, JsonUtil, Keys as NKeys, Kind, Tag, Timestamp};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Every code point a signer writes differently from NIP-01's literal text.
fn special_code_points() -> impl Iterator<Item = u8> {
    (0u8..0x20).chain([0x7f])
}

/// Two events per code point, signed by nostr-sdk: one with it in the content, one in a tag
/// value. Returned as NIP-01 JSON, exactly as nostr-sdk writes it.
fn sdk_signed() -> Vec<String> {
    let keys = NKeys::parse("6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e")
        .expect("test key");
    let mut out = Vec::new();
    for (i, b) in special_code_points().enumerate() {
        let c = char::from(b);
        let at = Timestamp::from(1_700_000_000 + 2 * i as u64);
        let in_content = EventBuilder::new(Kind::TextNote, format!("cp {b:02x}: a{c}b"))
            .custom_created_at(at)
            .sign_with_keys(&keys)
            .expect("sign");
        let in_tag = EventBuilder::new(Kind::TextNote, format!("tag holds cp {b:02x}"))
            .tags([Tag::parse(["t", &format!("a{c}b")]).expect("tag")])
            .custom_created_at(Timestamp::from(at.as_secs() + 1))
            .sign_with_keys(&keys)
            .expect("sign");
        for e in [in_content, in_tag] {
            e.verify().expect("nostr-sdk verifies what it signed");
            out.push(e.as_json());
        }
    }
    out
}

/// The same events with one bit of their text changed ('a' → 'c' before the control
/// character), id and signature kept: each must be refused.
fn one_bit_off(events: &[String]) -> Vec<String> {
    events
        .iter()
        .map(|j| {
            let mut v: Value = serde_json::from_str(j).expect("json");
            let flip = |s: &str| s.replacen('a', "c", 1);
            if let Some(t) = v["tags"][0][1].as_str().map(flip) {
                v["tags"][0][1] = json!(t);
            } else {
                let c = flip(v["content"].as_str().expect("content"));
                v["content"] = json!(c);
            }
            v.to_string()
        })
        .collect()
}

fn ids_of_json(events: &[String]) -> Ids {
    events
        .iter()
        .map(|j| {
            serde_json::from_str::<Value>(j).expect("json")["id"]
                .as_str()
                .unwrap()
                .into()
        })
        .collect()
}

#[test]
fn orly_import_accepts_every_control_character_and_refuses_one_bit_off() {
    let good = sdk_signed();
    assert_eq!(good.len(), 66);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let input = tmp.path().join("in.jsonl");
    let mut lines = good.join("\n");
    lines.push('\n');
    lines.push_str(&one_bit_off(&good).join("\n"));
    std::fs::write(&input, lines).unwrap();
    let (code, out, err) = orly(&[
        "import",
        input.to_str().unwrap(),
        "--data-dir",
        store.to_str().unwrap(),
    ]);
    let report = format!("{out}{err}");
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        ids(&store).into_iter().collect::<Ids>(),
        ids_of_json(&good),
        "every signed event is stored: {report}"
    );
    let mismatches = report
        .matches("event id does not match its content")
        .count();
    assert_eq!(mismatches, 66, "each altered event is named: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_relay_answers_ok_true_for_every_control_character() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = relay(&tmp.path().join("store"), &[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}", relay.addr))
        .await
        .expect("connect");
    let good = sdk_signed();
    let bad = one_bit_off(&good);
    for (events, accepted) in [(&good, true), (&bad, false)] {
        for e in events {
            let id = serde_json::from_str::<Value>(e).unwrap()["id"].clone();
            ws.send(Message::text(format!("[\"EVENT\",{e}]")))
                .await
                .unwrap();
            let ok = loop {
                let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .expect("an OK within 10 s")
                    .expect("open")
                    .expect("frame");
                let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
                // The relay offers a NIP-42 challenge on connect; writes do not need it here.
                if v[0] != "AUTH" {
                    break v;
                }
            };
            assert_eq!(ok[0], "OK", "{ok}");
            assert_eq!(ok[1], id, "{ok}");
            assert_eq!(ok[2], accepted, "{e} → {ok}");
            if !accepted {
                assert_eq!(
                    ok[3], "invalid: event id does not match its content",
                    "{ok}"
                );
            }
        }
    }
    drop(ws);
    drop(relay);
    assert_eq!(
        ids(&tmp.path().join("store")).into_iter().collect::<Ids>(),
        ids_of_json(&good)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_fetches_every_control_character_from_nostr_relay_builder() {
    let good: Vec<Event> = sdk_signed()
        .iter()
        .map(|j| Event::from_json(j.as_bytes()).expect("parses"))
        .collect();
    let remote = local_relay_with(&good, RelayBuilder::default().rate_limit(no_rate_limit())).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (code, last, err, _) = orly_sync(&remote.url, &store, "down", "{}").await;
    assert_eq!(code, 0, "{last} {err}");
    assert_eq!(
        (n(&last, "fetched"), n(&last, "dropped")),
        (66, 0),
        "{last}"
    );
    assert_eq!(store_ids(&store), ids_of_json(&sdk_signed()));
    // Converged: the next sync has nothing to ask for.
    let (code, last, err, _) = orly_sync(&remote.url, &store, "down", "{}").await;
    assert_eq!(code, 0, "{last} {err}");
    assert_eq!((n(&last, "need"), n(&last, "fetched")), (0, 0), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orly_sync_drops_events_one_bit_off() {
    let bad: Vec<Event> = one_bit_off(&sdk_signed())
        .iter()
        .map(|j| Event::from_json(j.as_bytes()).expect("parses"))
        .collect();
    let remote = local_relay_with(&bad, RelayBuilder::default().rate_limit(no_rate_limit())).await;
    assert_eq!(
        db_ids(&remote.db).await.len(),
        66,
        "the relay serves them as they are"
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (code, last, err, _) = orly_sync(&remote.url, &store, "down", "{}").await;
    assert_ne!(
        code, 0,
        "a sync that dropped events must not say success: {last} {err}"
    );
    assert_eq!(
        (n(&last, "fetched"), n(&last, "dropped")),
        (0, 66),
        "{last}"
    );
    assert!(store_ids(&store).is_empty());
}

fn store_ids(dir: &std::path::Path) -> Ids {
    ids(dir).into_iter().collect()
}
