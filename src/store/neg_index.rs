//! The persistent negentropy index: for every 1 024-second bucket of `created_at` that holds
//! events, their count and the 256-bit sum of their ids, kept 16 consecutive buckets to a value
//! (a set's open reads every bucket of its range, and one key per bucket cost ~0.5 µs: 15 ms
//! for a year of events at 100k, on each side of a sync). It is updated in the same atomic batch
//! as the time index, so it is never out of step after a crash, and it lets a reconciliation
//! answer range fingerprints from bucket sums: only the bucket a range boundary falls in is read
//! item by item. A session reads through one fjall snapshot, so writes made while it runs
//! (including the events the sync itself fetches) do not move its positions. The set itself
//! reads through [`SetSource`], which the PostgreSQL store implements too.

use super::StoreError;
use super::keys::{self, Slot};
use crate::negentropy::{Bound, Fingerprint, Item, NegError, NegStorage, Sum, check_range};
use fjall::Readable;
use std::collections::{BTreeMap, HashMap};

/// log2 of the bucket width in seconds.
pub(super) const BUCKET_SHIFT: u32 = 10;
/// Marker in the meta keyspace: the index covers every event in the current format (absent on
/// stores made before it, or before its buckets were grouped: it is then rebuilt at open).
pub(super) const BUILT_KEY: &[u8] = b"neg_index_v2";
/// The marker of the one-bucket-per-value format, removed when the index is rebuilt.
pub(super) const OLD_BUILT_KEY: &[u8] = b"neg_index_v1";
/// log2 of the buckets per index value.
const GROUP_SHIFT: u32 = 4;
/// Bytes of one bucket in a value: bucket number (u64 BE), count (u64 LE), sum (32 bytes LE).
const BUCKET_BYTES: usize = 48;
/// Items a session keeps loaded from boundary buckets before it drops them (about 40 MB).
const CACHE_ITEMS: usize = 1 << 20;
/// Most buckets, and items, one read loads when the session walks buckets in order.
const READ_AHEAD_SEGS: usize = 512;
const READ_AHEAD_ITEMS: usize = 16_384;
/// Most items one read loads when a source whose reads are round trips loads the whole set.
const BULK_READ_ITEMS: usize = 65_536;
/// Misses after which such a source loads the whole set: more than the range bounds of one
/// message (16 ranges by default) can cause.
const BULK_AFTER_MISSES: usize = 48;
/// A miss at most this many buckets after the previous read counts as walking in order.
const NEAR: usize = 16;
/// Largest set a session reads ahead in the background (see [`NegStorage::prefetch`]): about
/// 10 MB of items, a ~50 ms read, wasted at worst when the differences turn out to be few.
const PREFETCH_MAX_ITEMS: usize = 1 << 18;
/// Segments apart that a planned read still reads in one scan (about as many items as a scan
/// costs to start).
const PLANNED_GAP: usize = 2;
/// Most background reads a session runs at once (one per core of a small machine).
const MAX_READS_AHEAD: usize = 2;
/// Items per piece the background read hands over (a few milliseconds of reading each).
#[cfg(not(test))]
const PREFETCH_CHUNK_ITEMS: usize = 8_192;
/// Small pieces in unit tests, whose sets hold hundreds of items: many pieces are handed over.
#[cfg(test)]
const PREFETCH_CHUNK_ITEMS: usize = 16;

pub(super) fn bucket_of(t: u64) -> u64 {
    t >> BUCKET_SHIFT
}

/// The index key holding bucket `b`.
fn group_of(b: u64) -> u64 {
    b >> GROUP_SHIFT
}

fn bucket_span(b: u64) -> (u64, u64) {
    (
        b << BUCKET_SHIFT,
        (b << BUCKET_SHIFT) | ((1 << BUCKET_SHIFT) - 1),
    )
}

/// Value layout: count (u64 LE) ++ sum (32 bytes LE).
pub(super) fn encode(count: u64, sum: &Sum) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(&count.to_le_bytes());
    v.extend_from_slice(&sum.to_bytes());
    v
}

pub(super) fn decode(v: &[u8]) -> Result<(u64, Sum), StoreError> {
    let (count, sum) = v
        .split_first_chunk::<8>()
        .and_then(|(c, s)| Some((u64::from_le_bytes(*c), <&[u8; 32]>::try_from(s).ok()?)))
        .ok_or_else(|| {
            StoreError::Corrupt(format!("negentropy index value of {} bytes", v.len()))
        })?;
    Ok((count, Sum::of(sum)))
}

/// One index value: the non-empty buckets of a group, ascending.
type Group = BTreeMap<u64, (u64, Sum)>;

fn encode_group(g: &Group) -> Vec<u8> {
    let mut v = Vec::with_capacity(g.len() * BUCKET_BYTES);
    for (b, (count, sum)) in g {
        v.extend_from_slice(&b.to_be_bytes());
        v.extend_from_slice(&encode(*count, sum));
    }
    v
}

/// The buckets of group value `v` (stored under group `key`), each passed to `f` in order.
fn decode_group(key: u64, v: &[u8], mut f: impl FnMut(u64, u64, Sum)) -> Result<(), StoreError> {
    let bad = || StoreError::Corrupt(format!("negentropy index group {key}: {} bytes", v.len()));
    if v.is_empty() || !v.len().is_multiple_of(BUCKET_BYTES) {
        return Err(bad());
    }
    let mut prev = None;
    for c in v.chunks_exact(BUCKET_BYTES) {
        let (b, rest) = c.split_first_chunk::<8>().ok_or_else(bad)?;
        let b = u64::from_be_bytes(*b);
        if group_of(b) != key || prev.is_some_and(|p| p >= b) {
            return Err(bad());
        }
        prev = Some(b);
        let (count, sum) = decode(rest)?;
        f(b, count, sum);
    }
    Ok(())
}

fn decode_key(k: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(k)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("negentropy index key of {} bytes", k.len())))
}

/// Per-bucket changes of one write batch.
#[derive(Default)]
pub(super) struct Deltas(HashMap<u64, (i64, Sum)>);

impl Deltas {
    pub(super) fn insert(&mut self, time_key: &[u8]) {
        if let Some((t, id)) = keys::split_suffix(time_key) {
            let d = self.0.entry(bucket_of(t)).or_default();
            d.0 += 1;
            d.1.add_id(&id);
        }
    }

    pub(super) fn remove(&mut self, time_key: &[u8]) {
        if let Some((t, id)) = keys::split_suffix(time_key) {
            let d = self.0.entry(bucket_of(t)).or_default();
            d.0 -= 1;
            d.1.sub(&Sum::of(&id));
        }
    }

    /// Adds the changed groups of buckets to `batch` (the caller holds the writer lock).
    pub(super) fn apply(
        self,
        index: &fjall::Keyspace,
        batch: &mut fjall::OwnedWriteBatch,
    ) -> Result<(), StoreError> {
        let mut groups: BTreeMap<u64, Vec<(u64, i64, Sum)>> = BTreeMap::new();
        for (b, (dc, dsum)) in self.0 {
            if dc != 0 || dsum != Sum::default() {
                groups.entry(group_of(b)).or_default().push((b, dc, dsum));
            }
        }
        for (g, changes) in groups {
            let key = g.to_be_bytes();
            let mut group = Group::new();
            if let Some(v) = index.get(key)? {
                decode_group(g, &v, |b, count, sum| {
                    group.insert(b, (count, sum));
                })?;
            }
            for (b, dc, dsum) in changes {
                let (count, mut sum) = group.get(&b).copied().unwrap_or_default();
                let count = count.checked_add_signed(dc).ok_or_else(|| {
                    StoreError::Corrupt(format!("negentropy index bucket {b} would go negative"))
                })?;
                sum.add(&dsum);
                if count == 0 {
                    group.remove(&b);
                } else {
                    group.insert(b, (count, sum));
                }
            }
            if group.is_empty() {
                batch.remove(index, key);
            } else {
                batch.insert(index, key, encode_group(&group));
            }
        }
        Ok(())
    }
}

/// Bucket counts and sums recomputed from the time index.
pub(super) fn recompute(
    by_time: &fjall::Keyspace,
) -> Result<BTreeMap<u64, (u64, Sum)>, StoreError> {
    let mut out: BTreeMap<u64, (u64, Sum)> = BTreeMap::new();
    for g in by_time.iter() {
        let k = g.key()?;
        if let Some((t, id)) = keys::split_suffix(&k) {
            let e = out.entry(bucket_of(t)).or_default();
            e.0 += 1;
            e.1.add_id(&id);
        }
    }
    Ok(out)
}

/// Builds the index from the time index (a store made before it existed), in one batch with
/// its marker.
pub(super) fn rebuild(db: &fjall::Database, ks: &[fjall::Keyspace]) -> Result<(), StoreError> {
    let index = &ks[Slot::NegIndex as usize];
    let mut batch = db.batch();
    for g in index.iter() {
        batch.remove(index, g.key()?);
    }
    let mut groups: BTreeMap<u64, Group> = BTreeMap::new();
    for (b, bucket) in recompute(&ks[Slot::ByTime as usize])? {
        groups.entry(group_of(b)).or_default().insert(b, bucket);
    }
    for (g, group) in groups {
        batch.insert(index, g.to_be_bytes(), encode_group(&group));
    }
    batch.remove(&ks[Slot::Meta as usize], OLD_BUILT_KEY);
    batch.insert(&ks[Slot::Meta as usize], BUILT_KEY, b"1".to_vec());
    batch.commit()?;
    Ok(())
}

/// Differences between the index and the time index, for `orly check`.
pub(super) fn check(ks: &[fjall::Keyspace], problems: &mut Vec<String>) -> Result<(), StoreError> {
    let mut want = recompute(&ks[Slot::ByTime as usize])?;
    let mut stored = Group::new();
    for g in ks[Slot::NegIndex as usize].iter() {
        let (k, v) = g.into_inner()?;
        let key = decode_key(&k)?;
        if let Err(e) = decode_group(key, &v, |b, count, sum| {
            stored.insert(b, (count, sum));
        }) {
            problems.push(format!("NegIndex: {e}"));
        }
    }
    for (b, got) in stored {
        match want.remove(&b) {
            Some(w) if w == got => {}
            Some(w) => problems.push(format!(
                "NegIndex: bucket {b} holds {} events, the time index {}",
                got.0, w.0
            )),
            None => problems.push(format!("NegIndex: bucket {b} has no events")),
        }
    }
    for (b, (n, _)) in want {
        problems.push(format!("NegIndex: bucket {b} ({n} events) missing"));
    }
    Ok(())
}

/// A contiguous piece of the session's range: a whole bucket, or the part of a boundary bucket
/// inside the range.
#[derive(Debug, Clone)]
struct Seg {
    lo: u64,
    hi: u64,
    start: usize,
    count: usize,
    /// Sum of every item before this piece.
    before: Sum,
}

/// Where an [`IndexedSet`] reads: the bucket index and the time-ordered items, both through one
/// consistent view of the store (a fjall snapshot, a PostgreSQL repeatable-read transaction).
pub(super) trait SetSource: Send + Sync {
    /// (bucket, count, sum) of every non-empty bucket in `lo..=hi` (bucket numbers), ascending.
    fn buckets(&self, lo: u64, hi: u64) -> Result<Vec<(u64, u64, Sum)>, StoreError>;
    /// The items with `lo <= created_at <= hi`, ascending.
    fn read(&self, lo: u64, hi: u64) -> Result<Vec<Item>, StoreError>;
    /// True when every read is a round trip to another process (a database server): then a
    /// miss always reads ahead as far as the limits allow, rather than only while misses walk
    /// the buckets in order. A local scan is cheap to start, so the default is false.
    fn reads_are_round_trips(&self) -> bool {
        false
    }
}

/// The fjall view: one snapshot of the index and the time index.
struct FjallSource {
    snap: fjall::Snapshot,
    by_time: fjall::Keyspace,
    index: fjall::Keyspace,
}

impl SetSource for FjallSource {
    fn buckets(&self, lo: u64, hi: u64) -> Result<Vec<(u64, u64, Sum)>, StoreError> {
        let mut out = Vec::new();
        let groups = group_of(lo).to_be_bytes()..=group_of(hi).to_be_bytes();
        for g in self.snap.range(&self.index, groups) {
            let (k, v) = g.into_inner()?;
            decode_group(decode_key(&k)?, &v, |b, count, sum| {
                if (lo..=hi).contains(&b) {
                    out.push((b, count, sum));
                }
            })?;
        }
        Ok(out)
    }

    fn read(&self, lo: u64, hi: u64) -> Result<Vec<Item>, StoreError> {
        let range = keys::time_key(lo, &[0; 32])..=keys::time_key(hi, &[0xff; 32]);
        let mut out = Vec::new();
        for g in self.snap.range(&self.by_time, range) {
            if let Some((t, id)) = keys::split_suffix(&g.key()?) {
                out.push(Item { t, id });
            }
        }
        Ok(out)
    }
}

/// The items of one time range (`since..=until`), read through a snapshot and the index.
pub struct IndexedSet {
    src: std::sync::Arc<dyn SetSource>,
    segs: Vec<Seg>,
    size: usize,
    total: Sum,
    cache: SegCache,
    /// Buckets the next read loads (doubles while misses follow each other), and where the
    /// previous read ended.
    window: usize,
    read_end: usize,
    /// Reads the set has needed so far.
    misses: usize,
    /// The background reads [`NegStorage::prefetch`] started, over disjoint runs of segments.
    ahead: Vec<ReadAhead>,
    /// Where to read ahead from at the step's first read (see [`NegStorage::expect_reads`]).
    expected: Option<usize>,
}

/// The items of the segments read so far, one after the other in one vector: a segment's
/// items are one slice of it, found by the segment's number. A set with differences spread all
/// over reads most of its segments, of a few items each; one small vector per segment cost a
/// heap allocation and a hashed lookup each, and as much again to free them.
#[derive(Default)]
struct SegCache {
    /// Where each segment's items are in `items` (`None`, or past the end, if not read).
    at: Vec<Option<std::ops::Range<usize>>>,
    items: Vec<Item>,
}

impl SegCache {
    fn has(&self, s: usize) -> bool {
        self.at.get(s).is_some_and(Option::is_some)
    }

    /// Segment `s`'s items (none if it is not read).
    fn get(&self, s: usize) -> &[Item] {
        match self.at.get(s) {
            Some(Some(r)) => &self.items[r.clone()],
            _ => &[],
        }
    }

    /// Keeps `items` as segment `s`'s.
    fn put(&mut self, s: usize, items: &[Item]) {
        if self.at.len() <= s {
            self.at.resize(s + 1, None);
        }
        let start = self.items.len();
        self.items.extend_from_slice(items);
        self.at[s] = Some(start..self.items.len());
    }

    /// Items kept.
    fn len(&self) -> usize {
        self.items.len()
    }

    fn clear(&mut self) {
        self.at.clear();
        self.items.clear();
    }
}

/// Segments `first..end` and their items, or why they could not be read.
type Piece = Result<(usize, usize, Vec<Item>), StoreError>;

/// Segments `from..end` read in order by a thread of their own, handed over in pieces as
/// (first segment, end segment, items). Dropping it stops the thread after its current piece
/// and waits for it, so no read outlives the session (nor its snapshot the store).
struct ReadAhead {
    /// In a mutex only so that the set stays `Sync`; it is only reached through `&mut`.
    rx: std::sync::Mutex<std::sync::mpsc::Receiver<Piece>>,
    /// Segments before this one have been handed over (or were never asked for).
    next: usize,
    /// The segment after the piece the thread is reading now, and after each of its pieces
    /// (never empty: it reads at least one segment): a segment past the piece after this one
    /// is read directly when needed rather than waited for.
    reaching: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ends: Vec<usize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading `segs[from..until]` over `src`, in pieces of about
    /// [`PREFETCH_CHUNK_ITEMS`].
    fn start(
        src: std::sync::Arc<dyn SetSource>,
        segs: &[Seg],
        from: usize,
        until: usize,
    ) -> Option<Self> {
        let mut pieces = Vec::new();
        let mut s = from;
        while s < until {
            let (mut end, mut n) = (s + 1, segs[s].count);
            while let Some(next) = segs.get(end).filter(|_| end < until) {
                if n + next.count > PREFETCH_CHUNK_ITEMS {
                    break;
                }
                n += next.count;
                end += 1;
            }
            pieces.push((s, end, segs[s].lo, segs[end - 1].hi));
            s = end;
        }
        let ends = pieces.iter().map(|p| p.1).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let reaching = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(from));
        let reached = reaching.clone();
        let thread = std::thread::Builder::new()
            .name("orly-neg-read".into())
            .spawn(move || {
                for (s, end, lo, hi) in pieces {
                    if halt.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    reached.store(end, std::sync::atomic::Ordering::Relaxed);
                    let r = src.read(lo, hi).map(|items| (s, end, items));
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        return;
                    }
                }
            })
            // No thread: the session reads as it goes, as without a prefetch.
            .ok()?;
        Some(Self {
            rx: std::sync::Mutex::new(rx),
            next: from,
            reaching,
            ends,
            stop,
            thread: Some(thread),
        })
    }

    /// The segment after the last one it reads.
    fn end(&self) -> usize {
        self.ends.last().copied().unwrap_or(self.next)
    }

    fn receiver(&mut self) -> &mut std::sync::mpsc::Receiver<Piece> {
        self.rx
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Unblocks a send in progress.
        let (_, empty) = std::sync::mpsc::channel();
        drop(std::mem::replace(self.receiver(), empty));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl IndexedSet {
    pub(super) fn open(
        db: &fjall::Database,
        ks: &[fjall::Keyspace],
        lo: u64,
        hi: u64,
    ) -> Result<Self, StoreError> {
        let src = FjallSource {
            snap: db.snapshot(),
            by_time: ks[Slot::ByTime as usize].clone(),
            index: ks[Slot::NegIndex as usize].clone(),
        };
        Self::from_source(Box::new(src), lo, hi)
    }

    /// The set of `lo..=hi` over `src`.
    pub(super) fn from_source(
        src: Box<dyn SetSource>,
        lo: u64,
        hi: u64,
    ) -> Result<Self, StoreError> {
        let mut set = Self {
            src: src.into(),
            segs: Vec::new(),
            size: 0,
            total: Sum::default(),
            cache: SegCache::default(),
            window: 1,
            read_end: 0,
            misses: 0,
            ahead: Vec::new(),
            expected: None,
        };
        if lo > hi {
            return Ok(set);
        }
        let buckets = set.src.buckets(bucket_of(lo), bucket_of(hi))?;
        for (b, count, sum) in buckets {
            let (b_lo, b_hi) = bucket_span(b);
            let (s_lo, s_hi) = (b_lo.max(lo), b_hi.min(hi));
            let (count, sum, items) = if (s_lo, s_hi) == (b_lo, b_hi) {
                (count, sum, None)
            } else {
                // A boundary bucket: only part of it is in range, so count that part.
                let items = set.read(s_lo, s_hi)?;
                let mut sum = Sum::default();
                items.iter().for_each(|it| sum.add_id(&it.id));
                (items.len() as u64, sum, Some(items))
            };
            if count == 0 {
                continue;
            }
            let count = usize::try_from(count)
                .map_err(|_| StoreError::Corrupt(format!("bucket {b}: count {count}")))?;
            if let Some(items) = items {
                set.cache.put(set.segs.len(), &items);
            }
            set.segs.push(Seg {
                lo: s_lo,
                hi: s_hi,
                start: set.size,
                count,
                before: set.total,
            });
            set.size += count;
            set.total.add(&sum);
        }
        Ok(set)
    }

    fn read(&self, lo: u64, hi: u64) -> Result<Vec<Item>, StoreError> {
        self.src.read(lo, hi)
    }

    /// The items of segment `s`, loaded once and kept while the cache has room. A range scan
    /// costs far more to start than to continue, so when misses follow each other in order
    /// (many small ranges differ) one read loads the following buckets too.
    fn items(&mut self, s: usize) -> Result<&[Item], NegError> {
        if !self.cache.has(s)
            && let Some(from) = self.expected.take()
        {
            self.prefetch(from);
        }
        if !self.cache.has(s) {
            self.take_ahead(s)?;
        }
        if !self.cache.has(s) {
            // Over a database server a read is a round trip, worth far more than the items it
            // brings. A reconciliation of equal sets misses only at the few range bounds of
            // its first message; one with differences spread over the set goes on to touch
            // most of it: past [`BULK_AFTER_MISSES`] misses the whole set is loaded, in a few
            // large reads, when it fits the cache.
            self.misses += 1;
            if self.src.reads_are_round_trips()
                && self.misses > BULK_AFTER_MISSES
                && self.size <= CACHE_ITEMS
            {
                self.load_all()?;
                return Ok(self.cache.get(s));
            }
            let near = s >= self.read_end && s - self.read_end <= NEAR;
            self.window = if near {
                (self.window * 2).min(READ_AHEAD_SEGS)
            } else {
                1
            };
            let mut end = s + 1;
            let mut n = self.segs[s].count;
            while let Some(next) = self.segs.get(end) {
                if end - s >= self.window
                    || n + next.count > READ_AHEAD_ITEMS
                    || self.cache.has(end)
                {
                    break;
                }
                n += next.count;
                end += 1;
            }
            self.read_end = end;
            self.load(s, end, n)?;
        }
        Ok(self.cache.get(s))
    }

    /// Takes pieces from the background read of segment `s` until `s` has arrived, if one
    /// reads it and reaches it within its next piece. A segment further on is read directly:
    /// waiting would make a step that needs a few items as slow as reading all before them.
    fn take_ahead(&mut self, s: usize) -> Result<(), NegError> {
        let Some(k) = self.ahead.iter().position(|a| {
            let at = a.reaching.load(std::sync::atomic::Ordering::Relaxed);
            let i = a.ends.partition_point(|&e| e <= at);
            (a.next..a.end()).contains(&s) && s < a.ends.get(i).copied().unwrap_or(a.end())
        }) else {
            return Ok(());
        };
        while self.ahead[k].next <= s {
            let Ok(piece) = self.ahead[k].receiver().recv() else {
                // The thread ended early: read the rest as it is needed.
                self.ahead.remove(k);
                break;
            };
            let (first, end, items) = piece.map_err(|e| NegError::Storage(e.to_string()))?;
            self.ahead[k].next = end;
            self.keep(first, end, items)?;
        }
        Ok(())
    }

    /// Reads segments `s..end` (`n` items in all, says the index) into the cache.
    fn load(&mut self, s: usize, end: usize, n: usize) -> Result<(), NegError> {
        let (lo, hi) = (self.segs[s].lo, self.segs[end - 1].hi);
        let items = self
            .read(lo, hi)
            .map_err(|e| NegError::Storage(e.to_string()))?;
        if self.cache.len() + n > CACHE_ITEMS {
            self.cache.clear();
        }
        self.keep(s, end, items)
    }

    /// Puts the items of segments `s..end` in the cache (those not there already), checking
    /// their count against the index.
    fn keep(&mut self, s: usize, end: usize, items: Vec<Item>) -> Result<(), NegError> {
        let n: usize = self.segs[s..end].iter().map(|g| g.count).sum();
        if items.len() != n {
            let (lo, hi) = (self.segs[s].lo, self.segs[end - 1].hi);
            return Err(NegError::Storage(format!(
                "negentropy index out of step: {} events in {lo}..={hi}, the index says {n} \
                 (run `orly check`)",
                items.len(),
            )));
        }
        let mut rest = items.as_slice();
        for k in s..end {
            let (mine, more) = rest.split_at(self.segs[k].count.min(rest.len()));
            rest = more;
            if !self.cache.has(k) {
                self.cache.put(k, mine);
            }
        }
        Ok(())
    }

    /// Reads every segment not cached yet, in runs of at most [`BULK_READ_ITEMS`] items.
    fn load_all(&mut self) -> Result<(), NegError> {
        let mut s = 0;
        while s < self.segs.len() {
            if self.cache.has(s) {
                s += 1;
                continue;
            }
            let (mut end, mut n) = (s + 1, self.segs[s].count);
            while let Some(next) = self.segs.get(end) {
                if n + next.count > BULK_READ_ITEMS || self.cache.has(end) {
                    break;
                }
                n += next.count;
                end += 1;
            }
            self.load(s, end, n)?;
            s = end;
        }
        Ok(())
    }

    /// The segment holding position `i` (< size).
    fn seg_of(&self, i: usize) -> usize {
        self.segs.partition_point(|s| s.start + s.count <= i)
    }

    /// Sum of the items before position `i`.
    fn prefix(&mut self, i: usize) -> Result<Sum, NegError> {
        if i >= self.size {
            return Ok(self.total);
        }
        let s = self.seg_of(i);
        let (start, mut sum) = (self.segs[s].start, self.segs[s].before);
        if i > start {
            for it in &self.items(s)?[..i - start] {
                sum.add_id(&it.id);
            }
        }
        Ok(sum)
    }
}

impl NegStorage for IndexedSet {
    fn size(&self) -> usize {
        self.size
    }

    fn for_each(
        &mut self,
        begin: usize,
        end: usize,
        f: &mut dyn FnMut(usize, &Item) -> bool,
    ) -> Result<(), NegError> {
        check_range(begin, end, self.size)?;
        let mut i = begin;
        while i < end {
            let s = self.seg_of(i);
            let start = self.segs[s].start;
            let items = self.items(s)?;
            let stop = (end - start).min(items.len());
            for (j, it) in items[i - start..stop].iter().enumerate() {
                if !f(i + j, it) {
                    return Ok(());
                }
            }
            i = start + stop;
        }
        Ok(())
    }

    fn lower_bound(&mut self, first: usize, last: usize, bound: &Bound) -> Result<usize, NegError> {
        check_range(first, last, self.size)?;
        let s = self.segs.partition_point(|s| s.hi < bound.t);
        let pos = match self.segs.get(s) {
            None => self.size,
            // Below every item of the segment: its start, read from the index (a bound with
            // a zero id at the segment's first second is one, as `edge_near` makes them).
            Some(seg) if bound.t < seg.lo || (bound.t == seg.lo && bound.id == [0; 32]) => {
                seg.start
            }
            Some(seg) => {
                let start = seg.start;
                start + self.items(s)?.partition_point(|it| bound.is_above(it))
            }
        };
        Ok(pos.clamp(first, last))
    }

    fn fingerprint(&mut self, begin: usize, end: usize) -> Result<Fingerprint, NegError> {
        check_range(begin, end, self.size)?;
        let mut sum = self.prefix(end)?;
        sum.sub(&self.prefix(begin)?);
        Ok(sum.fingerprint((end - begin) as u64))
    }

    fn is_indexed(&self) -> bool {
        true
    }

    fn edge_near(&mut self, pos: usize, after: usize, before: usize) -> Option<(usize, Bound)> {
        // The start of the segment holding `pos`, or of the next one, whichever is nearer and
        // inside the range. A segment's first second (zero id) is below all of its items and
        // above all of the previous segment's, on both sides of a reconciliation.
        let s = self.seg_of(pos.min(self.size.checked_sub(1)?));
        [s, s + 1]
            .into_iter()
            .filter_map(|k| self.segs.get(k))
            .map(|g| (g.start, g.lo))
            .filter(|&(at, _)| at > after && at < before)
            .min_by_key(|&(at, _)| at.abs_diff(pos))
            .map(|(at, t)| {
                let bound = Bound {
                    t,
                    id: [0; 32],
                    len: 0,
                };
                (at, bound)
            })
    }

    fn expect_reads(&mut self, from: Option<usize>) {
        self.expected = from;
    }

    fn plans_reads(&self) -> bool {
        // Over a database server, reads are round trips: its sessions load the whole set
        // after a few misses instead (see `items`).
        !self.src.reads_are_round_trips()
    }

    fn read_planned(&mut self, ranges: &[(usize, usize)]) -> Result<(), NegError> {
        let mut wanted: Vec<usize> = Vec::new();
        for &(begin, end) in ranges.iter().filter(|r| r.0 < r.1 && r.1 <= self.size) {
            let (first, last) = (self.seg_of(begin), self.seg_of(end - 1));
            wanted.extend((first..=last).filter(|&s| !self.cache.has(s)));
        }
        wanted.sort_unstable();
        wanted.dedup();
        // Runs of segments read by one scan each: neighbours, and segments a few apart (a scan
        // costs more to start than the few items between).
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for s in wanted {
            match runs.last_mut() {
                Some((_, end)) if s <= *end + PLANNED_GAP => *end = s + 1,
                _ => runs.push((s, s + 1)),
            }
        }
        let count = |&(a, b): &(usize, usize)| self.segs[a..b].iter().map(|g| g.count).sum();
        let counts: Vec<usize> = runs.iter().map(count).collect();
        let total: usize = counts.iter().sum();
        if total == 0 || self.cache.len() + total > CACHE_ITEMS {
            return Ok(());
        }
        // Two threads, each reading about half of the items.
        let mut half = 0;
        let mut acc = 0;
        while half < runs.len() && 2 * acc < total {
            acc += counts[half];
            half += 1;
        }
        let (src, segs) = (&self.src, &self.segs);
        let read = |runs: &[(usize, usize)]| -> Result<Vec<(usize, usize, Vec<Item>)>, StoreError> {
            runs.iter()
                .map(|&(a, b)| Ok((a, b, src.read(segs[a].lo, segs[b - 1].hi)?)))
                .collect()
        };
        let (first, second) = runs.split_at(half);
        let (got, more) = std::thread::scope(|scope| {
            let other = std::thread::Builder::new()
                .name("orly-neg-read".into())
                .spawn_scoped(scope, || read(second));
            let got = read(first);
            let more = match other {
                Ok(t) => t
                    .join()
                    .unwrap_or_else(|_| Err(StoreError::Engine("a read thread failed".into()))),
                // No thread: read the second half here too.
                Err(_) => read(second),
            };
            (got, more)
        });
        let storage = |e: StoreError| NegError::Storage(e.to_string());
        for (a, b, items) in got
            .map_err(storage)?
            .into_iter()
            .chain(more.map_err(storage)?)
        {
            self.keep(a, b, items)?;
        }
        Ok(())
    }

    fn prefetch(&mut self, from: usize) {
        // Small enough that everything read stays cached (no piece is read twice).
        if self.ahead.len() >= MAX_READS_AHEAD
            || self.size > PREFETCH_MAX_ITEMS
            || from >= self.size
        {
            return;
        }
        // From the first segment neither cached nor read ahead already, up to the next one
        // that is read ahead.
        let mut first = self.seg_of(from);
        while first < self.segs.len() {
            if let Some(a) = self
                .ahead
                .iter()
                .find(|a| (a.next..a.end()).contains(&first))
            {
                first = a.end();
            } else if self.cache.has(first) {
                first += 1;
            } else {
                break;
            }
        }
        let until = (self.ahead.iter())
            .map(|a| a.next)
            .filter(|&n| n > first)
            .min()
            .unwrap_or(self.segs.len());
        if first < until {
            self.ahead
                .extend(ReadAhead::start(self.src.clone(), &self.segs, first, until));
        }
    }
}

#[cfg(test)]
#[path = "neg_index_tests.rs"]
mod tests;
