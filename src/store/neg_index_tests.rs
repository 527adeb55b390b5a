//! The index-backed set against the reference implementation (the `negentropy` crate), over an
//! in-memory [`SetSource`] that counts its reads: ranges cut at bucket edges reconcile to the
//! right differences in both roles, and two equal sets agree in one round without reading a
//! single item on either side.

use super::{IndexedSet, SetSource, bucket_of};
use crate::negentropy::{Item, Reconciler, Sum};
use crate::store::StoreError;
use ::negentropy as reference;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sorted items, with the number of item reads made.
struct VecSource {
    items: Vec<Item>,
    reads: Arc<AtomicUsize>,
}

impl SetSource for VecSource {
    fn buckets(&self, lo: u64, hi: u64) -> Result<Vec<(u64, u64, Sum)>, StoreError> {
        let mut out: Vec<(u64, u64, Sum)> = Vec::new();
        for it in &self.items {
            let b = bucket_of(it.t);
            if b < lo || b > hi {
                continue;
            }
            match out.last_mut() {
                Some((last, n, sum)) if *last == b => {
                    *n += 1;
                    sum.add_id(&it.id);
                }
                _ => out.push((b, 1, Sum::of(&it.id))),
            }
        }
        Ok(out)
    }

    fn read(&self, lo: u64, hi: u64) -> Result<Vec<Item>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let from = self.items.partition_point(|i| i.t < lo);
        let to = self.items.partition_point(|i| i.t <= hi);
        Ok(self.items[from..to.max(from)].to_vec())
    }
}

fn indexed(items: &[Item], reads: &Arc<AtomicUsize>) -> IndexedSet {
    let mut items = items.to_vec();
    items.sort_by_key(|i| (i.t, i.id));
    let src = VecSource {
        items,
        reads: reads.clone(),
    };
    IndexedSet::from_source(Box::new(src), 0, u64::MAX - 1).unwrap()
}

fn theirs(
    items: &[Item],
    limit: u64,
) -> reference::Negentropy<'static, reference::NegentropyStorageVector> {
    let mut v = reference::NegentropyStorageVector::with_capacity(items.len());
    for it in items {
        v.insert(it.t, reference::Id::from_byte_array(it.id))
            .unwrap();
    }
    v.seal().unwrap();
    reference::Negentropy::owned(v, limit).unwrap()
}

/// `shared` items on both sides and `only` more on each, over `spread` seconds.
fn sets(seed: u64, shared: usize, only: usize, spread: u64) -> (Vec<Item>, Vec<Item>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut item = || Item {
        t: 1_700_000_000 + rng.random_range(0..spread),
        id: rng.random(),
    };
    let common: Vec<Item> = (0..shared).map(|_| item()).collect();
    let (mut a, mut b) = (common.clone(), common);
    a.extend((0..only).map(|_| item()));
    b.extend((0..only / 2).map(|_| item()));
    (a, b)
}

type Ids = HashSet<[u8; 32]>;

fn expected(a: &[Item], b: &[Item]) -> (Ids, Ids) {
    let ia: Ids = a.iter().map(|i| i.id).collect();
    let ib: Ids = b.iter().map(|i| i.id).collect();
    (&ia - &ib, &ib - &ia)
}

#[derive(Debug, Clone, Copy)]
enum Pair {
    OursBoth,
    OursInitiates,
    TheirsInitiates,
}

/// Reconciles `a` (initiator) with `b`: (have, need, rounds, item reads on both sides).
fn reconcile(pair: Pair, a: &[Item], b: &[Item], limit: u64) -> (Ids, Ids, usize, usize) {
    let reads = Arc::new(AtomicUsize::new(0));
    let (mut have, mut need, mut rounds) = (Vec::new(), Vec::new(), 0);
    match pair {
        Pair::TheirsInitiates => {
            let mut client = theirs(a, limit);
            let mut server = Reconciler::new(indexed(b, &reads), limit).unwrap();
            let mut msg = client.initiate().unwrap();
            let (mut h, mut n) = (Vec::new(), Vec::new());
            loop {
                let reply = server.respond(&msg).unwrap();
                rounds += 1;
                match client.reconcile_with_ids(&reply, &mut h, &mut n).unwrap() {
                    Some(m) => msg = m,
                    None => break,
                }
                assert!(rounds < 1000, "no progress");
            }
            have.extend(h.iter().map(|i| *i.as_bytes()));
            need.extend(n.iter().map(|i| *i.as_bytes()));
        }
        Pair::OursBoth | Pair::OursInitiates => {
            let mut client = Reconciler::new(indexed(a, &reads), limit).unwrap();
            let mut ours = Reconciler::new(indexed(b, &reads), limit).unwrap();
            let mut ref_server = theirs(b, limit);
            let mut msg = client.initiate().unwrap();
            loop {
                crate::negentropy::check_message(&msg).unwrap();
                let reply = match pair {
                    Pair::OursBoth => ours.respond(&msg).unwrap(),
                    _ => ref_server.reconcile(&msg).unwrap(),
                };
                rounds += 1;
                match client.next(&reply, &mut have, &mut need).unwrap() {
                    Some(m) => msg = m,
                    None => break,
                }
                assert!(rounds < 1000, "no progress");
            }
        }
    }
    let reads = reads.load(Ordering::Relaxed);
    (
        have.into_iter().collect(),
        need.into_iter().collect(),
        rounds,
        reads,
    )
}

#[test]
fn ranges_cut_at_bucket_edges_reconcile_with_the_reference_in_both_roles() {
    // Spreads: ~20 items per 1 024-second bucket, ~1 per bucket, and every item in one
    // bucket (no edges to cut at: ranges are cut between items).
    let cases = [
        (8_000, 0, 400_000),
        (8_000, 300, 400_000),
        (3_000, 40, 3_000_000),
        (5_000, 200, 50),
        (0, 10, 1_000),
    ];
    for (seed, (shared, only, spread)) in cases.into_iter().enumerate() {
        let (a, b) = sets(seed as u64, shared, only, spread);
        let want = expected(&a, &b);
        for limit in [0u64, 4096, 60_000] {
            for pair in [Pair::OursBoth, Pair::OursInitiates, Pair::TheirsInitiates] {
                let (have, need, rounds, _) = reconcile(pair, &a, &b, limit);
                let what =
                    format!("{pair:?} shared {shared} only {only} spread {spread} limit {limit}");
                assert_eq!(have, want.0, "have: {what}");
                assert_eq!(need, want.1, "need: {what}");
                if only == 0 && limit == 0 {
                    assert_eq!(rounds, 1, "{what}");
                }
            }
        }
    }
}

#[test]
fn equal_indexed_sets_agree_without_reading_an_item() {
    let (a, _) = sets(7, 8_000, 0, 400_000);
    let (_, _, rounds, reads) = reconcile(Pair::OursBoth, &a, &a, 0);
    assert_eq!((rounds, reads), (1, 0), "one round from bucket sums alone");
    // The reference implementation cuts between items: answering it reads items.
    let (_, _, rounds, reads) = reconcile(Pair::TheirsInitiates, &a, &a, 0);
    assert_eq!(rounds, 1);
    assert!(reads > 0, "the reference's bounds fall inside buckets");
}
