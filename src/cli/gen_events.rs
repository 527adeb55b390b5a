//! `orly gen`: valid signed events, deterministic for a seed (tests, demos, benchmarks).

use crate::event::{Event, Keys, sign_event};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSpec {
    /// Number of events.
    pub count: u64,
    /// PRNG seed: the same seed gives the same events.
    pub seed: u64,
    /// Number of distinct authors.
    pub authors: u64,
    /// Kinds to draw from.
    pub kinds: Vec<u16>,
    /// Spread of `created_at` below `until`, in days.
    pub span_days: u64,
    /// Newest possible `created_at` (fixed, so output does not depend on the clock).
    pub until: u64,
}

impl Default for GenSpec {
    fn default() -> Self {
        Self {
            count: 1000,
            seed: 1,
            authors: 50,
            kinds: vec![0, 1, 3, 7],
            span_days: 30,
            until: 1_760_000_000,
        }
    }
}

const WORDS: &[&str] = &[
    "nostr",
    "relay",
    "sync",
    "zap",
    "note",
    "gm",
    "bitcoin",
    "rust",
    "négentropie",
    "🌱",
    "\"quoted\"",
    "tab\there",
    "line\nbreak",
    "back\\slash",
    "日本語",
    "emoji 🎉",
];

/// Generates events `range` of the sequence defined by `spec`, in order, signing in parallel.
pub fn generate(spec: &GenSpec, range: std::ops::Range<u64>) -> Vec<Event> {
    let keys: Vec<Keys> = (0..spec.authors.max(1))
        .into_par_iter()
        .map(|i| Keys::from_seed(&spec.seed.to_be_bytes(), i))
        .collect();
    let span = (spec.span_days * 86_400).max(1);
    range
        .into_par_iter()
        .map(|i| {
            // One PRNG per event index: any slice of the sequence is reproducible on its own.
            let mut rng = StdRng::seed_from_u64(spec.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let author = &keys[rng.random_range(0..keys.len())];
            let kind = spec.kinds[rng
                .random_range(0..spec.kinds.len().max(1))
                .min(spec.kinds.len() - 1)];
            let created_at = spec.until - rng.random_range(0..span);
            let n = rng.random_range(1..12);
            let words: Vec<&str> = (0..n)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect();
            let mut tags = Vec::new();
            if rng.random_bool(0.3) {
                tags.push(vec![
                    "t".to_string(),
                    WORDS[rng.random_range(0..4)].to_string(),
                ]);
            }
            if rng.random_bool(0.2) {
                tags.push(vec![
                    "p".to_string(),
                    hex::encode(keys[rng.random_range(0..keys.len())].pubkey),
                ]);
            }
            if (30000..40000).contains(&kind) {
                tags.push(vec![
                    "d".to_string(),
                    format!("slot-{}", rng.random_range(0..5)),
                ]);
            }
            let content = format!("{} #{i}", words.join(" "));
            sign_event(author, created_at, kind, tags, &content)
        })
        .collect()
}
