//! Tamper-evident, fail-closed audit log (DESIGN.md §7, "Audit").
//!
//! Owns the audit directory and everything in it: the `audit-NNNNNN.jsonl` segments, `HEAD.json`,
//! the record format, the hash chain, signed checkpoints and the offline verifier behind
//! `orly audit verify`. It must not touch tokens or any key other than the audit key pair: the
//! record API has no field that could carry a secret, on purpose.
//!
//! - [`AuditChain`] is the writer: one JSON line per record, each carrying the SHA-256 of the
//!   previous line and its own Ed25519 signature by the audit key, fsynced before
//!   [`AuditChain::append`] returns, so a caller that only proceeds on `Ok` fails closed.
//!   Every field is cut to a bound ([`MAX_FIELD_BYTES`]), so a record is at most
//!   [`MAX_RECORD_BYTES`] whatever a caller sends.
//! - Checkpoints (every `checkpoint_every` records, at rotation, on [`AuditChain::checkpoint`])
//!   sign `(seq, hash)` with the Ed25519 audit key, so rewriting the chain needs the key.
//! - `HEAD.json` is re-signed on every append so that cutting records off the end is detectable.
//! - A restarted writer adopts only records it can authenticate, leaves the rest out (recording
//!   the incident), and lists the syncs that never finished.
//! - [`verify`] walks the directory and names the first broken or unauthenticated record.

pub mod anchor;
mod bound;
mod chain;
mod clock;
mod fault;
mod files;
mod keys;
mod record;
mod report;
mod resume;
mod signed;
mod verify;

#[cfg(test)]
mod tamper_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trust_tests;

use std::io;
use std::path::PathBuf;

pub use bound::{MAX_FIELD_BYTES, MAX_FILTER_BYTES, MAX_RECORD_BYTES, bound_text};
pub use chain::{AuditChain, AuditRecordRef, CheckpointWritten};
/// For other modules' tests: the simulated write failures [`AuditChain`] can be armed with.
#[cfg(test)]
pub(crate) use fault::Fault;
pub use keys::{generate_signing_key, load_signing_key, load_verifying_key, write_key_pair};
pub use record::{
    AuditEntry, AuditEvent, AuditRecord, CheckpointSeal, Excluded, SyncCounts, ZERO_HASH, line_hash,
};
pub use report::{
    BrokenRecord, CheckpointInfo, ExcludedLines, Problem, SignatureStatus, VerifyReport,
    VerifySummary,
};
pub use verify::verify;

/// Tuning for an [`AuditChain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditOptions {
    /// Write a checkpoint after this many non-checkpoint records; 0 disables periodic checkpoints
    /// (rotation and explicit [`AuditChain::checkpoint`] calls still write them).
    pub checkpoint_every: u64,
    /// Rotate to the next segment once the current one reaches this size. The record that crosses
    /// the limit and the rotation checkpoint after it still go into the old segment, so a segment
    /// can exceed the limit by two lines.
    pub max_file_bytes: u64,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            max_file_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why the audit log could not be opened, written or its keys loaded.
///
/// Every variant is a reason to refuse the request being audited.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A filesystem operation failed (disk full, permission denied, missing directory, ...).
    #[error("audit log: cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being attempted, e.g. "append to".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error; its message says why (e.g. "No space left on device").
        source: io::Error,
    },
    /// The existing log does not end in a consistent, complete record; appending would fork it.
    #[error("audit log: refusing to open {}: {reason}", dir.display())]
    BrokenTail {
        /// The audit directory.
        dir: PathBuf,
        /// What is wrong and where.
        reason: String,
    },
    /// An earlier failure left the on-disk state unknown; every further append is refused until
    /// the chain is reopened (which re-checks the tail).
    #[error("audit log is poisoned and refuses records until reopened: {0}")]
    Poisoned(String),
    /// Another [`AuditChain`] (in this or another process) has the directory open.
    #[error("audit log {} is already open by another writer", .0.display())]
    InUse(PathBuf),
    /// The options cannot work.
    #[error("audit log: invalid options: {0}")]
    Options(String),
    /// A record could not be serialised.
    #[error("audit log: cannot encode record: {0}")]
    Encode(#[from] serde_json::Error),
    /// A key file could not be read, parsed or written.
    #[error("audit key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The reason a request is refused because its record could not be written (`why`), as the
/// caller's status and the outcome record say it: the one wording of "refused: audit log
/// unavailable".
pub fn refusal_reason(why: impl std::fmt::Display) -> String {
    format!("refused: audit log unavailable ({why})")
}
