//! NIP-01 writes on PostgreSQL: the same decisions as fjall's `ingest_one` (replaceable and
//! addressable heads, newest wins and ties to the lowest id, NIP-09 deletions with tombstones,
//! ephemeral never stored), made over the state read inside one transaction, then written with
//! a few array statements.
//!
//! What keeps concurrent writers (several relays and sync services on one database) exactly
//! where one writer would end:
//! - **Transaction-scoped advisory locks** (`pg_advisory_xact_lock`), taken in ascending key
//!   order before anything is read: one per event id, per replaceable/addressable family (head
//!   key), per deletion target id and per deleted address. Two saves of one family, or a deletion
//!   and its target, run one after the other; everything else runs in parallel. Ascending order
//!   means no two batches wait on each other; a deadlock PostgreSQL still detects (40P01) is
//!   retried.
//! - **READ COMMITTED**: each statement after the locks sees what the previous lock holder
//!   committed, so the decisions are made on current state.
//! - **Primary keys with `ON CONFLICT`**: an id is stored once (`events`), a family has one
//!   head (`heads`), tombstones and superseded ids are sets; address tombstones keep the newest
//!   deletion time with `GREATEST`.
//! - **`RETURNING`** on the event insert and delete: the bucket index changes by exactly the
//!   rows this transaction added or removed, and a head is dropped only if it still names the
//!   version deleted (`heads.id = …`), so a racing replacement is never undone.
//! - The bucket deltas are one upsert in the same transaction (see `neg.rs`).

use super::super::keys;
use super::super::{SaveOutcome, StoreError};
use super::neg::Deltas;
use super::pg_err;
use super::query::value_hash;
use crate::event::{Event, EventId, KindClass, decode_hex32};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// Retries of a batch that lost a deadlock or serialization race.
const RETRIES: usize = 8;

/// What is known of a stored event.
#[derive(Clone)]
struct Stored {
    pubkey: [u8; 32],
    class: KindClass,
    head: Option<Vec<u8>>,
}

/// The state the batch reads and the writes it decides, in memory until applied.
#[derive(Default)]
struct Plan<'a> {
    events: HashMap<EventId, Option<Stored>>,
    tombstones: HashMap<EventId, [u8; 32]>,
    heads: HashMap<Vec<u8>, Option<(u64, EventId)>>,
    /// The heads as read from the database (before this batch changed any).
    db_heads: HashMap<Vec<u8>, EventId>,
    addr_tombs: HashMap<Vec<u8>, u64>,
    inserts: Vec<&'a Event>,
    removes: HashSet<EventId>,
    superseded: HashSet<EventId>,
    tomb_writes: HashMap<EventId, [u8; 32]>,
    head_sets: HashMap<Vec<u8>, (u64, EventId)>,
    /// Heads to drop, only if they still name this version.
    head_drops: HashMap<Vec<u8>, EventId>,
    addr_tomb_writes: HashMap<Vec<u8>, u64>,
}

fn lock_key(domain: u8, bytes: &[u8]) -> i64 {
    let h = Sha256::new()
        .chain_update([domain])
        .chain_update(bytes)
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_be_bytes(b)
}

/// The `a` tag targets of a deletion that name an addressable event of its author.
fn addr_targets(del: &Event) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for t in &del.tags {
        if let (Some("a"), Some(v)) = (t.first().map(String::as_str), t.get(1)) {
            let mut parts = v.splitn(3, ':');
            let (Some(kind), Some(pk), d) =
                (parts.next(), parts.next(), parts.next().unwrap_or(""))
            else {
                continue;
            };
            let (Ok(kind), Ok(pk)) = (kind.parse::<u16>(), decode_hex32(pk)) else {
                continue;
            };
            if pk == del.pubkey && KindClass::of(kind) == KindClass::Addressable {
                out.push(keys::address_key(&pk, kind, d));
            }
        }
    }
    out
}

fn e_targets(del: &Event) -> Vec<EventId> {
    del.tags
        .iter()
        .filter(|t| t.first().map(String::as_str) == Some("e"))
        .filter_map(|t| t.get(1).and_then(|v| decode_hex32(v).ok()))
        .collect()
}

fn bytes32(b: &[u8]) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(b).map_err(|_| StoreError::Corrupt(format!("{} bytes, not 32", b.len())))
}

/// Stores verified events in one transaction, retrying a batch that lost a deadlock.
pub(super) async fn save(
    client: &mut deadpool_postgres::Object,
    events: &[Event],
) -> Result<Vec<SaveOutcome>, StoreError> {
    let mut attempt = 0;
    loop {
        match save_once(client, events).await {
            Err(StoreError::Busy(why)) if attempt < RETRIES => {
                attempt += 1;
                tracing::debug!(attempt, "write batch retried: {why}");
                tokio::time::sleep(std::time::Duration::from_millis(5 << attempt.min(6))).await;
            }
            other => return other,
        }
    }
}

async fn save_once(
    client: &mut deadpool_postgres::Object,
    events: &[Event],
) -> Result<Vec<SaveOutcome>, StoreError> {
    let stored: Vec<&Event> = events
        .iter()
        .filter(|e| e.class() != KindClass::Ephemeral)
        .collect();
    if stored.is_empty() {
        return Ok(events.iter().map(|_| SaveOutcome::Ephemeral).collect());
    }
    let tx = client.transaction().await.map_err(pg_err)?;
    // What the batch may read or change: ids, families, deletion targets.
    let mut ids: HashSet<EventId> = HashSet::new();
    let mut heads: HashSet<Vec<u8>> = HashSet::new();
    for ev in &stored {
        ids.insert(ev.id);
        if let Some(h) = keys::head_key(ev) {
            heads.insert(h);
        }
        if ev.class() == KindClass::Deletion {
            ids.extend(e_targets(ev));
            heads.extend(addr_targets(ev));
        }
    }
    let mut locks: Vec<i64> = ids
        .iter()
        .map(|i| lock_key(0, i))
        .chain(heads.iter().map(|h| lock_key(1, h)))
        .collect();
    locks.sort_unstable();
    locks.dedup();
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k")
        .await
        .map_err(pg_err)?;
    tx.execute(&lock, &[&locks]).await.map_err(pg_err)?;

    let mut plan = Plan::default();
    let id_list: Vec<Vec<u8>> = ids.iter().map(|i| i.to_vec()).collect();
    let q = tx
        .prepare_cached("SELECT id, raw FROM events WHERE id = ANY($1)")
        .await
        .map_err(pg_err)?;
    for r in tx.query(&q, &[&id_list]).await.map_err(pg_err)? {
        let raw: &str = r.try_get(1).map_err(pg_err)?;
        let ev =
            Event::from_json(raw.as_bytes()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        heads.extend(keys::head_key(&ev));
        plan.events.insert(
            ev.id,
            Some(Stored {
                pubkey: ev.pubkey,
                class: ev.class(),
                head: keys::head_key(&ev),
            }),
        );
    }
    let q = tx
        .prepare_cached("SELECT id, deleter FROM tombstones WHERE id = ANY($1)")
        .await
        .map_err(pg_err)?;
    for r in tx.query(&q, &[&id_list]).await.map_err(pg_err)? {
        let id = bytes32(r.try_get(0).map_err(pg_err)?)?;
        plan.tombstones
            .insert(id, bytes32(r.try_get(1).map_err(pg_err)?)?);
    }
    let head_list: Vec<Vec<u8>> = heads.iter().cloned().collect();
    let q = tx
        .prepare_cached("SELECT head, created_at, id FROM heads WHERE head = ANY($1)")
        .await
        .map_err(pg_err)?;
    for r in tx.query(&q, &[&head_list]).await.map_err(pg_err)? {
        let h: Vec<u8> = r.try_get(0).map_err(pg_err)?;
        let t: i64 = r.try_get(1).map_err(pg_err)?;
        let id = bytes32(r.try_get(2).map_err(pg_err)?)?;
        plan.db_heads.insert(h.clone(), id);
        plan.heads.insert(h, Some((t as u64, id)));
    }
    let q = tx
        .prepare_cached("SELECT head, until_at FROM addr_tombstones WHERE head = ANY($1)")
        .await
        .map_err(pg_err)?;
    for r in tx.query(&q, &[&head_list]).await.map_err(pg_err)? {
        let h: Vec<u8> = r.try_get(0).map_err(pg_err)?;
        let t: i64 = r.try_get(1).map_err(pg_err)?;
        plan.addr_tombs.insert(h, t as u64);
    }

    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        out.push(plan.ingest_one(ev));
    }
    plan.apply(&tx).await?;
    tx.commit().await.map_err(pg_err)?;
    Ok(out)
}

impl<'a> Plan<'a> {
    fn present(&self, id: &EventId) -> Option<&Stored> {
        self.events.get(id).and_then(Option::as_ref)
    }

    fn remove(&mut self, id: &EventId) {
        if let Some(pos) = self.inserts.iter().position(|e| e.id == *id) {
            self.inserts.remove(pos);
        } else {
            self.removes.insert(*id);
        }
        self.events.insert(*id, None);
    }

    fn set_head(&mut self, h: Vec<u8>, v: Option<(u64, EventId)>) {
        match v {
            Some(v) => {
                self.head_drops.remove(&h);
                self.head_sets.insert(h.clone(), v);
            }
            None => {
                // The row goes only if it still names what this batch read: a deletion by `e`
                // tag holds no lock on its target's family, and a replacement committed
                // meanwhile must stay.
                if let Some(id) = self.db_heads.get(&h) {
                    self.head_drops.insert(h.clone(), *id);
                }
                self.head_sets.remove(&h);
            }
        }
        self.heads.insert(h, v);
    }

    /// fjall's `ingest_one`, decision for decision.
    fn ingest_one(&mut self, ev: &'a Event) -> SaveOutcome {
        let class = ev.class();
        if class == KindClass::Ephemeral {
            return SaveOutcome::Ephemeral;
        }
        if self.present(&ev.id).is_some() {
            return SaveOutcome::Duplicate;
        }
        if self.tombstones.get(&ev.id) == Some(&ev.pubkey) {
            return SaveOutcome::Deleted;
        }
        let mut outcome = SaveOutcome::Accepted;
        let head = keys::head_key(ev);
        if let Some(head) = &head {
            if class == KindClass::Addressable
                && let Some(t) = self.addr_tombs.get(head)
                && ev.created_at <= *t
            {
                return SaveOutcome::Deleted;
            }
            if let Some(Some((cur_t, cur_id))) = self.heads.get(head).cloned() {
                // Newest wins; on a tie the lowest id wins.
                if (cur_t, std::cmp::Reverse(cur_id)) >= (ev.created_at, std::cmp::Reverse(ev.id)) {
                    self.superseded.insert(ev.id);
                    return SaveOutcome::Superseded;
                }
                self.remove(&cur_id);
                self.superseded.insert(cur_id);
                outcome = SaveOutcome::Replaced;
            }
            self.set_head(head.clone(), Some((ev.created_at, ev.id)));
        }
        if class == KindClass::Deletion {
            self.apply_deletion(ev);
        }
        self.inserts.push(ev);
        self.events.insert(
            ev.id,
            Some(Stored {
                pubkey: ev.pubkey,
                class,
                head,
            }),
        );
        outcome
    }

    /// NIP-09, as fjall's `apply_deletion`.
    fn apply_deletion(&mut self, del: &Event) {
        for target in e_targets(del) {
            if let Some(st) = self.present(&target).cloned() {
                if st.pubkey != del.pubkey || st.class == KindClass::Deletion {
                    continue;
                }
                self.remove(&target);
                if let Some(h) = st.head {
                    self.set_head(h, None);
                }
            }
            self.tombstones.insert(target, del.pubkey);
            self.tomb_writes.insert(target, del.pubkey);
        }
        for addr in addr_targets(del) {
            if let Some(Some((t, id))) = self.heads.get(&addr).cloned()
                && t <= del.created_at
            {
                self.remove(&id);
                self.set_head(addr.clone(), None);
                self.tombstones.insert(id, del.pubkey);
                self.tomb_writes.insert(id, del.pubkey);
            }
            let prev = self.addr_tombs.get(&addr).copied().unwrap_or(0);
            let t = prev.max(del.created_at);
            self.addr_tombs.insert(addr.clone(), t);
            self.addr_tomb_writes.insert(addr, t);
        }
    }

    async fn apply(self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
        let mut deltas = Deltas::default();
        let exec = async |sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]| {
            let st = tx.prepare_cached(sql).await.map_err(pg_err)?;
            tx.query(&st, params).await.map_err(pg_err)
        };
        if !self.removes.is_empty() {
            let ids: Vec<Vec<u8>> = self.removes.iter().map(|i| i.to_vec()).collect();
            // Event rows go with their tags (ON DELETE CASCADE).
            let rows = exec(
                "DELETE FROM events WHERE id = ANY($1) RETURNING created_at, id",
                &[&ids],
            )
            .await?;
            for r in &rows {
                let t: i64 = r.try_get(0).map_err(pg_err)?;
                deltas.add(t, &bytes32(r.try_get(1).map_err(pg_err)?)?, -1);
            }
        }
        if !self.inserts.is_empty() {
            let ids: Vec<Vec<u8>> = self.inserts.iter().map(|e| e.id.to_vec()).collect();
            let pks: Vec<Vec<u8>> = self.inserts.iter().map(|e| e.pubkey.to_vec()).collect();
            let kinds: Vec<i32> = self.inserts.iter().map(|e| i32::from(e.kind)).collect();
            let ts: Vec<i64> = self.inserts.iter().map(|e| e.created_at as i64).collect();
            let raws: Vec<String> = self.inserts.iter().map(|e| e.to_json()).collect();
            let rows = exec(
                "INSERT INTO events (id, pubkey, kind, created_at, raw) \
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int4[], $4::int8[], \
                 $5::text[]) ON CONFLICT (id) DO NOTHING RETURNING created_at, id",
                &[&ids, &pks, &kinds, &ts, &raws],
            )
            .await?;
            let mut added = HashSet::new();
            for r in &rows {
                let t: i64 = r.try_get(0).map_err(pg_err)?;
                let id = bytes32(r.try_get(1).map_err(pg_err)?)?;
                deltas.add(t, &id, 1);
                added.insert(id);
            }
            let (mut tid, mut tname, mut thash, mut tt) = (vec![], vec![], vec![], vec![]);
            for ev in self.inserts.iter().filter(|e| added.contains(&e.id)) {
                let mut seen = HashSet::new();
                for t in &ev.tags {
                    if let (Some(name), Some(value)) = (t.first(), t.get(1))
                        && name.len() == 1
                        && name.as_bytes()[0].is_ascii_alphabetic()
                        && seen.insert((name.as_bytes()[0], value.as_str()))
                    {
                        tid.push(ev.id.to_vec());
                        tname.push(i16::from(name.as_bytes()[0]));
                        thash.push(value_hash(value));
                        tt.push(ev.created_at as i64);
                    }
                }
            }
            if !tid.is_empty() {
                exec(
                    "INSERT INTO event_tags (event_id, name, value_hash, created_at) \
                     SELECT * FROM unnest($1::bytea[], $2::int2[], $3::bytea[], $4::int8[]) \
                     ON CONFLICT DO NOTHING",
                    &[&tid, &tname, &thash, &tt],
                )
                .await?;
            }
        }
        if !self.head_drops.is_empty() {
            let (h, id): (Vec<Vec<u8>>, Vec<Vec<u8>>) = self
                .head_drops
                .iter()
                .map(|(h, id)| (h.clone(), id.to_vec()))
                .unzip();
            exec(
                "DELETE FROM heads h USING unnest($1::bytea[], $2::bytea[]) AS d(head, id) \
                 WHERE h.head = d.head AND h.id = d.id",
                &[&h, &id],
            )
            .await?;
        }
        if !self.head_sets.is_empty() {
            let mut sets: Vec<_> = self.head_sets.into_iter().collect();
            sets.sort();
            let h: Vec<Vec<u8>> = sets.iter().map(|(h, _)| h.clone()).collect();
            let t: Vec<i64> = sets.iter().map(|(_, (t, _))| *t as i64).collect();
            let id: Vec<Vec<u8>> = sets.iter().map(|(_, (_, id))| id.to_vec()).collect();
            exec(
                "INSERT INTO heads (head, created_at, id) \
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) \
                 ON CONFLICT (head) DO UPDATE SET created_at = EXCLUDED.created_at, \
                 id = EXCLUDED.id",
                &[&h, &t, &id],
            )
            .await?;
        }
        if !self.superseded.is_empty() {
            let ids: Vec<Vec<u8>> = self.superseded.iter().map(|i| i.to_vec()).collect();
            exec(
                "INSERT INTO superseded (id) SELECT * FROM unnest($1::bytea[]) \
                 ON CONFLICT DO NOTHING",
                &[&ids],
            )
            .await?;
        }
        if !self.tomb_writes.is_empty() {
            let (ids, by): (Vec<Vec<u8>>, Vec<Vec<u8>>) = self
                .tomb_writes
                .iter()
                .map(|(i, d)| (i.to_vec(), d.to_vec()))
                .unzip();
            exec(
                "INSERT INTO tombstones (id, deleter) SELECT * FROM unnest($1::bytea[], \
                 $2::bytea[]) ON CONFLICT (id) DO UPDATE SET deleter = EXCLUDED.deleter",
                &[&ids, &by],
            )
            .await?;
        }
        if !self.addr_tomb_writes.is_empty() {
            let (h, t): (Vec<Vec<u8>>, Vec<i64>) = self
                .addr_tomb_writes
                .iter()
                .map(|(h, t)| (h.clone(), *t as i64))
                .unzip();
            exec(
                "INSERT INTO addr_tombstones (head, until_at) SELECT * FROM unnest($1::bytea[], \
                 $2::int8[]) ON CONFLICT (head) DO UPDATE SET until_at = \
                 GREATEST(addr_tombstones.until_at, EXCLUDED.until_at)",
                &[&h, &t],
            )
            .await?;
        }
        deltas.apply(tx).await
    }
}
