//! Resuming a chain: find the end of the existing log, check it is whole and that `HEAD.json`
//! agrees with it, and decide what the new writer may adopt. Only the segment the head names and
//! the last two are read, so opening stays cheap however long the log is.
//!
//! Everything up to the record `HEAD.json` names is vouched for by the signed head (through the
//! hash chain) and must be intact, or opening is refused. After it, with a key, a record is
//! adopted only if it is whole, chained and signed by the audit key: from the first one that is
//! not, everything is left out of the chain (a writer never seals records it did not write), and
//! the new writer starts a new segment whose first record says what was found.

use std::path::PathBuf;

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::AuditError;
use super::files::{HEAD_FILE, read_segment, segment_name, split_lines};
use super::keys::verify_sig;
use super::record::{
    AuditEvent, AuditRecord, Excluded, HEAD_VERSION, Head, ZERO_HASH, head_message, line_hash,
};
use super::signed::{OpenSyncs, authenticate};

/// A writer refuses to open a directory with more segments than this to leave out: that is not
/// a crash, and deserves a look by hand.
const MAX_EXCLUDED_FILES: usize = 16;

/// The last record the new writer adopts.
pub(crate) struct Tail {
    pub(crate) last_seq: u64,
    pub(crate) last_hash: String,
    pub(crate) last_file: u64,
    pub(crate) last_was_checkpoint: bool,
    pub(crate) since_checkpoint: u64,
}

/// What the new writer continues from, and what it must report in a recovery record.
pub(crate) struct Resume {
    pub(crate) tail: Tail,
    /// Segment the next line goes to, and its length.
    pub(crate) file_index: u64,
    pub(crate) file_len: u64,
    /// Lines left out of the chain; non-empty means `file_index` is a new segment.
    pub(crate) excluded: Vec<Excluded>,
    /// Allowed syncs with no finished record.
    pub(crate) open_syncs: OpenSyncs,
    /// Allowed decisions after the head: written, never confirmed to their caller.
    pub(crate) unconfirmed: Vec<u64>,
}

/// Why resuming failed.
pub(crate) enum TailError {
    /// A segment could not be read.
    Io(AuditError),
    /// The log is inconsistent where the head vouches for it; the text says where and why.
    Broken(String),
}

/// Scans the end of the log. `key` is the writer's key: with it, records after the head must be
/// signed by it to be adopted; without it nothing can be authenticated and all are adopted.
pub(crate) fn resume(
    segments: &[(u64, PathBuf)],
    head: Option<&Head>,
    key: Option<&SigningKey>,
) -> Result<Resume, TailError> {
    if let Some(h) = head
        && !(1..=HEAD_VERSION).contains(&h.version)
    {
        return Err(TailError::Broken(format!(
            "{HEAD_FILE} has format version {}, this version of orly reads 1 to {HEAD_VERSION} \
             (written by a newer orly?)",
            h.version
        )));
    }
    let last_index = segments.last().map_or(1, |(index, _)| *index);
    let head_index = head
        .and_then(|h| h.file.as_deref())
        .and_then(|f| segments.iter().find(|(_, p)| p.ends_with(f)))
        .map_or(last_index, |(index, _)| *index);
    let start = head_index.min(last_index.saturating_sub(1));
    let mut scan = Scan {
        vk: key.map(SigningKey::verifying_key),
        vouched: head.map_or(0, |h| h.seq),
        want_hash: None,
        tail: None,
        open: OpenSyncs::default(),
        unconfirmed: Vec::new(),
        excluded: Vec::new(),
    };
    let scanned: Vec<&(u64, PathBuf)> = segments.iter().filter(|(i, _)| *i >= start).collect();
    for (pos, (index, path)) in scanned.iter().enumerate() {
        let bytes = read_segment(path).map_err(|source| {
            TailError::Io(AuditError::Io {
                action: "read",
                path: path.clone(),
                source,
            })
        })?;
        scan.segment(*index, &bytes, pos + 1 == scanned.len())
            .map_err(TailError::Broken)?;
    }
    if scan.excluded.len() > MAX_EXCLUDED_FILES {
        return Err(TailError::Broken(format!(
            "{} segments hold lines that were not written by this service; inspect them by hand",
            scan.excluded.len()
        )));
    }
    let tail = scan.tail.unwrap_or(Tail {
        last_seq: 0,
        last_hash: ZERO_HASH.to_string(),
        last_file: 0,
        last_was_checkpoint: false,
        since_checkpoint: 0,
    });
    if scan.vouched == 0 {
        scan.want_hash = Some(ZERO_HASH.to_string());
    }
    check_head(head, key, &tail, scan.want_hash.as_deref()).map_err(TailError::Broken)?;
    let (file_index, file_len) = if scan.excluded.is_empty() {
        let len = match segments.last() {
            Some((_, path)) => std::fs::metadata(path).map_or(0, |m| m.len()),
            None => 0,
        };
        (last_index, len)
    } else {
        (last_index + 1, 0)
    };
    Ok(Resume {
        tail,
        file_index,
        file_len,
        excluded: scan.excluded,
        open_syncs: scan.open,
        unconfirmed: scan.unconfirmed,
    })
}

struct Scan {
    vk: Option<VerifyingKey>,
    /// The seq `HEAD.json` names: up to it the log must be intact.
    vouched: u64,
    /// Hash of the record the head names, once scanned.
    want_hash: Option<String>,
    tail: Option<Tail>,
    open: OpenSyncs,
    unconfirmed: Vec<u64>,
    excluded: Vec<Excluded>,
}

impl Scan {
    fn past_head(&self) -> bool {
        self.tail.as_ref().map_or(0, |t| t.last_seq) >= self.vouched
    }

    /// Starts (or continues) the excluded part at `line` / byte `offset` of this segment.
    fn exclude(&mut self, index: u64, bytes: &[u8], line: u64, offset: usize, why: String) {
        let rest = &bytes[offset.min(bytes.len())..];
        self.excluded.push(Excluded {
            file: segment_name(index),
            line,
            bytes: rest.len() as u64,
            sha256: hex::encode(Sha256::digest(rest)),
            why,
        });
    }

    /// A problem at `at`: refuses to open where the head vouches for the log, else (with a key)
    /// starts the excluded part there.
    fn problem(&mut self, at: (u64, &[u8], u64, usize), why: String) -> Result<(), String> {
        let (index, bytes, line, offset) = at;
        if self.past_head() && self.vk.is_some() {
            self.exclude(index, bytes, line, offset, why);
            return Ok(());
        }
        Err(format!("{} line {line}: {why}", segment_name(index)))
    }

    fn segment(&mut self, index: u64, bytes: &[u8], is_last: bool) -> Result<(), String> {
        if !self.excluded.is_empty() {
            // Everything after the first excluded line is excluded too.
            self.exclude(index, bytes, 1, 0, "follows excluded lines".into());
            return Ok(());
        }
        let (lines, partial) = split_lines(bytes);
        let mut offset = 0;
        for (i, line) in lines.iter().enumerate() {
            let lineno = i as u64 + 1;
            let at = (index, bytes, lineno, offset);
            offset += line.len() + 1;
            let record: AuditRecord = match serde_json::from_slice(line) {
                Ok(r) => r,
                Err(e) => return self.problem(at, format!("not a valid record: {e}")),
            };
            if let Err(why) = self.links(index, &record) {
                return self.problem(at, why);
            }
            if record.seq > self.vouched
                && let Some(vk) = &self.vk
                && let Err(why) = authenticate(line, &record, vk)
            {
                return self.problem(at, format!("seq {}: {why}", record.seq));
            }
            self.adopt(index, &record, line_hash(line));
        }
        if let Some(partial) = partial {
            let why = format!(
                "incomplete last line ({} bytes without a newline). A write was interrupted \
                 (crash) or the file was edited; that record was never acknowledged. Inspect it, \
                 remove the fragment by hand, then run `orly audit verify`",
                partial.len()
            );
            return self.problem((index, bytes, lines.len() as u64 + 1, offset), why);
        }
        if lines.is_empty() && !is_last && self.tail.is_none() {
            return Err(format!(
                "{} is empty but is not the last segment",
                segment_name(index)
            ));
        }
        Ok(())
    }

    /// Whether `record` is the next one of the chain.
    fn links(&self, index: u64, record: &AuditRecord) -> Result<(), String> {
        let Some(t) = &self.tail else {
            if record.seq == 0 {
                return Err("seq 0 is not valid".into());
            }
            // The first segment starts the chain; a later one is taken as it comes (the
            // segments before it are not read).
            if index == 1 && (record.seq != 1 || record.prev != ZERO_HASH) {
                return Err(format!(
                    "seq {} does not start the chain (expected seq 1 after {ZERO_HASH})",
                    record.seq
                ));
            }
            return Ok(());
        };
        if record.seq != t.last_seq + 1 {
            return Err(format!("seq {} follows seq {}", record.seq, t.last_seq));
        }
        if record.prev != t.last_hash {
            return Err(format!(
                "seq {}: prev does not match the hash of seq {}",
                record.seq, t.last_seq
            ));
        }
        Ok(())
    }

    fn adopt(&mut self, index: u64, record: &AuditRecord, hash: String) {
        if self.tail.is_none() && record.seq > 0 && self.vouched == record.seq - 1 {
            self.want_hash = Some(record.prev.clone());
        }
        if record.seq == self.vouched {
            self.want_hash = Some(hash.clone());
        }
        if record.seq > self.vouched {
            match record.event {
                AuditEvent::Decision if record.allowed == Some(true) => {
                    self.unconfirmed.push(record.seq);
                }
                AuditEvent::Outcome => {
                    self.unconfirmed.retain(|s| Some(*s) != record.decision_seq);
                }
                AuditEvent::Recovery => {
                    let reported = record.unconfirmed.as_deref().unwrap_or_default();
                    self.unconfirmed.retain(|s| !reported.contains(s));
                }
                _ => {}
            }
        }
        self.open.apply(record, true);
        let is_checkpoint = record.event == AuditEvent::Checkpoint;
        let since = self.tail.as_ref().map_or(0, |t| t.since_checkpoint);
        self.tail = Some(Tail {
            last_seq: record.seq,
            last_hash: hash,
            last_file: index,
            last_was_checkpoint: is_checkpoint,
            since_checkpoint: if is_checkpoint { 0 } else { since + 1 },
        });
    }
}

/// The head may lag the log (crash before its update) but never lead it or disagree with it.
fn check_head(
    head: Option<&Head>,
    key: Option<&SigningKey>,
    tail: &Tail,
    head_hash: Option<&str>,
) -> Result<(), String> {
    let Some(head) = head else {
        if tail.last_seq > 0 {
            return Err(format!(
                "{HEAD_FILE} is missing while the log holds records up to seq {}: the end of the \
                 log may have been cut off; run `orly audit verify`",
                tail.last_seq
            ));
        }
        return Ok(());
    };
    if let Some(key) = key {
        let message = head_message(head.seq, &head.hash);
        match &head.sig {
            None => {
                return Err(format!(
                    "{HEAD_FILE} is unsigned but a signing key is configured (a log started \
                     without a key cannot be continued with one: start a new directory)"
                ));
            }
            Some(sig) if !verify_sig(&key.verifying_key(), &message, sig) => {
                return Err(format!(
                    "the signature of {HEAD_FILE} does not verify with the configured audit key \
                     (edited, or written with another key)"
                ));
            }
            Some(_) => {}
        }
    }
    if head.seq > tail.last_seq {
        return Err(format!(
            "{HEAD_FILE} records seq {} but the log ends at seq {}: records were removed from \
             the end; run `orly audit verify`",
            head.seq, tail.last_seq
        ));
    }
    if let Some(hash) = head_hash
        && hash != head.hash
    {
        return Err(format!(
            "{HEAD_FILE} hash for seq {} does not match the log: records were rewritten",
            head.seq
        ));
    }
    Ok(())
}

/// The human-readable reason of a recovery record written after seq `after`.
pub(crate) fn recovery_reason(
    after: u64,
    excluded: &[Excluded],
    interrupted: &[u64],
    unconfirmed: &[u64],
) -> String {
    let seqs = |v: &[u64]| {
        let shown: Vec<String> = v.iter().take(20).map(|s| format!("seq {s}")).collect();
        let more = v.len().saturating_sub(20);
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    };
    let mut parts = Vec::new();
    if let Some(first) = excluded.first() {
        let bytes: u64 = excluded.iter().map(|x| x.bytes).sum();
        parts.push(format!(
            "incident: {bytes} bytes after seq {after} ({} line {} on) could not be \
             authenticated ({}) and are left out of the chain, which continues in a new segment",
            first.file, first.line, first.why
        ));
    }
    if !interrupted.is_empty() {
        parts.push(format!(
            "{} allowed sync(s) never finished (the service stopped during them): interrupted: {}",
            interrupted.len(),
            seqs(interrupted)
        ));
    }
    if !unconfirmed.is_empty() {
        parts.push(format!(
            "{} allowed decision(s) were written but never confirmed (the service stopped \
             before HEAD.json named them), so their callers most likely got no answer: \
             unconfirmed: {}",
            unconfirmed.len(),
            seqs(unconfirmed)
        ));
    }
    format!("restart: {}", parts.join("; "))
}
