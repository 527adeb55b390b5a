//! Several index ranges read as one ordered stream of (created_at, id), without repeats: a
//! query with a limit reads only as far as its answer, and nothing is collected first.

use super::keys;
use super::{NegItem, Order, StoreError};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The keys of one index range, in the order being merged.
pub(super) type Keys = Box<dyn Iterator<Item = fjall::Guard>>;

/// Heap position of an item: the heap is a max-heap, so oldest-first ranks reversed. All
/// entries of one merge share a variant.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Newest(NegItem),
    Oldest(Reverse<NegItem>),
}

impl Rank {
    fn item(&self) -> NegItem {
        match self {
            Rank::Newest(i) | Rank::Oldest(Reverse(i)) => *i,
        }
    }
}

/// A k-way merge of index ranges whose keys end in (created_at, id).
pub(super) struct Merged {
    sources: Vec<Keys>,
    heap: BinaryHeap<(Rank, usize)>,
    order: Order,
    last: Option<NegItem>,
}

impl Merged {
    /// Merges `sources`, each already in `order`.
    pub(super) fn new(sources: Vec<Keys>, order: Order) -> Result<Self, StoreError> {
        let mut m = Self {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            order,
            last: None,
        };
        for i in 0..m.sources.len() {
            m.advance(i)?;
        }
        Ok(m)
    }

    /// Pushes the next item of source `i`, if any.
    fn advance(&mut self, i: usize) -> Result<(), StoreError> {
        for g in self.sources[i].by_ref() {
            let k = g.key()?;
            // Every key of these indexes ends in the suffix; a shorter one is skipped.
            if let Some(item) = keys::split_suffix(&k) {
                let rank = match self.order {
                    Order::NewestFirst => Rank::Newest(item),
                    Order::OldestFirst => Rank::Oldest(Reverse(item)),
                };
                self.heap.push((rank, i));
                break;
            }
        }
        Ok(())
    }
}

impl Iterator for Merged {
    type Item = Result<NegItem, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (rank, i) = self.heap.pop()?;
            if let Err(e) = self.advance(i) {
                return Some(Err(e));
            }
            let item = rank.item();
            // The same event under two tag values comes out twice in a row.
            if self.last != Some(item) {
                self.last = Some(item);
                return Some(Ok(item));
            }
        }
    }
}
