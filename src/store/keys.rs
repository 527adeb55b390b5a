//! Key layouts of the fjall keyspaces. Times are big-endian so byte order is time order.

use crate::event::{Event, EventId, KindClass};
use sha2::{Digest, Sha256};

/// `created_at(8) ++ id(32)`: the negentropy order.
pub(super) fn time_key(created_at: u64, id: &EventId) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(&created_at.to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// Splits the `created_at ++ id` suffix every index key ends with.
pub(super) fn split_suffix(key: &[u8]) -> Option<(u64, EventId)> {
    if key.len() < 40 {
        return None;
    }
    let tail = &key[key.len() - 40..];
    let t = u64::from_be_bytes(tail[..8].try_into().ok()?);
    let id: EventId = tail[8..].try_into().ok()?;
    Some((t, id))
}

pub(super) fn kind_prefix(kind: u16) -> Vec<u8> {
    kind.to_be_bytes().to_vec()
}

pub(super) fn author_kind_prefix(pubkey: &[u8; 32], kind: u16) -> Vec<u8> {
    let mut k = pubkey.to_vec();
    k.extend_from_slice(&kind.to_be_bytes());
    k
}

/// Tag values are hashed so any value (of any length, with any byte) has a fixed-size prefix.
pub(super) fn tag_prefix(name: u8, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + 40);
    k.push(name);
    k.extend_from_slice(&Sha256::digest(value.as_bytes())[..16]);
    k
}

pub(super) fn with_suffix(mut prefix: Vec<u8>, ev: &Event) -> Vec<u8> {
    prefix.extend_from_slice(&time_key(ev.created_at, &ev.id));
    prefix
}

/// Every secondary index key of an event: (keyspace slot, key).
pub(super) fn index_keys(ev: &Event) -> Vec<(Slot, Vec<u8>)> {
    let mut out = vec![
        (Slot::ByTime, time_key(ev.created_at, &ev.id)),
        (Slot::ByKind, with_suffix(kind_prefix(ev.kind), ev)),
        (
            Slot::ByAuthorKind,
            with_suffix(author_kind_prefix(&ev.pubkey, ev.kind), ev),
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for t in &ev.tags {
        if let (Some(name), Some(value)) = (t.first(), t.get(1))
            && name.len() == 1
            && name.as_bytes()[0].is_ascii_alphabetic()
            && seen.insert((name.as_bytes()[0], value.as_str()))
        {
            out.push((
                Slot::ByTag,
                with_suffix(tag_prefix(name.as_bytes()[0], value), ev),
            ));
        }
    }
    out
}

/// The replaceable "head" key: pubkey ++ kind [++ hash(d)] for replaceable/addressable kinds.
pub(super) fn head_key(ev: &Event) -> Option<Vec<u8>> {
    match ev.class() {
        KindClass::Replaceable => Some(author_kind_prefix(&ev.pubkey, ev.kind)),
        KindClass::Addressable => Some(address_key(&ev.pubkey, ev.kind, ev.d_tag())),
        _ => None,
    }
}

pub(super) fn address_key(pubkey: &[u8; 32], kind: u16, d: &str) -> Vec<u8> {
    let mut k = author_kind_prefix(pubkey, kind);
    k.extend_from_slice(&Sha256::digest(d.as_bytes())[..16]);
    k
}

/// Which keyspace a key belongs to (index into the store's keyspace table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Slot {
    Events = 0,
    ByTime,
    ByKind,
    /// pubkey ++ kind ++ created_at ++ id: serves author queries with or without kinds.
    ByAuthorKind,
    ByTag,
    /// head key → created_at ++ id of the current version.
    Heads,
    /// deleted id → pubkey allowed to have deleted it.
    Tombstones,
    /// address key → created_at of the deletion (versions at or before it stay deleted).
    AddrTombstones,
    /// ids seen and dropped because a newer version is stored.
    Superseded,
    /// 16 consecutive 1 024-second buckets → count and id sum of each one's events (see
    /// `neg_index.rs`).
    NegIndex,
    /// Store-level markers.
    Meta,
}

/// The store layout this build writes, kept in `meta` under [`LAYOUT_KEY`] (big-endian u32). A
/// store marked with a higher one is refused: an older binary would misread it (layout 2 dropped
/// `by_author`, which layout-1 binaries still read; layout 3 keeps 16 buckets of the negentropy
/// index in each value, which layout-2 binaries would read as one).
pub(super) const LAYOUT: u32 = 3;
pub(super) const LAYOUT_KEY: &[u8] = b"layout";

/// Keyspaces of older layouts, dropped at open: `by_author` (pubkey ++ created_at ++ id) was
/// a subset of `by_author_kind` that cost every write one more memtable insert.
pub(super) const RETIRED: [&str; 1] = ["by_author"];

pub(super) const SLOTS: [(Slot, &str); 11] = [
    (Slot::Events, "events"),
    (Slot::ByTime, "by_time"),
    (Slot::ByKind, "by_kind"),
    (Slot::ByAuthorKind, "by_author_kind"),
    (Slot::ByTag, "by_tag"),
    (Slot::Heads, "heads"),
    (Slot::Tombstones, "tombstones"),
    (Slot::AddrTombstones, "addr_tombstones"),
    (Slot::Superseded, "superseded"),
    (Slot::NegIndex, "neg_index"),
    (Slot::Meta, "meta"),
];

/// The secondary indexes (every one ends with `created_at ++ id`).
pub(super) const INDEX_SLOTS: [Slot; 4] =
    [Slot::ByTime, Slot::ByKind, Slot::ByAuthorKind, Slot::ByTag];
