//! A write batch that can read its own writes: several events in one atomic batch may touch the
//! same keys (two versions of a profile, an event and its deletion), so reads go through here.

use super::StoreError;
use super::keys::Slot;
use super::neg_index::Deltas;
use std::collections::HashMap;

pub(super) struct Overlay<'a> {
    pub(super) keyspaces: &'a [fjall::Keyspace],
    pub(super) batch: fjall::OwnedWriteBatch,
    pending: HashMap<(Slot, Vec<u8>), Option<Vec<u8>>>,
    /// Changes to the negentropy index, applied at commit.
    neg: Deltas,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(db: &fjall::Database, keyspaces: &'a [fjall::Keyspace]) -> Self {
        Self {
            keyspaces,
            batch: db.batch(),
            pending: HashMap::new(),
            neg: Deltas::default(),
        }
    }

    fn ks(&self, slot: Slot) -> &fjall::Keyspace {
        &self.keyspaces[slot as usize]
    }

    pub(super) fn get(&self, slot: Slot, key: &[u8]) -> Result<Option<Vec<u8>>, fjall::Error> {
        debug_assert!(read_back(slot), "{slot:?} is not tracked for reads");
        if let Some(v) = self.pending.get(&(slot, key.to_vec())) {
            return Ok(v.clone());
        }
        Ok(self.ks(slot).get(key)?.map(|v| v.to_vec()))
    }

    pub(super) fn contains(&self, slot: Slot, key: &[u8]) -> Result<bool, fjall::Error> {
        debug_assert!(read_back(slot), "{slot:?} is not tracked for reads");
        if let Some(v) = self.pending.get(&(slot, key.to_vec())) {
            return Ok(v.is_some());
        }
        self.ks(slot).contains_key(key)
    }

    /// Writes the batch, with the negentropy index changes its time-index writes imply. The
    /// caller holds the writer lock (the index update reads, then writes).
    pub(super) fn commit(mut self) -> Result<(), StoreError> {
        let neg = std::mem::take(&mut self.neg);
        neg.apply(&self.keyspaces[Slot::NegIndex as usize], &mut self.batch)?;
        self.batch.commit()?;
        Ok(())
    }

    /// Inserts a key that is not stored yet (time-index keys feed the negentropy index, so an
    /// existing one must not be inserted again).
    pub(super) fn insert(&mut self, slot: Slot, key: Vec<u8>, value: Vec<u8>) {
        if slot == Slot::ByTime {
            self.neg.insert(&key);
        }
        let ks = self.keyspaces[slot as usize].clone();
        if read_back(slot) {
            self.batch.insert(&ks, key.clone(), value.clone());
            self.pending.insert((slot, key), Some(value));
        } else {
            self.batch.insert(&ks, key, value);
        }
    }

    /// Removes a stored key (time-index keys feed the negentropy index, so it must exist).
    pub(super) fn remove(&mut self, slot: Slot, key: Vec<u8>) {
        if slot == Slot::ByTime {
            self.neg.remove(&key);
        }
        let ks = self.keyspaces[slot as usize].clone();
        if read_back(slot) {
            self.batch.remove(&ks, key.clone());
            self.pending.insert((slot, key), None);
        } else {
            self.batch.remove(&ks, key);
        }
    }
}

/// The keyspaces ingest reads back within a batch; writes to the others (the indexes, most of a
/// batch's keys) are not kept for reading.
fn read_back(slot: Slot) -> bool {
    matches!(
        slot,
        Slot::Events | Slot::Tombstones | Slot::AddrTombstones | Slot::Heads
    )
}
