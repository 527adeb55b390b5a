//! `FjallStore` upkeep: statistics, the integrity check behind `orly stats --check`, and making
//! writes durable — persist, flush, and the clean close that leaves no journal to replay.

use super::*;

impl FjallStore {
    /// Counts by kind, time bounds and disk usage.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        for g in self.ks(Slot::ByKind).iter() {
            let k = g.key()?;
            if k.len() >= 2 {
                *s.by_kind
                    .entry(u16::from_be_bytes([k[0], k[1]]))
                    .or_default() += 1;
                s.events += 1;
            }
        }
        let bound = |g: Option<fjall::Guard>| -> Result<Option<u64>, StoreError> {
            Ok(match g {
                Some(g) => keys::split_suffix(&g.key()?).map(|(t, _)| t),
                None => None,
            })
        };
        s.first_created_at = bound(self.ks(Slot::ByTime).first_key_value())?;
        s.last_created_at = bound(self.ks(Slot::ByTime).last_key_value())?;
        s.disk_bytes = dir_size(&self.inner.path);
        Ok(s)
    }

    /// Checks every index entry against the events and every event against its index entries.
    pub fn check_integrity(&self) -> Result<IntegrityReport, StoreError> {
        let mut r = IntegrityReport::default();
        for slot in INDEX_SLOTS {
            for g in self.ks(slot).iter() {
                let k = g.key()?;
                r.index_entries += 1;
                match keys::split_suffix(&k) {
                    Some((_, id)) if self.ks(Slot::Events).contains_key(id)? => {}
                    _ => r.problems.push(format!(
                        "{slot:?}: entry without its event: {}",
                        hex::encode(&k)
                    )),
                }
            }
        }
        for g in self.ks(Slot::Events).iter() {
            let (k, v) = g.into_inner()?;
            r.events += 1;
            let ev = match decode_event(&v) {
                Ok(ev) if ev.id[..] == k[..] => ev,
                _ => {
                    r.problems
                        .push(format!("event {} does not decode", hex::encode(&k)));
                    continue;
                }
            };
            for (slot, key) in keys::index_keys(&ev) {
                if !self.ks(slot).contains_key(&key)? {
                    r.problems
                        .push(format!("{slot:?}: missing entry for {}", ev.id_hex()));
                }
            }
        }
        neg_index::check(&self.inner.ks, &mut r.problems)?;
        Ok(r)
    }

    /// Rewrites the negentropy index in layout 2's format (one bucket per value, its own
    /// marker), as a store written by an older orly holds it.
    #[cfg(test)]
    pub(in crate::store) fn write_layout_2_neg_index(&self) {
        self.forget_neg_index();
        let ks = &self.inner.ks;
        let meta = &ks[Slot::Meta as usize];
        let buckets = neg_index::recompute(&ks[Slot::ByTime as usize]).expect("recompute");
        let mut b = self.inner.db.batch();
        for (bucket, (count, sum)) in buckets {
            let value = neg_index::encode(count, &sum);
            b.insert(&ks[Slot::NegIndex as usize], bucket.to_be_bytes(), value);
        }
        b.insert(meta, neg_index::OLD_BUILT_KEY, b"1".to_vec());
        b.insert(meta, keys::LAYOUT_KEY, 2u32.to_be_bytes());
        b.commit().expect("commit");
    }

    /// A marker of the meta keyspace.
    #[cfg(test)]
    pub(in crate::store) fn meta(&self, key: &[u8]) -> Option<Vec<u8>> {
        let meta = &self.inner.ks[Slot::Meta as usize];
        meta.get(key).expect("meta").map(|v| v.to_vec())
    }

    /// Drops the negentropy index and its marker, as in a store made before it existed.
    #[cfg(test)]
    pub(in crate::store) fn forget_neg_index(&self) {
        let ks = &self.inner.ks;
        let mut b = self.inner.db.batch();
        for g in ks[Slot::NegIndex as usize].iter() {
            b.remove(&ks[Slot::NegIndex as usize], g.key().expect("key"));
        }
        b.remove(&ks[Slot::Meta as usize], neg_index::BUILT_KEY);
        b.commit().expect("commit");
    }

    /// Forces the journal to disk, without writing memtables out (what a sync needs at its end:
    /// its few thousand events replay quickly at the next open).
    pub fn persist(&self) -> Result<(), StoreError> {
        self.inner.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// Forces the journal to disk and writes the memtables out as tables (after an import and
    /// at clean shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.flush_within(None)
    }

    /// [`FjallStore::close`] for a service that is stopping: gives up on the memtable flush
    /// after [`FLUSH_WAIT`] rather than hang (the journal then stays, and is replayed).
    pub fn close_at_stop(self) -> Result<bool, StoreError> {
        // What the service wrote may be a bulk load: compact the index as `flush` does.
        self.flush_memtables(Some(FLUSH_WAIT), true)?;
        self.close(Some(FLUSH_WAIT))
    }

    /// [`FjallStore::flush`], giving up on the memtable flush after `wait` if given.
    pub fn flush_within(&self, wait: Option<std::time::Duration>) -> Result<(), StoreError> {
        self.flush_memtables(wait, true).map(|_| ())
    }

    /// Writes the memtables out, then closes the store so that the next open costs the same
    /// whatever was written before: with every memtable in tables, the journal holds nothing
    /// the next open needs, and it is emptied (see [`super::journal`]). Without this, an open
    /// replays the whole active journal (up to 64 MB after a large import). It does not compact
    /// the negentropy index: after a bulk load, call [`FjallStore::flush`] first.
    ///
    /// Returns whether the journal was emptied. It is left as it is (and replayed at the next
    /// open, which is always correct) when the flush gave up, or when another clone of this
    /// store is still alive and so the database is not closed yet.
    pub fn close(self, wait: Option<std::time::Duration>) -> Result<bool, StoreError> {
        let flushed = self.flush_memtables(wait, false)?;
        let Ok(inner) = Arc::try_unwrap(self.inner) else {
            tracing::debug!("store still shared at close: its journal is kept");
            return Ok(false);
        };
        let path = inner.path.clone();
        // Dropping the database waits for its flush and compaction threads and releases its
        // lock file; only then may its files be touched.
        drop(inner);
        if !flushed {
            return Ok(false);
        }
        crate::store::journal::empty_after_clean_close(&path)
    }

    /// Persists the journal, then writes every memtable out as tables (and compacts the
    /// negentropy index if `compact`); returns false if the tables were not written within
    /// `wait` (the journal still holds the data).
    fn flush_memtables(
        &self,
        wait: Option<std::time::Duration>,
        compact: bool,
    ) -> Result<bool, StoreError> {
        self.inner.db.persist(fjall::PersistMode::SyncAll)?;
        // Flushed tables spare the next open re-inserting the journal into memtables (for a
        // fresh 100k-event import that costs seconds). fjall still reads the active journal
        // at every open and skips what is flushed: about 15 ms per MB here, up to its 64 MB
        // rotation size. fjall retries a failing table write (a full disk, a removed
        // directory) and its wait never ends, so the wait is bounded: the data is durable in
        // the journal already, and a process stopping must not hang on it.
        let keyspaces = self.inner.ks.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("orly-flush".into())
            .spawn(move || {
                let _ = tx.send(rotate_all_and_wait(&keyspaces));
            })
            .map_err(|e| StoreError::Engine(format!("cannot start the flush: {e}")))?;
        let wait = wait.unwrap_or(std::time::Duration::MAX);
        match rx.recv_timeout(wait) {
            Ok(r) => r?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(StoreError::Engine("the memtable flush failed".into()));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "memtables not flushed within {wait:?} (disk full or store removed?); the \
                     journal holds the data, the next open replays it"
                );
                return Ok(false);
            }
        }
        // Every write batch rewrites the index buckets it touches, so after a bulk load the
        // small index keyspace holds many stale versions that each sync session would read
        // past: compact it (a few MB per million events). The data is durable already, so a
        // failed compaction only costs speed.
        if !compact {
            return Ok(true);
        }
        if let Err(e) = self.ks(Slot::NegIndex).major_compact() {
            tracing::warn!("compacting the negentropy index failed (sync sessions read more): {e}");
        }
        Ok(true)
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// How often [`rotate_all_and_wait`] looks whether the flushes are done.
const FLUSH_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// Seals every keyspace's memtable, then waits until fjall's flush workers have written them
/// all out. `Keyspace::rotate_memtable_and_wait` does this one keyspace at a time and polls
/// every 10 ms, so a close after a small sync spent ~10 ms per written keyspace (77 ms of a
/// 0.4 s sync); sealing all first lets the workers write them together, and the wait ends
/// within [`FLUSH_POLL`] of the last. `rotate_memtable` and `sealed_memtable_count` are
/// public but hidden in fjall's docs (its own `rotate_memtable_and_wait` is built on them);
/// the version is pinned in Cargo.lock, and a change of either fails the build, not the data.
fn rotate_all_and_wait(keyspaces: &[fjall::Keyspace]) -> fjall::Result<()> {
    for ks in keyspaces {
        ks.rotate_memtable()?;
    }
    while keyspaces.iter().any(|ks| ks.sealed_memtable_count() > 0) {
        std::thread::sleep(FLUSH_POLL);
    }
    Ok(())
}
