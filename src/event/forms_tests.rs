//! Verification of the serialization forms seen in the wild (see `canonical`): an event signed
//! over any of them verifies, and one changed bit is refused.

use super::canonical::{Form, serialize};
use super::{Event, EventError, Keys};
use sha2::{Digest, Sha256};

/// An event whose id is the hash of its serialization in `form`, signed.
fn signed_in(form: Form, tags: Vec<Vec<String>>, content: &str) -> Event {
    let keys = Keys::from_seed(b"forms-tests", 0);
    let text = serialize(form, &keys.pubkey, 1_700_000_000, 1, &tags, content);
    let id: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    Event {
        id,
        pubkey: keys.pubkey,
        created_at: 1_700_000_000,
        kind: 1,
        tags,
        content: content.into(),
        sig: keys.sign(&id),
    }
}

#[test]
fn every_form_verifies_for_every_special_code_point() {
    for b in (0u8..0x20).chain([0x7f]) {
        let c = char::from(b);
        for form in [Form::Signers, Form::RawControls, Form::EscapedDel] {
            let in_content = signed_in(form, vec![], &format!("a{c}b"));
            let in_tag = signed_in(form, vec![vec!["t".into(), format!("a{c}b")]], "");
            for ev in [in_content, in_tag] {
                assert_eq!(ev.verify(), Ok(()), "{form:?} {b:#04x}");
                // Through JSON as well: what crosses the network and the store.
                let back = Event::from_json_verified(ev.to_json().as_bytes());
                assert_eq!(back.as_ref(), Ok(&ev), "{form:?} {b:#04x}");
                let mut bad = ev.clone();
                if bad.content.is_empty() {
                    bad.tags[0][1] = bad.tags[0][1].replacen('a', "c", 1);
                } else {
                    bad.content = bad.content.replacen('a', "c", 1);
                }
                assert_eq!(bad.verify(), Err(EventError::BadId), "{form:?} {b:#04x}");
            }
        }
    }
}

#[test]
fn the_canonical_id_is_what_signers_hash() {
    let ev = signed_in(Form::Signers, vec![], "nul \u{0} us \u{1f} del \u{7f}");
    assert_eq!(ev.compute_id(), ev.id);
    let raw = signed_in(Form::RawControls, vec![], "nul \u{0}");
    assert_ne!(
        raw.compute_id(),
        raw.id,
        "the raw form is accepted, not canonical"
    );
    assert_eq!(raw.verify(), Ok(()));
}
