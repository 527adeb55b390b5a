//! The NIP-77 wire pieces: varints, items and bounds, and the fingerprint (the 256-bit
//! little-endian sum of the ids plus the count, hashed). Decoding never trusts its input: every
//! read is bounds-checked and reports what was wrong.

use sha2::{Digest, Sha256};
use std::cmp::Ordering;

/// One element of a negentropy set: an event's `created_at` and id, ordered by both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Item {
    /// `created_at`.
    pub t: u64,
    /// Event id.
    pub id: [u8; 32],
}

/// A range boundary: a timestamp and an id prefix (at most 32 bytes; missing bytes read as
/// zero). `t == u64::MAX` is "infinity", above every item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Timestamp.
    pub t: u64,
    /// The id prefix, zero-padded to 32 bytes.
    pub id: [u8; 32],
    /// How many bytes of `id` are on the wire.
    pub len: usize,
}

impl Bound {
    /// Above every item.
    pub const INFINITY: Bound = Bound {
        t: u64::MAX,
        id: [0; 32],
        len: 0,
    };

    /// The smallest bound that separates `prev` (below it) from `curr` (at or above it).
    pub fn between(prev: &Item, curr: &Item) -> Bound {
        if prev.t != curr.t {
            return Bound {
                t: curr.t,
                id: [0; 32],
                len: 0,
            };
        }
        let shared = prev
            .id
            .iter()
            .zip(curr.id.iter())
            .take_while(|(a, b)| a == b)
            .count();
        let len = (shared + 1).min(32);
        let mut id = [0; 32];
        id[..len].copy_from_slice(&curr.id[..len]);
        Bound { t: curr.t, id, len }
    }

    /// The bound exactly at `item`.
    pub fn at(item: &Item) -> Bound {
        Bound {
            t: item.t,
            id: item.id,
            len: 32,
        }
    }

    /// Is `item` below this bound?
    pub fn is_above(&self, item: &Item) -> bool {
        match item.t.cmp(&self.t) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => item.id < self.id,
        }
    }
}

/// A 256-bit little-endian sum of ids, modulo 2^256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sum(pub [u64; 4]);

impl Sum {
    /// The id read as a little-endian number.
    pub fn of(id: &[u8; 32]) -> Sum {
        let mut limbs = [0u64; 4];
        for (limb, chunk) in limbs.iter_mut().zip(id.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *limb = u64::from_le_bytes(b);
        }
        Sum(limbs)
    }

    /// `self + other` (mod 2^256).
    pub fn add(&mut self, other: &Sum) {
        let mut carry = false;
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            let (s1, c1) = a.overflowing_add(*b);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *a = s2;
            carry = c1 || c2;
        }
    }

    /// `self - other` (mod 2^256).
    pub fn sub(&mut self, other: &Sum) {
        let mut borrow = false;
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            let (d1, b1) = a.overflowing_sub(*b);
            let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
            *a = d2;
            borrow = b1 || b2;
        }
    }

    /// Adds one id.
    pub fn add_id(&mut self, id: &[u8; 32]) {
        self.add(&Sum::of(id));
    }

    /// The little-endian bytes.
    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, limb) in out.chunks_exact_mut(8).zip(self.0.iter()) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    /// The NIP-77 fingerprint of a range with this sum and `count` items.
    pub fn fingerprint(&self, count: u64) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(self.to_bytes());
        h.update(encode_varint(count));
        let digest = h.finalize();
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&digest[..16]);
        fp
    }
}

/// A range fingerprint (16 bytes on the wire).
pub type Fingerprint = [u8; 16];

/// Range modes on the wire.
pub(super) const MODE_SKIP: u64 = 0;
pub(super) const MODE_FINGERPRINT: u64 = 1;
pub(super) const MODE_ID_LIST: u64 = 2;

/// Big-endian base-128 varint (high bit set on every byte but the last).
pub fn encode_varint(mut n: u64) -> Vec<u8> {
    let mut out = vec![(n & 0x7f) as u8];
    n >>= 7;
    while n > 0 {
        out.push(((n & 0x7f) as u8) | 0x80);
        n >>= 7;
    }
    out.reverse();
    out
}

/// Reads a message, front to back.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
    last_t: u64,
}

impl<'a> Reader<'a> {
    pub(super) fn new(msg: &'a [u8]) -> Self {
        Self {
            rest: msg,
            last_t: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(super) fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for _ in 0..10 {
            let (&byte, rest) = self.rest.split_first().ok_or("ends inside a varint")?;
            self.rest = rest;
            v = v.checked_mul(128).ok_or("varint overflows")? | u64::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!("needs {n} bytes, {} left", self.rest.len()));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(super) fn byte(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    /// Timestamps are deltas from the previous bound of the message, plus one; 0 is infinity.
    pub(super) fn bound(&mut self) -> Result<Bound, String> {
        let raw = self.varint().map_err(|e| format!("timestamp: {e}"))?;
        let t = if raw == 0 || self.last_t == u64::MAX {
            u64::MAX
        } else {
            self.last_t.saturating_add(raw - 1)
        };
        self.last_t = t;
        let len = self
            .varint()
            .map_err(|e| format!("id prefix length: {e}"))?;
        if len > 32 {
            return Err(format!("id prefix of {len} bytes"));
        }
        let len = len as usize;
        let prefix = self.bytes(len).map_err(|e| format!("id prefix: {e}"))?;
        let mut id = [0u8; 32];
        id[..len].copy_from_slice(prefix);
        Ok(Bound { t, id, len })
    }

    /// `n` ids of 32 bytes, checking the message holds them before reading.
    pub(super) fn ids(&mut self, n: u64) -> Result<impl Iterator<Item = [u8; 32]> + 'a, String> {
        let bytes = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(32))
            .ok_or("id count too large")?;
        let raw = self.bytes(bytes).map_err(|e| format!("id list: {e}"))?;
        Ok(raw.chunks_exact(32).map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            id
        }))
    }
}

/// Writes a message; bounds are delta-encoded against the previous one written.
pub(super) struct Writer {
    pub(super) out: Vec<u8>,
    last_t: u64,
}

impl Writer {
    pub(super) fn new(version: u8) -> Self {
        Self {
            out: vec![version],
            last_t: 0,
        }
    }

    /// A writer for a piece to append to `base` later: bounds continue `base`'s deltas.
    pub(super) fn continuing(base: &Writer) -> Self {
        Self {
            out: Vec::new(),
            last_t: base.last_t,
        }
    }

    /// Appends a piece made by [`Writer::continuing`] on this writer.
    pub(super) fn append(&mut self, piece: Writer) {
        self.out.extend_from_slice(&piece.out);
        self.last_t = piece.last_t;
    }

    pub(super) fn len(&self) -> usize {
        self.out.len()
    }

    pub(super) fn varint(&mut self, n: u64) {
        self.out.extend_from_slice(&encode_varint(n));
    }

    pub(super) fn bound(&mut self, b: &Bound) {
        if b.t == u64::MAX {
            self.last_t = u64::MAX;
            self.varint(0);
        } else {
            let delta = b.t.saturating_sub(self.last_t);
            self.last_t = b.t;
            self.varint(delta + 1);
        }
        self.varint(b.len as u64);
        self.out.extend_from_slice(&b.id[..b.len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_big_endian() {
        assert_eq!(encode_varint(0), [0]);
        assert_eq!(encode_varint(127), [0x7f]);
        assert_eq!(encode_varint(128), [0x81, 0x00]);
        assert_eq!(encode_varint(300), [0x82, 0x2c]);
        for n in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let enc = encode_varint(n);
            let mut r = Reader::new(&enc);
            assert_eq!(r.varint().unwrap(), n);
            assert!(r.is_empty());
        }
        assert!(Reader::new(&[0x80]).varint().is_err(), "cut off");
        assert!(Reader::new(&[0xff; 11]).varint().is_err(), "too long");
    }

    #[test]
    fn sums_wrap_and_subtract_back() {
        let max = Sum([u64::MAX; 4]);
        let mut s = max;
        s.add(&Sum([1, 0, 0, 0]));
        assert_eq!(s, Sum::default(), "2^256 - 1 + 1 wraps to 0");
        s.sub(&Sum([1, 0, 0, 0]));
        assert_eq!(s, max);
        let a = Sum::of(&[0xab; 32]);
        let mut b = Sum::of(&[0x17; 32]);
        b.add(&a);
        b.sub(&a);
        assert_eq!(b, Sum::of(&[0x17; 32]));
        assert_eq!(Sum::of(&a.to_bytes()), a);
    }

    #[test]
    fn bounds_round_trip_with_deltas_and_infinity() {
        let a = Item { t: 10, id: [1; 32] };
        let mut b_id = [1; 32];
        b_id[3] = 9;
        let b = Item { t: 10, id: b_id };
        let mid = Bound::between(&a, &b);
        assert_eq!((mid.t, mid.len), (10, 4));
        assert!(mid.is_above(&a) && !mid.is_above(&b));
        let later = Bound::between(&b, &Item { t: 99, id: [0; 32] });
        assert_eq!((later.t, later.len), (99, 0));
        let mut w = Writer::new(0x61);
        for bound in [mid, later, Bound::INFINITY] {
            w.bound(&bound);
        }
        let mut r = Reader::new(&w.out[1..]);
        assert_eq!(r.bound().unwrap(), mid);
        assert_eq!(r.bound().unwrap(), later);
        assert_eq!(r.bound().unwrap(), Bound::INFINITY);
        assert!(r.is_empty());
    }
}
