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

mod ingest;
mod maintenance;

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

/// An `ids` filter naming at most this many events has them all read and sorted in memory (a
/// sync's fetch names 50); a longer one is sorted by time first and read one at a time.
const IDS_READ_ONCE: usize = 1024;

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
        // fjall's default worker count (up to 4). With more than one worker, fjall 3.1.13's
        // worker 0 hands every compaction request back to the queue and takes it again at once,
        // so it spins a core while such requests wait (after an open over level-0 tables, after
        // each flush); it shows as `fjall:worker` in a profile. One worker avoids that but can
        // block on its own full queue under heavy writes (fjall PR #323), which is worse.
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
            out.push(ingest::ingest_one(&mut ov, ev)?);
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
            // Without authors a tag value is read before kinds, as strfry plans it: the
            // filters clients send with both (a thread: `#e` + kinds 1, 7; notifications: `#p`
            // + kinds) name a few events among every event of those kinds, which the kind
            // index would walk (870 ms at 100k events, against 1 ms this way). The kinds are
            // checked on each event, as every tag filter is.
            (None, kinds) => match (f.tags.iter().next(), kinds) {
                (Some((name, vals)), _) => (
                    Slot::ByTag,
                    vals.iter()
                        .map(|val| keys::tag_prefix(*name as u8, val))
                        .collect(),
                ),
                (None, Some(k)) => (
                    Slot::ByKind,
                    k.iter().map(|k| keys::kind_prefix(*k)).collect(),
                ),
                (None, None) => (Slot::ByTime, vec![Vec::new()]),
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
        if let Some(ids) = &filter.ids
            && ids.len() <= IDS_READ_ONCE
        {
            // Each event is read and decoded once, where the general path reads it for its
            // time to sort by, then again to send it.
            let mut evs = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(ev) = self.get_blocking(id)?
                    && filter.matches(&ev)
                {
                    evs.push(ev);
                }
            }
            evs.sort_unstable_by_key(|e| (e.created_at, e.id));
            if order == Order::NewestFirst {
                evs.reverse();
            }
            let first = usize::try_from(limit).unwrap_or(usize::MAX);
            for ev in evs.into_iter().take(first) {
                if !emit(ev) {
                    break;
                }
            }
            return Ok(());
        }
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
}

fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    Event::from_json(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
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
