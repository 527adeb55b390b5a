//! Generated gRPC types (from proto/) and their conversions to the domain types: filters and
//! events here, the sync engine's progress, direction and error kinds in `sync`. Conversions
//! from the wire are strict: a malformed field is an error naming it, never a silent default.

#![allow(missing_docs, clippy::all)]

/// `orlysync.*` packages.
pub mod orlysync {
    /// `orlysync.common`.
    pub mod common {
        /// `orlysync.common.v1`.
        pub mod v1 {
            tonic::include_proto!("orlysync.common.v1");
        }
    }
    /// `orlysync.negentropy`.
    pub mod negentropy {
        /// `orlysync.negentropy.v1`.
        pub mod v1 {
            tonic::include_proto!("orlysync.negentropy.v1");
        }
    }
}

/// `orlydb.*` packages.
pub mod orlydb {
    /// `orlydb.v1`.
    pub mod v1 {
        tonic::include_proto!("orlydb.v1");
    }
}

mod sync;

pub use sync::{direction_from_pb, progress_from_pb, progress_to_pb};

/// Encoded file descriptor set of every proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/orly_descriptor.bin"));

use crate::event::{Event, Filter};
use orlysync::common::v1 as pb;
use std::collections::BTreeSet;

fn bytes32(field: &str, b: &[u8]) -> Result<[u8; 32], String> {
    b.try_into()
        .map_err(|_| format!("{field}: expected 32 bytes, got {}", b.len()))
}

fn time(field: &str, t: i64) -> Result<u64, String> {
    u64::try_from(t).map_err(|_| format!("{field}: must not be negative"))
}

impl TryFrom<&pb::Filter> for Filter {
    type Error = String;

    fn try_from(p: &pb::Filter) -> Result<Self, String> {
        let mut f = Filter::default();
        if !p.ids.is_empty() {
            f.ids = Some(
                p.ids
                    .iter()
                    .map(|b| bytes32("filter.ids", b))
                    .collect::<Result<_, _>>()?,
            );
        }
        if !p.authors.is_empty() {
            f.authors = Some(
                p.authors
                    .iter()
                    .map(|b| bytes32("filter.authors", b))
                    .collect::<Result<_, _>>()?,
            );
        }
        if !p.kinds.is_empty() {
            f.kinds = Some(
                p.kinds
                    .iter()
                    .map(|k| {
                        u16::try_from(*k)
                            .map_err(|_| format!("filter.kinds: {k} is not a kind (0..=65535)"))
                    })
                    .collect::<Result<_, _>>()?,
            );
        }
        for (name, set) in &p.tags {
            // The letter alone, or as NIP-01 writes it ("#t").
            let letter = name.strip_prefix('#').unwrap_or(name);
            let mut chars = letter.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(format!("filter.tags: {name:?} must be one letter"));
            };
            if !c.is_ascii_alphabetic() {
                return Err(format!(
                    "filter.tags: {name:?} must be one letter a-z or A-Z"
                ));
            }
            let values = set
                .values
                .iter()
                .map(|v| utf8(|| format!("filter.tags[{name:?}]"), v.clone()))
                .collect::<Result<BTreeSet<_>, _>>()?;
            f.tags.entry(c).or_default().extend(values);
        }
        f.since = p.since.map(|t| time("filter.since", t)).transpose()?;
        f.until = p.until.map(|t| time("filter.until", t)).transpose()?;
        if p.search.is_some() {
            return Err("filter.search: not supported".into());
        }
        f.limit = p.limit.map(u64::from);
        Ok(f)
    }
}

impl From<&Filter> for pb::Filter {
    fn from(f: &Filter) -> Self {
        pb::Filter {
            ids: f.ids.iter().flatten().map(|i| i.to_vec()).collect(),
            kinds: f.kinds.iter().flatten().map(|k| u32::from(*k)).collect(),
            authors: f.authors.iter().flatten().map(|a| a.to_vec()).collect(),
            tags: f
                .tags
                .iter()
                .map(|(c, v)| {
                    (
                        c.to_string(),
                        pb::TagSet {
                            values: v.iter().map(|s| s.clone().into_bytes()).collect(),
                        },
                    )
                })
                .collect(),
            since: f.since.map(|t| t.min(i64::MAX as u64) as i64),
            until: f.until.map(|t| t.min(i64::MAX as u64) as i64),
            search: None,
            limit: f.limit.map(|l| l.min(u32::MAX as u64) as u32),
        }
    }
}

impl TryFrom<pb::Event> for Event {
    type Error = String;

    fn try_from(p: pb::Event) -> Result<Self, String> {
        Ok(Event {
            id: bytes32("event.id", &p.id)?,
            pubkey: bytes32("event.pubkey", &p.pubkey)?,
            created_at: time("event.created_at", p.created_at)?,
            kind: u16::try_from(p.kind).map_err(|_| "event.kind: above 65535".to_string())?,
            tags: p
                .tags
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    t.values
                        .into_iter()
                        .enumerate()
                        .map(|(j, v)| utf8(|| format!("event.tags[{i}][{j}]"), v))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<_, _>>()?,
            content: utf8(|| "event.content".into(), p.content)?,
            sig: p
                .sig
                .as_slice()
                .try_into()
                .map_err(|_| "event.sig: expected 64 bytes".to_string())?,
        })
    }
}

impl From<Event> for pb::Event {
    fn from(e: Event) -> Self {
        pb::Event {
            id: e.id.to_vec(),
            pubkey: e.pubkey.to_vec(),
            created_at: e.created_at.min(i64::MAX as u64) as i64,
            kind: u32::from(e.kind),
            tags: e
                .tags
                .into_iter()
                .map(|values| pb::Tag {
                    values: values.into_iter().map(String::into_bytes).collect(),
                })
                .collect(),
            content: e.content.into_bytes(),
            sig: e.sig.to_vec(),
        }
    }
}

fn utf8(field: impl FnOnce() -> String, b: Vec<u8>) -> Result<String, String> {
    String::from_utf8(b).map_err(|_| format!("{}: not UTF-8", field()))
}

// ORLY's orlydb.v1 messages: the same fields and types as common.v1, declared in their own
// package. They cross through the conversions above, so both wire forms obey one rule.
use orlydb::v1 as odb;

impl TryFrom<&odb::Filter> for Filter {
    type Error = String;

    fn try_from(p: &odb::Filter) -> Result<Self, String> {
        Filter::try_from(&pb::Filter {
            ids: p.ids.clone(),
            kinds: p.kinds.clone(),
            authors: p.authors.clone(),
            tags: p
                .tags
                .iter()
                .map(|(k, v)| {
                    let values = v.values.clone();
                    (k.clone(), pb::TagSet { values })
                })
                .collect(),
            since: p.since,
            until: p.until,
            search: p.search.clone(),
            limit: p.limit,
        })
    }
}

impl From<&Filter> for odb::Filter {
    fn from(f: &Filter) -> Self {
        let p = pb::Filter::from(f);
        odb::Filter {
            ids: p.ids,
            kinds: p.kinds,
            authors: p.authors,
            tags: p
                .tags
                .into_iter()
                .map(|(k, v)| (k, odb::TagSet { values: v.values }))
                .collect(),
            since: p.since,
            until: p.until,
            search: None,
            limit: p.limit,
        }
    }
}

impl TryFrom<odb::Event> for Event {
    type Error = String;

    fn try_from(p: odb::Event) -> Result<Self, String> {
        Event::try_from(pb::Event {
            id: p.id,
            pubkey: p.pubkey,
            created_at: p.created_at,
            kind: p.kind,
            tags: p
                .tags
                .into_iter()
                .map(|t| pb::Tag { values: t.values })
                .collect(),
            content: p.content,
            sig: p.sig,
        })
    }
}

impl From<Event> for odb::Event {
    fn from(e: Event) -> Self {
        let p = pb::Event::from(e);
        odb::Event {
            id: p.id,
            pubkey: p.pubkey,
            created_at: p.created_at,
            kind: p.kind,
            tags: p
                .tags
                .into_iter()
                .map(|t| odb::Tag { values: t.values })
                .collect(),
            content: p.content,
            sig: p.sig,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_round_trip_and_refusals() {
        let f = Filter::from_json(&format!(
            r##"{{"kinds":[1,7],"authors":["{}"],"#t":["a","b"],"since":5,"until":9,"limit":3}}"##,
            "ab".repeat(32)
        ))
        .unwrap();
        let p = pb::Filter::from(&f);
        assert_eq!(Filter::try_from(&p).unwrap(), f);
        let mut bad = p.clone();
        bad.kinds.push(70000);
        assert!(Filter::try_from(&bad).unwrap_err().contains("filter.kinds"));
        let mut bad = p.clone();
        bad.authors.push(vec![1, 2]);
        assert!(
            Filter::try_from(&bad)
                .unwrap_err()
                .contains("filter.authors")
        );
        let mut bad = p;
        bad.since = Some(-1);
        assert!(Filter::try_from(&bad).unwrap_err().contains("filter.since"));
    }

    #[test]
    fn orly_db_types_round_trip_and_refuse_non_utf8() {
        let f = Filter::from_json(r##"{"kinds":[1],"#t":["a"],"limit":3}"##).unwrap();
        let mut p = odb::Filter::from(&f);
        assert_eq!(Filter::try_from(&p).unwrap(), f);
        let set = p.tags.remove("t").unwrap();
        p.tags.insert("#t".into(), set);
        assert_eq!(Filter::try_from(&p).unwrap(), f, "'#t' reads as 't'");
        p.tags.insert(
            "p".into(),
            odb::TagSet {
                values: vec![vec![0xff]],
            },
        );
        assert!(
            Filter::try_from(&p)
                .unwrap_err()
                .contains("filter.tags[\"p\"]: not UTF-8")
        );
        let ev = odb::Event {
            id: vec![0; 32],
            pubkey: vec![0; 32],
            kind: 1,
            tags: vec![odb::Tag {
                values: vec![b"t".to_vec(), vec![0xc3]],
            }],
            sig: vec![0; 64],
            ..Default::default()
        };
        let err = Event::try_from(ev.clone()).unwrap_err();
        assert!(err.contains("event.tags[0][1]: not UTF-8"), "{err}");
        let mut ev2 = ev;
        ev2.tags.clear();
        ev2.content = vec![0xfe];
        assert!(
            Event::try_from(ev2)
                .unwrap_err()
                .contains("event.content: not UTF-8")
        );
    }
}
