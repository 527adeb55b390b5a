//! Whole reconciliations over fuzz-chosen sets, ours against the reference `negentropy` crate:
//! in lock step (our client and server beside theirs) every message is byte-identical, and in
//! every pairing (ours/ours, ours/theirs, theirs/ours) have and need are exactly the set
//! differences.
//!
//! The sets: explicit items (any timestamp, ids that may share long prefixes so bounds need id
//! prefixes) plus bulk items generated from a seed (up to about three thousand, to reach
//! fingerprint splits and the frame limit), some shared and some on one side only.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use orly::negentropy::{Item, Reconciler, VecStorage, check_message};
use orly_fuzz::{Mix, reference};
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Arbitrary, Debug)]
struct Explicit {
    t: u64,
    /// Bytes of a common prefix before the random part.
    shared_prefix: u8,
    id: [u8; 32],
    /// 0: both sides, 1: client only, 2: server only.
    side: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    explicit: Vec<Explicit>,
    seed: u64,
    /// Bulk items on both sides (mod 1000), on the client only, on the server only (mod 2000:
    /// a server with far more ids in a range than a frame holds, the case a client with few
    /// items meets when it syncs down from a big relay).
    bulk_shared: u16,
    bulk_client: u8,
    bulk_server: u16,
    /// Timestamps of bulk items spread over 2^(spread % 40) seconds.
    spread: u8,
    limit: u8,
}

const LIMITS: [u64; 4] = [0, 4096, 5000, 60_000];
/// Most rounds a reconciliation may take before it counts as stuck.
const MAX_ROUNDS: usize = 200;

type Ids = HashSet<[u8; 32]>;

/// Client and server sets. An id has one timestamp everywhere, as an event's id fixes its
/// `created_at`: the set differences are then differences of ids.
fn sets(input: &Input) -> (Vec<Item>, Vec<Item>) {
    let (mut client, mut server) = (BTreeSet::new(), BTreeSet::new());
    let mut time_of: HashMap<[u8; 32], u64> = HashMap::new();
    for e in &input.explicit {
        // u64::MAX is the protocol's "infinity": the upper bound of the whole range, exclusive,
        // so no implementation (ours or the reference) reconciles an item there. None can
        // exist in a store: events later than 2^63-1 are refused.
        if e.t == u64::MAX {
            continue;
        }
        let mut id = e.id;
        let n = usize::from(e.shared_prefix % 33);
        id[..n].fill(0xab);
        if *time_of.entry(id).or_insert(e.t) != e.t {
            continue;
        }
        let item = Item { t: e.t, id };
        if e.side % 3 != 2 {
            client.insert(item);
        }
        if e.side % 3 != 1 {
            server.insert(item);
        }
    }
    let mut mix = Mix::new(input.seed);
    let spread = 1u64 << (input.spread % 40);
    let mut bulk = |n: usize, sides: (bool, bool)| {
        for _ in 0..n {
            let item = Item {
                t: 1_600_000_000 + mix.next_u64() % spread,
                id: mix.id(),
            };
            if sides.0 {
                client.insert(item);
            }
            if sides.1 {
                server.insert(item);
            }
        }
    };
    bulk(usize::from(input.bulk_shared % 1000), (true, true));
    bulk(usize::from(input.bulk_client), (true, false));
    bulk(usize::from(input.bulk_server % 2000), (false, true));
    (client.into_iter().collect(), server.into_iter().collect())
}

fn ours(items: &[Item], limit: u64) -> Reconciler<VecStorage> {
    Reconciler::new(VecStorage::new(items.to_vec()), limit).expect("valid limit")
}

fn check(msg: &[u8], limit: u64) {
    check_message(msg).expect("well formed");
    assert!(
        limit == 0 || msg.len() as u64 <= limit,
        "message of {} bytes",
        msg.len()
    );
}

/// Ours on both sides and theirs on both sides, message by message.
fn lock_step(a: &[Item], b: &[Item], limit: u64) -> (Ids, Ids) {
    let (mut oc, mut os) = (ours(a, limit), ours(b, limit));
    let mut tc = reference(a, limit).expect("reference client");
    let mut ts = reference(b, limit).expect("reference server");
    let mut msg = oc.initiate().expect("initiate");
    assert_eq!(
        hex::encode(&msg),
        hex::encode(tc.initiate().expect("initiate")),
        "initial"
    );
    let (mut have, mut need, mut th, mut tn) = (vec![], vec![], vec![], vec![]);
    for round in 0.. {
        assert!(round < MAX_ROUNDS, "no progress after {MAX_ROUNDS} rounds");
        check(&msg, limit);
        let reply = os.respond(&msg).expect("respond");
        let their_reply = ts.reconcile(&msg).expect("reference respond");
        assert_eq!(
            hex::encode(&reply),
            hex::encode(&their_reply),
            "reply, round {round}"
        );
        check(&reply, limit);
        let next = oc.next(&reply, &mut have, &mut need).expect("next");
        let their_next = tc
            .reconcile_with_ids(&reply, &mut th, &mut tn)
            .expect("reference next");
        assert_eq!(next, their_next, "next message, round {round}");
        match next {
            Some(m) => msg = m,
            None => break,
        }
    }
    let ids = |v: Vec<negentropy::Id>| v.iter().map(|i| *i.as_bytes()).collect::<Ids>();
    let (have, need): (Ids, Ids) = (have.into_iter().collect(), need.into_iter().collect());
    assert_eq!(have, ids(th), "have");
    assert_eq!(need, ids(tn), "need");
    (have, need)
}

/// Our client against the reference server.
fn ours_client(a: &[Item], b: &[Item], limit: u64) -> (Ids, Ids) {
    let mut client = ours(a, limit);
    let mut server = reference(b, limit).expect("reference server");
    let mut msg = client.initiate().expect("initiate");
    let (mut have, mut need) = (vec![], vec![]);
    for round in 0.. {
        assert!(round < MAX_ROUNDS, "no progress");
        let reply = server.reconcile(&msg).expect("reference respond");
        match client.next(&reply, &mut have, &mut need).expect("next") {
            Some(m) => msg = m,
            None => break,
        }
    }
    (have.into_iter().collect(), need.into_iter().collect())
}

/// The reference client against our server.
fn ours_server(a: &[Item], b: &[Item], limit: u64) -> (Ids, Ids) {
    let mut client = reference(a, limit).expect("reference client");
    let mut server = ours(b, limit);
    let mut msg = client.initiate().expect("initiate");
    let (mut have, mut need) = (vec![], vec![]);
    for round in 0.. {
        assert!(round < MAX_ROUNDS, "no progress");
        let reply = server.respond(&msg).expect("respond");
        match client
            .reconcile_with_ids(&reply, &mut have, &mut need)
            .expect("reference next")
        {
            Some(m) => msg = m,
            None => break,
        }
    }
    let ids = |v: Vec<negentropy::Id>| v.iter().map(|i| *i.as_bytes()).collect::<Ids>();
    (ids(have), ids(need))
}

fuzz_target!(|input: Input| {
    let (a, b) = sets(&input);
    let limit = LIMITS[usize::from(input.limit % 4)];
    let (sa, sb): (HashSet<Item>, HashSet<Item>) =
        (a.iter().copied().collect(), b.iter().copied().collect());
    let want_have: Ids = sa.difference(&sb).map(|i| i.id).collect();
    let want_need: Ids = sb.difference(&sa).map(|i| i.id).collect();
    let want = (want_have, want_need);
    assert!(
        lock_step(&a, &b, limit) == want,
        "ours/ours differs from the set difference"
    );
    assert!(
        ours_client(&a, &b, limit) == want,
        "our client, their server: wrong have/need"
    );
    assert!(
        ours_server(&a, &b, limit) == want,
        "their client, our server: wrong have/need"
    );
});
