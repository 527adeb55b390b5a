//! Fixtures shared by the fuzz targets and the seed generator (`examples/seeds.rs`): fixed
//! events, item sets and keys, all deterministic so a crash reproduces from its input alone, and
//! the layouts that turn one fuzz input into several pieces (negentropy configuration, audit
//! directory files, token parts).

use std::sync::OnceLock;

use orly::event::{Event, Keys, sign_event};
use orly::negentropy::Item;

/// A small deterministic generator (splitmix64): no `rand`, the same sequence everywhere.
pub struct Mix(u64);

impl Mix {
    /// Starts the sequence at `seed`.
    pub fn new(seed: u64) -> Self {
        Mix(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// 32 bytes.
    pub fn id(&mut self) -> [u8; 32] {
        let mut id = [0u8; 32];
        for chunk in id.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        id
    }
}

/// `n` items with timestamps from `1_700_000_000` over `spread` seconds (small spreads give
/// equal timestamps, so bounds need id prefixes).
pub fn item_set(seed: u64, n: usize, spread: u64) -> Vec<Item> {
    let mut mix = Mix::new(seed);
    (0..n)
        .map(|_| Item {
            t: 1_700_000_000 + mix.next_u64() % spread.max(1),
            id: mix.id(),
        })
        .collect()
}

/// Sizes of the fixed sets the negentropy role targets reconcile against: empty, one id list,
/// just over the id-list threshold, and enough for nested fingerprint splits.
pub const NEG_SET_SIZES: [usize; 4] = [0, 5, 40, 600];
/// Frame size limits the role targets use (0 = none; 4096 is the smallest allowed).
pub const NEG_LIMITS: [u64; 2] = [0, 4096];

/// The fixed item set and frame limit a role target uses, chosen by the input's first byte.
pub fn neg_config(byte: u8) -> (Vec<Item>, u64) {
    let size = NEG_SET_SIZES[usize::from(byte & 3)];
    let limit = NEG_LIMITS[usize::from((byte >> 2) & 1)];
    // Spread 50 s: many equal timestamps, so bounds carry id prefixes.
    (item_set(77, size, 50), limit)
}

/// The reference implementation over `items` (sorted and de-duplicated by the caller or not:
/// it seals them itself). `None` when it refuses the set.
pub fn reference(
    items: &[Item],
    limit: u64,
) -> Option<negentropy::Negentropy<'static, negentropy::NegentropyStorageVector>> {
    let mut v = negentropy::NegentropyStorageVector::with_capacity(items.len());
    for it in items {
        v.insert(it.t, negentropy::Id::from_byte_array(it.id))
            .ok()?;
    }
    v.seal().ok()?;
    negentropy::Negentropy::owned(v, limit).ok()
}

/// Events the filter target matches against: different kinds, authors, times and tags.
pub fn fixed_events() -> &'static [Event] {
    static EVENTS: OnceLock<Vec<Event>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let a = Keys::from_seed(b"orly-fuzz", 0);
        let b = Keys::from_seed(b"orly-fuzz", 1);
        let tag = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        vec![
            sign_event(&a, 1_700_000_000, 1, vec![], "plain"),
            sign_event(
                &a,
                1_700_000_500,
                1,
                vec![
                    tag(&["t", "nostr"]),
                    tag(&["e", &"ab".repeat(32)]),
                    tag(&["t"]),
                ],
                "tagged",
            ),
            sign_event(
                &b,
                0,
                30023,
                vec![
                    tag(&["d", "article"]),
                    tag(&["T", "Upper"]),
                    tag(&["tt", "x"]),
                ],
                "addressable",
            ),
            sign_event(&b, u64::MAX, 0, vec![tag(&["p", &"cd".repeat(32)])], "far"),
        ]
    })
}

/// Whether `v` holds a number that is not an integer. serde_json (without its
/// `float_roundtrip` feature, as here) may read the shortest form of a float back one unit off,
/// so such values do not round-trip exactly; no NIP-01/77 field is a float, so the wire targets
/// skip the exact round-trip check for them.
pub fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

/// Separates the files of an audit directory in an `audit_verify` input: an ASCII record
/// separator, which a JSON line never holds raw (JSON escapes control characters).
pub const FILE_SEP: u8 = 0x1e;
/// Most segments an `audit_verify` input makes.
pub const MAX_SEGMENTS: usize = 6;

/// `HEAD.json` (absent when empty) and the segments `audit-000001.jsonl`, ... of an input.
pub fn split_audit_input(data: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let mut parts = data.splitn(MAX_SEGMENTS + 1, |b| *b == FILE_SEP);
    let head = parts.next().unwrap_or_default();
    (head, parts.collect())
}

/// The input that [`split_audit_input`] splits back into `head` and `segments`.
pub fn join_audit_input(head: &[u8], segments: &[Vec<u8>]) -> Vec<u8> {
    let mut out = head.to_vec();
    for s in segments {
        out.push(FILE_SEP);
        out.extend_from_slice(s);
    }
    out
}

/// The audit key the `audit_verify` target checks signatures with (seeds are signed by it).
pub fn audit_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32])
}

/// The token signing key (Ed25519, PKCS#8 PEM) the `token` target's verifier trusts.
pub fn token_key_pem() -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    ed25519_dalek::SigningKey::from_bytes(&[0x42; 32])
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map(|pem| pem.to_string())
        .unwrap_or_default()
}

/// The raw Ed25519 key behind [`token_key_pem`], to sign fuzz-made headers and claims.
pub fn token_raw_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x42; 32])
}

/// Issuer and audience the token verifier expects.
pub const TOKEN_ISSUER: &str = "orly-admin";
/// See [`TOKEN_ISSUER`].
pub const TOKEN_AUDIENCE: &str = "orly-gateway";
/// The "certificate" presented with a token (the binding hashes whatever bytes it gets).
pub const TOKEN_CERT: &[u8] = b"fuzz client certificate";
/// The verifier's clock, unix seconds.
pub const TOKEN_NOW: u64 = 1_700_000_000;
/// Separates header and claims in the `token` target's signed mode.
pub const TOKEN_SEP: u8 = 0;
