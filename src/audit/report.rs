//! What `orly audit verify` reports: an intact log's summary (and what it could not prove), or
//! the first broken record and why.

use std::fmt;

/// Outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    /// The whole log is intact.
    Ok(VerifySummary),
    /// The first problem found, in log order (segments, then `HEAD.json`).
    Broken(BrokenRecord),
}

impl VerifyReport {
    /// Whether the log verified.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok(_))
    }
}

/// How a signature fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Checked against the given public key.
    Verified,
    /// Signed, but no public key was given, so not checked.
    Unchecked,
    /// Not signed (the writer had no key); only possible without a public key.
    Unsigned,
}

/// What an intact log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    /// Segments read.
    pub files: u64,
    /// Records, checkpoints included.
    pub records: u64,
    /// Seq of the last record (0 when empty).
    pub last_seq: u64,
    /// Hash of the last record ([`ZERO_HASH`] when empty).
    pub last_hash: String,
    /// Checkpoint records.
    pub checkpoints: u64,
    /// Checkpoints whose signature verified against the public key.
    pub checkpoints_verified: u64,
    /// Signed checkpoints not checked because no public key was given.
    pub checkpoints_unchecked: u64,
    /// Checkpoints written without a key.
    pub checkpoints_unsigned: u64,
    /// The head's signature; `None` when there is no `HEAD.json` (only accepted for an empty log).
    pub head_signature: Option<SignatureStatus>,
    /// Records after the one `HEAD.json` names: the writer stopped (crash, failed head update)
    /// between a record and its head update. Still chained (and, with a public key, each
    /// checked against its own signature), so not an error.
    pub head_lag: u64,
    /// Lines a restarted writer left out of the chain because it could not authenticate them
    /// (an incident: someone else wrote to the directory), as its recovery record lists them.
    pub excluded: Vec<ExcludedLines>,
    /// Allowed syncs with no finished record while no writer has the directory open: the
    /// service stopped during them (by seq of the allow record).
    pub interrupted: Vec<u64>,
    /// Allowed syncs with no finished record while the writer is running: still running, or
    /// interrupted if that writer is stuck.
    pub running: Vec<u64>,
    /// Syncs a restarted writer recorded as interrupted (by seq of the allow record).
    pub recorded_interrupted: Vec<u64>,
    /// Allowed decisions a restarted writer recorded as never confirmed to their callers.
    pub recorded_unconfirmed: Vec<u64>,
    /// Decisions whose caller was refused after the record was written (an `outcome` record).
    pub overruled: Vec<u64>,
    /// Every checkpoint record, in log order (what public anchors are checked against).
    pub checkpoint_list: Vec<CheckpointInfo>,
    /// `time` of the first and of the last record (`None` for an empty log).
    pub time_span: Option<Box<(String, String)>>,
}

/// One checkpoint record of an intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The checkpoint record's seq.
    pub seq: u64,
    /// Hex SHA-256 of its line.
    pub hash: String,
    /// Its `time`.
    pub time: String,
}

/// Lines left out of the chain by a recovery record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludedLines {
    /// Segment name.
    pub file: String,
    /// First line left out (1-based); the rest of the file is left out too.
    pub line: u64,
    /// Bytes left out.
    pub bytes: u64,
    /// Seq of the recovery record that lists them.
    pub recorded_at: u64,
}

/// Where the chain breaks first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRecord {
    /// Segment name (or `HEAD.json`).
    pub file: String,
    /// 1-based line; 0 when the problem is the file as a whole.
    pub line: u64,
    /// Seq of the record involved, when known.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

/// Why a record, segment or head is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file or directory could not be read.
    #[error("cannot read: {0}")]
    Unreadable(String),
    /// A segment is absent from the numbered sequence.
    #[error("segment is missing from the sequence (deleted)")]
    MissingFile,
    /// The line is not a record.
    #[error("not a valid record (bad JSON): {0}")]
    BadJson(String),
    /// The segment ends without a newline.
    #[error("incomplete last line: a write was interrupted or the file was edited")]
    IncompleteLine,
    /// The seq is not the next one.
    #[error(
        "seq {found} where {expected} was expected: records were deleted, inserted or reordered"
    )]
    SeqGap {
        /// The seq that should be here.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// This record's hash is not the `prev` of the next one.
    #[error(
        "hash does not match `prev` of the next record (seq {next_seq}): this record was edited \
         (or that record's `prev` was)"
    )]
    HashMismatch {
        /// Seq of the record whose `prev` disagrees.
        next_seq: u64,
    },
    /// The first record does not start the chain.
    #[error("prev is {found}, expected {expected}: the chain does not start here")]
    PrevMismatch {
        /// The expected `prev`.
        expected: String,
        /// The `prev` found.
        found: String,
    },
    /// Structurally wrong record (checkpoint without seal, seal on another event).
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// The checkpoint's seal is not the record right before it.
    #[error("checkpoint covers seq {seq} / {hash}, not the record before it")]
    CheckpointCoversWrongRecord {
        /// Seq the seal claims.
        seq: u64,
        /// Hash the seal claims.
        hash: String,
    },
    /// A public key was given but the checkpoint is unsigned.
    #[error("checkpoint is unsigned but a public key was given")]
    CheckpointUnsigned,
    /// The checkpoint signature does not verify.
    #[error("checkpoint signature does not verify with the public key: forged or altered")]
    CheckpointSignatureInvalid,
    /// A segment other than the last does not end with its rotation checkpoint.
    #[error("segment does not end with its rotation checkpoint: records were removed from its end")]
    SegmentNotSealed,
    /// Records exist but `HEAD.json` does not.
    #[error("HEAD.json is missing: the end of the log cannot be vouched for (deleted?)")]
    HeadMissing,
    /// `HEAD.json` cannot be parsed.
    #[error("{0}")]
    HeadInvalid(String),
    /// A public key was given but `HEAD.json` is unsigned.
    #[error("HEAD.json is unsigned but a public key was given")]
    HeadUnsigned,
    /// `HEAD.json`'s signature does not verify.
    #[error("HEAD.json signature does not verify with the public key: forged or altered")]
    HeadSignatureInvalid,
    /// `HEAD.json` names a record past the end of the log.
    #[error(
        "HEAD.json records seq {head_seq} but the log ends at seq {last_seq}: records were cut off the end"
    )]
    Truncated {
        /// Seq in the head.
        head_seq: u64,
        /// Last seq in the log.
        last_seq: u64,
    },
    /// `HEAD.json`'s hash disagrees with the record it names.
    #[error("HEAD.json hash does not match the record it names: the end of the log was rewritten")]
    HeadMismatch,
    /// A record after the signed head is not signed by the audit key: nothing vouches for it.
    #[error("cannot authenticate this record: {0}")]
    Unauthenticated(String),
    /// Lines a recovery record left out were changed afterwards.
    #[error(
        "the lines left out from here by the recovery record at seq {recorded_at} were changed \
         afterwards (expected {bytes} bytes with sha256 {sha256})"
    )]
    ExcludedChanged {
        /// Seq of the recovery record.
        recorded_at: u64,
        /// Bytes it recorded.
        bytes: u64,
        /// Their SHA-256 as it recorded it.
        sha256: String,
    },
}

impl fmt::Display for BrokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, " line {}", self.line)?;
        }
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Broken(broken) => write!(f, "BROKEN: {broken}"),
            Self::Ok(s) => {
                write!(
                    f,
                    "OK: {} records in {} files, last seq {}; checkpoints: {} ({} verified, {} \
                     unchecked, {} unsigned); head: ",
                    s.records,
                    s.files,
                    s.last_seq,
                    s.checkpoints,
                    s.checkpoints_verified,
                    s.checkpoints_unchecked,
                    s.checkpoints_unsigned
                )?;
                match s.head_signature {
                    Some(status) => write!(f, "{status:?}")?,
                    None => write!(f, "none")?,
                }
                if s.head_lag > 0 {
                    write!(f, ", lagging {} records", s.head_lag)?;
                    if s.head_signature == Some(SignatureStatus::Verified) {
                        write!(f, " (each signed by the audit key)")?;
                    }
                }
                write!(f, "\n{}", s.proves())?;
                for x in &s.excluded {
                    write!(
                        f,
                        "\nINCIDENT: {} from line {} ({} bytes) could not be authenticated and \
                         was left out of the chain by the restart recorded at seq {}",
                        x.file, x.line, x.bytes, x.recorded_at
                    )?;
                }
                let list = |v: &[u64]| {
                    v.iter()
                        .map(|s| format!("seq {s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if !s.interrupted.is_empty() {
                    write!(
                        f,
                        "\ninterrupted syncs (allowed, no finished record, the service is not \
                         running): {}",
                        list(&s.interrupted)
                    )?;
                }
                if !s.running.is_empty() {
                    write!(
                        f,
                        "\nsyncs without a finished record yet (the service is running): {}",
                        list(&s.running)
                    )?;
                }
                if !s.recorded_interrupted.is_empty() {
                    write!(
                        f,
                        "\nsyncs recorded as interrupted at a restart: {}",
                        list(&s.recorded_interrupted)
                    )?;
                }
                if !s.recorded_unconfirmed.is_empty() {
                    write!(
                        f,
                        "\nallowed decisions never confirmed to their callers (recorded at a \
                         restart): {}",
                        list(&s.recorded_unconfirmed)
                    )?;
                }
                if !s.overruled.is_empty() {
                    write!(
                        f,
                        "\ndecisions whose callers were refused after all (audit log \
                         unavailable): {}",
                        list(&s.overruled)
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl VerifySummary {
    /// What this verification proves, in one sentence an auditor can rely on.
    pub fn proves(&self) -> &'static str {
        match self.head_signature {
            Some(SignatureStatus::Verified) => {
                "authenticated: every record is vouched for by the audit key (through the \
                 signed head, or its own signature after the head)"
            }
            Some(SignatureStatus::Unchecked) => {
                "NOT authenticated: no --pubkey given, so this shows only that the records \
                 link up; anyone who could write the directory could have added or rewritten \
                 records consistently"
            }
            Some(SignatureStatus::Unsigned) => {
                "NOT authenticated: the log was written without ORLY_AUDIT_KEY, so anyone who \
                 could write the directory could have added or rewritten records consistently"
            }
            None => "empty log: nothing to authenticate",
        }
    }
}
