//! [`AuditChain`]: the writer side of the audit log — resume, append, checkpoint, rotate, head.
//!
//! Failure policy (fail closed, never fork):
//! - A record counts only once its line is written *and* fsynced; until then `append` returns
//!   `Err` and the caller must refuse the request.
//! - [`AuditChain::append_deferred`] is for records of what already happened (a finished sync):
//!   the line is written (a failed write is an error like any) but its fsync is left to the next
//!   `append`, [`AuditChain::sync_deferred`] or checkpoint, so the caller is not kept waiting.
//!   `HEAD.json` only ever names fsynced records, so a power cut can leave the head behind the
//!   log (reported as lag), never ahead of it.
//! - A failed `write` is undone by truncating the segment back to its length before the write, so
//!   the next record still links to the last good one. If that truncation fails too, or if an
//!   fsync fails (after which the kernel may have dropped the dirty pages, so the on-disk state is
//!   unknown), the chain is *poisoned*: every later call returns [`AuditError::Poisoned`] until
//!   the chain is reopened, and [`AuditChain::open`] re-reads the tail and refuses a torn one.
//! - A failed checkpoint or `HEAD.json` update after a durable record returns `Err` too, and does
//!   not poison (the chain in memory still matches the disk; the next call retries). The caller
//!   refuses its request although the record exists, so an [`AuditEvent::Outcome`] record is
//!   appended at once saying the call was refused: the log never says "allowed" alone for a call
//!   that was answered UNAVAILABLE. (If even that cannot be written, the next start lists the
//!   decision as unconfirmed.)
//! - Every line is signed by the audit key (`sig`, [`super::signed`]); a restart adopts only
//!   records it can authenticate and never seals what it did not write ([`super::resume`]).
//! - Group commit: [`AuditChain::append`] writes its line under the state lock, then takes its
//!   turn to commit — one fsync and one `HEAD.json` update for every line written so far, done
//!   by the first caller whose line is not durable yet; callers whose lines that commit covered
//!   return without an fsync of their own. Both run outside the state lock, so records keep
//!   being written meanwhile (for the next commit); the turn keeps head writes in order. No
//!   caller returns before its own record is fsynced and named by the head.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ed25519_dalek::SigningKey;

use super::clock::now_rfc3339;
#[cfg(test)]
use super::fault::Fault;
use super::fault::{Armed, sync_or_fault, write_all_or_fault};
use super::files::{io_err, list_segments, lock_dir, read_head, segment_name, sync_dir};
use super::keys::sign;
use super::record::{AuditEvent, AuditRecord, Excluded, checkpoint_message, line_hash};
use super::resume::{TailError, recovery_reason, resume};
use super::signed::{OpenSyncs, seal_line};
use super::{AuditEntry, AuditError, AuditOptions};

mod commit;
mod observe;

use commit::Turn;
use observe::CheckpointObserver;
pub use observe::CheckpointWritten;

/// Where a record landed: its seq and the hash of its line (what the next record's `prev` holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecordRef {
    /// The record's seq.
    pub seq: u64,
    /// Hex SHA-256 of the record's line.
    pub hash: String,
}

/// The append-only, hash-chained, signed audit log in one directory. Thread-safe; appends are
/// serialised by an internal mutex; [`AuditChain::append`] is durable before it returns,
/// [`AuditChain::append_deferred`] soon after.
pub struct AuditChain {
    dir: PathBuf,
    key: Option<SigningKey>,
    opts: AuditOptions,
    state: Mutex<ChainState>,
    /// One commit (fsync + head) at a time; taken before `state`, never while holding it.
    commit_turn: Mutex<()>,
    /// Told of every checkpoint (the public anchors, `super::anchor`).
    checkpoint_observer: std::sync::OnceLock<CheckpointObserver>,
    /// Data fsyncs made by commits (tests check that concurrent appends share them).
    #[cfg(test)]
    pub(crate) commit_fsyncs: std::sync::atomic::AtomicU64,
    /// Held for the chain's lifetime: two writers on one directory would fork the chain.
    _lock: File,
}

impl std::fmt::Debug for AuditChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key, only whether there is one.
        f.debug_struct("AuditChain")
            .field("dir", &self.dir)
            .field("signing", &self.key.is_some())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Drop for AuditChain {
    /// A record deferred after the last checkpoint (a sync that finished during shutdown) is
    /// made durable and named by the head before the directory lock goes.
    fn drop(&mut self) {
        let pending = self.state.lock().is_ok_and(|st| {
            (st.unsynced || st.headed_seq < st.next_seq - 1) && st.poisoned.is_none()
        });
        if pending && let Err(e) = self.sync_deferred() {
            tracing::error!("audit log closed with records that could not be made durable: {e}");
        }
    }
}

struct ChainState {
    next_seq: u64,
    last_hash: String,
    /// Segment index of the last record; 0 while the chain is empty.
    last_file: u64,
    last_was_checkpoint: bool,
    /// Non-checkpoint records since the last checkpoint.
    since_checkpoint: u64,
    /// Segment the next line goes to; opened (or created) lazily.
    file_index: u64,
    file: Option<File>,
    file_len: u64,
    /// Lines written to `file` but not fsynced yet (deferred appends, appends awaiting commit).
    unsynced: bool,
    /// The seq `HEAD.json` names (the last record known durable and confirmed); never goes back.
    headed_seq: u64,
    /// Allowed syncs not finished yet (listed in checkpoints, reported after a crash).
    open_syncs: OpenSyncs,
    poisoned: Option<String>,
    /// Test-only fault injection for the next line write.
    #[cfg(test)]
    fault: Option<Fault>,
}

impl ChainState {
    fn rotate(&mut self) {
        self.file = None;
        self.file_index += 1;
        self.file_len = 0;
    }

    fn last_ref(&self) -> AuditRecordRef {
        AuditRecordRef {
            seq: self.next_seq - 1,
            hash: self.last_hash.clone(),
        }
    }
}

impl AuditChain {
    /// Opens (creating `dir` if needed) and resumes the chain after the last record on disk.
    ///
    /// Refuses with [`AuditError::BrokenTail`] when the log has an incomplete or invalid line or
    /// a broken link up to the record `HEAD.json` names, when `HEAD.json` is missing although
    /// records exist, names a record beyond the end of the log or disagrees with it, or — when a
    /// key is given — is unsigned or not signed by it. With a key, records after the head that
    /// are not whole, chained and signed by it are left out: the chain continues in a new
    /// segment from the last authentic record, and the first record written is a
    /// [`AuditEvent::Recovery`] saying what was left out. That record also lists the syncs that
    /// never finished and the decisions never confirmed to their callers, if any. It only reads
    /// the end of the log; [`super::verify`] checks everything.
    pub fn open(
        dir: impl AsRef<Path>,
        signing_key: Option<SigningKey>,
        opts: AuditOptions,
    ) -> Result<Self, AuditError> {
        if opts.max_file_bytes == 0 {
            return Err(AuditError::Options("max_file_bytes must be > 0".into()));
        }
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let lock = lock_dir(&dir)?;
        let segments = list_segments(&dir).map_err(io_err("list directory", &dir))?;
        let broken = |reason: String| AuditError::BrokenTail {
            dir: dir.clone(),
            reason,
        };

        let head = read_head(&dir).map_err(&broken)?;
        let found =
            resume(&segments, head.as_ref(), signing_key.as_ref()).map_err(|e| match e {
                TailError::Io(e) => e,
                TailError::Broken(reason) => broken(reason),
            })?;
        let tail = found.tail;

        let chain = Self {
            state: Mutex::new(ChainState {
                next_seq: tail.last_seq + 1,
                last_hash: tail.last_hash,
                last_file: tail.last_file,
                last_was_checkpoint: tail.last_was_checkpoint,
                since_checkpoint: tail.since_checkpoint,
                file_index: found.file_index,
                file: None,
                file_len: found.file_len,
                unsynced: false,
                headed_seq: 0,
                open_syncs: found.open_syncs,
                poisoned: None,
                #[cfg(test)]
                fault: None,
            }),
            dir,
            key: signing_key,
            opts,
            commit_turn: Mutex::new(()),
            checkpoint_observer: std::sync::OnceLock::new(),
            #[cfg(test)]
            commit_fsyncs: Default::default(),
            _lock: lock,
        };
        {
            let turn = chain.turn()?;
            let mut st = chain.usable_state()?;
            // A writer killed with deferred records left them in the page cache only: make the
            // tail durable before a head can name it.
            if st.last_file > 0 {
                let path = chain.dir.join(segment_name(st.last_file));
                File::open(&path)
                    .and_then(|f| f.sync_data())
                    .map_err(io_err("fsync", &path))?;
            }
            // A crash between the record that filled the segment and its rotation checkpoint.
            chain.seal_if_due(&mut st)?;
            chain.write_recovery(&mut st, found.excluded, found.unconfirmed)?;
            // Also creates HEAD.json for a new directory, and catches up a head that lags.
            chain.store_head(&turn, &mut st)?;
        }
        Ok(chain)
    }

    /// Appends one record; returns only once it is written and fsynced, with every record
    /// before it, and `HEAD.json` names it (or a later record) — by its own commit or by one
    /// that a concurrent caller made for both.
    ///
    /// On `Err` the caller must refuse the request it was auditing. The error says why (e.g. "No
    /// space left on device", "Permission denied").
    pub fn append(&self, entry: AuditEntry) -> Result<AuditRecordRef, AuditError> {
        let (record, written, sealed) = {
            let mut st = self.usable_state()?;
            let record = entry.into_record(now_rfc3339(), st.next_seq, st.last_hash.clone());
            let written = self.write_record(&mut st, &record, false)?;
            let sealed = self.seal_if_due(&mut st);
            (record, written, sealed)
        };
        let turn = self.turn()?;
        if let Err(e) = sealed.and_then(|()| self.commit(&turn, written.seq)) {
            if let Ok(mut st) = self.usable_state() {
                self.record_refusal(&turn, &mut st, &record, &e);
            }
            return Err(e);
        }
        Ok(written)
    }

    /// The record is durable but its call is about to be refused: say so in the log.
    fn record_refusal(
        &self,
        turn: &Turn<'_>,
        st: &mut ChainState,
        record: &AuditRecord,
        why: &AuditError,
    ) {
        if st.poisoned.is_some() {
            return;
        }
        let outcome = AuditEntry::outcome_of(record, super::refusal_reason(why)).into_record(
            now_rfc3339(),
            st.next_seq,
            st.last_hash.clone(),
        );
        match self.write_record(st, &outcome, true) {
            // Most likely fails like the first time; the outcome is durable in the segment.
            Ok(_) => {
                let _ = self.store_head(turn, st);
            }
            Err(e) => tracing::error!(
                "seq {} is in the audit log but its call was refused, and the record saying so \
                 could not be written ({e}); the next start lists it as unconfirmed",
                record.seq
            ),
        }
    }

    /// At start-up: says what the previous writer left behind, when there is anything to say.
    fn write_recovery(
        &self,
        st: &mut ChainState,
        excluded: Vec<Excluded>,
        unconfirmed: Vec<u64>,
    ) -> Result<(), AuditError> {
        for seq in &unconfirmed {
            st.open_syncs.remove(*seq);
        }
        let interrupted = st.open_syncs.to_vec();
        if excluded.is_empty() && interrupted.is_empty() && unconfirmed.is_empty() {
            return Ok(());
        }
        let reason = recovery_reason(st.next_seq - 1, &excluded, &interrupted, &unconfirmed);
        let record = AuditEntry::recovery(reason, excluded, interrupted, unconfirmed).into_record(
            now_rfc3339(),
            st.next_seq,
            st.last_hash.clone(),
        );
        self.write_record(st, &record, true)?;
        st.open_syncs.clear();
        Ok(())
    }

    /// Appends one record without waiting for its fsync: for the record of something already
    /// done, which no caller has to refuse. An `Err` means the line is not written, or that a
    /// due checkpoint failed after it was; it becomes durable (and named by the head) with the
    /// next [`Self::append`], [`Self::sync_deferred`] or checkpoint, and an fsync failure then
    /// poisons the chain, so later requests are refused.
    pub fn append_deferred(&self, entry: AuditEntry) -> Result<AuditRecordRef, AuditError> {
        let mut st = self.usable_state()?;
        let record = entry.into_record(now_rfc3339(), st.next_seq, st.last_hash.clone());
        let written = self.write_record(&mut st, &record, false)?;
        // A due checkpoint makes everything durable; the head follows with the next commit.
        self.seal_if_due(&mut st)?;
        Ok(written)
    }

    /// Makes deferred records durable and moves `HEAD.json` to them (a no-op when there are
    /// none). The service calls it every second. An fsync failure poisons the chain (and says
    /// so once, not at every tick: a poisoned chain refuses at once).
    pub fn sync_deferred(&self) -> Result<(), AuditError> {
        let turn = self.turn()?;
        let last = {
            let st = self.usable_state()?;
            let last = st.next_seq - 1;
            if !st.unsynced && st.headed_seq >= last {
                return Ok(());
            }
            last
        };
        self.commit(&turn, last)
    }

    /// Writes a checkpoint now (at clean shutdown), unless the last record already is one.
    /// Returns the last record (the checkpoint).
    pub fn checkpoint(&self) -> Result<AuditRecordRef, AuditError> {
        let turn = self.turn()?;
        let mut st = self.usable_state()?;
        if !st.last_was_checkpoint {
            self.write_checkpoint(&mut st)?;
            if st.file_len >= self.opts.max_file_bytes {
                st.rotate();
            }
        }
        self.store_head(&turn, &mut st)?;
        Ok(st.last_ref())
    }

    /// The last record written (seq 0 and [`super::ZERO_HASH`] for an empty chain).
    pub fn last_record(&self) -> Result<AuditRecordRef, AuditError> {
        Ok(self.usable_state()?.last_ref())
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether checkpoints and the head are signed.
    pub fn is_signing(&self) -> bool {
        self.key.is_some()
    }

    fn usable_state(&self) -> Result<MutexGuard<'_, ChainState>, AuditError> {
        let st = self.state.lock().map_err(|_| {
            AuditError::Poisoned("a thread panicked while holding the audit lock".into())
        })?;
        match &st.poisoned {
            Some(why) => Err(AuditError::Poisoned(why.clone())),
            None => Ok(st),
        }
    }

    fn seal_if_due(&self, st: &mut ChainState) -> Result<(), AuditError> {
        let full = st.file_len >= self.opts.max_file_bytes;
        let due =
            self.opts.checkpoint_every > 0 && st.since_checkpoint >= self.opts.checkpoint_every;
        if (full || due) && !st.last_was_checkpoint {
            self.write_checkpoint(st)?;
        }
        if full {
            st.rotate();
        }
        Ok(())
    }

    fn write_checkpoint(&self, st: &mut ChainState) -> Result<AuditRecordRef, AuditError> {
        let covered = st.next_seq - 1;
        let sig = self
            .key
            .as_ref()
            .map(|key| sign(key, &checkpoint_message(covered, &st.last_hash)));
        let record = AuditRecord::checkpoint(
            now_rfc3339(),
            st.next_seq,
            st.last_hash.clone(),
            sig,
            st.open_syncs.to_vec(),
        );
        let written = self.write_record(st, &record, true)?;
        self.notify_checkpoint(&written, &record.time);
        Ok(written)
    }

    fn write_record(
        &self,
        st: &mut ChainState,
        record: &AuditRecord,
        durable: bool,
    ) -> Result<AuditRecordRef, AuditError> {
        let mut line = seal_line(serde_json::to_vec(record)?, self.key.as_ref());
        let hash = line_hash(&line);
        line.push(b'\n');
        self.write_line(st, &line, durable)?;
        st.open_syncs.apply(record, false);
        st.next_seq += 1;
        st.last_hash.clone_from(&hash);
        st.last_file = st.file_index;
        st.last_was_checkpoint = record.event == AuditEvent::Checkpoint;
        st.since_checkpoint = if st.last_was_checkpoint {
            0
        } else {
            st.since_checkpoint + 1
        };
        Ok(AuditRecordRef {
            seq: record.seq,
            hash,
        })
    }

    /// Writes one line, and fsyncs it (with any deferred ones before it) when `durable`, leaving
    /// no partial line behind (or poisoning the chain).
    fn write_line(
        &self,
        st: &mut ChainState,
        line: &[u8],
        durable: bool,
    ) -> Result<(), AuditError> {
        let path = self.dir.join(segment_name(st.file_index));
        let mut file = match st.file.take() {
            Some(file) => file,
            None => {
                let (file, len) = self.open_segment(&path)?;
                st.file_len = len;
                file
            }
        };
        let fault = st_fault(st);
        if let Err(source) = write_all_or_fault(&mut file, line, fault) {
            // A partial line would break every later record; cut it off before giving up.
            match file.set_len(st.file_len).and_then(|()| file.sync_data()) {
                Ok(()) => st.file = Some(file),
                Err(undo) => {
                    st.poisoned = Some(format!(
                        "a write to {} failed ({source}) and the partial line could not be \
                         removed ({undo})",
                        path.display()
                    ));
                }
            }
            return Err(io_err("append to", &path)(source));
        }
        st.file_len += line.len() as u64;
        if !durable {
            rearm_fsync_fault(st, fault);
            st.unsynced = true;
            st.file = Some(file);
            return Ok(());
        }
        if let Err(source) = sync_or_fault(&file, fault) {
            st.poisoned = Some(format!("fsync of {} failed: {source}", path.display()));
            return Err(io_err("fsync", &path)(source));
        }
        st.unsynced = false;
        st.file = Some(file);
        Ok(())
    }

    fn open_segment(&self, path: &Path) -> Result<(File, u64), AuditError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_file() => {
                return Err(io_err("open", path)(io::Error::other("not a regular file")));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", path)(e)),
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let len = file.metadata().map_err(io_err("inspect", path))?.len();
        if len == 0 {
            // New (or still empty) segment: make its directory entry durable before using it.
            sync_dir(&self.dir)?;
        }
        Ok((file, len))
    }

    /// Arms a simulated failure for the next line written.
    #[cfg(test)]
    pub(crate) fn inject_fault(&self, fault: Fault) {
        if let Ok(mut st) = self.state.lock() {
            st.fault = Some(fault);
        }
    }
}

/// The fault armed for the next write or fsync (tests only).
#[cfg(test)]
fn st_fault(st: &mut ChainState) -> Armed {
    st.fault.take()
}

/// An fsync fault taken by a write that did not fsync stays armed for the commit's fsync.
#[cfg(test)]
fn rearm_fsync_fault(st: &mut ChainState, fault: Armed) {
    if let Some(Fault::Fsync) = fault {
        st.fault = fault;
    }
}

#[cfg(not(test))]
fn rearm_fsync_fault(_: &mut ChainState, _: Armed) {}

#[cfg(not(test))]
fn st_fault(_: &mut ChainState) -> Armed {
    None
}
