//! [`verify`]: the offline checker behind `orly audit verify`. Reads the audit directory, never
//! writes to it, and names the first record (or file) that breaks the chain.

use std::fmt;
use std::path::Path;

use ed25519_dalek::VerifyingKey;

use super::files::{HEAD_FILE, list_segments, read_head, read_segment, segment_name, split_lines};
use super::keys::verify_sig;
use super::record::{
    AuditEvent, AuditRecord, Head, ZERO_HASH, checkpoint_message, head_message, line_hash,
};

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
    /// between a record and its head update. Still chained, so not an error.
    pub head_lag: u64,
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
                }
                Ok(())
            }
        }
    }
}

/// Walks every segment in order and `HEAD.json`. With `pubkey`, every checkpoint and the head
/// must carry a valid signature by it; without, signatures are counted but not checked (a forger
/// who rewrote the chain and its checkpoints is then only caught if they got the links wrong).
pub fn verify(dir: impl AsRef<Path>, pubkey: Option<&VerifyingKey>) -> VerifyReport {
    let mut walk = Walk {
        pubkey,
        summary: VerifySummary {
            files: 0,
            records: 0,
            last_seq: 0,
            last_hash: ZERO_HASH.to_string(),
            checkpoints: 0,
            checkpoints_verified: 0,
            checkpoints_unchecked: 0,
            checkpoints_unsigned: 0,
            head_signature: None,
            head_lag: 0,
        },
        prev_at: None,
        head_seq: None,
        head_hash: None,
    };
    match walk.run(dir.as_ref()) {
        Ok(()) => VerifyReport::Ok(walk.summary),
        Err(broken) => VerifyReport::Broken(broken),
    }
}

fn broken(file: &str, line: u64, seq: Option<u64>, problem: Problem) -> BrokenRecord {
    BrokenRecord {
        file: file.to_string(),
        line,
        seq,
        problem,
    }
}

struct Walk<'a> {
    pubkey: Option<&'a VerifyingKey>,
    summary: VerifySummary,
    /// (file, line) of the last record read, to blame it when the next one does not link.
    prev_at: Option<(String, u64)>,
    head_seq: Option<u64>,
    /// Hash of the record the head names, once walked past.
    head_hash: Option<String>,
}

impl Walk<'_> {
    fn run(&mut self, dir: &Path) -> Result<(), BrokenRecord> {
        // Read first so the walk can pick up the hash of the record it names; judged last.
        let head = read_head(dir);
        if let Ok(Some(h)) = &head {
            self.head_seq = Some(h.seq);
            if h.seq == 0 {
                self.head_hash = Some(ZERO_HASH.to_string());
            }
        }
        let segments = list_segments(dir).map_err(|e| {
            broken(
                &dir.display().to_string(),
                0,
                None,
                Problem::Unreadable(e.to_string()),
            )
        })?;
        let mut last_name = segment_name(1);
        let mut last_lines = 0;
        for (pos, (index, path)) in segments.iter().enumerate() {
            let expected = pos as u64 + 1;
            if *index != expected {
                let next = Some(self.summary.last_seq + 1);
                return Err(broken(
                    &segment_name(expected),
                    0,
                    next,
                    Problem::MissingFile,
                ));
            }
            last_name = segment_name(*index);
            last_lines = self.walk_segment(&last_name, path, pos + 1 == segments.len())?;
        }
        let head = head.map_err(|e| broken(HEAD_FILE, 0, None, Problem::HeadInvalid(e)))?;
        self.check_head(head, &last_name, last_lines)
    }

    /// Returns the number of lines in the segment.
    fn walk_segment(
        &mut self,
        name: &str,
        path: &Path,
        is_last: bool,
    ) -> Result<u64, BrokenRecord> {
        let bytes = read_segment(path)
            .map_err(|e| broken(name, 0, None, Problem::Unreadable(e.to_string())))?;
        let (lines, partial) = split_lines(&bytes);
        let mut sealed = false;
        for (i, line) in lines.iter().enumerate() {
            let lineno = i as u64 + 1;
            let record: AuditRecord = serde_json::from_slice(line)
                .map_err(|e| broken(name, lineno, None, Problem::BadJson(e.to_string())))?;
            let at = |problem| broken(name, lineno, Some(record.seq), problem);
            let expected = self.summary.last_seq + 1;
            if record.seq != expected {
                return Err(at(Problem::SeqGap {
                    expected,
                    found: record.seq,
                }));
            }
            if record.prev != self.summary.last_hash {
                return Err(match &self.prev_at {
                    Some((file, line)) => broken(
                        file,
                        *line,
                        Some(self.summary.last_seq),
                        Problem::HashMismatch {
                            next_seq: record.seq,
                        },
                    ),
                    None => at(Problem::PrevMismatch {
                        expected: self.summary.last_hash.clone(),
                        found: record.prev.clone(),
                    }),
                });
            }
            self.check_seal(&record).map_err(at)?;
            sealed = record.event == AuditEvent::Checkpoint;
            let hash = line_hash(line);
            if self.head_seq == Some(record.seq) {
                self.head_hash = Some(hash.clone());
            }
            self.summary.last_hash = hash;
            self.summary.last_seq = record.seq;
            self.summary.records += 1;
            self.prev_at = Some((name.to_string(), lineno));
        }
        let count = lines.len() as u64;
        if partial.is_some() {
            return Err(broken(name, count + 1, None, Problem::IncompleteLine));
        }
        if !is_last && !sealed {
            let seq = (count > 0).then_some(self.summary.last_seq);
            return Err(broken(name, count, seq, Problem::SegmentNotSealed));
        }
        self.summary.files += 1;
        Ok(count)
    }

    fn check_seal(&mut self, record: &AuditRecord) -> Result<(), Problem> {
        let seal = match (record.event, &record.checkpoint) {
            (AuditEvent::Checkpoint, Some(seal)) => seal,
            (AuditEvent::Checkpoint, None) => {
                return Err(Problem::Malformed("checkpoint record without its seal"));
            }
            (_, Some(_)) => {
                return Err(Problem::Malformed(
                    "seal on a record that is not a checkpoint",
                ));
            }
            (_, None) => return Ok(()),
        };
        if record.seq.checked_sub(1) != Some(seal.seq) || seal.hash != record.prev {
            return Err(Problem::CheckpointCoversWrongRecord {
                seq: seal.seq,
                hash: seal.hash.clone(),
            });
        }
        let s = &mut self.summary;
        s.checkpoints += 1;
        match (self.pubkey, &seal.sig) {
            (Some(key), Some(sig)) => {
                if !verify_sig(key, &checkpoint_message(seal.seq, &seal.hash), sig) {
                    return Err(Problem::CheckpointSignatureInvalid);
                }
                s.checkpoints_verified += 1;
            }
            (Some(_), None) => return Err(Problem::CheckpointUnsigned),
            (None, Some(_)) => s.checkpoints_unchecked += 1,
            (None, None) => s.checkpoints_unsigned += 1,
        }
        Ok(())
    }

    fn check_head(
        &mut self,
        head: Option<Head>,
        last_name: &str,
        last_lines: u64,
    ) -> Result<(), BrokenRecord> {
        let last_seq = self.summary.last_seq;
        let Some(head) = head else {
            if last_seq > 0 {
                return Err(broken(HEAD_FILE, 0, None, Problem::HeadMissing));
            }
            return Ok(());
        };
        let at_head = |problem| broken(HEAD_FILE, 0, Some(head.seq), problem);
        let status = match (self.pubkey, &head.sig) {
            (Some(key), Some(sig)) => {
                if !verify_sig(key, &head_message(head.seq, &head.hash), sig) {
                    return Err(at_head(Problem::HeadSignatureInvalid));
                }
                SignatureStatus::Verified
            }
            (Some(_), None) => return Err(at_head(Problem::HeadUnsigned)),
            (None, Some(_)) => SignatureStatus::Unchecked,
            (None, None) => SignatureStatus::Unsigned,
        };
        if head.seq > last_seq {
            // Point at where the missing records were: a deleted last segment, or the end of
            // the last one.
            let (file, line) = match &head.file {
                Some(file) if file != last_name => (file.as_str(), 0),
                _ => (last_name, last_lines + 1),
            };
            return Err(broken(
                file,
                line,
                Some(last_seq + 1),
                Problem::Truncated {
                    head_seq: head.seq,
                    last_seq,
                },
            ));
        }
        if self.head_hash.as_deref() != Some(head.hash.as_str()) {
            return Err(at_head(Problem::HeadMismatch));
        }
        self.summary.head_signature = Some(status);
        self.summary.head_lag = last_seq - head.seq;
        Ok(())
    }
}
