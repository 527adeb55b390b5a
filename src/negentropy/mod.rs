//! NIP-77 negentropy set reconciliation, implemented here so the item set can live behind a
//! persistent index (`store::FjallStore` answers range fingerprints from per-time-bucket sums
//! instead of loading every item). Wire-compatible with the reference implementations: the
//! tests below reconcile against the `negentropy` crate in both roles.

mod codec;
mod frame_limit;
mod reconcile;
mod vec_storage;

#[cfg(test)]
pub(crate) mod testkit;

pub use codec::{Bound, Fingerprint, Item, Sum, encode_varint};
pub use frame_limit::{FrameLimit, FrameLimitError};
pub use reconcile::{NegStorage, Reconciler};
pub use vec_storage::VecStorage;

/// NIP-77 protocol version spoken here.
pub const PROTOCOL_VERSION: u8 = 0x61;

/// Why a reconciliation step failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NegError {
    /// The peer's message is not a well-formed negentropy message.
    #[error("bad negentropy message: {0}")]
    Malformed(String),
    /// A call out of order or a bad parameter.
    #[error("negentropy: {0}")]
    Invalid(String),
    /// The item set could not be read.
    #[error("negentropy storage: {0}")]
    Storage(String),
}

/// A negentropy message as NIP-77 carries it: lowercase hex. Messages run to megabytes when
/// sets differ widely, so this uses `const-hex` (vectorised) rather than `hex`'s per-byte
/// iterator, which cost ~10 ms per side on a 1.2 MB message.
pub fn to_hex(msg: &[u8]) -> String {
    const_hex::encode(msg)
}

/// Decodes a NIP-77 message's hex, strictly: upper or lower case digits, an even number of
/// them, and nothing else — unlike `const_hex::decode`, no `0x` prefix.
pub fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.starts_with("0x") || hex.starts_with("0X") {
        return Err("a 0x prefix is not hex".into());
    }
    const_hex::decode(hex).map_err(|e| e.to_string())
}

/// For [`NegStorage`] implementations: refuses a position range outside `0..size`.
pub fn check_range(begin: usize, end: usize, size: usize) -> Result<(), NegError> {
    if begin > end || end > size {
        return Err(NegError::Storage(format!(
            "range {begin}..{end} outside 0..{size}"
        )));
    }
    Ok(())
}

/// Checks a NIP-77 message's structure without a storage: version 0x61, then whole ranges
/// (timestamp, id prefix of at most 32 bytes, mode Skip, Fingerprint with 16 bytes, or IdList
/// with n × 32 bytes). Used to refuse a broken message before any work is done for it.
pub fn check_message(msg: &[u8]) -> Result<(), String> {
    fingerprint_ranges(msg).map(|_| ())
}

/// How many Fingerprint ranges a well-formed message holds (see [`check_message`]). A
/// responder's reply with none ends the reconciliation: the initiator answers Skip and IdList
/// ranges with nothing more to send.
pub fn fingerprint_ranges(msg: &[u8]) -> Result<usize, String> {
    let mut r = codec::Reader::new(msg);
    let version = r.byte().map_err(|_| "empty message")?;
    if version != PROTOCOL_VERSION {
        return Err(format!("unsupported protocol version 0x{version:02x}"));
    }
    let (mut range, mut fingerprints) = (0usize, 0usize);
    while !r.is_empty() {
        range += 1;
        let at = |what: String| format!("range {range}: {what}");
        r.bound().map_err(at)?;
        match r.varint().map_err(|e| at(format!("mode: {e}")))? {
            0 => {}
            1 => {
                r.bytes(16).map_err(|e| at(format!("fingerprint: {e}")))?;
                fingerprints += 1;
            }
            2 => {
                let n = r.varint().map_err(|e| at(format!("id count: {e}")))?;
                let _ = r.ids(n).map_err(at)?;
            }
            m => return Err(at(format!("unknown mode {m}"))),
        }
    }
    Ok(fingerprints)
}

#[cfg(test)]
mod hex_tests {
    use super::{from_hex, to_hex};

    #[test]
    fn hex_is_strict_and_round_trips() {
        let msg: Vec<u8> = (0..=255u8).collect();
        let h = to_hex(&msg);
        assert_eq!(h, hex::encode(&msg), "lowercase, as hex does");
        assert_eq!(from_hex(&h).expect("decode"), msg);
        assert_eq!(from_hex(&h.to_uppercase()).expect("upper case"), msg);
        for bad in ["0x61", "0X61", "6", "6g", "61 ", " 61", r"\u0036\u0031"] {
            assert!(from_hex(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(from_hex("").expect("empty"), Vec::<u8>::new());
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{self, Ids, Pair, expected, sets, theirs};
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use std::collections::HashSet;

    fn ours(items: &[Item], limit: u64) -> Reconciler<VecStorage> {
        Reconciler::new(VecStorage::new(items.to_vec()), limit).unwrap()
    }

    /// [`testkit::reconcile`] with our side over an in-memory set.
    fn reconcile(pair: Pair, a: &[Item], b: &[Item], limit: u64) -> (Ids, Ids, usize) {
        testkit::reconcile(pair, a, b, limit, |items| VecStorage::new(items.to_vec()))
    }

    #[test]
    fn reconciles_with_the_reference_implementation_in_both_roles() {
        let cases = [
            (0, 0, 1000),
            (0, 5, 1000),
            (31, 1, 1000),
            (32, 0, 1000),
            (3000, 0, 100_000),
            (3000, 40, 100_000),
            (5000, 300, 50),
            (20_000, 2000, 1_000_000),
        ];
        for (seed, (shared, only, spread)) in cases.into_iter().enumerate() {
            let (a, b) = sets(seed as u64, shared, only, spread);
            let want = expected(&a, &b);
            for limit in [0u64, 4096, 60_000] {
                for pair in [Pair::OursBoth, Pair::OursInitiates, Pair::TheirsInitiates] {
                    let (have, need, rounds) = reconcile(pair, &a, &b, limit);
                    let what = format!("{pair:?} shared {shared} only {only} limit {limit}");
                    assert_eq!(have, want.0, "have: {what}");
                    assert_eq!(need, want.1, "need: {what}");
                    if limit == 0 && want.0.is_empty() && want.1.is_empty() {
                        assert_eq!(rounds, 1, "identical sets take one round: {what}");
                    }
                }
            }
        }
    }

    #[test]
    fn messages_are_byte_identical_to_the_reference() {
        let (a, b) = sets(99, 4000, 200, 5000);
        for limit in [0u64, 4096] {
            let (mut oc, mut os) = (ours(&a, limit), ours(&b, limit));
            let (mut tc, mut ts) = (theirs(&a, limit), theirs(&b, limit));
            let mut msg = oc.initiate().unwrap();
            assert_eq!(msg, tc.initiate().unwrap(), "initial message");
            let (mut h, mut n, mut th, mut tn) = (vec![], vec![], vec![], vec![]);
            loop {
                let reply = os.respond(&msg).unwrap();
                assert_eq!(reply, ts.reconcile(&msg).unwrap(), "reply, limit {limit}");
                let next = oc.next(&reply, &mut h, &mut n).unwrap();
                let tnext = tc.reconcile_with_ids(&reply, &mut th, &mut tn).unwrap();
                assert_eq!(next, tnext, "next message, limit {limit}");
                match next {
                    Some(m) => msg = m,
                    None => break,
                }
            }
        }
    }

    #[test]
    fn a_server_with_more_ids_than_a_frame_holds_sends_those_that_fit() {
        // Found by fuzz/neg_differential: when the ids of a range did not all fit in the frame,
        // the server dropped the ones that did and fingerprinted the whole rest instead. A
        // client with few items then asked for the same range again, forever (a fresh store
        // syncing down from a relay with more events than one frame holds made no progress),
        // and the replies differed from the reference implementation's.
        let (big, _) = sets(11, 3, 3000, 100_000);
        let small: Vec<Item> = big[..3].to_vec();
        let want = expected(&small, &big);
        for limit in [4096u64, 60_000] {
            let (mut oc, mut os) = (ours(&small, limit), ours(&big, limit));
            let (mut tc, mut ts) = (theirs(&small, limit), theirs(&big, limit));
            let mut msg = oc.initiate().unwrap();
            assert_eq!(msg, tc.initiate().unwrap());
            let (mut h, mut n, mut th, mut tn) = (vec![], vec![], vec![], vec![]);
            let mut rounds = 0;
            loop {
                rounds += 1;
                assert!(rounds < 100, "no progress, limit {limit}");
                let reply = os.respond(&msg).unwrap();
                assert!(reply.len() as u64 <= limit, "reply within the frame limit");
                assert_eq!(reply, ts.reconcile(&msg).unwrap(), "reply, limit {limit}");
                let next = oc.next(&reply, &mut h, &mut n).unwrap();
                assert_eq!(
                    next,
                    tc.reconcile_with_ids(&reply, &mut th, &mut tn).unwrap()
                );
                match next {
                    Some(m) => msg = m,
                    None => break,
                }
            }
            let h: HashSet<[u8; 32]> = h.into_iter().collect();
            let n: HashSet<[u8; 32]> = n.into_iter().collect();
            assert_eq!((h, n), want, "have and need, limit {limit}");
        }
    }

    #[test]
    fn hostile_messages_get_errors_not_panics() {
        let (a, b) = sets(7, 2000, 50, 500);
        let mut client = ours(&a, 0);
        let valid = client.initiate().unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let mut refused = 0;
        for i in 0..3000 {
            let mut m = valid.clone();
            match i % 3 {
                0 => m.truncate(rng.random_range(0..m.len())),
                1 => {
                    let at = rng.random_range(0..m.len());
                    m[at] = rng.random();
                }
                _ => m = (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            }
            let mut server = ours(&b, 4096);
            match server.respond(&m) {
                Ok(reply) => check_message(&reply).unwrap(),
                Err(_) => refused += 1,
            }
        }
        assert!(
            refused > 1000,
            "most corrupted messages are refused ({refused})"
        );
        let mut server = ours(&b, 0);
        assert_eq!(server.respond(&[0x62]).unwrap(), vec![PROTOCOL_VERSION]);
        for bad in [
            &[][..],
            &[0x10],
            &[0x61, 0x81],
            &[0x61, 0x00, 0x00],
            &[0x61, 0, 0, 1, 1, 2],
            &[0x61, 0, 0, 7],
            &[0x61, 0, 33],
        ] {
            assert!(check_message(bad).is_err(), "{bad:?}");
            assert!(ours(&b, 0).respond(bad).is_err(), "{bad:?}");
        }
        assert!(
            check_message(&[0x61]).is_ok(),
            "version only: nothing more to say"
        );
    }
}
