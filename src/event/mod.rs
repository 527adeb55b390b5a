//! The NIP-01 event: strict parsing, canonical serialization, id and BIP-340 signature checks,
//! kind classes and filters.
//!
//! This module owns what an event *is*. It knows nothing of storage or the network: every other
//! module hands it bytes and gets back a verified [`Event`] or an [`EventError`] saying why not.

mod canonical;
mod filter;
#[cfg(test)]
mod forms_tests;
mod hexbytes;
mod kind;
mod parse;
mod sign;
pub mod wire;

pub use canonical::{Form, canonical_json};
pub use filter::{Filter, FilterError};
pub use hexbytes::{decode_hex32, decode_hex64};
pub use kind::KindClass;
pub use sign::{Keys, sign_event};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Largest event accepted from anywhere, in bytes of JSON (the relay and importer cap lines too).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Latest `created_at` accepted (2^63 - 1): the gRPC API carries times as int64, so a later
/// event would be stored by an embedded store but refused by orly-db, and a sync over orly-db
/// that fetched one would fail as a whole.
pub const MAX_CREATED_AT: u64 = i64::MAX as u64;

/// A 32-byte event id: sha256 of the canonical serialization.
pub type EventId = [u8; 32];
/// A 32-byte x-only public key.
pub type PubKey = [u8; 32];

/// A NIP-01 event whose fields have been parsed strictly.
///
/// Constructing one does not prove it is authentic: call [`Event::verify`] (or use
/// [`Event::from_json_verified`]) on anything that came from outside.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "parse::RawEvent")]
pub struct Event {
    /// sha256 of the canonical serialization.
    pub id: EventId,
    /// Author's x-only public key.
    pub pubkey: PubKey,
    /// Unix seconds, as claimed by the author.
    pub created_at: u64,
    /// Event kind, 0..=65535.
    pub kind: u16,
    /// Tags: arrays of strings, the first being the tag name.
    pub tags: Vec<Vec<String>>,
    /// Arbitrary content.
    pub content: String,
    /// BIP-340 signature over the id.
    pub sig: [u8; 64],
}

/// Why an event was refused. The `Display` text is a NIP-01 `OK`/`CLOSED` style reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not valid JSON, or not the NIP-01 shape.
    #[error("invalid: malformed event: {0}")]
    Malformed(String),
    /// The event is larger than [`MAX_EVENT_BYTES`].
    #[error("invalid: event too large ({0} bytes, max {MAX_EVENT_BYTES})")]
    TooLarge(usize),
    /// The id is not the sha256 of the canonical serialization.
    #[error("invalid: event id does not match its content")]
    BadId,
    /// The pubkey is not a valid x-only point.
    #[error("invalid: bad public key")]
    BadPubkey,
    /// The signature does not verify.
    #[error("invalid: bad signature")]
    BadSignature,
    /// `created_at` is later than [`MAX_CREATED_AT`].
    #[error("invalid: created_at {0} is later than {MAX_CREATED_AT}")]
    TooLate(u64),
}

impl Event {
    /// Parses an event from JSON without checking id or signature.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(bytes.len()));
        }
        // serde would also accept the struct's fields as a JSON array; NIP-01 says object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(EventError::Malformed(
                "an event must be a JSON object, not an array".into(),
            ));
        }
        serde_json::from_slice(bytes).map_err(malformed)
    }

    /// Parses and fully verifies (id and signature) an event from JSON.
    pub fn from_json_verified(bytes: &[u8]) -> Result<Self, EventError> {
        let ev = Self::from_json(bytes)?;
        ev.verify()?;
        Ok(ev)
    }

    /// Builds an event from a `serde_json::Value` (e.g. the third element of an `EVENT` message).
    pub fn from_value(v: serde_json::Value) -> Result<Self, EventError> {
        if !v.is_object() {
            return Err(EventError::Malformed(
                "an event must be a JSON object".into(),
            ));
        }
        serde_json::from_value(v).map_err(malformed)
    }

    /// The standard JSON form (valid JSON, as sent on the wire and exported).
    pub fn to_json(&self) -> String {
        // Serializing our own struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// sha256 of the canonical serialization: what `id` must be.
    pub fn compute_id(&self) -> EventId {
        self.id_in(Form::Signers)
    }

    /// sha256 of the serialization in `form`.
    pub fn id_in(&self, form: Form) -> EventId {
        let mut h = Sha256::new();
        canonical::write_canonical(
            &mut h,
            form,
            &self.pubkey,
            self.created_at,
            self.kind,
            &self.tags,
            &self.content,
        );
        h.finalize().into()
    }

    /// Whether `id` is the hash of this event in a form some signer writes: the canonical one,
    /// or, only for text holding control characters or DEL, one of [`Form::FALLBACKS`].
    pub fn id_matches(&self) -> bool {
        self.compute_id() == self.id
            || (canonical::needs_other_forms(&self.tags, &self.content)
                && Form::FALLBACKS.iter().any(|&f| self.id_in(f) == self.id))
    }

    /// Checks that `created_at` is at most [`MAX_CREATED_AT`], that the id matches the content
    /// and that the signature verifies: what every event from outside must pass to be stored.
    pub fn verify(&self) -> Result<(), EventError> {
        if self.created_at > MAX_CREATED_AT {
            return Err(EventError::TooLate(self.created_at));
        }
        if !self.id_matches() {
            return Err(EventError::BadId);
        }
        self.verify_signature()
    }

    /// Checks the BIP-340 signature over the (claimed) id only.
    pub fn verify_signature(&self) -> Result<(), EventError> {
        let pk = parsed_pubkey(&self.pubkey)?;
        let sig = secp256k1::schnorr::Signature::from_byte_array(self.sig);
        secp256k1::schnorr::verify(&sig, &self.id, &pk).map_err(|_| EventError::BadSignature)
    }

    /// The kind class, which decides storage semantics.
    pub fn class(&self) -> KindClass {
        KindClass::of(self.kind)
    }

    /// Values of the first element of tags named `name`, in order.
    pub fn tag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tags
            .iter()
            .filter(move |t| t.first().map(String::as_str) == Some(name))
            .filter_map(|t| t.get(1).map(String::as_str))
    }

    /// The `d` tag value of an addressable event ("" when absent, as NIP-01 says).
    pub fn d_tag(&self) -> &str {
        self.tag_values("d").next().unwrap_or("")
    }

    /// Lowercase hex of the id.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

/// Parsing an x-only key costs a square root; a store sees the same authors again and again,
/// so each thread keeps the keys it parsed recently.
fn parsed_pubkey(pk: &PubKey) -> Result<secp256k1::XOnlyPublicKey, EventError> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    const CAP: usize = 4096;
    thread_local! {
        static KEYS: RefCell<HashMap<PubKey, secp256k1::XOnlyPublicKey>> = RefCell::new(HashMap::new());
    }
    KEYS.with(|cache| {
        if let Some(k) = cache.borrow().get(pk) {
            return Ok(*k);
        }
        let k =
            secp256k1::XOnlyPublicKey::from_byte_array(*pk).map_err(|_| EventError::BadPubkey)?;
        let mut c = cache.borrow_mut();
        if c.len() >= CAP {
            c.clear();
        }
        c.insert(*pk, k);
        Ok(k)
    })
}

/// serde's "expected struct RawEvent" means the JSON was not an object; say so plainly.
fn malformed(e: serde_json::Error) -> EventError {
    let m = e.to_string();
    match m.split_once(", expected struct RawEvent") {
        Some((got, at)) => EventError::Malformed(format!(
            "an event must be a JSON object, got {}{at}",
            got.trim_start_matches("invalid type: ")
        )),
        None => EventError::Malformed(m),
    }
}
