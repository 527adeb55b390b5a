//! Resuming a chain: find the end of the existing log, check it is whole and that `HEAD.json`
//! agrees with it. Only the last segment is read, so opening stays cheap however long the log is.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;

use super::AuditError;
use super::files::{HEAD_FILE, read_segment, segment_name, split_lines};
use super::keys::verify_sig;
use super::record::{AuditEvent, AuditRecord, Head, ZERO_HASH, head_message, line_hash};

/// What the end of the existing log looks like.
pub(crate) struct Tail {
    pub(crate) last_seq: u64,
    pub(crate) last_hash: String,
    pub(crate) last_file: u64,
    pub(crate) last_was_checkpoint: bool,
    pub(crate) since_checkpoint: u64,
    /// Hash of the record `HEAD.json` names, when it is in the scanned segment (or is the
    /// record right before it, whose hash is the segment's first `prev`).
    pub(crate) head_hash: Option<String>,
}

/// Why resuming failed.
pub(crate) enum TailError {
    /// A segment could not be read.
    Io(AuditError),
    /// The tail is inconsistent; the text says where and why.
    Broken(String),
}

/// The tail of the log, the index of the segment to continue in, and that segment's length.
/// `want` is the seq `HEAD.json` names, whose hash is picked up on the way.
pub(crate) fn find_tail(
    segments: &[(u64, PathBuf)],
    want: Option<u64>,
) -> Result<(Tail, u64, u64), TailError> {
    let file_index = segments.last().map_or(1, |(index, _)| *index);
    let mut file_len = 0;
    let mut tail = None;
    // The last segment may be empty (created, then the first write failed): the tail is
    // then at the end of the one before.
    for (i, (index, path)) in segments.iter().enumerate().rev().take(2) {
        let bytes = read_segment(path).map_err(|source| {
            TailError::Io(AuditError::Io {
                action: "read",
                path: path.clone(),
                source,
            })
        })?;
        if *index == file_index {
            file_len = bytes.len() as u64;
        }
        tail = scan_segment(&bytes, *index, want).map_err(TailError::Broken)?;
        if tail.is_some() {
            break;
        }
        if i + 1 < segments.len() {
            return Err(TailError::Broken(format!(
                "{} is empty but is not the last segment",
                segment_name(*index)
            )));
        }
    }
    let tail = tail.unwrap_or(Tail {
        last_seq: 0,
        last_hash: ZERO_HASH.to_string(),
        last_file: 0,
        last_was_checkpoint: false,
        since_checkpoint: 0,
        head_hash: (want == Some(0)).then(|| ZERO_HASH.to_string()),
    });
    Ok((tail, file_index, file_len))
}

/// Checks one segment's internal chain and returns its tail, `None` if it is empty.
fn scan_segment(bytes: &[u8], index: u64, want: Option<u64>) -> Result<Option<Tail>, String> {
    let name = segment_name(index);
    let (lines, partial) = split_lines(bytes);
    if let Some(partial) = partial {
        return Err(format!(
            "{name} line {}: incomplete last line ({} bytes without a newline). A write was \
             interrupted (crash) or the file was edited; that record was never acknowledged. \
             Inspect it, remove the fragment by hand, then run `orly audit verify`",
            lines.len() + 1,
            partial.len()
        ));
    }
    let mut tail: Option<Tail> = None;
    for (i, line) in lines.iter().enumerate() {
        let at = format!("{name} line {}", i + 1);
        let record: AuditRecord =
            serde_json::from_slice(line).map_err(|e| format!("{at}: not a valid record: {e}"))?;
        let hash = line_hash(line);
        let is_checkpoint = record.event == AuditEvent::Checkpoint;
        match &mut tail {
            None => {
                if record.seq == 0 {
                    return Err(format!("{at}: seq 0 is not valid"));
                }
                let head_hash = if want == Some(record.seq - 1) {
                    Some(record.prev)
                } else {
                    (want == Some(record.seq)).then(|| hash.clone())
                };
                tail = Some(Tail {
                    last_seq: record.seq,
                    last_hash: hash,
                    last_file: index,
                    last_was_checkpoint: is_checkpoint,
                    since_checkpoint: u64::from(!is_checkpoint),
                    head_hash,
                });
            }
            Some(t) => {
                if record.seq != t.last_seq + 1 {
                    return Err(format!(
                        "{at}: seq {} follows seq {}",
                        record.seq, t.last_seq
                    ));
                }
                if record.prev != t.last_hash {
                    return Err(format!("{at}: prev does not match the hash of line {i}"));
                }
                t.last_seq = record.seq;
                t.last_was_checkpoint = is_checkpoint;
                t.since_checkpoint = if is_checkpoint {
                    0
                } else {
                    t.since_checkpoint + 1
                };
                if want == Some(record.seq) {
                    t.head_hash = Some(hash.clone());
                }
                t.last_hash = hash;
            }
        }
    }
    Ok(tail)
}

/// The head may lag the log (crash before its update) but never lead it or disagree with it.
pub(crate) fn check_head(
    head: Option<&Head>,
    key: Option<&SigningKey>,
    tail: &Tail,
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
    if let Some(hash) = &tail.head_hash
        && *hash != head.hash
    {
        return Err(format!(
            "{HEAD_FILE} hash for seq {} does not match the log: records were rewritten",
            head.seq
        ));
    }
    Ok(())
}
