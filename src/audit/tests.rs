//! Writer behaviour: append, rotation, checkpoints, resume, concurrency and failing closed.
//! Helpers here are shared with `tamper_tests`.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;

use super::fault::Fault;
use super::files::{HEAD_FILE, segment_name, write_head};
use super::record::Head;
use super::{
    AuditChain, AuditEntry, AuditError, AuditEvent, AuditOptions, AuditRecord, Problem,
    SignatureStatus, SyncCounts, VerifyReport, VerifySummary, generate_signing_key, verify,
};

pub(super) fn key() -> SigningKey {
    generate_signing_key().expect("key")
}

pub(super) fn opts(checkpoint_every: u64, max_file_bytes: u64) -> AuditOptions {
    AuditOptions {
        checkpoint_every,
        max_file_bytes,
    }
}

pub(super) fn entry(i: u64) -> AuditEntry {
    if i % 3 == 2 {
        AuditEntry::sync_finished()
            .admin("alice")
            .peer("wss://relay.example")
            .direction("down")
            .counts(SyncCounts {
                have: i,
                need: 2,
                fetched: 2,
                sent: 0,
                ..Default::default()
            })
            .duration_ms(12)
    } else {
        AuditEntry::decision(i.is_multiple_of(2), "policy: peer allowed")
            .admin("alice")
            .cert_der(b"certificate")
            .token_jti(format!("jti-{i}"))
            .source("10.0.0.1:5000")
            .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
            .rpc("/orly.v1.Sync/Start")
            .filter(serde_json::json!({"kinds": [1]}))
    }
}

pub(super) fn fill(chain: &AuditChain, n: u64) {
    for i in 0..n {
        chain.append(entry(i)).expect("append");
    }
}

pub(super) fn lines(dir: &Path, index: u64) -> Vec<String> {
    let text = fs::read_to_string(dir.join(segment_name(index))).expect("read segment");
    text.lines().map(str::to_string).collect()
}

pub(super) fn write_lines(dir: &Path, index: u64, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    fs::write(dir.join(segment_name(index)), text).expect("write segment");
}

pub(super) fn records(dir: &Path, index: u64) -> Vec<AuditRecord> {
    lines(dir, index)
        .iter()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

pub(super) fn segment_count(dir: &Path) -> u64 {
    (1..)
        .take_while(|i| dir.join(segment_name(*i)).exists())
        .count() as u64
}

pub(super) fn expect_ok(report: VerifyReport) -> VerifySummary {
    match report {
        VerifyReport::Ok(summary) => summary,
        VerifyReport::Broken(b) => panic!("expected a valid log, got {b}"),
    }
}

#[test]
fn append_and_verify_across_rotation_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let pk = key.verifying_key();
    let o = opts(5, 1500);
    let chain = AuditChain::open(dir.path(), Some(key.clone()), o).expect("open");
    let mut seqs = Vec::new();
    for i in 0..20 {
        seqs.push(chain.append(entry(i)).expect("append").seq);
    }
    drop(chain);
    // Reopen in the middle: the chain continues where it stopped.
    let chain = AuditChain::open(dir.path(), Some(key), o).expect("reopen");
    for i in 20..30 {
        seqs.push(chain.append(entry(i)).expect("append").seq);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let files = segment_count(dir.path());
    assert!(files >= 3, "expected rotation, got {files} files");
    for index in 1..files {
        let recs = records(dir.path(), index);
        let last = recs.last().expect("non-empty segment");
        assert_eq!(last.event, AuditEvent::Checkpoint, "{index} not sealed");
    }
    let s = expect_ok(verify(dir.path(), Some(&pk)));
    assert_eq!(s.files, files);
    assert_eq!(s.records, 30 + s.checkpoints);
    assert!(s.checkpoints >= 6);
    assert_eq!(s.checkpoints_verified, s.checkpoints);
    assert_eq!(s.head_signature, Some(SignatureStatus::Verified));
    assert_eq!(s.head_lag, 0);
    assert_eq!(chain.last_record().expect("last").seq, s.last_seq);
    // Without the key the structure still verifies, the signatures are merely unchecked.
    let s = expect_ok(verify(dir.path(), None));
    assert_eq!(s.checkpoints_unchecked, s.checkpoints);
    assert_eq!(s.head_signature, Some(SignatureStatus::Unchecked));
}

#[test]
fn checkpoints_every_n_and_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = AuditChain::open(dir.path(), Some(key()), opts(3, 1 << 20)).expect("open");
    fill(&chain, 6);
    let events: Vec<AuditEvent> = records(dir.path(), 1).iter().map(|r| r.event).collect();
    use AuditEvent::{Checkpoint as C, Decision as D, SyncFinished as S};
    assert_eq!(events, [D, D, S, C, D, D, S, C]);
    // The last record already is a checkpoint: nothing new.
    assert_eq!(chain.checkpoint().expect("checkpoint").seq, 8);
    chain.append(entry(0)).expect("append");
    assert_eq!(chain.checkpoint().expect("checkpoint").seq, 10);
    let recs = records(dir.path(), 1);
    let seal = recs[9].checkpoint.clone().expect("seal");
    assert_eq!((seal.seq, seal.hash.as_str()), (9, recs[9].prev.as_str()));
    assert!(seal.sig.is_some());
}

#[test]
fn unsigned_checkpoints_are_reported_and_rejected_with_a_pubkey() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = AuditChain::open(dir.path(), None, opts(2, 1 << 20)).expect("open");
    assert!(!chain.is_signing());
    fill(&chain, 5);
    chain.checkpoint().expect("checkpoint");
    let s = expect_ok(verify(dir.path(), None));
    assert_eq!((s.checkpoints, s.checkpoints_unsigned), (3, 3));
    assert_eq!(s.head_signature, Some(SignatureStatus::Unsigned));
    let VerifyReport::Broken(b) = verify(dir.path(), Some(&key().verifying_key())) else {
        panic!("unsigned checkpoint accepted with a pubkey");
    };
    assert_eq!(
        (b.file.as_str(), b.line, b.seq),
        ("audit-000001.jsonl", 3, Some(3))
    );
    assert_eq!(b.problem, Problem::CheckpointUnsigned);
}

#[test]
fn empty_log_verifies_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    drop(AuditChain::open(dir.path(), Some(key.clone()), opts(10, 1000)).expect("open"));
    assert!(dir.path().join(HEAD_FILE).exists());
    let s = expect_ok(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!((s.records, s.last_seq), (0, 0));
    let chain = AuditChain::open(dir.path(), Some(key), opts(10, 1000)).expect("reopen");
    assert_eq!(chain.append(entry(1)).expect("append").seq, 1);
}

#[test]
fn concurrent_appends_from_four_threads_form_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let chain =
        Arc::new(AuditChain::open(dir.path(), Some(key.clone()), opts(16, 4000)).expect("open"));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let chain = Arc::clone(&chain);
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| chain.append(entry(t * 100 + i)).expect("append").seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 200);
    let s = expect_ok(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(s.records, 200 + s.checkpoints);
    assert!(s.files > 1);
}

/// Group commit: concurrent appends share fsyncs, and none returns before `HEAD.json` names its
/// record (so before it is fsynced).
#[test]
fn concurrent_appends_share_fsyncs_and_each_returns_durable() {
    const THREADS: u64 = 16;
    const EACH: u64 = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let chain = Arc::new(
        AuditChain::open(dir.path(), Some(key.clone()), opts(1000, 1 << 20)).expect("open"),
    );
    let start = Arc::new(std::sync::Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (chain, start) = (Arc::clone(&chain), Arc::clone(&start));
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                start.wait();
                (0..EACH)
                    .map(|i| {
                        let seq = chain.append(entry(t * 100 + i)).expect("append").seq;
                        let head = super::files::read_head(&dir)
                            .expect("head readable")
                            .expect("head exists");
                        assert!(
                            head.seq >= seq,
                            "append of {seq} returned, head at {}",
                            head.seq
                        );
                        seq
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=THREADS * EACH).collect::<Vec<_>>());
    let fsyncs = chain
        .commit_fsyncs
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{} appends from {THREADS} threads: {fsyncs} commit fsyncs",
        THREADS * EACH
    );
    assert!(
        fsyncs < THREADS * EACH,
        "{fsyncs} fsyncs for {} appends: no commit was shared",
        THREADS * EACH
    );
    drop(chain);
    let s = expect_ok(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(s.records, THREADS * EACH + s.checkpoints);
    assert_eq!(s.head_lag, 0);
}

#[test]
fn a_second_writer_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = AuditChain::open(dir.path(), None, opts(10, 1000)).expect("open");
    let err = AuditChain::open(dir.path(), None, opts(10, 1000)).expect_err("second writer");
    assert!(matches!(err, AuditError::InUse(_)), "{err}");
    drop(chain);
    AuditChain::open(dir.path(), None, opts(10, 1000)).expect("reopen");
}

#[test]
fn open_fails_when_the_directory_is_a_file() {
    // Running as root, chmod does not stop writes; a file where the directory should be does.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit");
    fs::write(&path, b"not a directory").expect("write");
    let err = AuditChain::open(&path, None, opts(10, 1000)).expect_err("must refuse");
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
    assert!(
        AuditChain::open(dir.path(), None, opts(10, 0)).is_err(),
        "zero size accepted"
    );
}

#[test]
fn append_fails_closed_when_the_directory_is_removed_or_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit");
    let chain = AuditChain::open(&path, None, opts(10, 1000)).expect("open");
    chain.append(entry(0)).expect("append");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let seg = path.join(segment_name(1));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o500)).expect("chmod");
        fs::set_permissions(&seg, fs::Permissions::from_mode(0o400)).expect("chmod");
        let probe = path.join("probe");
        if fs::write(&probe, b"x").is_ok() {
            // Root: permissions are not enforced, nothing to observe here.
            fs::remove_file(&probe).expect("remove probe");
        } else {
            let err = chain
                .append(entry(1))
                .expect_err("read-only dir accepted a record");
            assert!(err.to_string().contains("ermission denied"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::set_permissions(&seg, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // Works as root too: the directory disappears under the running chain.
    fs::remove_dir_all(&path).expect("remove dir");
    let err = chain
        .append(entry(2))
        .expect_err("append into a removed directory");
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
    assert!(err.to_string().contains("audit"), "{err}");
}

#[test]
fn failed_head_update_refuses_then_recovers_with_a_consistent_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let chain = AuditChain::open(dir.path(), Some(key.clone()), opts(10, 1 << 20)).expect("open");
    fill(&chain, 3);
    // A non-empty directory where HEAD.json goes: the rename fails, even for root.
    let head = dir.path().join(HEAD_FILE);
    fs::remove_file(&head).expect("remove head");
    fs::create_dir_all(head.join("blocker")).expect("mkdir");
    // Seq 4 is durable, but its caller is refused: the log must not say "allowed" alone.
    let allowed = AuditEntry::decision(true, "allowed")
        .admin("alice")
        .rpc("/x");
    assert!(chain.append(allowed).is_err());
    fs::remove_dir_all(&head).expect("rmdir");
    let recs = records(dir.path(), 1);
    let outcome = &recs[4];
    assert_eq!(
        (outcome.event, outcome.decision_seq, outcome.allowed),
        (AuditEvent::Outcome, Some(4), Some(false)),
        "{outcome:?}"
    );
    let reason = outcome.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("refused: audit log unavailable"),
        "{reason}"
    );
    assert_eq!(outcome.admin.as_deref(), Some("alice"));
    assert_eq!(chain.append(entry(4)).expect("append").seq, 6);
    let s = expect_ok(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(s.records, 6);
    assert_eq!(s.overruled, vec![4]);
}

#[test]
fn failed_segment_creation_at_rotation_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = AuditChain::open(dir.path(), None, opts(0, 600)).expect("open");
    fs::create_dir(dir.path().join(segment_name(2))).expect("block segment 2");
    let mut failed = false;
    for i in 0..6 {
        failed |= chain.append(entry(i)).is_err();
    }
    assert!(failed, "writing into a directory succeeded");
    fs::remove_dir(dir.path().join(segment_name(2))).expect("unblock");
    fill(&chain, 3);
    let s = expect_ok(verify(dir.path(), None));
    assert!(s.files >= 2);
}

#[test]
fn partial_write_is_rolled_back_and_the_chain_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = AuditChain::open(dir.path(), None, opts(0, 1 << 20)).expect("open");
    fill(&chain, 2);
    chain.inject_fault(Fault::PartialWrite);
    let err = chain.append(entry(2)).expect_err("partial write");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(chain.append(entry(3)).expect("append").seq, 3);
    assert_eq!(expect_ok(verify(dir.path(), None)).records, 3);
}

#[test]
fn failed_fsync_poisons_until_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = AuditChain::open(dir.path(), None, opts(0, 1 << 20)).expect("open");
    fill(&chain, 2);
    chain.inject_fault(Fault::Fsync);
    assert!(chain.append(entry(2)).is_err());
    let err = chain
        .append(entry(3))
        .expect_err("poisoned chain accepted a record");
    assert!(matches!(err, AuditError::Poisoned(_)), "{err}");
    assert!(chain.checkpoint().is_err());
    drop(chain);
    // Whatever reached the disk is a consistent chain; the head lags by the unacknowledged one.
    let chain = AuditChain::open(dir.path(), None, opts(0, 1 << 20)).expect("reopen");
    assert_eq!(chain.append(entry(4)).expect("append").seq, 4);
    expect_ok(verify(dir.path(), None));
}

#[test]
fn resume_writes_a_missing_rotation_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = AuditChain::open(dir.path(), None, opts(0, 500)).expect("open");
    fill(&chain, 2);
    drop(chain);
    // Simulate a crash after the record that filled the segment, before its checkpoint.
    let mut l = lines(dir.path(), 1);
    while l.last().is_some_and(|x| x.contains("\"checkpoint\"")) {
        l.pop();
    }
    write_lines(dir.path(), 1, &l);
    let n = l.len() as u64;
    // The head was not updated for the last record either.
    let last: AuditRecord = serde_json::from_str(&l[l.len() - 1]).expect("record");
    let head = Head {
        version: 1,
        seq: n - 1,
        hash: last.prev,
        file: Some(segment_name(1)),
        sig: None,
    };
    write_head(dir.path(), &head).expect("head");
    let chain = AuditChain::open(dir.path(), None, opts(0, 500)).expect("reopen");
    assert_eq!(chain.last_record().expect("last").seq, n + 1);
    chain.append(entry(9)).expect("append");
    assert_eq!(segment_count(dir.path()), 2);
    let s = expect_ok(verify(dir.path(), None));
    assert_eq!(s.records, n + 2);
}

/// A deferred record is in the log at once but `HEAD.json` names it only once it is fsynced
/// (by `sync_deferred` or the next durable append), and the chain stays one chain.
#[test]
fn deferred_records_join_the_chain_and_the_head_follows_their_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key();
    let chain = AuditChain::open(dir.path(), Some(key.clone()), opts(0, 1 << 20)).expect("open");
    fill(&chain, 2);
    let head_seq = || {
        let head: Head =
            serde_json::from_slice(&fs::read(dir.path().join(HEAD_FILE)).expect("head"))
                .expect("head json");
        head.seq
    };
    assert_eq!(head_seq(), 2);
    assert_eq!(chain.append_deferred(entry(2)).expect("deferred").seq, 3);
    assert_eq!(records(dir.path(), 1).len(), 3, "written at once");
    assert_eq!(head_seq(), 2, "the head never names an unsynced record");
    chain.sync_deferred().expect("sync");
    assert_eq!(head_seq(), 3);
    chain.sync_deferred().expect("nothing to do is fine");

    assert_eq!(chain.append_deferred(entry(3)).expect("deferred").seq, 4);
    assert_eq!(chain.append(entry(4)).expect("durable").seq, 5);
    assert_eq!(
        head_seq(),
        5,
        "a durable append covers the deferred one before it"
    );
    // Closing the chain makes a last deferred record durable and names it.
    assert_eq!(chain.append_deferred(entry(5)).expect("deferred").seq, 6);
    drop(chain);
    assert_eq!(head_seq(), 6);
    let summary = expect_ok(verify(dir.path(), Some(&key.verifying_key())));
    assert_eq!(summary.records, 6);
    assert_eq!(summary.head_lag, 0);
}

/// An fsync failure found by `sync_deferred` poisons the chain: the next request is refused.
#[test]
fn failed_fsync_of_deferred_records_poisons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = AuditChain::open(dir.path(), None, opts(0, 1 << 20)).expect("open");
    fill(&chain, 1);
    chain.append_deferred(entry(1)).expect("deferred");
    chain.inject_fault(Fault::Fsync);
    assert!(chain.sync_deferred().is_err());
    let err = chain
        .append(entry(2))
        .expect_err("poisoned chain accepted a record");
    assert!(matches!(err, AuditError::Poisoned(_)), "{err}");
    drop(chain);
    let chain = AuditChain::open(dir.path(), None, opts(0, 1 << 20)).expect("reopen");
    assert_eq!(chain.append(entry(3)).expect("append").seq, 3);
    expect_ok(verify(dir.path(), None));
}
