//! The embedded engine: one fjall database, keyspaces as laid out in `keys.rs`, one writer at a
//! time (reads are concurrent), every ingest group committed as one atomic batch.

use super::budget::{Budget, Budgeted, DEFAULT_LOADED_ITEMS, Share};
use super::keys::{self, INDEX_SLOTS, SLOTS, Slot};
use super::merge::{Keys, Merged};
use super::neg_index::{self, IndexedSet};
use super::overlay::Overlay;
use super::{EventStream, NegItem, Order, SaveOutcome, Store, StoreError};
use crate::event::{Event, EventId, Filter, KindClass, decode_hex32};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Most index ranges merged at once while reading (a follow list of authors × kinds is a few
/// hundred; each open range costs about 3.5 KB). A filter with more is merged a group at a
/// time.
pub(super) const MERGE_FANOUT: usize = 4096;
/// Most (author, kind) pairs looked up directly; past this, each author's kinds are found.
const MAX_PAIRS: usize = 10_000;

/// Longest wait for the memtable flush of [`FjallStore::close_at_stop`].
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a caller can use of a filter's matches (how much a group of ranges must keep).
#[derive(Clone, Copy)]
enum Want {
    /// The first `n` in order (a query with a limit).
    First(usize),
    /// All of them, refused past `cap`.
    All { cap: usize },
}

/// Candidates of a filter, in the order asked for.
type Candidates = Box<dyn Iterator<Item = Result<NegItem, StoreError>>>;

/// `items` sorted into `order`, without repeats.
fn sorted(mut items: Vec<NegItem>, order: Order) -> Candidates {
    items.sort_unstable();
    items.dedup();
    if order == Order::NewestFirst {
        items.reverse();
    }
    Box::new(items.into_iter().map(Ok))
}

/// The fjall-backed store. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct FjallStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: fjall::Database,
    ks: Vec<fjall::Keyspace>,
    path: PathBuf,
    writer: Mutex<()>,
    /// Shared by the negentropy sets loaded into memory.
    budget: Arc<Budget>,
}

/// Counts for `orly stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoreStats {
    /// Stored events.
    pub events: u64,
    /// Events per kind.
    pub by_kind: BTreeMap<u16, u64>,
    /// Oldest `created_at`.
    pub first_created_at: Option<u64>,
    /// Newest `created_at`.
    pub last_created_at: Option<u64>,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

/// What `check_integrity` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IntegrityReport {
    /// Events checked.
    pub events: u64,
    /// Index entries checked.
    pub index_entries: u64,
    /// Problems, each naming the keyspace and id.
    pub problems: Vec<String>,
}

impl FjallStore {
    /// Opens (creating if needed) the store in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_budget(dir, DEFAULT_LOADED_ITEMS)
    }

    /// [`FjallStore::open`], with at most `loaded_items` items in negentropy sets loaded into
    /// memory at once (all sessions together).
    pub fn open_with_budget(dir: &Path, loaded_items: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Engine(format!("cannot create {}: {e}", dir.display())))?;
        let db = fjall::Database::builder(dir).open().map_err(|e| {
            StoreError::Engine(format!("cannot open store at {}: {e}", dir.display()))
        })?;
        let meta = db.keyspace(
            SLOTS[Slot::Meta as usize].1,
            fjall::KeyspaceCreateOptions::default,
        )?;
        let layout = match meta.get(keys::LAYOUT_KEY)? {
            None => 1,
            Some(v) => u32::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt(format!("meta layout marker of {} bytes", v.len()))
            })?),
        };
        if layout > keys::LAYOUT {
            return Err(StoreError::Engine(format!(
                "the store at {} has layout {layout}, written by a newer orly; this one reads \
                 up to layout {}",
                dir.display(),
                keys::LAYOUT
            )));
        }
        for name in keys::RETIRED {
            if db.keyspace_exists(name) {
                let old = db.keyspace(name, fjall::KeyspaceCreateOptions::default)?;
                db.delete_keyspace(old)?;
            }
        }
        let mut ks = Vec::with_capacity(SLOTS.len());
        for (slot, name) in SLOTS {
            debug_assert_eq!(slot as usize, ks.len());
            ks.push(db.keyspace(name, fjall::KeyspaceCreateOptions::default)?);
        }
        if !ks[Slot::Meta as usize].contains_key(neg_index::BUILT_KEY)? {
            // A store from before the negentropy index (or a new one): build it once.
            neg_index::rebuild(&db, &ks)?;
        }
        if layout < keys::LAYOUT {
            meta.insert(keys::LAYOUT_KEY, keys::LAYOUT.to_be_bytes())?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                ks,
                path: dir.to_path_buf(),
                writer: Mutex::new(()),
                budget: Budget::new(loaded_items),
            }),
        })
    }

    #[cfg(test)]
    pub(super) fn inner_budget_used(&self) -> usize {
        self.inner.budget.used()
    }

    fn ks(&self, slot: Slot) -> &fjall::Keyspace {
        &self.inner.ks[slot as usize]
    }

    /// Stores verified events in one atomic batch (the blocking core of [`Store::save`]).
    pub fn save_blocking(&self, events: &[Event]) -> Result<Vec<SaveOutcome>, StoreError> {
        // One writer: the read-check-write of replaceable heads must not interleave.
        let _guard = self
            .inner
            .writer
            .lock()
            .map_err(|_| StoreError::Engine("writer lock poisoned".into()))?;
        let mut ov = Overlay::new(&self.inner.db, &self.inner.ks);
        let mut out = Vec::with_capacity(events.len());
        for ev in events {
            out.push(ingest_one(&mut ov, ev)?);
        }
        ov.commit()?;
        Ok(out)
    }

    /// Reads one stored event.
    pub fn get_blocking(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        self.ks(Slot::Events)
            .get(id)?
            .map(|v| decode_event(&v))
            .transpose()
    }

    /// The negentropy set of `filter`: from the persistent index when the filter is a time
    /// range, else loaded into memory, refused with [`StoreError::TooMany`] past `max_items`
    /// (the index costs no memory per item, so the cap does not apply to it). Loaded sets
    /// also share the store's budget: when it runs out, the set is refused with
    /// [`StoreError::Busy`].
    pub fn neg_storage_blocking(
        &self,
        filter: &Filter,
        max_items: usize,
    ) -> Result<Box<dyn crate::negentropy::NegStorage>, StoreError> {
        if filter.is_time_range_only() && !filter.matches_nothing() {
            let (lo, hi) = (filter.since.unwrap_or(0), filter.until.unwrap_or(u64::MAX));
            return Ok(Box::new(IndexedSet::open(
                &self.inner.db,
                &self.inner.ks,
                lo,
                hi,
            )?));
        }
        let mut share = Share::new(self.inner.budget.clone());
        let items = self.load_items(filter, max_items, Some(&mut share))?;
        let set = crate::negentropy::VecStorage::from_pairs(items);
        Ok(Box::new(Budgeted::new(set, share)))
    }

    /// (created_at, id) of matching events, ascending; `limit` is ignored. More than
    /// `max_items` is refused with [`StoreError::TooMany`] as soon as it is found, so memory
    /// stays bounded by the cap.
    pub fn neg_items_blocking(
        &self,
        filter: &Filter,
        max_items: usize,
    ) -> Result<Vec<NegItem>, StoreError> {
        self.load_items(filter, max_items, None)
    }

    /// Matching items, ascending, refused past `max_items`, each taken from `share` when given.
    fn load_items(
        &self,
        filter: &Filter,
        max_items: usize,
        mut share: Option<&mut Share>,
    ) -> Result<Vec<NegItem>, StoreError> {
        let mut items = Vec::new();
        self.for_each_match(filter, max_items, |item| {
            if items.len() >= max_items {
                return Err(StoreError::TooMany { max: max_items });
            }
            if let Some(share) = share.as_deref_mut()
                && !share.take_one()
            {
                tracing::warn!(
                    loaded = items.len(),
                    "negentropy memory budget spent by the sets open now; set refused"
                );
                return Err(StoreError::Busy(format!(
                    "the negentropy sets open now fill the memory budget ({} items); try \
                     again later",
                    self.inner.budget.limit()
                )));
            }
            items.push(item);
            Ok(())
        })?;
        Ok(items)
    }

    /// How many events match `filter` (`limit` ignored), without collecting them.
    pub fn count_blocking(&self, filter: &Filter) -> Result<u64, StoreError> {
        if filter.is_time_range_only() && !filter.matches_nothing() {
            return Ok(self.neg_storage_blocking(filter, usize::MAX)?.size() as u64);
        }
        let mut n = 0u64;
        self.for_each_match(filter, usize::MAX, |_| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Calls `f` with (created_at, id) of each matching event, ascending. Events are read
    /// only when the index alone cannot decide.
    /// More than `cap` matches may be refused with [`StoreError::TooMany`] before `f` sees
    /// them (the caller enforces its cap exactly).
    fn for_each_match(
        &self,
        filter: &Filter,
        cap: usize,
        mut f: impl FnMut(NegItem) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if filter.matches_nothing() {
            return Ok(());
        }
        let (cands, exact) = self.candidates(filter, Order::OldestFirst, Want::All { cap })?;
        for item in cands {
            let item = item?;
            if !exact {
                match self.get_blocking(&item.1)? {
                    Some(ev) if filter.matches(&ev) => {}
                    _ => continue,
                }
            }
            f(item)?;
        }
        Ok(())
    }

    /// Candidate (created_at, id) pairs of `filter` from its most selective index, in `order`,
    /// without repeats, and whether every candidate is known to match (the index covers every
    /// condition of the filter). Inexact candidates must be checked against the filter.
    ///
    /// Up to [`MERGE_FANOUT`] index ranges are merged as they are read, so a query with a limit
    /// stops early and nothing is collected. Past that, the ranges are merged a group at a
    /// time, keeping what the caller can use (`want`): then the candidates are checked here.
    fn candidates(
        &self,
        f: &Filter,
        order: Order,
        want: Want,
    ) -> Result<(Candidates, bool), StoreError> {
        if let Some(ids) = &f.ids {
            let mut v = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(bytes) = self.ks(Slot::Events).get(id)? {
                    let ev = decode_event(&bytes)?;
                    v.push((ev.created_at, ev.id));
                }
            }
            return Ok((sorted(v, order), false));
        }
        let (slot, prefixes): (Slot, Vec<Vec<u8>>) = match (&f.authors, &f.kinds) {
            (Some(a), Some(k)) if a.len() * k.len() <= MAX_PAIRS => (
                Slot::ByAuthorKind,
                a.iter()
                    .flat_map(|p| k.iter().map(move |k| keys::author_kind_prefix(p, *k)))
                    .collect(),
            ),
            // Authors without kinds (or too many pairs): each author's own kinds, found by
            // seeking, so the time bounds still narrow every range.
            (Some(a), kinds) => {
                let mut prefixes = Vec::new();
                for p in a {
                    for k in self.author_kinds(p)? {
                        if kinds.as_ref().is_none_or(|ks| ks.contains(&k)) {
                            prefixes.push(keys::author_kind_prefix(p, k));
                        }
                    }
                }
                (Slot::ByAuthorKind, prefixes)
            }
            (None, Some(k)) => (
                Slot::ByKind,
                k.iter().map(|k| keys::kind_prefix(*k)).collect(),
            ),
            (None, None) => match f.tags.iter().next() {
                Some((name, vals)) => (
                    Slot::ByTag,
                    vals.iter()
                        .map(|val| keys::tag_prefix(*name as u8, val))
                        .collect(),
                ),
                None => (Slot::ByTime, vec![Vec::new()]),
            },
        };
        // Author, kind and time indexes hold exactly the events with that key; tag values
        // are checked on the event.
        let exact = f.tags.is_empty();
        if prefixes.len() <= MERGE_FANOUT {
            let merged = self.merged(f, slot, &prefixes, order)?;
            return Ok((Box::new(merged), exact));
        }
        let mut kept: Vec<NegItem> = Vec::new();
        for group in prefixes.chunks(MERGE_FANOUT) {
            let mut taken = 0usize;
            for item in self.merged(f, slot, group, order)? {
                let item = item?;
                if !exact {
                    match self.get_blocking(&item.1)? {
                        Some(ev) if f.matches(&ev) => {}
                        _ => continue,
                    }
                }
                kept.push(item);
                taken += 1;
                match want {
                    // A query's first `n` are among the first `n` of each group.
                    Want::First(n) if taken >= n => break,
                    // The same event can come from two groups (two tag values): count it
                    // once before refusing.
                    Want::All { cap } if kept.len() > cap.saturating_mul(2) => {
                        kept.sort_unstable();
                        kept.dedup();
                        if kept.len() > cap {
                            return Err(StoreError::TooMany { max: cap });
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut v = sorted(kept, order);
        if let Want::First(n) = want {
            v = Box::new(v.take(n));
        }
        Ok((v, true))
    }

    /// The ranges `prefixes` of index `slot` within `f`'s time bounds, merged in `order`.
    fn merged(
        &self,
        f: &Filter,
        slot: Slot,
        prefixes: &[Vec<u8>],
        order: Order,
    ) -> Result<Merged, StoreError> {
        let (lo, hi) = (f.since.unwrap_or(0), f.until.unwrap_or(u64::MAX));
        let sources: Vec<Keys> = prefixes
            .iter()
            .map(|p| -> Keys {
                let mut start = p.clone();
                start.extend_from_slice(&lo.to_be_bytes());
                let mut end = p.clone();
                end.extend_from_slice(&hi.to_be_bytes());
                end.extend_from_slice(&[0xff; 32]);
                let r = self.ks(slot).range(start..=end);
                match order {
                    Order::OldestFirst => Box::new(r),
                    Order::NewestFirst => Box::new(r.rev()),
                }
            })
            .collect();
        Merged::new(sources, order)
    }

    /// The kinds `pubkey` has events of: one seek per kind in `by_author_kind`, not a read per
    /// event.
    fn author_kinds(&self, pubkey: &[u8; 32]) -> Result<Vec<u16>, StoreError> {
        let mut end = pubkey.to_vec();
        end.extend_from_slice(&[0xff; 42]);
        let mut kinds = Vec::new();
        let mut from = Some(0u16);
        while let Some(kind) = from {
            let start = keys::author_kind_prefix(pubkey, kind);
            let Some(g) = self
                .ks(Slot::ByAuthorKind)
                .range(start..=end.clone())
                .next()
            else {
                break;
            };
            let key = g.key()?;
            let found = key
                .get(32..34)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map(u16::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt("by_author_kind key too short".into()))?;
            kinds.push(found);
            from = found.checked_add(1);
        }
        Ok(kinds)
    }

    /// Matching events in `order`, calling `emit` for each until it returns false or `limit` is
    /// reached. Streams straight from the time index when the filter is a time range.
    pub fn query_blocking(
        &self,
        filter: &Filter,
        order: Order,
        mut emit: impl FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        if filter.matches_nothing() || filter.limit == Some(0) {
            return Ok(());
        }
        let limit = filter.limit.unwrap_or(u64::MAX);
        let mut sent = 0u64;
        let mut visit = |id: &EventId| -> Result<bool, StoreError> {
            if let Some(ev) = self.get_blocking(id)?
                && filter.matches(&ev)
            {
                sent += 1;
                if !emit(ev) {
                    return Ok(false);
                }
            }
            Ok(sent < limit)
        };
        let first = usize::try_from(limit).unwrap_or(usize::MAX);
        let (cands, _) = self.candidates(filter, order, Want::First(first))?;
        for item in cands {
            if !visit(&item?.1)? {
                break;
            }
        }
        Ok(())
    }

    /// Which of `ids` a sync should not fetch (stored, superseded or deleted here).
    pub fn known_blocking(&self, ids: &[EventId]) -> Result<Vec<bool>, StoreError> {
        ids.iter()
            .map(|id| {
                Ok(self.ks(Slot::Events).contains_key(id)?
                    || self.ks(Slot::Superseded).contains_key(id)?
                    || self.ks(Slot::Tombstones).contains_key(id)?)
            })
            .collect()
    }

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

    /// Drops the negentropy index and its marker, as in a store made before it existed.
    #[cfg(test)]
    pub(super) fn forget_neg_index(&self) {
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
        super::journal::empty_after_clean_close(&path)
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
                let r = keyspaces
                    .iter()
                    .try_for_each(|ks| ks.rotate_memtable_and_wait());
                let _ = tx.send(r);
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

fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    Event::from_json(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
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

/// Applies NIP-01 storage rules for one verified event inside the batch.
fn ingest_one(ov: &mut Overlay<'_>, ev: &Event) -> Result<SaveOutcome, StoreError> {
    let class = ev.class();
    if class == KindClass::Ephemeral {
        return Ok(SaveOutcome::Ephemeral);
    }
    if ov.contains(Slot::Events, &ev.id)? {
        return Ok(SaveOutcome::Duplicate);
    }
    if let Some(deleter) = ov.get(Slot::Tombstones, &ev.id)?
        && deleter[..] == ev.pubkey[..]
    {
        return Ok(SaveOutcome::Deleted);
    }
    let mut outcome = SaveOutcome::Accepted;
    if let Some(head) = keys::head_key(ev) {
        if class == KindClass::Addressable
            && let Some(t) = ov.get(Slot::AddrTombstones, &head)?
            && ev.created_at <= be_u64(&t)
        {
            return Ok(SaveOutcome::Deleted);
        }
        if let Some(cur) = ov.get(Slot::Heads, &head)? {
            let (cur_t, cur_id) =
                keys::split_suffix(&cur).ok_or_else(|| StoreError::Corrupt("head".into()))?;
            // Newest wins; on a tie the lowest id wins.
            if (cur_t, std::cmp::Reverse(cur_id)) >= (ev.created_at, std::cmp::Reverse(ev.id)) {
                ov.insert(Slot::Superseded, ev.id.to_vec(), Vec::new());
                return Ok(SaveOutcome::Superseded);
            }
            remove_event(ov, &cur_id)?;
            ov.insert(Slot::Superseded, cur_id.to_vec(), Vec::new());
            outcome = SaveOutcome::Replaced;
        }
        ov.insert(Slot::Heads, head, keys::time_key(ev.created_at, &ev.id));
    }
    if class == KindClass::Deletion {
        apply_deletion(ov, ev)?;
    }
    ov.insert(Slot::Events, ev.id.to_vec(), ev.to_json().into_bytes());
    for (slot, key) in keys::index_keys(ev) {
        ov.insert(slot, key, Vec::new());
    }
    Ok(outcome)
}

/// NIP-09: `e` tags delete the author's own events; `a` tags delete addressable versions up to
/// the deletion's time. Tombstones keep them from coming back through a later sync.
fn apply_deletion(ov: &mut Overlay<'_>, del: &Event) -> Result<(), StoreError> {
    for t in &del.tags {
        match (t.first().map(String::as_str), t.get(1)) {
            (Some("e"), Some(v)) => {
                let Ok(target) = decode_hex32(v) else {
                    continue;
                };
                if let Some(bytes) = ov.get(Slot::Events, &target)? {
                    let ev = decode_event(&bytes)?;
                    if ev.pubkey != del.pubkey || ev.class() == KindClass::Deletion {
                        continue;
                    }
                    remove_event(ov, &target)?;
                    if let Some(h) = keys::head_key(&ev) {
                        ov.remove(Slot::Heads, h);
                    }
                }
                ov.insert(Slot::Tombstones, target.to_vec(), del.pubkey.to_vec());
            }
            (Some("a"), Some(v)) => {
                let mut parts = v.splitn(3, ':');
                let (Some(kind), Some(pk), d) =
                    (parts.next(), parts.next(), parts.next().unwrap_or(""))
                else {
                    continue;
                };
                let (Ok(kind), Ok(pk)) = (kind.parse::<u16>(), decode_hex32(pk)) else {
                    continue;
                };
                if pk != del.pubkey || KindClass::of(kind) != KindClass::Addressable {
                    continue;
                }
                let addr = keys::address_key(&pk, kind, d);
                if let Some(cur) = ov.get(Slot::Heads, &addr)?
                    && let Some((t, id)) = keys::split_suffix(&cur)
                    && t <= del.created_at
                {
                    remove_event(ov, &id)?;
                    ov.remove(Slot::Heads, addr.clone());
                    ov.insert(Slot::Tombstones, id.to_vec(), del.pubkey.to_vec());
                }
                let prev = ov
                    .get(Slot::AddrTombstones, &addr)?
                    .map(|b| be_u64(&b))
                    .unwrap_or(0);
                ov.insert(
                    Slot::AddrTombstones,
                    addr,
                    prev.max(del.created_at).to_be_bytes().to_vec(),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

fn remove_event(ov: &mut Overlay<'_>, id: &EventId) -> Result<(), StoreError> {
    let Some(bytes) = ov.get(Slot::Events, id)? else {
        return Ok(());
    };
    let ev = decode_event(&bytes)?;
    for (slot, key) in keys::index_keys(&ev) {
        ov.remove(slot, key);
    }
    ov.remove(Slot::Events, id.to_vec());
    Ok(())
}

fn be_u64(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl Store for FjallStore {
    async fn save(&self, events: Vec<Event>) -> Result<Vec<SaveOutcome>, StoreError> {
        let s = self.clone();
        blocking(move || s.save_blocking(&events)).await
    }

    fn query(&self, filter: Filter, order: Order) -> EventStream {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let s = self.clone();
        tokio::task::spawn_blocking(move || {
            let res = s.query_blocking(&filter, order, |ev| tx.blocking_send(Ok(ev)).is_ok());
            if let Err(e) = res {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    async fn get_by_ids(&self, ids: Vec<EventId>) -> Result<Vec<Event>, StoreError> {
        let s = self.clone();
        blocking(move || {
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(ev) = s.get_blocking(id)? {
                    out.push(ev);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn neg_items(&self, filter: Filter) -> Result<Vec<NegItem>, StoreError> {
        let s = self.clone();
        blocking(move || s.neg_items_blocking(&filter, usize::MAX)).await
    }

    async fn neg_storage(
        &self,
        filter: Filter,
        max_items: usize,
    ) -> Result<Box<dyn crate::negentropy::NegStorage>, StoreError> {
        let s = self.clone();
        blocking(move || s.neg_storage_blocking(&filter, max_items)).await
    }

    async fn count(&self, mut filter: Filter) -> Result<u64, StoreError> {
        filter.limit = None;
        let s = self.clone();
        blocking(move || s.count_blocking(&filter)).await
    }

    async fn known(&self, ids: Vec<EventId>) -> Result<Vec<bool>, StoreError> {
        let s = self.clone();
        blocking(move || s.known_blocking(&ids)).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn path(&self) -> Option<String> {
        Some(self.inner.path.display().to_string())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Engine(format!("store task failed: {e}")))?
}
