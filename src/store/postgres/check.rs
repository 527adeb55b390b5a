//! `orly stats [--check]` on PostgreSQL: counts by kind and time bounds, and the integrity
//! check — every event decodes to its own row, its tag index rows are exactly its indexable
//! tags, every head names a stored event of its family and every stored replaceable or
//! addressable event is its family's head, and the bucket index equals a recount of the events.
//! PostgreSQL maintains its own B-tree indexes; these are the ones orly maintains.

use super::super::keys;
use super::super::{IntegrityReport, StoreStats};
use super::neg;
use super::pg_err;
use super::query::value_hash;
use crate::event::Event;
use crate::store::StoreError;
use std::collections::{HashMap, HashSet};

/// An event's tag index rows: (name, value hash, created_at).
type TagRows = HashSet<(i16, Vec<u8>, i64)>;

/// Counts by kind, time bounds and the database's size on disk.
pub(super) async fn stats(client: &tokio_postgres::Client) -> Result<StoreStats, StoreError> {
    let mut s = StoreStats::default();
    for r in client
        .query(
            "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind",
            &[],
        )
        .await
        .map_err(pg_err)?
    {
        let k: i32 = r.get(0);
        let n: i64 = r.get(1);
        s.by_kind.insert(k as u16, n as u64);
        s.events += n as u64;
    }
    let r = client
        .query_one(
            "SELECT (SELECT min(created_at) FROM events), (SELECT max(created_at) FROM events), \
             pg_database_size(current_database())",
            &[],
        )
        .await
        .map_err(pg_err)?;
    s.first_created_at = r.get::<_, Option<i64>>(0).map(|t| t as u64);
    s.last_created_at = r.get::<_, Option<i64>>(1).map(|t| t as u64);
    s.disk_bytes = r.get::<_, i64>(2).max(0) as u64;
    Ok(s)
}

/// The integrity check (reads every event; for operators, not for the hot path).
pub(super) async fn integrity(
    client: &tokio_postgres::Client,
) -> Result<IntegrityReport, StoreError> {
    let mut r = IntegrityReport::default();
    // Tag rows, by event.
    let mut tags: HashMap<Vec<u8>, TagRows> = HashMap::new();
    for row in client
        .query(
            "SELECT event_id, name, value_hash, created_at FROM event_tags",
            &[],
        )
        .await
        .map_err(pg_err)?
    {
        r.index_entries += 1;
        tags.entry(row.get(0))
            .or_default()
            .insert((row.get(1), row.get(2), row.get(3)));
    }
    let mut heads: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for row in client
        .query("SELECT head, id FROM heads", &[])
        .await
        .map_err(pg_err)?
    {
        r.index_entries += 1;
        heads.insert(row.get(0), row.get(1));
    }
    let mut family_of: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for row in client
        .query("SELECT id, pubkey, kind, created_at, raw FROM events", &[])
        .await
        .map_err(pg_err)?
    {
        r.events += 1;
        let id: Vec<u8> = row.get(0);
        let raw: &str = row.get(4);
        let ev = match Event::from_json(raw.as_bytes()) {
            Ok(ev)
                if ev.id[..] == id[..]
                    && ev.pubkey[..] == row.get::<_, &[u8]>(1)[..]
                    && i32::from(ev.kind) == row.get::<_, i32>(2)
                    && ev.created_at as i64 == row.get::<_, i64>(3) =>
            {
                ev
            }
            _ => {
                r.problems.push(format!(
                    "events: row {} does not match its JSON",
                    hex::encode(&id)
                ));
                continue;
            }
        };
        let mut want = HashSet::new();
        for t in &ev.tags {
            if let (Some(name), Some(value)) = (t.first(), t.get(1))
                && name.len() == 1
                && name.as_bytes()[0].is_ascii_alphabetic()
            {
                want.insert((
                    i16::from(name.as_bytes()[0]),
                    value_hash(value),
                    ev.created_at as i64,
                ));
            }
        }
        if tags.remove(&id).unwrap_or_default() != want {
            r.problems.push(format!(
                "event_tags: rows of {} differ from its tags",
                ev.id_hex()
            ));
        }
        if let Some(h) = keys::head_key(&ev) {
            if heads.get(&h) != Some(&id) {
                r.problems.push(format!(
                    "heads: {} is stored but is not its family's head",
                    ev.id_hex()
                ));
            }
            family_of.insert(id, h);
        }
    }
    for (h, id) in &heads {
        if family_of.get(id) != Some(h) {
            r.problems.push(format!(
                "heads: {} names {}, not a stored event of that family",
                hex::encode(h),
                hex::encode(id)
            ));
        }
    }
    let mut want = neg::recount(client).await?;
    for (b, got) in neg::stored(client).await? {
        r.index_entries += 1;
        match want.remove(&b) {
            Some(w) if w == got => {}
            Some(w) => r.problems.push(format!(
                "neg_buckets: bucket {b} holds {} events (or a wrong sum), the events {}",
                got.0, w.0
            )),
            None => r
                .problems
                .push(format!("neg_buckets: bucket {b} has no events")),
        }
    }
    for (b, (n, _)) in want {
        r.problems
            .push(format!("neg_buckets: bucket {b} ({n} events) missing"));
    }
    Ok(r)
}
