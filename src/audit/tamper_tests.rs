//! Tampering cases: each must be reported at the right first broken record.

use std::fs;
use std::path::Path;

use ed25519_dalek::SigningKey;
use tempfile::TempDir;

use super::files::{HEAD_FILE, segment_name, write_head};
use super::keys::sign;
use super::record::{Head, checkpoint_message, head_message, line_hash};
use super::tests::{expect_ok, fill, key, lines, opts, records, segment_count, write_lines};
use super::{
    AuditChain, AuditError, AuditEvent, AuditRecord, BrokenRecord, Problem, SignatureStatus,
    VerifyReport, verify,
};

/// A signed log of 20 records (plus checkpoints every 4) over at least three segments.
fn signed_log() -> (TempDir, SigningKey) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let chain = AuditChain::open(dir.path(), Some(key.clone()), opts(4, 1500)).expect("open");
    fill(&chain, 20);
    chain.checkpoint().expect("checkpoint");
    drop(chain);
    assert!(segment_count(dir.path()) >= 3);
    expect_ok(verify(dir.path(), Some(&key.verifying_key())));
    (dir, key)
}

fn broken(report: VerifyReport) -> BrokenRecord {
    match report {
        VerifyReport::Broken(b) => b,
        VerifyReport::Ok(s) => panic!("tampering not detected: {s:?}"),
    }
}

fn at(b: &BrokenRecord) -> (&str, u64, Option<u64>) {
    (b.file.as_str(), b.line, b.seq)
}

/// Segment index and 0-based line of a seq.
fn locate(dir: &Path, seq: u64) -> (u64, usize) {
    for index in 1..=segment_count(dir) {
        for (i, l) in lines(dir, index).iter().enumerate() {
            let r: AuditRecord = serde_json::from_str(l).expect("record");
            if r.seq == seq {
                return (index, i);
            }
        }
    }
    panic!("seq {seq} not found");
}

/// The first checkpoint after `seq`: (segment, 1-based line, its seq).
fn next_checkpoint(dir: &Path, seq: u64) -> (String, u64, u64) {
    for index in 1..=segment_count(dir) {
        for (i, l) in lines(dir, index).iter().enumerate() {
            let r: AuditRecord = serde_json::from_str(l).expect("record");
            if r.seq > seq && r.event == AuditEvent::Checkpoint {
                return (segment_name(index), i as u64 + 1, r.seq);
            }
        }
    }
    panic!("no checkpoint after {seq}");
}

fn edit(dir: &Path, seq: u64, from: &str, to: &str) {
    let (index, i) = locate(dir, seq);
    let mut l = lines(dir, index);
    assert!(l[i].contains(from));
    l[i] = l[i].replacen(from, to, 1);
    write_lines(dir, index, &l);
}

/// What an attacker without the audit key can do: recompute every link and the head. With
/// `forger`, checkpoints are re-sealed and the head re-signed with that (wrong) key.
fn rechain(dir: &Path, forger: Option<&SigningKey>) {
    let mut prev = super::ZERO_HASH.to_string();
    let mut seq = 0;
    for index in 1..=segment_count(dir) {
        let mut out = Vec::new();
        for l in lines(dir, index) {
            let mut r: AuditRecord = serde_json::from_str(&l).expect("record");
            r.prev.clone_from(&prev);
            // Only seals whose covered hash changed need forging; the others stay genuine.
            if let (Some(seal), Some(key)) = (r.checkpoint.as_mut(), forger)
                && seal.hash != prev
            {
                seal.hash.clone_from(&prev);
                seal.sig = Some(sign(key, &checkpoint_message(seal.seq, &seal.hash)));
            }
            let line = serde_json::to_string(&r).expect("serialise");
            prev = line_hash(line.as_bytes());
            seq = r.seq;
            out.push(line);
        }
        write_lines(dir, index, &out);
    }
    let head = Head {
        version: 1,
        seq,
        sig: forger.map(|k| sign(k, &head_message(seq, &prev))),
        hash: prev,
        file: None,
    };
    write_head(dir, &head).expect("head");
}

#[test]
fn edited_field_is_blamed_on_the_edited_record() {
    let (dir, key) = signed_log();
    edit(
        dir.path(),
        6,
        "\"admin\":\"alice\"",
        "\"admin\":\"mallory\"",
    );
    let (index, i) = locate(dir.path(), 6);
    for pk in [None, Some(key.verifying_key())] {
        let b = broken(verify(dir.path(), pk.as_ref()));
        assert_eq!(
            at(&b),
            (segment_name(index).as_str(), i as u64 + 1, Some(6))
        );
        if pk.is_some() {
            // With the key, the record's own signature says more than the broken link.
            assert!(
                matches!(&b.problem, Problem::Unauthenticated(why) if why.contains("edited")),
                "{b}"
            );
        } else {
            assert_eq!(b.problem, Problem::HashMismatch { next_seq: 7 });
        }
    }
}

#[test]
fn edited_last_record_is_caught_by_the_head() {
    let (dir, key) = signed_log();
    let last = expect_ok(verify(dir.path(), None)).last_seq;
    edit(
        dir.path(),
        last,
        "\"checkpoint\":{",
        "\"checkpoint\":{\"x\":1,",
    );
    let b = broken(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(at(&b), (HEAD_FILE, 0, Some(last)));
    assert_eq!(b.problem, Problem::HeadMismatch);
}

#[test]
fn deleted_middle_record_is_a_seq_gap() {
    let (dir, _) = signed_log();
    let (index, i) = locate(dir.path(), 2);
    let mut l = lines(dir.path(), index);
    l.remove(i);
    write_lines(dir.path(), index, &l);
    let b = broken(verify(dir.path(), None));
    assert_eq!(at(&b), ("audit-000001.jsonl", 2, Some(3)));
    assert_eq!(
        b.problem,
        Problem::SeqGap {
            expected: 2,
            found: 3
        }
    );
}

#[test]
fn swapped_records_are_a_seq_gap_at_the_first_of_them() {
    let (dir, _) = signed_log();
    let mut l = lines(dir.path(), 1);
    l.swap(1, 2);
    write_lines(dir.path(), 1, &l);
    let b = broken(verify(dir.path(), None));
    assert_eq!(at(&b), ("audit-000001.jsonl", 2, Some(3)));
    assert_eq!(
        b.problem,
        Problem::SeqGap {
            expected: 2,
            found: 3
        }
    );
}

fn open_err(dir: &Path, key: Option<SigningKey>) -> String {
    match AuditChain::open(dir, key, opts(4, 1500)) {
        Err(e @ AuditError::BrokenTail { .. }) => e.to_string(),
        other => panic!("open did not refuse: {other:?}"),
    }
}

#[test]
fn truncated_tail_is_caught_by_the_head_and_refused_by_open() {
    let (dir, key) = signed_log();
    let head_seq = expect_ok(verify(dir.path(), None)).last_seq;
    let last_index = segment_count(dir.path());
    let mut l = lines(dir.path(), last_index);
    assert!(l.len() >= 3, "test assumes the last segment has 3+ lines");
    l.truncate(l.len() - 2);
    write_lines(dir.path(), last_index, &l);
    let b = broken(verify(dir.path(), Some(&key.verifying_key())));
    let name = segment_name(last_index);
    assert_eq!(
        at(&b),
        (name.as_str(), l.len() as u64 + 1, Some(head_seq - 1))
    );
    let last_seq = head_seq - 2;
    assert_eq!(b.problem, Problem::Truncated { head_seq, last_seq });
    assert!(open_err(dir.path(), Some(key)).contains("removed from the end"));
}

#[test]
fn deleted_segments_are_reported_by_name() {
    // Middle segment.
    let (dir, _) = signed_log();
    let first_of_2 = {
        let r: AuditRecord = serde_json::from_str(&lines(dir.path(), 2)[0]).expect("record");
        r.seq
    };
    fs::remove_file(dir.path().join(segment_name(2))).expect("rm");
    let b = broken(verify(dir.path(), None));
    assert_eq!(at(&b), ("audit-000002.jsonl", 0, Some(first_of_2)));
    assert_eq!(b.problem, Problem::MissingFile);

    // First segment.
    let (dir, _) = signed_log();
    fs::remove_file(dir.path().join(segment_name(1))).expect("rm");
    let b = broken(verify(dir.path(), None));
    assert_eq!(at(&b), ("audit-000001.jsonl", 0, Some(1)));
    assert_eq!(b.problem, Problem::MissingFile);

    // Last segment: the remaining log is a valid chain; only the head shows the loss.
    let (dir, key) = signed_log();
    let n = segment_count(dir.path());
    let first_of_last = {
        let r: AuditRecord = serde_json::from_str(&lines(dir.path(), n)[0]).expect("record");
        r.seq
    };
    fs::remove_file(dir.path().join(segment_name(n))).expect("rm");
    let b = broken(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(at(&b), (segment_name(n).as_str(), 0, Some(first_of_last)));
    assert!(matches!(b.problem, Problem::Truncated { .. }), "{b}");
    open_err(dir.path(), Some(key));
}

#[test]
fn forged_checkpoint_is_caught_only_with_the_public_key() {
    let (dir, key) = signed_log();
    let forger = super::generate_signing_key().expect("key");
    edit(
        dir.path(),
        6,
        "\"admin\":\"alice\"",
        "\"admin\":\"mallory\"",
    );
    rechain(dir.path(), Some(&forger));
    let (file, line, seq) = next_checkpoint(dir.path(), 6);
    let b = broken(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(at(&b), (file.as_str(), line, Some(seq)));
    assert_eq!(b.problem, Problem::CheckpointSignatureInvalid);
    // Without the key the rewritten chain is self-consistent: signatures are not checked, and
    // the summary says so.
    let s = expect_ok(verify(dir.path(), None));
    assert_eq!(s.checkpoints_verified, 0);
    assert_eq!(s.checkpoints_unchecked, s.checkpoints);
    assert_eq!(s.head_signature, Some(SignatureStatus::Unchecked));
    // The chain itself refuses to continue a log whose head another key signed.
    assert!(open_err(dir.path(), Some(key)).contains("does not verify"));
}

#[test]
fn rechained_log_without_resealing_breaks_at_the_next_checkpoint() {
    let (dir, _) = signed_log();
    edit(dir.path(), 6, "\"allowed\":true", "\"allowed\":false");
    rechain(dir.path(), None);
    let (file, line, seq) = next_checkpoint(dir.path(), 6);
    let b = broken(verify(dir.path(), None));
    assert_eq!(at(&b), (file.as_str(), line, Some(seq)));
    assert!(
        matches!(b.problem, Problem::CheckpointCoversWrongRecord { .. }),
        "{b}"
    );
}

#[test]
fn forged_or_unsigned_head_is_rejected_with_the_public_key() {
    let (dir, key) = signed_log();
    let s = expect_ok(verify(dir.path(), None));
    let forger = super::generate_signing_key().expect("key");
    for sig in [
        None,
        Some(sign(&forger, &head_message(s.last_seq, &s.last_hash))),
    ] {
        let unsigned = sig.is_none();
        let head = Head {
            version: 1,
            seq: s.last_seq,
            hash: s.last_hash.clone(),
            file: None,
            sig,
        };
        write_head(dir.path(), &head).expect("head");
        let b = broken(verify(dir.path(), Some(&key.verifying_key())));
        assert_eq!(at(&b), (HEAD_FILE, 0, Some(s.last_seq)));
        let expected = if unsigned {
            Problem::HeadUnsigned
        } else {
            Problem::HeadSignatureInvalid
        };
        assert_eq!(b.problem, expected);
        open_err(dir.path(), Some(key.clone()));
    }
}

#[test]
fn bad_json_incomplete_line_and_missing_head() {
    let (dir, _) = signed_log();
    let mut l = lines(dir.path(), 2);
    l[1].insert(0, '#');
    write_lines(dir.path(), 2, &l);
    let b = broken(verify(dir.path(), None));
    assert_eq!(at(&b), ("audit-000002.jsonl", 2, None));
    assert!(matches!(b.problem, Problem::BadJson(_)), "{b}");

    let (dir, key) = signed_log();
    let n = segment_count(dir.path());
    let path = dir.path().join(segment_name(n));
    let mut bytes = fs::read(&path).expect("read");
    bytes.extend_from_slice(b"{\"time\":\"2025-");
    fs::write(&path, &bytes).expect("write");
    let b = broken(verify(dir.path(), None));
    assert_eq!(b.line, lines(dir.path(), n).len() as u64);
    assert_eq!(b.problem, Problem::IncompleteLine);
    // Without a key nothing after the head can be told apart from a forgery: refused.
    assert!(open_err(dir.path(), None).contains("incomplete last line"));
    // With it, the fragment (never acknowledged, never signed) is left out and said so.
    let chain = AuditChain::open(dir.path(), Some(key.clone()), opts(4, 1500)).expect("open");
    drop(chain);
    let first = &records(dir.path(), n + 1)[0];
    assert_eq!(first.event, AuditEvent::Recovery);
    let x = &first.excluded.as_ref().expect("excluded")[0];
    assert_eq!((x.file.as_str(), x.bytes), (segment_name(n).as_str(), 14));
    assert!(x.why.contains("incomplete last line"), "{}", x.why);
    let s = expect_ok(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(s.excluded.len(), 1);

    let (dir, key) = signed_log();
    fs::remove_file(dir.path().join(HEAD_FILE)).expect("rm head");
    let b = broken(verify(dir.path(), None));
    assert_eq!(
        (b.file.as_str(), b.problem),
        (HEAD_FILE, Problem::HeadMissing)
    );
    assert!(open_err(dir.path(), Some(key)).contains("HEAD.json is missing"));
}

#[test]
fn removed_end_of_a_middle_segment_is_reported_there() {
    let (dir, _) = signed_log();
    let mut l = lines(dir.path(), 1);
    let removed = l.len() as u64;
    l.pop();
    write_lines(dir.path(), 1, &l);
    let b = broken(verify(dir.path(), None));
    assert_eq!(
        at(&b),
        ("audit-000001.jsonl", removed - 1, Some(removed - 1))
    );
    assert_eq!(b.problem, Problem::SegmentNotSealed);
}
