//! Public anchors: checkpoints of the audit log published as signed Nostr events on relays the
//! operator does not control, so that a log rewritten and re-signed with the audit key is still
//! caught (SECURITY.md, "Public anchors", documents the event format for auditors).
//!
//! - [`format`]: the anchor event (kind [`ANCHOR_KIND`], a regular kind: relays keep every
//!   anchor, the history is the evidence), built, signed and checked.
//! - [`Anchorer`]: the sync service's task — an anchor per checkpoint, published through the
//!   peer client sync uses, retried with backoff, persisted in `ANCHORS.json`. Never a gate.
//! - [`fetch_anchors`] and [`check`]: `orly audit verify --anchors`.
//!
//! Owns `ANCHORS.json` in the audit directory; reads the chain only through [`AuditChain`]'s
//! public API and the verifier's summary, and never writes a record itself (a forced checkpoint
//! goes through [`AuditChain::checkpoint`]).
//!
//! [`AuditChain`]: crate::audit::AuditChain
//! [`AuditChain::checkpoint`]: crate::audit::AuditChain::checkpoint

pub mod check;
pub mod format;
pub mod relay;
mod service;
pub mod state;
#[cfg(test)]
mod tests;

pub use check::{AnchorCheck, check};
pub use format::{Anchor, AnchorPayload, anchor_filter, build_anchor, log_id, parse_anchor};
pub use service::{AnchorSettings, AnchorTask, Anchorer};

use crate::peer::PeerOptions;

/// The event kind of an anchor: regular (1000–9999), so relays keep every one. An addressable
/// kind would keep only the newest per `d` tag, and a replaced anchor is exactly the history an
/// insider wants gone. Not assigned by any NIP we know of.
pub const ANCHOR_KIND: u16 = 3117;

/// NIP-32 label namespace of the `L`/`l` tags that name the log.
pub const LABEL_NAMESPACE: &str = "orly-audit";

/// Why anchoring could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The settings cannot work.
    #[error("audit anchors: {0}")]
    Config(String),
    /// `ANCHORS.json` could not be read or belongs to another log.
    #[error("audit anchors: {0}")]
    State(String),
}

/// What the relays hold for one log.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Valid anchors of the log by the expected key, distinct.
    pub anchors: Vec<Anchor>,
    /// Relays that could not be read, with why.
    pub relay_errors: Vec<(String, String)>,
    /// Events that matched the filter but are not valid anchors, with why.
    pub invalid: Vec<(String, String)>,
}

/// Fetches the anchors of `log` signed by `anchor_pubkey` from every relay (in parallel), keeps
/// those that check out, and merges them by event id.
pub async fn fetch_anchors(
    relays: &[String],
    anchor_pubkey: &[u8; 32],
    log: &str,
    opts: &PeerOptions,
) -> Fetched {
    let filter = anchor_filter(&hex::encode(anchor_pubkey), log);
    let fetches = relays.iter().map(|url| relay::fetch(url, &filter, opts));
    let results = futures_util::future::join_all(fetches).await;
    let mut out = Fetched::default();
    let mut seen = std::collections::BTreeSet::new();
    for (url, res) in relays.iter().zip(results) {
        match res {
            Ok(events) => {
                for ev in events {
                    let id = ev.id_hex();
                    if !seen.insert(id.clone()) {
                        continue;
                    }
                    match parse_anchor(&ev, anchor_pubkey, log) {
                        Ok(a) => out.anchors.push(a),
                        Err(why) => out.invalid.push((id, why)),
                    }
                }
            }
            Err(why) => out.relay_errors.push((
                crate::peer::redact_url(url),
                crate::peer::redact_urls_in(&why),
            )),
        }
    }
    out.anchors.sort_by_key(|a| (a.payload.seq, a.created_at));
    out
}
