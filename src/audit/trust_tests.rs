//! What the log proves (issue 14 §1): a record someone else appended is named by `verify` and
//! never adopted by a restart; a record is bounded whatever a caller sends; syncs that never
//! finished and decisions never confirmed are reported.

use std::fs;
use std::path::Path;

use ed25519_dalek::SigningKey;

use super::files::{HEAD_FILE, segment_name};
use super::keys::sign;
use super::record::{Head, checkpoint_message, head_message, line_hash};
use super::tests::{expect_ok, fill, key, lines, opts, records, segment_count, write_lines};
use super::{
    AuditChain, AuditEntry, AuditEvent, AuditRecord, MAX_RECORD_BYTES, Problem, VerifyReport,
    verify,
};

/// The issue's forgery: admin bob allowed to push to an exfiltration relay, chained with
/// SHA-256 after the last record of segment `index`, but not signed by the audit key.
fn append_forged(dir: &Path, index: u64) -> u64 {
    let mut l = lines(dir, index);
    let last = l.last().expect("a record");
    let rec: AuditRecord = serde_json::from_str(last).expect("record");
    let forged = AuditEntry::decision(true, "allowed by policy")
        .admin("bob")
        .peer("wss://exfil.example.com/")
        .direction("up")
        .rpc("/orlysync.negentropy.v1.NegentropyService/SyncWithPeer")
        .into_record(rec.time.clone(), rec.seq + 1, line_hash(last.as_bytes()));
    l.push(serde_json::to_string(&forged).expect("encode"));
    write_lines(dir, index, &l);
    forged.seq
}

fn unauthenticated(report: VerifyReport) -> (String, u64, Option<u64>, String) {
    match report {
        VerifyReport::Broken(b) => match &b.problem {
            Problem::Unauthenticated(why) => (b.file.clone(), b.line, b.seq, why.clone()),
            other => panic!("expected an unauthenticated record, got {other}: {b}"),
        },
        VerifyReport::Ok(s) => panic!("forged record accepted: {s:?}"),
    }
}

#[test]
fn a_forged_record_after_the_signed_head_is_named_by_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let chain = AuditChain::open(dir.path(), Some(key.clone()), opts(4, 1500)).expect("open");
    fill(&chain, 10);
    chain.checkpoint().expect("checkpoint");
    drop(chain);
    let n = segment_count(dir.path());
    let line = lines(dir.path(), n).len() as u64 + 1;
    let seq = append_forged(dir.path(), n);

    let (file, at, at_seq, why) = unauthenticated(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!((file, at, at_seq), (segment_name(n), line, Some(seq)));
    assert!(why.contains("not signed by the audit key"), "{why}");

    // A signature taken from another record does not fit this one.
    let mut l = lines(dir.path(), n);
    let other: AuditRecord = serde_json::from_str(&l[0]).expect("record");
    let mut forged: AuditRecord = serde_json::from_str(&l[l.len() - 1]).expect("record");
    forged.sig = other.sig;
    let last = l.len() - 1;
    l[last] = serde_json::to_string(&forged).expect("encode");
    write_lines(dir.path(), n, &l);
    let (_, at, _, why) = unauthenticated(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(at, line);
    assert!(why.contains("does not verify"), "{why}");

    // Without the public key nothing can be authenticated, and the report says so.
    let s = expect_ok(verify(dir.path(), None));
    assert_eq!(s.head_lag, 1);
    assert!(
        s.proves().starts_with("NOT authenticated"),
        "{}",
        s.proves()
    );
}

#[test]
fn a_restart_never_adopts_or_seals_a_record_it_did_not_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let pk = key.verifying_key();
    let o = opts(4, 1 << 20);
    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("open");
    fill(&chain, 3);
    drop(chain);
    let forged_seq = append_forged(dir.path(), 1);
    let forged_line = lines(dir.path(), 1).len() as u64;
    let forged_text = lines(dir.path(), 1)[forged_line as usize - 1].clone();

    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("reopen");
    // The chain continues from the last authentic record, in a new segment.
    assert_eq!(chain.last_record().expect("last").seq, forged_seq);
    fill(&chain, 6);
    chain.checkpoint().expect("checkpoint");
    drop(chain);
    assert_eq!(segment_count(dir.path()), 2);
    let recs = records(dir.path(), 2);
    let recovery = &recs[0];
    assert_eq!(recovery.event, AuditEvent::Recovery);
    assert_eq!(
        recovery.seq, forged_seq,
        "the recovery takes the forged record's place"
    );
    assert_eq!(recovery.prev, line_hash(lines(dir.path(), 1)[2].as_bytes()));
    let reason = recovery.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("incident"), "{reason}");
    let x = &recovery.excluded.as_ref().expect("excluded")[0];
    assert_eq!(
        (x.file.as_str(), x.line),
        (segment_name(1).as_str(), forged_line)
    );
    assert_eq!(x.bytes, forged_text.len() as u64 + 1);
    // No checkpoint anywhere covers the forged record.
    let forged_hash = line_hash(forged_text.as_bytes());
    for r in recs.iter().filter_map(|r| r.checkpoint.as_ref()) {
        assert_ne!(r.hash, forged_hash, "the forged record was sealed");
    }
    // Verify accepts the log, reports the incident, and nobody named bob is in the chain.
    let s = expect_ok(verify(dir.path(), Some(&pk)));
    assert_eq!(s.excluded.len(), 1);
    assert_eq!(s.records, 3 + 1 + 6 + s.checkpoints);
    let text = VerifyReport::Ok(s).to_string();
    assert!(text.contains("INCIDENT"), "{text}");

    // The left-out lines cannot be changed afterwards.
    let mut l = lines(dir.path(), 1);
    l[forged_line as usize - 1] = forged_text.replace("exfil", "other");
    write_lines(dir.path(), 1, &l);
    match verify(dir.path(), Some(&pk)) {
        VerifyReport::Broken(b) => {
            assert!(matches!(b.problem, Problem::ExcludedChanged { .. }), "{b}");
            assert_eq!(
                (b.file.as_str(), b.line),
                (segment_name(1).as_str(), forged_line)
            );
        }
        VerifyReport::Ok(s) => panic!("changed excluded lines accepted: {s:?}"),
    }
}

#[test]
fn a_forged_record_chained_before_a_stale_head_is_refused_not_adopted() {
    // The head vouches for everything up to it: a record edited there is an error, not an
    // incident to work around.
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let chain = AuditChain::open(dir.path(), Some(key.clone()), opts(0, 1 << 20)).expect("open");
    fill(&chain, 4);
    drop(chain);
    let mut l = lines(dir.path(), 1);
    l[1] = l[1].replace("alice", "bob");
    write_lines(dir.path(), 1, &l);
    assert!(AuditChain::open(dir.path(), Some(key), opts(0, 1 << 20)).is_err());
}

#[test]
fn syncs_without_a_finished_record_are_reported_running_then_interrupted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let pk = key.verifying_key();
    // Tiny segments and frequent checkpoints: the open syncs must survive both.
    let o = opts(2, 900);
    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("open");
    let start = |peer: &str| {
        AuditEntry::decision(true, "allowed by policy")
            .starts_sync()
            .admin("alice")
            .peer(peer)
    };
    let a = chain.append(start("ws://a.example/")).expect("a").seq;
    let b = chain.append(start("ws://b.example/")).expect("b").seq;
    let c = chain.append(start("ws://c.example/")).expect("c").seq;
    chain
        .append_deferred(AuditEntry::sync_finished().decision_seq(b))
        .expect("b finished");
    fill(&chain, 12);
    assert!(segment_count(dir.path()) >= 3, "expected rotation");
    let s = expect_ok(verify(dir.path(), Some(&pk)));
    assert_eq!(
        (s.running.clone(), s.interrupted.clone()),
        (vec![a, c], vec![])
    );
    // Killed: nothing more is written (dropping only syncs deferred records).
    drop(chain);
    let s = expect_ok(verify(dir.path(), Some(&pk)));
    assert_eq!(
        (s.running.clone(), s.interrupted.clone()),
        (vec![], vec![a, c])
    );
    let text = VerifyReport::Ok(s).to_string();
    assert!(
        text.contains("interrupted syncs") && text.contains(&format!("seq {a}, seq {c}")),
        "{text}"
    );

    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("reopen");
    let first = chain.last_record().expect("last").seq;
    drop(chain);
    let recovery = (1..=segment_count(dir.path()))
        .flat_map(|i| records(dir.path(), i))
        .find(|r| r.seq == first)
        .expect("the first record after the restart");
    assert_eq!(recovery.event, AuditEvent::Recovery);
    assert_eq!(recovery.interrupted, Some(vec![a, c]));
    let reason = recovery.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&format!("interrupted: seq {a}, seq {c}")),
        "{reason}"
    );
    let s = expect_ok(verify(dir.path(), Some(&pk)));
    assert!(s.interrupted.is_empty(), "{s:?}");
    assert_eq!(s.recorded_interrupted, vec![a, c]);
    // A restart after that has nothing more to report (a due checkpoint at most).
    drop(AuditChain::open(dir.path(), Some(key), o).expect("reopen again"));
    let later: Vec<AuditEvent> = (1..=segment_count(dir.path()))
        .flat_map(|i| records(dir.path(), i))
        .filter(|r| r.seq > first)
        .map(|r| r.event)
        .collect();
    assert!(
        later.iter().all(|e| *e == AuditEvent::Checkpoint),
        "{later:?}"
    );
}

#[test]
fn a_decision_the_head_never_confirmed_is_listed_as_unconfirmed_at_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let o = opts(0, 1 << 20);
    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("open");
    fill(&chain, 2);
    let stale = fs::read(dir.path().join(HEAD_FILE)).expect("head");
    let allowed = AuditEntry::decision(true, "allowed by policy")
        .starts_sync()
        .admin("alice");
    let seq = chain.append(allowed).expect("append").seq;
    drop(chain);
    // The writer died between the record's fsync and the head's rename.
    fs::write(dir.path().join(HEAD_FILE), stale).expect("restore head");
    let s = expect_ok(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(s.head_lag, 1);

    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("reopen");
    drop(chain);
    let recs = records(dir.path(), 1);
    let recovery = recs.last().expect("recovery");
    assert_eq!(recovery.event, AuditEvent::Recovery);
    assert_eq!(recovery.unconfirmed, Some(vec![seq]));
    assert_eq!(
        recovery.interrupted, None,
        "an unconfirmed sync never started"
    );
    let s = expect_ok(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(s.recorded_unconfirmed, vec![seq]);
    assert!(s.interrupted.is_empty());
}

#[test]
fn every_field_is_bounded_so_a_record_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = AuditChain::open(dir.path(), Some(key()), opts(0, 1 << 30)).expect("open");
    let huge = |c: &str| c.repeat(3 * 1024 * 1024);
    let before = fs::metadata(dir.path().join(segment_name(1))).map_or(0, |m| m.len());
    let entry = AuditEntry::decision(false, huge("r"))
        .admin(huge("a"))
        .cert_fingerprint(huge("c"))
        .token_jti(huge("j"))
        .source(huge("s"))
        .trace_id(huge("t"))
        .rpc(huge("p"))
        .peer(format!("ws://h/{}", huge("\u{1}")))
        .direction(huge("d"))
        .error(huge("\""))
        .filter(serde_json::json!({ format!("#{}", huge("x")): [huge("y")] }));
    chain.append(entry).expect("append");
    drop(chain);
    let grown = fs::metadata(dir.path().join(segment_name(1)))
        .expect("segment")
        .len()
        - before;
    eprintln!("a record with every field at 3 MB takes {grown} bytes");
    assert!(
        grown <= MAX_RECORD_BYTES as u64,
        "one record grew the log by {grown} bytes"
    );
    let rec = &records(dir.path(), 1)[0];
    let peer = rec.peer.as_deref().unwrap_or_default();
    assert!(peer.contains("truncated"), "{peer}");
}

/// Turns a log written by this version into one of format 1: records without `sig`, re-chained,
/// checkpoints and head re-signed with the same key — what an older orly wrote.
fn as_format_1(dir: &Path, key: &SigningKey) {
    let mut prev: Option<String> = None;
    let mut last = (0, String::new());
    for index in 1..=segment_count(dir) {
        let mut l = lines(dir, index);
        for line in &mut l {
            let mut r: AuditRecord = serde_json::from_str(line).expect("record");
            r.sig = None;
            if let Some(p) = &prev {
                r.prev = p.clone();
            }
            if let Some(seal) = &mut r.checkpoint {
                seal.hash = r.prev.clone();
                seal.sig = Some(sign(key, &checkpoint_message(seal.seq, &seal.hash)));
            }
            *line = serde_json::to_string(&r).expect("encode");
            prev = Some(line_hash(line.as_bytes()));
            last = (r.seq, prev.clone().unwrap_or_default());
        }
        write_lines(dir, index, &l);
    }
    let head = Head {
        version: 1,
        seq: last.0,
        hash: last.1.clone(),
        file: Some(segment_name(segment_count(dir))),
        sig: Some(sign(key, &head_message(last.0, &last.1))),
    };
    fs::write(
        dir.join(HEAD_FILE),
        serde_json::to_vec(&head).expect("head"),
    )
    .expect("write");
}

#[test]
fn logs_of_format_1_still_verify_and_are_continued_in_format_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let pk = key.verifying_key();
    let o = opts(4, 1500);
    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("open");
    fill(&chain, 10);
    chain.checkpoint().expect("checkpoint");
    drop(chain);
    as_format_1(dir.path(), &key);
    expect_ok(verify(dir.path(), Some(&pk)));
    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("continue");
    fill(&chain, 3);
    drop(chain);
    let head: Head =
        serde_json::from_slice(&fs::read(dir.path().join(HEAD_FILE)).expect("head")).expect("json");
    assert_eq!(head.version, 2);
    expect_ok(verify(dir.path(), Some(&pk)));

    // A format the code does not know is refused, by the writer and by verify.
    let mut head = head;
    head.version = 9;
    fs::write(
        dir.path().join(HEAD_FILE),
        serde_json::to_vec(&head).expect("head"),
    )
    .expect("w");
    let err = AuditChain::open(dir.path(), Some(key), o).expect_err("unknown format");
    assert!(err.to_string().contains("format version 9"), "{err}");
    match verify(dir.path(), Some(&pk)) {
        VerifyReport::Broken(b) => assert!(b.to_string().contains("format version 9"), "{b}"),
        VerifyReport::Ok(s) => panic!("unknown format accepted: {s:?}"),
    }
}

#[test]
fn a_record_slipped_in_while_the_writer_runs_is_named_not_the_writers_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let o = opts(0, 1 << 20);
    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("open");
    fill(&chain, 3);
    let seq = append_forged(dir.path(), 1);
    // The writer knows nothing of it: its next record links to its own last one.
    fill(&chain, 2);
    drop(chain);
    let (file, line, at_seq, why) = unauthenticated(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!((file, line, at_seq), (segment_name(1), seq, Some(seq)));
    assert!(why.contains("not signed"), "{why}");
    // The head vouches for the writer's records after it: no restart may work around that.
    assert!(AuditChain::open(dir.path(), Some(key), o).is_err());
}
