//! A write batch that can read its own writes: several events in one atomic batch may touch the
//! same keys (two versions of a profile, an event and its deletion), so reads go through here.

use super::keys::Slot;
use std::collections::HashMap;

pub(super) struct Overlay<'a> {
    pub(super) keyspaces: &'a [fjall::Keyspace],
    pub(super) batch: fjall::OwnedWriteBatch,
    pending: HashMap<(Slot, Vec<u8>), Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(db: &fjall::Database, keyspaces: &'a [fjall::Keyspace]) -> Self {
        Self {
            keyspaces,
            batch: db.batch(),
            pending: HashMap::new(),
        }
    }

    fn ks(&self, slot: Slot) -> &fjall::Keyspace {
        &self.keyspaces[slot as usize]
    }

    pub(super) fn get(&self, slot: Slot, key: &[u8]) -> Result<Option<Vec<u8>>, fjall::Error> {
        if let Some(v) = self.pending.get(&(slot, key.to_vec())) {
            return Ok(v.clone());
        }
        Ok(self.ks(slot).get(key)?.map(|v| v.to_vec()))
    }

    pub(super) fn contains(&self, slot: Slot, key: &[u8]) -> Result<bool, fjall::Error> {
        if let Some(v) = self.pending.get(&(slot, key.to_vec())) {
            return Ok(v.is_some());
        }
        self.ks(slot).contains_key(key)
    }

    pub(super) fn insert(&mut self, slot: Slot, key: Vec<u8>, value: Vec<u8>) {
        let ks = self.keyspaces[slot as usize].clone();
        self.batch.insert(&ks, key.clone(), value.clone());
        self.pending.insert((slot, key), Some(value));
    }

    pub(super) fn remove(&mut self, slot: Slot, key: Vec<u8>) {
        let ks = self.keyspaces[slot as usize].clone();
        self.batch.remove(&ks, key.clone());
        self.pending.insert((slot, key), None);
    }
}
