//! The commit half of [`AuditChain::append`]: making written records durable (one fsync shared
//! by every record written meanwhile: group commit) and naming the last durable one in a signed
//! `HEAD.json`. Commits take turns ([`Turn`]), and every head write happens during a turn, so
//! heads are written in order and never go back; the fsync and the head write run outside the
//! state lock, so records keep being written meanwhile.

use super::{AuditChain, ChainState, st_fault};
use crate::audit::AuditError;
use crate::audit::chain::AuditRecordRef;
use crate::audit::fault::sync_or_fault;
use crate::audit::files::{io_err, segment_name, write_head};
use crate::audit::keys::sign;
use crate::audit::record::{HEAD_VERSION, Head, head_message};
use std::sync::MutexGuard;

/// The commit turn, held while committing or writing the head. Taken before the state lock,
/// never while holding it.
pub(in crate::audit) struct Turn<'a> {
    _guard: MutexGuard<'a, ()>,
}

impl AuditChain {
    /// Waits for the commit turn.
    pub(super) fn turn(&self) -> Result<Turn<'_>, AuditError> {
        self.commit_turn
            .lock()
            .map(|g| Turn { _guard: g })
            .map_err(|_| {
                AuditError::Poisoned("a thread panicked while committing the audit log".into())
            })
    }

    /// Makes every record up to at least `seq` durable and named by `HEAD.json`, unless a commit
    /// before this one already did.
    pub(super) fn commit(&self, _turn: &Turn<'_>, seq: u64) -> Result<(), AuditError> {
        let (file, path, fault, target, target_file) = {
            let mut st = self.usable_state()?;
            if st.headed_seq >= seq {
                return Ok(());
            }
            let path = self.dir.join(segment_name(st.file_index));
            let file = match (&st.file, st.unsynced) {
                (_, false) => None,
                (Some(f), true) => Some(f.try_clone().map_err(io_err("duplicate", &path))?),
                (None, true) => {
                    st.poisoned = Some(format!(
                        "{} was closed with unsynced records",
                        path.display()
                    ));
                    return Err(AuditError::Poisoned(
                        "unsynced records lost their segment".into(),
                    ));
                }
            };
            let fault = st_fault(&mut st);
            (file, path, fault, st.last_ref(), st.last_file)
        };
        // Every line up to `target` is written: this fsync covers them (a rotation since was
        // preceded by a durable checkpoint). Lines written from now on wait for the next commit.
        if let Some(file) = file {
            #[cfg(test)]
            self.commit_fsyncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let synced = sync_or_fault(&file, fault);
            let mut st = self.state.lock().map_err(|_| {
                AuditError::Poisoned("a thread panicked while holding the audit lock".into())
            })?;
            if let Err(source) = synced {
                st.poisoned = Some(format!("fsync of {} failed: {source}", path.display()));
                return Err(io_err("fsync", &path)(source));
            }
            if st.next_seq - 1 == target.seq {
                st.unsynced = false;
            }
        }
        // Only a turn writes the head, so nothing named a later record since `target` was read.
        self.write_head_for(&target, target_file)?;
        let mut st = self.usable_state()?;
        st.headed_seq = st.headed_seq.max(target.seq);
        Ok(())
    }

    /// Re-signs `HEAD.json` for the last record.
    ///
    /// Trade-off: this costs a second fsynced write and a rename per durable record, roughly
    /// doubling the I/O of an append (the directory is fsynced only when the head is created).
    /// We pay it because the hash chain alone cannot show
    /// that records were cut off the end (what remains is a valid chain) and checkpoints only
    /// vouch up to the last one. Limits: whoever kept an older signed `HEAD.json` can truncate
    /// back to it and restore it (rollback to an earlier valid state is not detectable locally;
    /// shipping heads off-host is the fix); without a key anyone can rewrite the head, so it only
    /// catches careless truncation; a crash between the record's fsync and the rename leaves the
    /// head behind, which `verify` reports as a lag, not an error.
    pub(super) fn store_head(
        &self,
        _turn: &Turn<'_>,
        st: &mut ChainState,
    ) -> Result<(), AuditError> {
        let last = st.last_ref();
        self.write_head_for(&last, st.last_file)?;
        st.headed_seq = st.headed_seq.max(last.seq);
        Ok(())
    }

    /// Writes `HEAD.json` naming `last`, in segment `last_file`. Callers hold the turn, which
    /// keeps head writes in order.
    fn write_head_for(&self, last: &AuditRecordRef, last_file: u64) -> Result<(), AuditError> {
        let last = last.clone();
        let head = Head {
            version: HEAD_VERSION,
            sig: self
                .key
                .as_ref()
                .map(|key| sign(key, &head_message(last.seq, &last.hash))),
            seq: last.seq,
            hash: last.hash,
            file: (last_file > 0).then(|| segment_name(last_file)),
        };
        write_head(&self.dir, &head)
    }
}
