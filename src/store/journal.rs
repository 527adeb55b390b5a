//! The fjall journal after a clean close: emptied, so the next open does not replay it.
//!
//! fjall writes every batch to its active journal (`<n>.jnl` in the store directory) and, at
//! every open, reads that journal from the start, skipping what tables already hold. It only
//! starts a new journal once the active one passes 64 MB, so after an import the next opens
//! each read tens of MB for nothing (about 15 ms per MB here). fjall offers no call to seal the
//! journal, so a clean close does what fjall itself does when it seals one and its data is in
//! tables: the journal's content is dropped.
//!
//! This is safe only when every condition below holds, and each is checked here or by the caller
//! ([`super::FjallStore::close`]):
//! - every keyspace's memtables were written out as tables (tables are fsynced when written,
//!   and the journal was fsynced before), so nothing in the journal is needed;
//! - the database is closed, and this process holds its lock file, so no other handle (here or
//!   in another process) appends to the journal meanwhile;
//! - there is exactly one journal file: a sealed one that fjall has not deleted yet is left for
//!   fjall to deal with at the next open.
//!
//! An empty journal is what fjall creates for a new store, and a journal cut anywhere is what a
//! crash leaves (fjall truncates a torn tail at open): an interruption here loses nothing.

use super::StoreError;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// fjall's lock file in a store directory (held while a database is open).
const LOCK_FILE: &str = "lock";

/// Empties the single journal of the closed, fully flushed store in `dir`. Returns whether it
/// did; false (and nothing touched) when the store is open elsewhere or has several journals.
pub(super) fn empty_after_clean_close(dir: &Path) -> Result<bool, StoreError> {
    let io = |what: &str, e: std::io::Error| {
        StoreError::Engine(format!("{what} in {}: {e}", dir.display()))
    };
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(|e| io("cannot open the lock file", e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::debug!("store reopened before its journal was emptied: left as it is");
            return Ok(false);
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io("cannot lock the store", e)),
    }
    let journals = journals(dir).map_err(|e| io("cannot list the journals", e))?;
    let [only] = journals.as_slice() else {
        return Ok(false);
    };
    let file = OpenOptions::new()
        .write(true)
        .open(only)
        .map_err(|e| io("cannot open the journal", e))?;
    file.set_len(0)
        .and_then(|()| file.sync_all())
        .map_err(|e| io("cannot empty the journal", e))?;
    drop(file);
    // The lock is released when `lock` is dropped (closing the descriptor unlocks it).
    drop::<File>(lock);
    Ok(true)
}

/// The journal files (`<n>.jnl`) in `dir`.
fn journals(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "jnl") && path.is_file() {
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Keys, sign_event};
    use crate::store::FjallStore;
    use crate::store::tests::all;

    fn journal_bytes(dir: &Path) -> u64 {
        journals(dir)
            .unwrap()
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn a_clean_close_empties_the_journal_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let k = Keys::from_seed(b"journal", 1);
        let notes: Vec<Event> = (0..2_000)
            .map(|i| sign_event(&k, 1_000 + i, 1, vec![], &format!("note {i}")))
            .collect();
        // A replaceable event, replaced after the reopen: the newer one must win, which needs
        // the sequence numbers to carry on above what the tables hold.
        let old_profile = sign_event(&k, 10, 0, vec![], "old");
        let new_profile = sign_event(&k, 20, 0, vec![], "new");
        let s = FjallStore::open(dir.path()).unwrap();
        s.save_blocking(&notes).unwrap();
        s.save_blocking(std::slice::from_ref(&old_profile)).unwrap();
        s.persist().unwrap();
        assert!(
            journal_bytes(dir.path()) > 500_000,
            "the writes went to the journal"
        );
        assert!(s.close(None).unwrap(), "the journal was emptied");
        assert_eq!(journal_bytes(dir.path()), 0);

        let s = FjallStore::open(dir.path()).unwrap();
        assert_eq!(all(&s).len(), 2_001);
        s.save_blocking(std::slice::from_ref(&new_profile)).unwrap();
        s.persist().unwrap();
        drop(s); // not a clean close: the next open replays the journal
        let s = FjallStore::open(dir.path()).unwrap();
        let got = all(&s);
        assert_eq!(got.len(), 2_001);
        assert!(got.contains(&new_profile) && !got.contains(&old_profile));
        assert!(s.check_integrity().unwrap().problems.is_empty());
        assert!(s.close(None).unwrap());
        let s = FjallStore::open(dir.path()).unwrap();
        assert_eq!(all(&s), got);
    }

    #[test]
    fn the_journal_stays_while_the_store_is_shared_or_locked() {
        let dir = tempfile::tempdir().unwrap();
        let k = Keys::from_seed(b"journal", 2);
        let s = FjallStore::open(dir.path()).unwrap();
        s.save_blocking(&[sign_event(&k, 1, 1, vec![], "kept")])
            .unwrap();
        let clone = s.clone();
        assert!(
            !s.close(None).unwrap(),
            "a live clone keeps the database open"
        );
        assert!(journal_bytes(dir.path()) > 0);
        assert_eq!(all(&clone).len(), 1);
        drop(clone);
        // Open (fjall holds the lock file meanwhile, here or in another process): left alone.
        let s = FjallStore::open(dir.path()).unwrap();
        s.flush().unwrap();
        assert!(!empty_after_clean_close(dir.path()).unwrap());
        drop(s);
        assert!(empty_after_clean_close(dir.path()).unwrap());
        assert_eq!(journal_bytes(dir.path()), 0);
        let s = FjallStore::open(dir.path()).unwrap();
        assert_eq!(all(&s).len(), 1);
    }
}
