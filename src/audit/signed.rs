//! Per-record signatures: every line the writer appends ends with `"sig"`, an Ed25519 signature
//! by the audit key over the rest of the line. A record appended by anyone else — even one
//! chained perfectly with SHA-256 — has no valid `sig`, and is named by `orly audit verify` and
//! left out by the next writer.

use std::collections::BTreeSet;

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::keys::{sign, verify_sig};
use super::record::{AuditEvent, AuditRecord, record_message};

/// Appends the `sig` field to a serialised record (`body`, which must not carry one).
pub(crate) fn seal_line(mut body: Vec<u8>, key: Option<&SigningKey>) -> Vec<u8> {
    let Some(key) = key else {
        return body;
    };
    let sig = sign(key, &record_message(&body));
    if body.last() == Some(&b'}') {
        body.pop();
        body.extend_from_slice(b",\"sig\":\"");
        body.extend_from_slice(sig.as_bytes());
        body.extend_from_slice(b"\"}");
    }
    body
}

/// Why a line is not authentic.
pub(crate) fn authenticate(
    line: &[u8],
    record: &AuditRecord,
    key: &VerifyingKey,
) -> Result<(), &'static str> {
    let Some(sig) = &record.sig else {
        return Err(
            "the record is not signed by the audit key (written by someone else, or by a \
                    version that did not sign records)",
        );
    };
    let suffix = format!(",\"sig\":\"{sig}\"}}");
    let Some(stripped) = line.strip_suffix(suffix.as_bytes()) else {
        return Err("the record's signature is not its last field (edited)");
    };
    let mut body = stripped.to_vec();
    body.push(b'}');
    if verify_sig(key, &record_message(&body), sig) {
        Ok(())
    } else {
        Err("the record's signature does not verify with the audit key (forged or edited)")
    }
}

/// The allowed syncs that have no finished record yet, as the records say, in log order: the
/// writer, the resume scan and the verifier all track them with this one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OpenSyncs(BTreeSet<u64>);

impl OpenSyncs {
    /// Applies one record. `from_checkpoint`: take a checkpoint's list as the whole truth (when
    /// the scan did not start at the beginning of the log).
    pub(crate) fn apply(&mut self, record: &AuditRecord, from_checkpoint: bool) {
        match record.event {
            AuditEvent::Decision => {
                if record.starts_sync == Some(true) && record.allowed == Some(true) {
                    self.0.insert(record.seq);
                }
            }
            AuditEvent::SyncFinished | AuditEvent::Outcome => {
                if let Some(seq) = record.decision_seq {
                    self.0.remove(&seq);
                }
            }
            AuditEvent::Recovery => {
                for seq in record
                    .interrupted
                    .iter()
                    .chain(&record.unconfirmed)
                    .flatten()
                {
                    self.0.remove(seq);
                }
            }
            AuditEvent::Checkpoint => {
                if from_checkpoint && let Some(seal) = &record.checkpoint {
                    self.0 = seal.open_syncs.iter().copied().collect();
                }
            }
        }
    }

    /// Forgets `seq` (its caller was refused or it was reported).
    pub(crate) fn remove(&mut self, seq: u64) {
        self.0.remove(&seq);
    }

    /// The open seqs, ascending.
    pub(crate) fn to_vec(&self) -> Vec<u64> {
        self.0.iter().copied().collect()
    }

    /// Forgets them all.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::audit::AuditEntry;
    use crate::audit::keys::generate_signing_key;

    fn line_of(rec: &AuditRecord, key: Option<&SigningKey>) -> Vec<u8> {
        seal_line(serde_json::to_vec(rec).expect("encode"), key)
    }

    #[test]
    fn a_sealed_line_parses_back_and_authenticates_only_with_its_key() {
        let key = generate_signing_key().expect("key");
        let other = generate_signing_key().expect("key");
        let rec =
            AuditEntry::decision(true, "ok")
                .admin("alice")
                .into_record("T".into(), 1, "00".into());
        let line = line_of(&rec, Some(&key));
        let back: AuditRecord = serde_json::from_slice(&line).expect("parse");
        assert!(back.sig.is_some());
        assert_eq!(
            AuditRecord {
                sig: None,
                ..back.clone()
            },
            rec
        );
        assert_eq!(authenticate(&line, &back, &key.verifying_key()), Ok(()));
        assert!(authenticate(&line, &back, &other.verifying_key()).is_err());

        // An edit anywhere in the body breaks it, however the line is re-chained.
        let edited = String::from_utf8(line.clone())
            .expect("utf8")
            .replace("alice", "bob");
        let rec2: AuditRecord = serde_json::from_str(&edited).expect("parse");
        assert!(authenticate(edited.as_bytes(), &rec2, &key.verifying_key()).is_err());

        // Unsigned, or the signature moved: refused with a reason.
        let unsigned = line_of(&rec, None);
        assert!(authenticate(&unsigned, &rec, &key.verifying_key()).is_err());
    }

    #[test]
    fn open_syncs_follow_starts_finishes_outcomes_and_recoveries() {
        let mut open = OpenSyncs::default();
        let start = |seq| {
            AuditEntry::decision(true, "ok")
                .starts_sync()
                .into_record("T".into(), seq, "00".into())
        };
        for seq in [1, 2, 3, 4] {
            open.apply(&start(seq), false);
        }
        // A denial that says starts_sync does not open anything.
        let denied =
            AuditEntry::decision(false, "no")
                .starts_sync()
                .into_record("T".into(), 5, "00".into());
        open.apply(&denied, false);
        let done =
            AuditEntry::sync_finished()
                .decision_seq(1)
                .into_record("T".into(), 6, "00".into());
        open.apply(&done, false);
        let refused = AuditEntry::outcome_of(&start(2), "refused".into()).into_record(
            "T".into(),
            7,
            "00".into(),
        );
        open.apply(&refused, false);
        let rec = AuditEntry::recovery("r".into(), vec![], vec![3], vec![]).into_record(
            "T".into(),
            8,
            "00".into(),
        );
        open.apply(&rec, false);
        assert_eq!(open.to_vec(), vec![4]);
        let cp = AuditRecord::checkpoint("T".into(), 9, "00".into(), None, vec![7, 8]);
        open.apply(&cp, false);
        assert_eq!(open.to_vec(), vec![4]);
        open.apply(&cp, true);
        assert_eq!(open.to_vec(), vec![7, 8]);
    }
}
