//! The three serialization forms of src/event/canonical.rs against serde_json as the oracle:
//! `Signers` is serde_json's own output, `EscapedDel` the same with DEL written `\u007f`,
//! `RawControls` a serde_json formatter that writes the C0 controls without a short escape raw.
//! An event whose id is the hash of any form is accepted by `id_matches`, and a signed event
//! survives its JSON round trip with id and signature intact (or, past `MAX_CREATED_AT`, is
//! refused for its time).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use orly::event::{Event, EventError, Form, Keys, MAX_CREATED_AT, sign_event};
use serde_json::json;
use serde_json::ser::{CharEscape, Formatter, Serializer};
use sha2::{Digest, Sha256};
use std::io;

#[derive(Arbitrary, Debug)]
struct Input {
    pubkey: [u8; 32],
    created_at: u64,
    kind: u16,
    tags: Vec<Vec<String>>,
    content: String,
    sign: bool,
}

/// serde_json's escaping, except controls without a short escape, which are written raw.
struct RawControls;

impl Formatter for RawControls {
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        match escape {
            CharEscape::AsciiControl(b) => writer.write_all(&[b]),
            other => serde_json::ser::CompactFormatter.write_char_escape(writer, other),
        }
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fuzz_target!(|input: Input| {
    let Input {
        pubkey,
        created_at,
        kind,
        tags,
        content,
        sign,
    } = input;
    let array = json!([0, hex::encode(pubkey), created_at, kind, tags, content]);
    let signers = serde_json::to_vec(&array).expect("a Value serializes");
    let mut escaped_del = Vec::with_capacity(signers.len());
    for &b in &signers {
        // 0x7f is never part of a multi-byte UTF-8 character: every one is a DEL.
        match b {
            0x7f => escaped_del.extend_from_slice(b"\\u007f"),
            b => escaped_del.push(b),
        }
    }
    let mut raw = Vec::new();
    serde::Serialize::serialize(
        &array,
        &mut Serializer::with_formatter(&mut raw, RawControls),
    )
    .expect("a Value serializes");

    let mut ev = Event {
        id: [0; 32],
        pubkey,
        created_at,
        kind,
        tags,
        content,
        sig: [0; 64],
    };
    for (form, bytes) in [
        (Form::Signers, &signers),
        (Form::EscapedDel, &escaped_del),
        (Form::RawControls, &raw),
    ] {
        assert_eq!(
            ev.id_in(form),
            sha(bytes),
            "{form:?}: {}",
            String::from_utf8_lossy(bytes)
        );
        ev.id = sha(bytes);
        assert!(ev.id_matches(), "an id in form {form:?} is accepted");
    }
    assert_eq!(ev.compute_id(), sha(&signers));
    ev.id = [0xee; 32];
    assert!(!ev.id_matches());

    if sign {
        let keys = Keys::from_seed(b"orly-fuzz", 2);
        let signed = sign_event(&keys, ev.created_at, ev.kind, ev.tags, &ev.content);
        let back = Event::from_json_verified(signed.to_json().as_bytes());
        if signed.created_at <= MAX_CREATED_AT {
            assert_eq!(back.as_ref(), Ok(&signed));
        } else {
            assert_eq!(back, Err(EventError::TooLate(signed.created_at)));
        }
    }
});
