//! [`verify`]: the offline checker behind `orly audit verify`. Reads the audit directory, never
//! writes to it, and names the first record (or file) that breaks the chain.
//!
//! What it proves, with the public key: every record up to the one `HEAD.json` names is vouched
//! for by the head's signature (through the hash chain), and every record after it carries its
//! own signature by the audit key — so a record someone else appended, however well chained, is
//! named. Lines a restarted writer left out (listed, with their hash, in its signed recovery
//! record) are reported as an incident, not part of the chain. It also lists the allowed syncs
//! that never finished. Without the public key it proves only that the records link up.

use std::collections::HashMap;
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use super::files::{
    HEAD_FILE, first_line, list_segments, read_head, read_segment, segment_name, split_lines,
    writer_active,
};
use super::keys::verify_sig;
use super::record::{
    AuditEvent, AuditRecord, Excluded, HEAD_VERSION, Head, ZERO_HASH, checkpoint_message,
    head_message, line_hash,
};
use super::report::{
    BrokenRecord, CheckpointInfo, ExcludedLines, Problem, SignatureStatus, VerifyReport,
    VerifySummary,
};
use super::signed::{OpenSyncs, authenticate};

/// Longest first line read when looking for recovery records (their lists are bounded by what
/// a service can have in flight; this is far above that).
const MAX_RECOVERY_LINE: u64 = 16 << 20;

/// Walks every segment in order and `HEAD.json`. With `pubkey`, every checkpoint and the head
/// must carry a valid signature by it, and every record after the head its own; without,
/// signatures are counted but not checked (a forger who rewrote the chain and its checkpoints is
/// then only caught if they got the links wrong).
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
            excluded: Vec::new(),
            interrupted: Vec::new(),
            running: Vec::new(),
            recorded_interrupted: Vec::new(),
            recorded_unconfirmed: Vec::new(),
            overruled: Vec::new(),
            checkpoint_list: Vec::new(),
            time_span: None,
        },
        prev_at: None,
        head_seq: None,
        head_hash: None,
        exclusions: HashMap::new(),
        open: OpenSyncs::default(),
        prev_line: Vec::new(),
        seen_signed: false,
    };
    let dir = dir.as_ref();
    match walk.run(dir) {
        Ok(()) => {
            let open = walk.open.to_vec();
            if writer_active(dir) {
                walk.summary.running = open;
            } else {
                walk.summary.interrupted = open;
            }
            VerifyReport::Ok(walk.summary)
        }
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
    /// Lines left out by recovery records, by segment name, with the recovery record's seq.
    exclusions: HashMap<String, (Excluded, u64)>,
    open: OpenSyncs,
    /// The last record's line, to judge it when the next one does not link.
    prev_line: Vec<u8>,
    /// Whether a signed record came before (after one, an unsigned record is an intruder).
    seen_signed: bool,
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
        self.find_exclusions(&segments);
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
            let name = segment_name(*index);
            let lines = self.walk_segment(&name, path, pos + 1 == segments.len())?;
            if let Some(lines) = lines {
                (last_name, last_lines) = (name, lines);
            }
        }
        let head = head.map_err(|e| broken(HEAD_FILE, 0, None, Problem::HeadInvalid(e)))?;
        self.check_head(head, &last_name, last_lines)
    }

    /// A recovery record is always the first line of the segment it opens: collects what the
    /// authentic ones left out (with a public key, unsigned ones are ignored here; the walk
    /// then judges them like any record).
    fn find_exclusions(&mut self, segments: &[(u64, std::path::PathBuf)]) {
        for (_, path) in segments {
            let Some(first) = first_line(path, MAX_RECOVERY_LINE) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<AuditRecord>(&first) else {
                continue;
            };
            if record.event != AuditEvent::Recovery
                || self
                    .pubkey
                    .is_some_and(|key| authenticate(&first, &record, key).is_err())
            {
                continue;
            }
            for x in record.excluded.iter().flatten() {
                self.exclusions
                    .insert(x.file.clone(), (x.clone(), record.seq));
            }
        }
    }

    /// Returns the number of lines in the segment that belong to the chain, `None` when the
    /// whole segment was left out.
    fn walk_segment(
        &mut self,
        name: &str,
        path: &Path,
        is_last: bool,
    ) -> Result<Option<u64>, BrokenRecord> {
        let bytes = read_segment(path)
            .map_err(|e| broken(name, 0, None, Problem::Unreadable(e.to_string())))?;
        let exclusion = self.exclusions.get(name).cloned();
        let (lines, partial) = split_lines(&bytes);
        let keep = exclusion.as_ref().map_or(lines.len(), |(x, _)| {
            usize::try_from(x.line.saturating_sub(1)).map_or(lines.len(), |l| l.min(lines.len()))
        });
        let mut sealed = false;
        let mut offset = 0;
        for (i, line) in lines.iter().enumerate().take(keep) {
            let lineno = i as u64 + 1;
            offset += line.len() + 1;
            sealed = self.walk_record(name, lineno, line)?;
        }
        let count = keep as u64;
        if let Some((x, recorded_at)) = exclusion {
            let rest = &bytes[offset.min(bytes.len())..];
            if rest.len() as u64 != x.bytes || hex::encode(Sha256::digest(rest)) != x.sha256 {
                return Err(broken(
                    name,
                    count + 1,
                    None,
                    Problem::ExcludedChanged {
                        recorded_at,
                        bytes: x.bytes,
                        sha256: x.sha256,
                    },
                ));
            }
            self.summary.excluded.push(ExcludedLines {
                file: name.to_string(),
                line: x.line,
                bytes: x.bytes,
                recorded_at,
            });
            if keep == 0 {
                return Ok(None);
            }
            self.summary.files += 1;
            return Ok(Some(count));
        }
        if partial.is_some() {
            return Err(broken(name, count + 1, None, Problem::IncompleteLine));
        }
        if !is_last && !sealed {
            let seq = (count > 0).then_some(self.summary.last_seq);
            return Err(broken(name, count, seq, Problem::SegmentNotSealed));
        }
        self.summary.files += 1;
        Ok(Some(count))
    }

    /// Checks one line; returns whether it is a checkpoint.
    fn walk_record(&mut self, name: &str, lineno: u64, line: &[u8]) -> Result<bool, BrokenRecord> {
        let record: AuditRecord = serde_json::from_slice(line)
            .map_err(|e| broken(name, lineno, None, Problem::BadJson(e.to_string())))?;
        let at = |problem| broken(name, lineno, Some(record.seq), problem);
        let expected = self.summary.last_seq + 1;
        if record.seq != expected || record.prev != self.summary.last_hash {
            // A record slipped in while the writer ran breaks the link of the writer's next
            // one: name the intruder when its signature gives it away.
            if let Some(blame) = self.unauthentic_previous() {
                return Err(blame);
            }
        }
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
        // Up to the head, the signed head vouches for the record through the chain; after it,
        // only the record's own signature can.
        if let (Some(key), Some(head_seq)) = (self.pubkey, self.head_seq)
            && record.seq > head_seq
        {
            authenticate(line, &record, key)
                .map_err(|why| at(Problem::Unauthenticated(why.to_string())))?;
        }
        self.note(&record);
        let hash = line_hash(line);
        if self.head_seq == Some(record.seq) {
            self.head_hash = Some(hash.clone());
        }
        if record.event == AuditEvent::Checkpoint {
            self.summary.checkpoint_list.push(CheckpointInfo {
                seq: record.seq,
                hash: hash.clone(),
                time: record.time.clone(),
            });
        }
        match &mut self.summary.time_span {
            Some(span) => span.1.clone_from(&record.time),
            None => {
                self.summary.time_span = Some(Box::new((record.time.clone(), record.time.clone())));
            }
        }
        self.summary.last_hash = hash;
        self.summary.last_seq = record.seq;
        self.summary.records += 1;
        self.prev_at = Some((name.to_string(), lineno));
        self.seen_signed |= record.sig.is_some();
        self.prev_line.clear();
        self.prev_line.extend_from_slice(line);
        Ok(record.event == AuditEvent::Checkpoint)
    }

    /// With a public key: the previous record, as unauthenticated, if it carries an invalid
    /// signature or none although records before it were signed.
    fn unauthentic_previous(&self) -> Option<BrokenRecord> {
        let key = self.pubkey?;
        let (file, line) = self.prev_at.as_ref()?;
        let record: AuditRecord = serde_json::from_slice(&self.prev_line).ok()?;
        if record.sig.is_none() && !self.seen_signed {
            return None; // a log of format 1: nothing to tell by
        }
        let why = authenticate(&self.prev_line, &record, key).err()?;
        Some(broken(
            file,
            *line,
            Some(record.seq),
            Problem::Unauthenticated(why.to_string()),
        ))
    }

    /// Follows syncs and what recovery and outcome records say about decisions.
    fn note(&mut self, record: &AuditRecord) {
        self.open.apply(record, false);
        match record.event {
            AuditEvent::Recovery => {
                let s = &mut self.summary;
                s.recorded_interrupted
                    .extend(record.interrupted.iter().flatten());
                s.recorded_unconfirmed
                    .extend(record.unconfirmed.iter().flatten());
            }
            AuditEvent::Outcome => self.summary.overruled.extend(record.decision_seq),
            _ => {}
        }
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
        if !(1..=HEAD_VERSION).contains(&head.version) {
            return Err(at_head(Problem::HeadInvalid(format!(
                "{HEAD_FILE} has format version {}, this version of orly reads 1 to \
                 {HEAD_VERSION} (written by a newer orly?)",
                head.version
            ))));
        }
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
