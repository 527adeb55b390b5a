//! The index-backed set against the reference implementation (the `negentropy` crate), over an
//! in-memory [`SetSource`] that counts its reads: ranges cut at bucket edges reconcile to the
//! right differences in both roles, and two equal sets agree in one round without reading a
//! single item on either side.

use super::{
    BUCKET_BYTES, GROUP_SHIFT, Group, IndexedSet, SetSource, bucket_of, decode_group, encode_group,
};
use crate::negentropy::testkit::{self, Ids, Pair, expected, sets};
use crate::negentropy::{Item, Sum};
use crate::store::StoreError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sorted items, with the number of items read (by the thread that made the source, not by
/// background reads ahead).
struct VecSource {
    items: Vec<Item>,
    reads: Arc<AtomicUsize>,
    owner: std::thread::ThreadId,
    /// Items read by any thread.
    all_reads: Arc<AtomicUsize>,
    /// Reads as a database server's would be (round trips): the set then never plans reads.
    round_trips: bool,
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
        let from = self.items.partition_point(|i| i.t < lo);
        let to = self.items.partition_point(|i| i.t <= hi).max(from);
        if std::thread::current().id() == self.owner {
            self.reads.fetch_add(to - from, Ordering::Relaxed);
        }
        self.all_reads.fetch_add(to - from, Ordering::Relaxed);
        Ok(self.items[from..to].to_vec())
    }

    fn reads_are_round_trips(&self) -> bool {
        self.round_trips
    }
}

fn indexed(items: &[Item], reads: &Arc<AtomicUsize>) -> IndexedSet {
    indexed_with(items, reads, &Arc::default(), false)
}

fn indexed_with(
    items: &[Item],
    reads: &Arc<AtomicUsize>,
    all_reads: &Arc<AtomicUsize>,
    round_trips: bool,
) -> IndexedSet {
    let mut items = items.to_vec();
    items.sort_by_key(|i| (i.t, i.id));
    let src = VecSource {
        items,
        reads: reads.clone(),
        owner: std::thread::current().id(),
        all_reads: all_reads.clone(),
        round_trips,
    };
    IndexedSet::from_source(Box::new(src), 0, u64::MAX - 1).unwrap()
}

/// [`testkit::reconcile`] with our side over the index: (have, need, rounds, item reads on
/// both sides).
fn reconcile(pair: Pair, a: &[Item], b: &[Item], limit: u64) -> (Ids, Ids, usize, usize) {
    let reads = Arc::new(AtomicUsize::new(0));
    let (have, need, rounds) =
        testkit::reconcile(pair, a, b, limit, |items| indexed(items, &reads));
    (have, need, rounds, reads.load(Ordering::Relaxed))
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

/// Sets with differences all over, a few items per bucket (100k events over a year): the
/// initiator splits the responder's level of ranges into pieces the next level lists at bucket
/// edges, from bucket sums (nearly) alone. Cut between items, that step read every item of the
/// set, before the responder could start on its reply. It takes no more rounds than the reference
/// implementation, and finds the same differences.
#[test]
fn the_level_before_the_id_lists_is_cut_at_bucket_edges() {
    // ~3.4 items per 1 024-second bucket; 2 % of the items differ.
    let (a, b) = sets(21, 100_000, 1_200, 30_000_000);
    let want = expected(&a, &b);
    let (reads_a, reads_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut client = crate::negentropy::Reconciler::new(indexed(&a, &reads_a), 0).unwrap();
    let mut server = crate::negentropy::Reconciler::new(indexed(&b, &reads_b), 0).unwrap();
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut msg = client.initiate().unwrap();
    let mut rounds = 0;
    let mut client_reads = Vec::new();
    loop {
        rounds += 1;
        let reply = server.respond(&msg).unwrap();
        let before = reads_a.load(Ordering::Relaxed);
        let next = client.next(&reply, &mut have, &mut need).unwrap();
        client_reads.push(reads_a.load(Ordering::Relaxed) - before);
        match next {
            Some(m) => msg = m,
            None => break,
        }
    }
    let got: (Ids, Ids) = (have.into_iter().collect(), need.into_iter().collect());
    assert_eq!(got, want);
    let (_, _, reference_rounds) = testkit::reconcile(Pair::TheirsInitiates, &a, &b, 0, |items| {
        crate::negentropy::VecStorage::new(items.to_vec())
    });
    assert_eq!(rounds, reference_rounds, "as many rounds as the reference");
    assert_eq!(rounds, 2, "16 ranges, 256, then 4 096 listed or skipped");
    // A few ranges have no bucket edges where their pieces would stay listable (a full
    // bucket near a cut): those are cut between items, as before.
    assert!(
        client_reads[0] < a.len() / 50,
        "the split into listable pieces reads {} of {} items",
        client_reads[0],
        a.len()
    );
}

/// The responder's step that answers with id lists reads, before it starts, the items of the
/// ranges it will list (two threads), and nothing else: about a third of a set with 2 % of it
/// differing, where reading the whole set ahead cost as much again on the critical path. Its
/// reply is the same as when it reads as it goes.
#[test]
fn a_responder_reads_only_what_its_reply_lists() {
    let (a, b) = sets(21, 100_000, 1_200, 30_000_000);
    let none = Arc::new(AtomicUsize::new(0));
    let mut client = crate::negentropy::Reconciler::new(indexed(&a, &none), 0).unwrap();
    let (planned, unplanned) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut server =
        crate::negentropy::Reconciler::new(indexed_with(&b, &none, &planned, false), 0).unwrap();
    let mut reference =
        crate::negentropy::Reconciler::new(indexed_with(&b, &none, &unplanned, true), 0).unwrap();
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let first = client.initiate().unwrap();
    assert_eq!(
        server.respond(&first).unwrap(),
        reference.respond(&first).unwrap()
    );
    let reply = server.respond(&first).unwrap();
    let second = client.next(&reply, &mut have, &mut need).unwrap().unwrap();
    let before = planned.load(Ordering::Relaxed);
    let answer = server.respond(&second).unwrap();
    let read = planned.load(Ordering::Relaxed) - before;
    assert_eq!(answer, reference.respond(&second).unwrap());
    // Its id lists: 32 bytes an id, in a message of a few bytes besides per range.
    let listed = answer.len() / 32;
    assert!(
        read >= listed * 9 / 10 && read <= listed * 3 / 2 && read < b.len() / 2,
        "read {read} items to list about {listed} of {}",
        b.len()
    );
    assert!(
        client
            .next(&answer, &mut have, &mut need)
            .unwrap()
            .is_none()
    );
    let got: (Ids, Ids) = (have.into_iter().collect(), need.into_iter().collect());
    assert_eq!(got, expected(&a, &b));
}

/// Sets whose pieces reach the edge-cut levels at every density, from many items to a bucket
/// to a few buckets to an item: the differences are found, in no more rounds than with cuts
/// between items (our reconciler over in-memory sets, byte-identical to the reference) when
/// frames are unlimited.
#[test]
fn edge_cuts_at_every_density_find_the_differences_in_no_more_rounds() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(5);
    for case in 0..30u64 {
        let shared = [300, 450, 5_000, 7_500][rng.random_range(0..4)];
        let spread = [1_000, 30_000, 300_000, 3_000_000, 30_000_000][rng.random_range(0..5)];
        let only = rng.random_range(0..shared / 20);
        let (a, b) = sets(100 + case, shared, only, spread);
        let want = expected(&a, &b);
        for limit in [0u64, 4096] {
            let (have, need, rounds, _) = reconcile(Pair::OursBoth, &a, &b, limit);
            let what = format!("shared {shared} only {only} spread {spread} limit {limit}");
            assert_eq!((have, need), want, "{what}");
            let (_, _, between_items) = testkit::reconcile(Pair::OursBoth, &a, &b, limit, |i| {
                crate::negentropy::VecStorage::new(i.to_vec())
            });
            // Under a frame limit the messages fill their frames at other places (edge
            // bounds are shorter), so rounds come out a few more or fewer either way; they
            // did before this level was cut at edges too.
            let most = if limit == 0 {
                between_items
            } else {
                between_items + between_items / 10 + 1
            };
            assert!(
                rounds <= most,
                "{rounds} rounds, {between_items} between items: {what}"
            );
        }
    }
}

/// A value holds the non-empty buckets of one group, ascending; anything else is refused as
/// damage rather than read.
#[test]
fn bucket_groups_round_trip_and_damage_is_refused() {
    let g = 106_000u64;
    let first = g << GROUP_SHIFT;
    let mut group = Group::new();
    for (i, b) in [first, first + 3, first + 15].into_iter().enumerate() {
        let mut sum = Sum::default();
        sum.add_id(&[i as u8 + 1; 32]);
        group.insert(b, (i as u64 + 1, sum));
    }
    let v = encode_group(&group);
    let mut back = Group::new();
    decode_group(g, &v, |b, n, s| {
        back.insert(b, (n, s));
    })
    .unwrap();
    assert_eq!(back, group);
    let refused = |v: &[u8], key: u64| decode_group(key, v, |_, _, _| {}).is_err();
    assert!(refused(&v, g + 1), "buckets of another group");
    assert!(refused(&v[..v.len() - 1], g), "a cut value");
    assert!(refused(&[], g), "an empty value");
    let mut swapped = v[BUCKET_BYTES..2 * BUCKET_BYTES].to_vec();
    swapped.extend_from_slice(&v[..BUCKET_BYTES]);
    assert!(refused(&swapped, g), "out of order");
}
