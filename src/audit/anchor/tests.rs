//! The chain tells the anchorer of every checkpoint, and the verifier lists the same ones.

use std::sync::{Arc, Mutex};

use crate::audit::{
    AuditChain, AuditEntry, AuditOptions, VerifyReport, generate_signing_key, verify,
};

#[test]
fn every_checkpoint_written_is_observed_and_listed_by_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = generate_signing_key().expect("key");
    let vk = key.verifying_key();
    let opts = AuditOptions {
        checkpoint_every: 2,
        ..AuditOptions::default()
    };
    let chain = AuditChain::open(dir.path(), Some(key), opts).expect("open");
    assert_eq!(chain.verifying_key(), Some(vk));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    assert!(chain.on_checkpoint(move |cp| sink.lock().expect("lock").push(cp)));
    assert!(!chain.on_checkpoint(|_| {}), "one observer only");
    for i in 0..5 {
        chain
            .append(AuditEntry::decision(true, format!("r{i}")))
            .expect("append");
    }
    let last = chain.checkpoint().expect("checkpoint");
    drop(chain);
    let seen = seen.lock().expect("lock").clone();
    let seqs: Vec<u64> = seen.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![3, 6, last.seq]);
    assert_eq!(seen.last().map(|c| c.hash.clone()), Some(last.hash));
    let VerifyReport::Ok(summary) = verify(dir.path(), Some(&vk)) else {
        panic!("log does not verify");
    };
    let listed: Vec<(u64, String, String)> = summary
        .checkpoint_list
        .iter()
        .map(|c| (c.seq, c.hash.clone(), c.time.clone()))
        .collect();
    let observed: Vec<(u64, String, String)> =
        seen.into_iter().map(|c| (c.seq, c.hash, c.time)).collect();
    assert_eq!(listed, observed);
}
