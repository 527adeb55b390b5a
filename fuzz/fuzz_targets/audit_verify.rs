//! `orly audit verify` over a directory made of the fuzz input: `HEAD.json` and up to six
//! segments (`audit-000001.jsonl`, ...), separated by 0x1e (see `orly_fuzz::split_audit_input`).
//! The verifier runs with the audit public key the seeds were signed with and without a key.
//!
//! Checked: no panic; the report prints; a log that verifies with the key also verifies
//! without it (the key only adds checks), and says so about the same records.
//!
//! The directory is one per process under the temp dir (`orly-fuzz-audit-<pid>`), rewritten
//! for every input; `fuzz/run.sh` points TMPDIR at a directory it removes afterwards.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orly::audit::{VerifyReport, verify};
use orly_fuzz::{audit_key, split_audit_input};
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("orly-fuzz-audit-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create the audit directory");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    for entry in std::fs::read_dir(dir).expect("read the audit directory") {
        let path = entry.expect("directory entry").path();
        std::fs::remove_file(&path).expect("clear the audit directory");
    }
    let (head, segments) = split_audit_input(data);
    if !head.is_empty() {
        std::fs::write(dir.join("HEAD.json"), head).expect("write HEAD.json");
    }
    for (i, seg) in segments.iter().enumerate() {
        let name = format!("audit-{:06}.jsonl", i + 1);
        std::fs::write(dir.join(name), seg).expect("write a segment");
    }
    let key = audit_key().verifying_key();
    let with_key = verify(dir, Some(&key));
    let without = verify(dir, None);
    let _ = (with_key.to_string(), without.to_string());
    if let VerifyReport::Ok(keyed) = &with_key {
        let VerifyReport::Ok(plain) = &without else {
            panic!("verifies with the key but not without: {without}");
        };
        assert_eq!(
            (keyed.records, keyed.last_seq, &keyed.last_hash),
            (plain.records, plain.last_seq, &plain.last_hash)
        );
    }
});
