//! The record format: what one JSON line holds, how a line is hashed and which messages the audit
//! key signs, and the bounds every field is cut to. Nothing here does I/O.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bound::{MAX_FIELD_BYTES, bound_filter, bound_text};

/// `prev` of the very first record, and the hash an empty chain "ends" with.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation: a checkpoint signature can never be replayed as a head signature.
const CHECKPOINT_DOMAIN: &str = "orly-audit-checkpoint";
const HEAD_DOMAIN: &str = "orly-audit-head";
const RECORD_DOMAIN: &str = "orly-audit-record";

/// `HEAD.json` version this code writes: 2 = every record carries its own signature (`sig`).
/// Version 1 logs (records unsigned, only checkpoints and the head) are still read.
pub(crate) const HEAD_VERSION: u32 = 2;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A policy decision on a request (allowed or denied).
    Decision,
    /// A sync job ended, successfully or not.
    SyncFinished,
    /// A seal over the chain so far, written by the chain itself.
    Checkpoint,
    /// What the caller of an earlier decision (`decision_seq`) really got, when it differs from
    /// that decision: written when the record was durable but the call was refused after it
    /// (the head could not be updated), so the log never says "allowed" for a refused call.
    Outcome,
    /// Written by the writer at start-up when it found something to report about the log it
    /// resumes: lines it did not write (`excluded`), allowed syncs that never finished
    /// (`interrupted`), decisions that were never confirmed to their caller (`unconfirmed`).
    Recovery,
}

/// Event counts of a finished sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    /// Ids only we had.
    pub have: u64,
    /// Ids only the peer had.
    pub need: u64,
    /// Events fetched from the peer and newly stored.
    pub fetched: u64,
    /// Events sent to the peer and accepted by it as new.
    pub sent: u64,
    /// Events moved that the receiving side already had (stored first by another sync).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub already_had: u64,
    /// Events received and dropped (failed verification, not asked for): the sides differ.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// Uploads the peer refused: the sides differ.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rejected: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Lines of a segment that a restarted writer found after the last record it could
/// authenticate and left out of the chain (listed in a [`AuditEvent::Recovery`] record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    /// Segment name.
    pub file: String,
    /// First excluded line (1-based); everything from there to the end of the file is excluded.
    pub line: u64,
    /// Bytes excluded (from the start of that line to the end of the file).
    pub bytes: u64,
    /// Hex SHA-256 of those bytes, so they cannot be changed afterwards unnoticed.
    pub sha256: String,
    /// Why the first excluded line could not be authenticated.
    pub why: String,
}

/// The body of a checkpoint record: the last record it covers and the audit key's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSeal {
    /// Seq of the covered record (the one right before the checkpoint; 0 for an empty chain).
    pub seq: u64,
    /// Hash of the covered record's line; always equals the checkpoint's own `prev`.
    pub hash: String,
    /// Base64 Ed25519 signature over the UTF-8 bytes of
    /// `"orly-audit-checkpoint\n{seq}\n{hash}"`; absent when no key is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// Seqs of the allowed syncs without a finished record when the checkpoint was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_syncs: Vec<u64>,
}

/// One line of the audit log, exactly as serialised. Field order is the on-disk order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time with milliseconds, e.g. `2025-01-31T12:00:00.123Z`.
    pub time: String,
    /// 1 for the first record, +1 per record across all segments.
    pub seq: u64,
    /// Hex SHA-256 of the previous record's line (without its newline); [`ZERO_HASH`] first.
    pub prev: String,
    /// What the record is about.
    pub event: AuditEvent,
    /// Decision outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    /// Why the decision was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Admin identity (from the client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// Hex SHA-256 of the client certificate (DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
    /// The token's `jti` (an identifier, never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_jti: Option<String>,
    /// Remote socket address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Trace id of the RPC span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// gRPC method name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<String>,
    /// Peer relay URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The sync filter (NIP-01 filter JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<serde_json::Value>,
    /// Sync direction ("down", "up", "both").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Sync counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<SyncCounts>,
    /// Sync duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why a sync failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On an allowed decision that starts a sync: a `sync_finished` record with this record's
    /// seq as its `decision_seq` must follow (else the sync was interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_sync: Option<bool>,
    /// On `sync_finished` and `outcome`: the seq of the decision this record completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_seq: Option<u64>,
    /// On `recovery`: seqs of allowed syncs that have no finished record (the writer stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<Vec<u64>>,
    /// On `recovery`: seqs of allowed decisions written but never confirmed by `HEAD.json`
    /// (the writer stopped between the record and the head): their callers most likely got no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<Vec<u64>>,
    /// On `recovery`: lines left out of the chain because they could not be authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<Vec<Excluded>>,
    /// Present on, and only on, checkpoint records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSeal>,
    /// Base64 Ed25519 signature by the audit key over
    /// `"orly-audit-record\n" + hex(SHA-256(line without this field))`; always the last field.
    /// Absent when the writer has no key (and in logs of format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// The caller's part of a record: everything but `time`, `seq` and `prev`, which the chain fills.
///
/// Built with [`AuditEntry::decision`] or [`AuditEntry::sync_finished`] and the setters. There is
/// deliberately no setter for a token, key or any other secret. Values are kept as given until
/// the chain writes the record, which cuts every field to its bound ([`MAX_FIELD_BYTES`],
/// [`MAX_FILTER_BYTES`]) — after [`AuditEntry::redact`], so a secret is never hashed into a
/// truncation marker.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    record: AuditRecord,
}

macro_rules! string_setters {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.record.$name = Some(value.into());
            self
        }
    )*};
}

impl AuditEntry {
    fn new(event: AuditEvent) -> Self {
        Self {
            record: AuditRecord {
                time: String::new(),
                seq: 0,
                prev: String::new(),
                event,
                allowed: None,
                reason: None,
                admin: None,
                cert_fingerprint: None,
                token_jti: None,
                source: None,
                trace_id: None,
                rpc: None,
                peer: None,
                filter: None,
                direction: None,
                counts: None,
                duration_ms: None,
                error: None,
                starts_sync: None,
                decision_seq: None,
                interrupted: None,
                unconfirmed: None,
                excluded: None,
                checkpoint: None,
                sig: None,
            },
        }
    }

    /// A policy decision, allowed or denied, with its reason.
    pub fn decision(allowed: bool, reason: impl Into<String>) -> Self {
        let mut entry = Self::new(AuditEvent::Decision);
        entry.record.allowed = Some(allowed);
        entry.record.reason = Some(reason.into());
        entry
    }

    /// A finished sync; add counts, duration and error with the setters.
    pub fn sync_finished() -> Self {
        Self::new(AuditEvent::SyncFinished)
    }

    string_setters! {
        /// Admin identity.
        admin;
        /// Hex SHA-256 of the client certificate; see also [`AuditEntry::cert_der`].
        cert_fingerprint;
        /// Token `jti`.
        token_jti;
        /// Remote address.
        source;
        /// Trace id.
        trace_id;
        /// gRPC method name.
        rpc;
        /// Peer relay URL.
        peer;
        /// Sync direction.
        direction;
        /// Failure of a sync.
        error;
        /// Replaces the reason given to [`AuditEntry::decision`], or sets one on a sync record.
        reason;
    }

    /// Sets `cert_fingerprint` to the hex SHA-256 of the certificate's DER bytes.
    #[must_use]
    pub fn cert_der(mut self, der: &[u8]) -> Self {
        self.record.cert_fingerprint = Some(hex::encode(Sha256::digest(der)));
        self
    }

    /// The sync filter as JSON.
    #[must_use]
    pub fn filter(mut self, filter: serde_json::Value) -> Self {
        self.record.filter = Some(filter);
        self
    }

    /// Sync counts.
    #[must_use]
    pub fn counts(mut self, counts: SyncCounts) -> Self {
        self.record.counts = Some(counts);
        self
    }

    /// Sync duration in milliseconds.
    #[must_use]
    pub fn duration_ms(mut self, ms: u64) -> Self {
        self.record.duration_ms = Some(ms);
        self
    }

    /// Marks an allowed decision as the start of a sync, whose `sync_finished` record will name
    /// it with [`AuditEntry::decision_seq`].
    #[must_use]
    pub fn starts_sync(mut self) -> Self {
        self.record.starts_sync = Some(true);
        self
    }

    /// The seq of the decision this record completes (the sync's allow record).
    #[must_use]
    pub fn decision_seq(mut self, seq: u64) -> Self {
        self.record.decision_seq = Some(seq);
        self
    }

    /// Passes the peer through `url` and the free-text fields (reason, error) through `text`:
    /// the gateway's way to keep URL secrets out of the log, before anything is cut or hashed.
    #[must_use]
    pub fn redact(mut self, url: impl Fn(&str) -> String, text: impl Fn(&str) -> String) -> Self {
        let r = &mut self.record;
        r.peer = r.peer.as_deref().map(url);
        r.reason = r.reason.as_deref().map(&text);
        r.error = r.error.as_deref().map(&text);
        self
    }

    /// The outcome a caller really got for the decision `of`, copying who and what from it.
    pub(crate) fn outcome_of(of: &AuditRecord, reason: String) -> Self {
        let mut e = Self::new(AuditEvent::Outcome);
        let r = &mut e.record;
        r.allowed = Some(false);
        r.reason = Some(reason);
        r.decision_seq = Some(of.seq);
        r.admin.clone_from(&of.admin);
        r.cert_fingerprint.clone_from(&of.cert_fingerprint);
        r.token_jti.clone_from(&of.token_jti);
        r.source.clone_from(&of.source);
        r.trace_id.clone_from(&of.trace_id);
        r.rpc.clone_from(&of.rpc);
        e
    }

    /// A recovery record (see [`AuditEvent::Recovery`]). Its lists are bounded by what the
    /// service can have in flight: `interrupted` by the concurrency cap, `unconfirmed` by the
    /// few calls between the last head update and the stop, `excluded` by the segments a
    /// writer accepts to leave out.
    pub(crate) fn recovery(
        reason: String,
        mut excluded: Vec<Excluded>,
        interrupted: Vec<u64>,
        unconfirmed: Vec<u64>,
    ) -> Self {
        let list = |v: Vec<u64>| (!v.is_empty()).then_some(v);
        for x in &mut excluded {
            x.why = bound_text(std::mem::take(&mut x.why), MAX_FIELD_BYTES);
        }
        let mut e = Self::new(AuditEvent::Recovery);
        e.record.reason = Some(reason);
        e.record.excluded = (!excluded.is_empty()).then_some(excluded);
        e.record.interrupted = list(interrupted);
        e.record.unconfirmed = list(unconfirmed);
        e
    }

    /// Completes the record with the chain's fields, every field cut to its bound.
    pub(crate) fn into_record(self, time: String, seq: u64, prev: String) -> AuditRecord {
        let cut = |v: Option<String>| v.map(|v| bound_text(v, MAX_FIELD_BYTES));
        let r = self.record;
        AuditRecord {
            time,
            seq,
            prev,
            reason: cut(r.reason),
            admin: cut(r.admin),
            cert_fingerprint: cut(r.cert_fingerprint),
            token_jti: cut(r.token_jti),
            source: cut(r.source),
            trace_id: cut(r.trace_id),
            rpc: cut(r.rpc),
            peer: cut(r.peer),
            filter: r.filter.map(bound_filter),
            direction: cut(r.direction),
            error: cut(r.error),
            sig: None,
            ..r
        }
    }
}

impl AuditRecord {
    /// A checkpoint record sealing `(seq - 1, prev)`, listing the syncs still open.
    pub(crate) fn checkpoint(
        time: String,
        seq: u64,
        prev: String,
        sig: Option<String>,
        open_syncs: Vec<u64>,
    ) -> Self {
        let mut record = AuditEntry::new(AuditEvent::Checkpoint).into_record(time, seq, prev);
        record.checkpoint = Some(CheckpointSeal {
            seq: seq - 1,
            hash: record.prev.clone(),
            sig,
            open_syncs,
        });
        record
    }
}

/// Hex SHA-256 of one line's bytes, without the trailing newline: what the next `prev` holds.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The exact bytes a checkpoint signature covers.
pub(crate) fn checkpoint_message(seq: u64, hash: &str) -> String {
    format!("{CHECKPOINT_DOMAIN}\n{seq}\n{hash}")
}

/// The exact bytes a record signature covers: the record's line without its `sig` field.
pub(crate) fn record_message(body: &[u8]) -> String {
    format!("{RECORD_DOMAIN}\n{}", hex::encode(Sha256::digest(body)))
}

/// The exact bytes a head signature covers.
pub(crate) fn head_message(seq: u64, hash: &str) -> String {
    format!("{HEAD_DOMAIN}\n{seq}\n{hash}")
}

/// `HEAD.json`: the last record the writer acknowledged, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    /// Format version: [`HEAD_VERSION`] when written by this code; 1 for older logs.
    pub version: u32,
    /// Seq of the last record (0 when the chain is empty).
    pub seq: u64,
    /// Hash of the last record's line ([`ZERO_HASH`] when empty).
    pub hash: String,
    /// Segment holding the last record, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Base64 Ed25519 signature over `"orly-audit-head\n{seq}\n{hash}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn optional_fields_are_skipped_and_order_is_stable() {
        let rec = AuditEntry::decision(false, "no policy")
            .admin("alice")
            .rpc("/orly.Sync/Start")
            .into_record("T".into(), 1, ZERO_HASH.into());
        let line = serde_json::to_string(&rec).expect("serialise");
        assert_eq!(
            line,
            format!(
                r#"{{"time":"T","seq":1,"prev":"{ZERO_HASH}","event":"decision","allowed":false,"reason":"no policy","admin":"alice","rpc":"/orly.Sync/Start"}}"#
            )
        );
        let back: AuditRecord = serde_json::from_str(&line).expect("parse");
        assert_eq!(back, rec);
    }

    #[test]
    fn checkpoint_covers_previous_record() {
        let rec = AuditRecord::checkpoint("T".into(), 8, "ab".into(), None, vec![3]);
        let seal = rec.checkpoint.expect("seal");
        assert_eq!((seal.seq, seal.hash.as_str()), (7, "ab"));
        assert_eq!(rec.event, AuditEvent::Checkpoint);
    }
}
