//! Event JSON from outside (a relay frame, an import line): strict parse, then our own JSON and
//! the protobuf form must round-trip to the same event (any event `verify` can accept), the
//! canonical serialization must be the JSON array NIP-01 describes, and the id and signature
//! checks must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orly::event::{Event, EventError, Form, MAX_CREATED_AT, canonical_json};
use orly::proto::orlysync::common::v1 as pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = Event::from_json(data) else {
        return;
    };
    let json = ev.to_json();
    assert_eq!(
        Event::from_json(json.as_bytes()).as_ref(),
        Ok(&ev),
        "{json}"
    );
    // The relay reads events out of a parsed message: the same event through a Value.
    let v: Value = serde_json::from_slice(data).expect("parsed as an event, so JSON");
    assert_eq!(Event::from_value(v).as_ref(), Ok(&ev));

    let canonical = canonical_json(&ev.pubkey, ev.created_at, ev.kind, &ev.tags, &ev.content);
    let parsed: Value = serde_json::from_str(&canonical).expect("canonical form is JSON");
    let want = json!([
        0,
        hex::encode(ev.pubkey),
        ev.created_at,
        ev.kind,
        ev.tags,
        ev.content
    ]);
    assert_eq!(parsed, want);
    assert_eq!(
        ev.compute_id(),
        <[u8; 32]>::from(Sha256::digest(&canonical))
    );
    for form in [Form::Signers, Form::RawControls, Form::EscapedDel] {
        let _ = ev.id_in(form);
    }
    let _ = ev.id_matches();
    let _ = ev.verify();

    // orly-db stores and serves events as protobuf, whose times are int64: every event that can
    // be accepted survives it, and no later one is accepted.
    if ev.created_at <= MAX_CREATED_AT {
        let back = Event::try_from(pb::Event::from(ev.clone()));
        assert_eq!(back.as_ref(), Ok(&ev), "protobuf round trip");
    } else {
        assert_eq!(ev.verify(), Err(EventError::TooLate(ev.created_at)));
    }
});
