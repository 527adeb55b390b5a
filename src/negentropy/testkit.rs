//! Test support: reconciling our [`Reconciler`] over any [`NegStorage`] with the reference
//! implementation (the `negentropy` crate) in both roles, on seeded overlapping sets. Used by
//! this module's tests (in-memory sets) and by the store's (the index-backed set).

use super::{Item, NegStorage, Reconciler, check_message};
use ::negentropy as reference;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashSet;

/// Ids, as the differences are compared.
pub(crate) type Ids = HashSet<[u8; 32]>;

/// The reference implementation over `items`.
pub(crate) type Theirs = reference::Negentropy<'static, reference::NegentropyStorageVector>;

pub(crate) fn theirs(items: &[Item], limit: u64) -> Theirs {
    let mut v = reference::NegentropyStorageVector::with_capacity(items.len());
    for it in items {
        v.insert(it.t, reference::Id::from_byte_array(it.id))
            .unwrap();
    }
    v.seal().unwrap();
    reference::Negentropy::owned(v, limit).unwrap()
}

/// Two overlapping sets: `shared` common items, `only` more on one side and two thirds as many
/// on the other. Timestamps are drawn from `spread` seconds, so small spreads give many equal
/// timestamps (id-prefix bounds).
pub(crate) fn sets(seed: u64, shared: usize, only: usize, spread: u64) -> (Vec<Item>, Vec<Item>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut item = || Item {
        t: 1_700_000_000 + rng.random_range(0..spread),
        id: rng.random(),
    };
    let common: Vec<Item> = (0..shared).map(|_| item()).collect();
    let mut a = common.clone();
    let mut b = common;
    a.extend((0..only).map(|_| item()));
    b.extend((0..only * 2 / 3).map(|_| item()));
    (a, b)
}

/// (ids only in `a`, ids only in `b`).
pub(crate) fn expected(a: &[Item], b: &[Item]) -> (Ids, Ids) {
    let ia: Ids = a.iter().map(|i| i.id).collect();
    let ib: Ids = b.iter().map(|i| i.id).collect();
    (&ia - &ib, &ib - &ia)
}

/// Who plays which role.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pair {
    OursBoth,
    OursInitiates,
    TheirsInitiates,
}

/// Reconciles `a` (initiator) with `b`, our side over `ours(items)`, every message checked by
/// [`check_message`]; returns (have, need, rounds).
pub(crate) fn reconcile<S: NegStorage>(
    pair: Pair,
    a: &[Item],
    b: &[Item],
    limit: u64,
    mut ours: impl FnMut(&[Item]) -> S,
) -> (Ids, Ids, usize) {
    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    match pair {
        Pair::TheirsInitiates => {
            let mut client = theirs(a, limit);
            let mut server = Reconciler::new(ours(b), limit).unwrap();
            let mut msg = client.initiate().unwrap();
            let (mut h, mut n) = (Vec::new(), Vec::new());
            loop {
                check_message(&msg).unwrap();
                let reply = server.respond(&msg).unwrap();
                check_message(&reply).unwrap();
                rounds += 1;
                assert!(rounds < 10_000, "no progress");
                match client.reconcile_with_ids(&reply, &mut h, &mut n).unwrap() {
                    Some(m) => msg = m,
                    None => break,
                }
            }
            have.extend(h.iter().map(|i| *i.as_bytes()));
            need.extend(n.iter().map(|i| *i.as_bytes()));
        }
        Pair::OursInitiates | Pair::OursBoth => {
            let mut client = Reconciler::new(ours(a), limit).unwrap();
            let mut server_theirs = theirs(b, limit);
            let mut server_ours = Reconciler::new(ours(b), limit).unwrap();
            let mut msg = client.initiate().unwrap();
            loop {
                check_message(&msg).unwrap();
                let reply = match pair {
                    Pair::OursBoth => server_ours.respond(&msg).unwrap(),
                    _ => server_theirs.reconcile(&msg).unwrap(),
                };
                check_message(&reply).unwrap();
                rounds += 1;
                assert!(rounds < 10_000, "no progress");
                match client.next(&reply, &mut have, &mut need).unwrap() {
                    Some(m) => msg = m,
                    None => break,
                }
            }
        }
    }
    (
        have.into_iter().collect(),
        need.into_iter().collect(),
        rounds,
    )
}
