//! The NIP-77 (negentropy protocol V1) reconciler, over any [`NegStorage`]: split ranges into
//! 16 fingerprinted buckets, answer small ranges with their id lists, skip what matches, and
//! keep each message under the frame size limit by folding what did not fit into one
//! fingerprint of the remainder.

use super::codec::{
    Bound, Fingerprint, Item, MODE_FINGERPRINT, MODE_ID_LIST, MODE_SKIP, Reader, Writer,
};
use super::{NegError, PROTOCOL_VERSION};
use std::collections::HashSet;

/// Buckets a mismatched range is split into.
const BUCKETS: usize = 16;
/// Ranges with fewer items than this are sent as id lists.
const ID_LIST_BELOW: usize = 2 * BUCKETS;
/// Room kept under the frame size limit for the closing fingerprint.
const FRAME_SLACK: usize = 200;
/// Even pieces of at least this many items may be cut at the storage's edges instead. Down
/// to pieces that the next level lists: cutting those between items would read every item of
/// a set whose differences are spread all over it, at the level before the lists.
const EDGE_CUTS_FROM: usize = ID_LIST_BELOW / 2;
/// A message with at least this many fingerprints (the peer split at least four of our
/// ranges) may make this step read items all over the set: from its first read, half of it is
/// read ahead meanwhile (when the storage does not plan its reads, or we started).
const MANY_FINGERPRINTS: usize = 4 * BUCKETS;
/// When at least this many of a message's fingerprints mismatched, and three in four or more
/// did, the differences are spread over the set: the next step reads most of it, so it is
/// read ahead while the peer works on this reply. A responder over a storage that plans its
/// reads does not: it reads what its next reply lists when it gets the message, a third of
/// such a set, where reading all of it ahead competed with the peer for the cores.
const DENSE_MISMATCHES: usize = 12;

/// The sorted set one side reconciles, addressed by position.
pub trait NegStorage: Send + Sync {
    /// Number of items.
    fn size(&self) -> usize;
    /// Calls `f(index, item)` for items `begin..end` in order until it returns false.
    fn for_each(
        &mut self,
        begin: usize,
        end: usize,
        f: &mut dyn FnMut(usize, &Item) -> bool,
    ) -> Result<(), NegError>;
    /// The first position in `first..last` whose item is not below `bound` (`last` if none).
    fn lower_bound(&mut self, first: usize, last: usize, bound: &Bound) -> Result<usize, NegError>;
    /// The fingerprint of items `begin..end`.
    fn fingerprint(&mut self, begin: usize, end: usize) -> Result<Fingerprint, NegError>;
    /// True when fingerprints come from a persistent index rather than a loaded item set.
    fn is_indexed(&self) -> bool {
        false
    }
    /// A hint: the reconciliation is likely to read the items from position `from` on soon, so
    /// a storage that reads them from disk may start reading them in the background now. A
    /// set already in memory ignores it.
    fn prefetch(&mut self, _from: usize) {}
    /// A weaker hint, for the step under way: it may read items all over the set, from
    /// position `from` on, or may read none (when the peer's bounds fall on the storage's
    /// edges). A storage may start reading ahead at the first item the step reads. `None`: the
    /// step is over.
    fn expect_reads(&mut self, _from: Option<usize>) {}
    /// True when the storage reads items in batches given ahead ([`NegStorage::read_planned`]):
    /// a step then lists the items it will read before it starts, instead of giving hints.
    fn plans_reads(&self) -> bool {
        false
    }
    /// Reads the items of these position ranges now, together (in parallel where it can), so
    /// that the step that follows finds them loaded. A storage may read fewer (none, when
    /// they would not fit its memory): the step then reads the rest as it goes.
    fn read_planned(&mut self, _ranges: &[(usize, usize)]) -> Result<(), NegError> {
        Ok(())
    }
    /// A position in `after + 1..before` near `pos` where a range can be cut without reading
    /// items, with the bound that cuts there: for an index of time buckets, the start of a
    /// bucket. Both sides of a reconciliation over such indexes then cut at the same bounds
    /// and answer each other's fingerprints from bucket sums alone. `None`: no such position
    /// (the default; a range is then cut between items).
    fn edge_near(&mut self, _pos: usize, _after: usize, _before: usize) -> Option<(usize, Bound)> {
        None
    }
}

impl NegStorage for Box<dyn NegStorage> {
    fn size(&self) -> usize {
        (**self).size()
    }
    fn for_each(
        &mut self,
        begin: usize,
        end: usize,
        f: &mut dyn FnMut(usize, &Item) -> bool,
    ) -> Result<(), NegError> {
        (**self).for_each(begin, end, f)
    }
    fn lower_bound(&mut self, first: usize, last: usize, bound: &Bound) -> Result<usize, NegError> {
        (**self).lower_bound(first, last, bound)
    }
    fn fingerprint(&mut self, begin: usize, end: usize) -> Result<Fingerprint, NegError> {
        (**self).fingerprint(begin, end)
    }
    fn is_indexed(&self) -> bool {
        (**self).is_indexed()
    }
    fn prefetch(&mut self, from: usize) {
        (**self).prefetch(from)
    }
    fn expect_reads(&mut self, from: Option<usize>) {
        (**self).expect_reads(from)
    }
    fn plans_reads(&self) -> bool {
        (**self).plans_reads()
    }
    fn read_planned(&mut self, ranges: &[(usize, usize)]) -> Result<(), NegError> {
        (**self).read_planned(ranges)
    }
    fn edge_near(&mut self, pos: usize, after: usize, before: usize) -> Option<(usize, Bound)> {
        (**self).edge_near(pos, after, before)
    }
}

/// One side of a reconciliation.
pub struct Reconciler<S> {
    storage: S,
    frame_limit: usize,
    initiator: bool,
}

impl<S: NegStorage> Reconciler<S> {
    /// A reconciler over `storage`; `frame_limit` is 0 (none) or at least 4096 bytes.
    pub fn new(storage: S, frame_limit: u64) -> Result<Self, NegError> {
        let frame_limit = super::FrameLimit::new(frame_limit)
            .map_err(|e| NegError::Invalid(format!("frame size limit must be {e}")))?;
        Ok(Self {
            storage,
            frame_limit: usize::try_from(frame_limit.get()).unwrap_or(usize::MAX),
            initiator: false,
        })
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The first message: the whole set, split.
    pub fn initiate(&mut self) -> Result<Vec<u8>, NegError> {
        if self.initiator {
            return Err(NegError::Invalid("already initiated".into()));
        }
        self.initiator = true;
        let mut w = Writer::new(PROTOCOL_VERSION);
        let n = self.storage.size();
        self.split(&mut w, 0, n, Bound::INFINITY)?;
        Ok(w.out)
    }

    /// The responder's answer to `msg`.
    pub fn respond(&mut self, msg: &[u8]) -> Result<Vec<u8>, NegError> {
        if self.initiator {
            return Err(NegError::Invalid("the initiator does not respond".into()));
        }
        let mut ignored = (Vec::new(), Vec::new());
        self.step(msg, &mut ignored.0, &mut ignored.1)
    }

    /// The initiator's next message after the peer's `msg`, or `None` when the sets are
    /// reconciled. Ids only we have go to `have`, ids only the peer has to `need`.
    pub fn next(
        &mut self,
        msg: &[u8],
        have: &mut Vec<[u8; 32]>,
        need: &mut Vec<[u8; 32]>,
    ) -> Result<Option<Vec<u8>>, NegError> {
        if !self.initiator {
            return Err(NegError::Invalid("initiate first".into()));
        }
        let out = self.step(msg, have, need)?;
        Ok((out.len() > 1).then_some(out))
    }

    fn over_limit(&self, n: usize) -> bool {
        self.frame_limit != 0 && n > self.frame_limit - FRAME_SLACK
    }

    fn step(
        &mut self,
        msg: &[u8],
        have: &mut Vec<[u8; 32]>,
        need: &mut Vec<[u8; 32]>,
    ) -> Result<Vec<u8>, NegError> {
        let mut r = Reader::new(msg);
        let version = r
            .byte()
            .map_err(|_| NegError::Malformed("empty message".into()))?;
        if !(0x60..=0x6f).contains(&version) {
            return Err(NegError::Malformed(format!(
                "not a negentropy message (first byte 0x{version:02x})"
            )));
        }
        if version != PROTOCOL_VERSION {
            if self.initiator {
                return Err(NegError::Malformed(format!(
                    "peer speaks protocol 0x{version:02x}, not 0x61"
                )));
            }
            // Tell the peer which version we speak.
            return Ok(vec![PROTOCOL_VERSION]);
        }
        let size = self.storage.size();
        // The initiator waits for the peer between its steps: it reads ahead in that time
        // instead (see `DENSE_MISMATCHES`).
        let plans = !self.initiator && self.storage.plans_reads();
        if plans {
            let ranges = self.planned_reads(msg, size)?;
            self.storage.read_planned(&ranges)?;
        } else if super::fingerprint_ranges(msg).is_ok_and(|n| n >= MANY_FINGERPRINTS) {
            self.storage.expect_reads(Some(size / 2));
        }
        let (mut fingerprints, mut mismatched) = (0usize, 0usize);
        let mut out = Writer::new(PROTOCOL_VERSION);
        let mut prev_bound = Bound {
            t: 0,
            id: [0; 32],
            len: 0,
        };
        let mut prev_index = 0usize;
        // A run of matching ranges not written yet (a Skip is only written before a range that
        // needs one).
        let mut skipping = false;
        // Items below the last bound written end here: what did not fit is fingerprinted from it.
        let mut emitted = 0usize;
        let mut range = 0usize;
        while !r.is_empty() {
            range += 1;
            let at = |e: String| NegError::Malformed(format!("range {range}: {e}"));
            let bound = r.bound().map_err(at)?;
            let mode = r.varint().map_err(|e| at(format!("mode: {e}")))?;
            let lower = prev_index;
            let mut upper = self.storage.lower_bound(prev_index, size, &bound)?;
            let mut o = Writer::continuing(&out);
            match mode {
                MODE_SKIP => skipping = true,
                MODE_FINGERPRINT => {
                    let theirs = r.bytes(16).map_err(|e| at(format!("fingerprint: {e}")))?;
                    fingerprints += 1;
                    if self.storage.fingerprint(lower, upper)?[..] == theirs[..] {
                        skipping = true;
                    } else {
                        mismatched += 1;
                        if std::mem::take(&mut skipping) {
                            o.bound(&prev_bound);
                            o.varint(MODE_SKIP);
                        }
                        self.split(&mut o, lower, upper, bound)?;
                    }
                }
                MODE_ID_LIST => {
                    let n = r.varint().map_err(|e| at(format!("id count: {e}")))?;
                    let mut theirs: HashSet<[u8; 32]> = r.ids(n).map_err(at)?.collect();
                    let initiator = self.initiator;
                    self.storage.for_each(lower, upper, &mut |_, item| {
                        if !theirs.remove(&item.id) && initiator {
                            have.push(item.id);
                        }
                        true
                    })?;
                    if self.initiator {
                        skipping = true;
                        need.extend(theirs);
                    } else {
                        if std::mem::take(&mut skipping) {
                            o.bound(&prev_bound);
                            o.varint(MODE_SKIP);
                        }
                        // Answer with our ids for the range, as many as fit; the rest of the
                        // range is covered by the closing fingerprint.
                        let mut ids = Vec::new();
                        let mut end_bound = bound;
                        let room = out.len();
                        let limit = self.frame_limit;
                        self.storage.for_each(lower, upper, &mut |i, item| {
                            if limit != 0 && room + ids.len() * 32 > limit - FRAME_SLACK {
                                end_bound = Bound::at(item);
                                upper = i;
                                return false;
                            }
                            ids.push(item.id);
                            true
                        })?;
                        o.bound(&end_bound);
                        o.varint(MODE_ID_LIST);
                        o.varint(ids.len() as u64);
                        for id in &ids {
                            o.out.extend_from_slice(id);
                        }
                        // Written even when it fills the frame (the ids were cut to fit): they
                        // are the progress of this round, and the closing fingerprint starts
                        // after them. Dropping them left a client that has few of these items
                        // asking for the same range forever.
                        out.append(o);
                        o = Writer::continuing(&out);
                        emitted = upper;
                    }
                }
                m => return Err(at(format!("unknown mode {m}"))),
            }
            if self.over_limit(out.len() + o.len()) {
                // Stop here: one fingerprint covers everything from the last bound written on.
                let fp = self.storage.fingerprint(emitted, size)?;
                out.bound(&Bound::INFINITY);
                out.varint(MODE_FINGERPRINT);
                out.out.extend_from_slice(&fp);
                break;
            }
            if o.len() > 0 {
                out.append(o);
                emitted = upper;
            }
            prev_index = upper;
            prev_bound = bound;
        }
        self.storage.expect_reads(None);
        if !plans && mismatched >= DENSE_MISMATCHES && mismatched * 4 >= fingerprints * 3 {
            self.storage.prefetch(0);
        }
        Ok(out.out)
    }

    /// The position ranges whose items a step over `msg` reads: those the peer listed ids
    /// for, and the ranges that mismatch and are small enough to be answered with ours. Bounds
    /// and fingerprints on the storage's edges come from its index; the few that are not are
    /// read here already. Only ranges holding items are listed, so the list is never longer
    /// than the set, whatever the peer sends. A malformed message ends the list where it stops
    /// making sense (the step then refuses it).
    fn planned_reads(&mut self, msg: &[u8], size: usize) -> Result<Vec<(usize, usize)>, NegError> {
        let mut ranges = Vec::new();
        let mut r = Reader::new(msg);
        if r.byte().ok() != Some(PROTOCOL_VERSION) {
            return Ok(ranges);
        }
        let mut lower = 0usize;
        while !r.is_empty() {
            let (Ok(bound), Ok(mode)) = (r.bound(), r.varint()) else {
                break;
            };
            let upper = self.storage.lower_bound(lower, size, &bound)?;
            match mode {
                MODE_SKIP => {}
                MODE_FINGERPRINT => {
                    let Ok(theirs) = r.bytes(16) else { break };
                    if upper > lower
                        && upper - lower < ID_LIST_BELOW
                        && self.storage.fingerprint(lower, upper)?[..] != theirs[..]
                    {
                        ranges.push((lower, upper));
                    }
                }
                MODE_ID_LIST => {
                    let Ok(n) = r.varint() else { break };
                    if r.ids(n).is_err() {
                        break;
                    }
                    if upper > lower {
                        ranges.push((lower, upper));
                    }
                }
                _ => break,
            }
            lower = upper;
        }
        Ok(ranges)
    }

    /// Cuts of `lower..upper` at the storage's edges (see [`NegStorage::edge_near`]) near the
    /// even cuts, when they split it about as evenly: no piece more than an eighth larger than
    /// an even one, nor too large to list when even pieces would be listed, so the rounds stay
    /// as many as with even cuts. `None` for small ranges (pieces under [`EDGE_CUTS_FROM`]
    /// items: cut between items), when the storage has no edges there, or when they would
    /// leave a piece too large (a burst of events in one time bucket): the range is then cut
    /// between items.
    fn edge_cuts(
        &mut self,
        lower: usize,
        upper: usize,
        per: usize,
        extra: usize,
    ) -> Option<Vec<(usize, Bound)>> {
        if per < EDGE_CUTS_FROM {
            return None;
        }
        let mut largest = per + 1 + per / 8;
        if per < ID_LIST_BELOW {
            largest = largest.min(ID_LIST_BELOW - 1);
        }
        let mut cuts: Vec<(usize, Bound)> = Vec::with_capacity(BUCKETS - 1);
        let mut prev = lower;
        for i in 1..BUCKETS {
            let even = lower + i * per + i.min(extra);
            // An edge nearest the even cut among those that keep this piece small enough. Near
            // the even cut, not at the first edge that fits: the pieces after are as even as
            // the edges allow. A cut with no edge in reach is left out (its neighbours grow).
            let before = upper.min(prev + largest + 1);
            if let Some((at, bound)) = self.storage.edge_near(even.min(before - 1), prev, before)
                && at > prev
                && at < before
            {
                cuts.push((at, bound));
                prev = at;
            }
        }
        (!cuts.is_empty() && upper - prev <= largest).then_some(cuts)
    }

    /// Writes the range `lower..upper` ending at `upper_bound`: its ids when small, else 16
    /// fingerprinted buckets (fewer when cut at the storage's edges).
    fn split(
        &mut self,
        w: &mut Writer,
        lower: usize,
        upper: usize,
        upper_bound: Bound,
    ) -> Result<(), NegError> {
        let n = upper - lower;
        if n < ID_LIST_BELOW {
            w.bound(&upper_bound);
            w.varint(MODE_ID_LIST);
            w.varint(n as u64);
            self.storage.for_each(lower, upper, &mut |_, item| {
                w.out.extend_from_slice(&item.id);
                true
            })?;
            return Ok(());
        }
        let (per, extra) = (n / BUCKETS, n % BUCKETS);
        if let Some(cuts) = self.edge_cuts(lower, upper, per, extra) {
            let mut curr = lower;
            for (end, bound) in cuts.into_iter().chain([(upper, upper_bound)]) {
                let fp = self.storage.fingerprint(curr, end)?;
                curr = end;
                w.bound(&bound);
                w.varint(MODE_FINGERPRINT);
                w.out.extend_from_slice(&fp);
            }
            return Ok(());
        }
        let mut curr = lower;
        for i in 0..BUCKETS {
            let size = per + usize::from(i < extra);
            let fp = self.storage.fingerprint(curr, curr + size)?;
            curr += size;
            let bound = if curr == upper {
                upper_bound
            } else {
                let mut pair = [Item { t: 0, id: [0; 32] }; 2];
                self.storage.for_each(curr - 1, curr + 1, &mut |i, item| {
                    if let Some(slot) = pair.get_mut((i + 1).wrapping_sub(curr)) {
                        *slot = *item;
                    }
                    true
                })?;
                Bound::between(&pair[0], &pair[1])
            };
            w.bound(&bound);
            w.varint(MODE_FINGERPRINT);
            w.out.extend_from_slice(&fp);
        }
        Ok(())
    }
}
