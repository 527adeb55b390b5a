//! The memory budget of loaded negentropy sets. A set the persistent index cannot answer is
//! loaded into memory (40 bytes an item); each session's set is capped by its caller, and all
//! sets alive at once share this budget, so many connections opening many sessions cannot
//! exhaust the process's memory together. (Items are counted as loaded; the vector holding
//! them may reserve up to twice that while it grows.)

use crate::negentropy::{Bound, Fingerprint, Item, NegError, NegStorage, VecStorage};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Items of loaded sets alive at once in one store by default: 16 M, about 640 MB.
pub const DEFAULT_LOADED_ITEMS: usize = 16_000_000;

/// Items counted against a limit, shared by every set of one store.
#[derive(Debug)]
pub(super) struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The items of the budget in use.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Items taken from a budget, given back when dropped (whatever way the load ends).
pub(super) struct Share {
    budget: Arc<Budget>,
    taken: usize,
}

impl Share {
    pub(super) fn new(budget: Arc<Budget>) -> Self {
        Self { budget, taken: 0 }
    }

    /// Takes one more item; false (nothing taken) when the budget is spent.
    pub(super) fn take_one(&mut self) -> bool {
        let limit = self.budget.limit;
        let took = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < limit).then_some(u + 1)
            })
            .is_ok();
        self.taken += usize::from(took);
        took
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.taken, Ordering::AcqRel);
    }
}

/// A loaded set holding its share of the budget until dropped.
pub(super) struct Budgeted {
    set: VecStorage,
    _share: Share,
}

impl Budgeted {
    /// `set`, which took `share` of its store's budget.
    pub(super) fn new(set: VecStorage, share: Share) -> Self {
        Self { set, _share: share }
    }
}

impl NegStorage for Budgeted {
    fn size(&self) -> usize {
        self.set.size()
    }
    fn for_each(
        &mut self,
        begin: usize,
        end: usize,
        f: &mut dyn FnMut(usize, &Item) -> bool,
    ) -> Result<(), NegError> {
        self.set.for_each(begin, end, f)
    }
    fn lower_bound(&mut self, first: usize, last: usize, bound: &Bound) -> Result<usize, NegError> {
        self.set.lower_bound(first, last, bound)
    }
    fn fingerprint(&mut self, begin: usize, end: usize) -> Result<Fingerprint, NegError> {
        self.set.fingerprint(begin, end)
    }
}
