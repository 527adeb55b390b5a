//! The anchor event: what it holds, how it is built and signed, and how one fetched from a relay
//! is checked. SECURITY.md ("Public anchors") documents the same format for auditors who check
//! anchors with their own tools; keep the two in step.

use serde::{Deserialize, Serialize};

use super::{ANCHOR_KIND, LABEL_NAMESPACE};
use crate::event::{Event, Keys, sign_event};

/// Version of the content format this code writes and reads.
pub const ANCHOR_VERSION: u32 = 1;

/// The content of an anchor event (a JSON object, fields in this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorPayload {
    /// [`ANCHOR_VERSION`].
    pub v: u32,
    /// The log's identity: hex of the 32-byte Ed25519 audit public key (`audit.pub`).
    pub log: String,
    /// Seq of the checkpoint record.
    pub seq: u64,
    /// Hex SHA-256 of the checkpoint record's line (without its newline): the chain hash there.
    pub hash: String,
    /// The checkpoint record's `time` (RFC 3339 UTC).
    pub time: String,
    /// Event id (hex) of the previous anchor of this log by the same key; `null` for the first.
    pub prev: Option<String>,
}

/// An anchor fetched from a relay and checked: signed by the expected key, of our kind, for
/// the expected log, well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Event id, hex.
    pub id: String,
    /// The event's `created_at` (when it was signed).
    pub created_at: u64,
    /// What it anchors.
    pub payload: AnchorPayload,
}

/// The log identity for an audit public key.
pub fn log_id(audit_key: &ed25519_dalek::VerifyingKey) -> String {
    hex::encode(audit_key.as_bytes())
}

/// Builds and signs the anchor event for `payload`.
pub fn build_anchor(keys: &Keys, created_at: u64, payload: &AnchorPayload) -> Event {
    let mut tags = vec![
        vec!["L".to_string(), LABEL_NAMESPACE.to_string()],
        vec![
            "l".to_string(),
            payload.log.clone(),
            LABEL_NAMESPACE.to_string(),
        ],
    ];
    if let Some(prev) = &payload.prev {
        tags.push(vec!["e".to_string(), prev.clone()]);
    }
    // Serialising a struct of strings and integers cannot fail.
    let content = serde_json::to_string(payload).unwrap_or_default();
    sign_event(keys, created_at, ANCHOR_KIND, tags, &content)
}

/// The relay filter that selects the anchors of `log` signed by `anchor_pubkey` (hex).
pub fn anchor_filter(anchor_pubkey: &str, log: &str) -> serde_json::Value {
    serde_json::json!({
        "kinds": [ANCHOR_KIND],
        "authors": [anchor_pubkey],
        "#l": [log],
    })
}

fn is_hex32(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Checks a fetched event as an anchor of `log` by `anchor_pubkey` (32 bytes). The event's id
/// and signature are verified here: nothing from a relay is trusted.
pub fn parse_anchor(event: &Event, anchor_pubkey: &[u8; 32], log: &str) -> Result<Anchor, String> {
    event.verify().map_err(|e| e.to_string())?;
    if event.kind != ANCHOR_KIND {
        return Err(format!("kind {} is not {ANCHOR_KIND}", event.kind));
    }
    if &event.pubkey != anchor_pubkey {
        return Err("signed by another key".into());
    }
    let payload: AnchorPayload = serde_json::from_str(&event.content)
        .map_err(|e| format!("content is not an anchor: {e}"))?;
    if payload.v != ANCHOR_VERSION {
        return Err(format!(
            "anchor format version {} (this orly reads {ANCHOR_VERSION})",
            payload.v
        ));
    }
    if payload.log != log {
        return Err("anchors another log".into());
    }
    if !event.tag_values("l").any(|l| l == log) {
        return Err("no `l` tag naming the log".into());
    }
    if !is_hex32(&payload.hash) {
        return Err("hash is not 64 lowercase hex digits".into());
    }
    if let Some(prev) = &payload.prev {
        if !is_hex32(prev) {
            return Err("prev is not an event id".into());
        }
        if !event.tag_values("e").any(|e| e == prev) {
            return Err("no `e` tag naming prev".into());
        }
    }
    Ok(Anchor {
        id: event.id_hex(),
        created_at: event.created_at,
        payload,
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    fn payload(prev: Option<String>) -> AnchorPayload {
        AnchorPayload {
            v: ANCHOR_VERSION,
            log: "ab".repeat(32),
            seq: 1001,
            hash: "cd".repeat(32),
            time: "2026-01-01T00:00:00.000Z".into(),
            prev,
        }
    }

    #[test]
    fn an_anchor_round_trips_and_is_refused_when_anything_is_off() {
        let keys = Keys::from_seed(b"anchor", 0);
        let other = Keys::from_seed(b"anchor", 1);
        let first = build_anchor(&keys, 100, &payload(None));
        let a = parse_anchor(&first, &keys.pubkey, &"ab".repeat(32)).expect("parses");
        assert_eq!(a.payload, payload(None));
        assert_eq!(a.id, first.id_hex());
        let second = build_anchor(&keys, 101, &payload(Some(a.id.clone())));
        let b = parse_anchor(&second, &keys.pubkey, &"ab".repeat(32)).expect("parses");
        assert_eq!(b.payload.prev.as_deref(), Some(a.id.as_str()));

        // Another signer, another log, an edited content (id no longer matches).
        assert!(parse_anchor(&first, &other.pubkey, &"ab".repeat(32)).is_err());
        assert!(parse_anchor(&first, &keys.pubkey, &"ef".repeat(32)).is_err());
        let mut edited = first.clone();
        edited.content = edited.content.replace("1001", "1002");
        assert!(parse_anchor(&edited, &keys.pubkey, &"ab".repeat(32)).is_err());
        // Re-signed but malformed: unknown fields, wrong kind.
        let odd = sign_event(&keys, 1, ANCHOR_KIND, first.tags.clone(), "{\"v\":1}");
        assert!(parse_anchor(&odd, &keys.pubkey, &"ab".repeat(32)).is_err());
        let kind1 = sign_event(&keys, 1, 1, first.tags.clone(), &first.content);
        assert!(parse_anchor(&kind1, &keys.pubkey, &"ab".repeat(32)).is_err());
    }
}
