//! The record format: what one JSON line holds, how a line is hashed and which messages the audit
//! key signs. Nothing here does I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the very first record, and the hash an empty chain "ends" with.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation: a checkpoint signature can never be replayed as a head signature.
const CHECKPOINT_DOMAIN: &str = "orly-audit-checkpoint";
const HEAD_DOMAIN: &str = "orly-audit-head";

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
    /// Present on, and only on, checkpoint records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSeal>,
}

/// The caller's part of a record: everything but `time`, `seq` and `prev`, which the chain fills.
///
/// Built with [`AuditEntry::decision`] or [`AuditEntry::sync_finished`] and the setters. There is
/// deliberately no setter for a token, key or any other secret.
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
                checkpoint: None,
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

    /// Completes the record with the chain's fields.
    pub(crate) fn into_record(self, time: String, seq: u64, prev: String) -> AuditRecord {
        AuditRecord {
            time,
            seq,
            prev,
            ..self.record
        }
    }
}

impl AuditRecord {
    /// A checkpoint record sealing `(seq - 1, prev)`.
    pub(crate) fn checkpoint(time: String, seq: u64, prev: String, sig: Option<String>) -> Self {
        let mut record = AuditEntry::new(AuditEvent::Checkpoint).into_record(time, seq, prev);
        record.checkpoint = Some(CheckpointSeal {
            seq: seq - 1,
            hash: record.prev.clone(),
            sig,
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

/// The exact bytes a head signature covers.
pub(crate) fn head_message(seq: u64, hash: &str) -> String {
    format!("{HEAD_DOMAIN}\n{seq}\n{hash}")
}

/// `HEAD.json`: the last record the writer acknowledged, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    /// Format version, 1.
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

/// Current time as RFC 3339 UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    format_rfc3339_millis(SystemTime::now())
}

/// Formats without a date library; times before 1970 clamp to the epoch.
pub(crate) fn format_rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn formats_rfc3339_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_007); // leap day 2024
        assert_eq!(format_rfc3339_millis(t), "2024-02-29T23:59:59.007Z");
        assert_eq!(
            format_rfc3339_millis(UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_rfc3339_millis(t), "2000-02-29T00:00:00.000Z");
    }

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
        let rec = AuditRecord::checkpoint("T".into(), 8, "ab".into(), None);
        let seal = rec.checkpoint.expect("seal");
        assert_eq!((seal.seq, seal.hash.as_str()), (7, "ab"));
        assert_eq!(rec.event, AuditEvent::Checkpoint);
    }
}
