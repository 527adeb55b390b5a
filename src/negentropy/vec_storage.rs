//! An item set held in memory: for filters the persistent index cannot answer, and for item
//! sets that come over the network (a remote store).

use super::codec::{Bound, Fingerprint, Item, Sum};
use super::reconcile::NegStorage;
use super::{NegError, check_range};

/// A sorted, de-duplicated item set in memory.
#[derive(Debug, Clone, Default)]
pub struct VecStorage {
    items: Vec<Item>,
}

impl VecStorage {
    /// Sorts and de-duplicates `items`.
    pub fn new(mut items: Vec<Item>) -> Self {
        items.sort_unstable();
        items.dedup();
        Self { items }
    }

    /// From (created_at, id) pairs in any order.
    pub fn from_pairs(pairs: Vec<(u64, [u8; 32])>) -> Self {
        Self::new(pairs.into_iter().map(|(t, id)| Item { t, id }).collect())
    }
}

impl NegStorage for VecStorage {
    fn size(&self) -> usize {
        self.items.len()
    }

    fn for_each(
        &mut self,
        begin: usize,
        end: usize,
        f: &mut dyn FnMut(usize, &Item) -> bool,
    ) -> Result<(), NegError> {
        check_range(begin, end, self.items.len())?;
        for (i, item) in self.items[begin..end].iter().enumerate() {
            if !f(begin + i, item) {
                break;
            }
        }
        Ok(())
    }

    fn lower_bound(&mut self, first: usize, last: usize, bound: &Bound) -> Result<usize, NegError> {
        check_range(first, last, self.items.len())?;
        Ok(first + self.items[first..last].partition_point(|item| bound.is_above(item)))
    }

    fn fingerprint(&mut self, begin: usize, end: usize) -> Result<Fingerprint, NegError> {
        check_range(begin, end, self.items.len())?;
        let mut sum = Sum::default();
        for item in &self.items[begin..end] {
            sum.add_id(&item.id);
        }
        Ok(sum.fingerprint((end - begin) as u64))
    }
}
