//! NIP-01 filters as SQL over the indexes of the schema: ids by primary key, authors (with or
//! without kinds) by `events_by_author_kind`, kinds by `events_by_kind`, tags through
//! `event_tags_by_value`, time ranges by `events_by_time`. Results come in (created_at, id)
//! order, the same order fjall gives, and long results are read a page at a time (keyset
//! pagination), so memory stays bounded.

use super::super::{NegItem, Order, StoreError};
use super::neg::item_of;
use super::pg_err;
use crate::event::{Event, EventId, Filter};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;

/// Rows read per page of a query.
const PAGE: i64 = 1000;

type Param = Box<dyn ToSql + Sync + Send>;

/// A WHERE clause and its parameters.
pub(super) struct Where {
    pub(super) sql: String,
    pub(super) params: Vec<Param>,
}

impl Where {
    fn push(&mut self, cond: &str, p: Param) {
        self.params.push(p);
        let cond = cond.replace('?', &format!("${}", self.params.len()));
        self.sql.push_str(" AND ");
        self.sql.push_str(&cond);
    }

    pub(super) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The tag value hash stored in `event_tags`.
pub(super) fn value_hash(v: &str) -> Vec<u8> {
    Sha256::digest(v.as_bytes())[..16].to_vec()
}

/// The conditions of `f` (never its limit). `None` when it matches nothing.
pub(super) fn where_of(f: &Filter) -> Option<Where> {
    if f.matches_nothing() {
        return None;
    }
    let mut w = Where {
        sql: "TRUE".into(),
        params: Vec::new(),
    };
    let since = match f.since {
        Some(s) => Some(i64::try_from(s).ok()?),
        None => None,
    };
    let until = f.until.map(|u| i64::try_from(u).unwrap_or(i64::MAX));
    // One value is `=`, not `= ANY`: PostgreSQL then reads the index in (created_at, id)
    // order and a REQ with a limit stops early.
    if let Some(ids) = &f.ids {
        let v: Vec<Vec<u8>> = ids.iter().map(|i| i.to_vec()).collect();
        w.push("e.id = ANY(?)", Box::new(v));
    }
    if let Some(a) = &f.authors {
        match a.iter().next() {
            Some(one) if a.len() == 1 => w.push("e.pubkey = ?", Box::new(one.to_vec())),
            _ => {
                let v: Vec<Vec<u8>> = a.iter().map(|i| i.to_vec()).collect();
                w.push("e.pubkey = ANY(?)", Box::new(v));
            }
        }
    }
    if let Some(k) = &f.kinds {
        match k.iter().next() {
            Some(one) if k.len() == 1 => w.push("e.kind = ?", Box::new(i32::from(*one))),
            _ => {
                let v: Vec<i32> = k.iter().map(|k| i32::from(*k)).collect();
                w.push("e.kind = ANY(?)", Box::new(v));
            }
        }
    }
    if let Some(s) = since {
        w.push("e.created_at >= ?", Box::new(s));
    }
    if let Some(u) = until {
        w.push("e.created_at <= ?", Box::new(u));
    }
    for (name, vals) in &f.tags {
        // Only single ASCII letters are indexed (as in fjall): another name matches nothing.
        if !name.is_ascii_alphabetic() {
            return None;
        }
        let hashes: Vec<Vec<u8>> = vals.iter().map(|v| value_hash(v)).collect();
        w.params.push(Box::new(*name as u8 as i16));
        let n = w.params.len();
        w.params.push(Box::new(hashes));
        w.sql.push_str(&format!(
            " AND e.id IN (SELECT t.event_id FROM event_tags t WHERE t.name = ${n} AND \
             t.value_hash = ANY(${}))",
            n + 1
        ));
    }
    Some(w)
}

fn order_sql(order: Order) -> &'static str {
    match order {
        Order::OldestFirst => "e.created_at ASC, e.id ASC",
        Order::NewestFirst => "e.created_at DESC, e.id DESC",
    }
}

/// The SELECT of one page of `f` after `cursor` (exclusive), for EXPLAIN in tests too.
pub(super) fn page_sql(
    f: &Filter,
    order: Order,
    cursor: Option<(i64, Vec<u8>)>,
    limit: i64,
) -> Option<Where> {
    let mut w = where_of(f)?;
    if let Some((t, id)) = cursor {
        let cmp = match order {
            Order::OldestFirst => ">",
            Order::NewestFirst => "<",
        };
        w.params.push(Box::new(t));
        let n = w.params.len();
        w.params.push(Box::new(id));
        w.sql.push_str(&format!(
            " AND (e.created_at, e.id) {cmp} (${n}, ${})",
            n + 1
        ));
    }
    w.params.push(Box::new(limit));
    w.sql = format!(
        "SELECT e.raw, e.created_at, e.id FROM events e WHERE {} ORDER BY {} LIMIT ${}",
        w.sql,
        order_sql(order),
        w.params.len()
    );
    Some(w)
}

fn decode(raw: &str) -> Result<Event, StoreError> {
    Event::from_json(raw.as_bytes()).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Matching events in `order` into a channel (the `Store::query` stream), the filter's limit
/// honoured; stops when the receiver is gone.
pub(super) async fn stream(
    client: &tokio_postgres::Client,
    f: &Filter,
    order: Order,
    tx: &tokio::sync::mpsc::Sender<Result<Event, StoreError>>,
) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    let mut left = f
        .limit
        .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut cursor = None;
    while left > 0 {
        let Some(w) = page_sql(f, order, cursor.take(), left.min(PAGE)) else {
            return Ok(());
        };
        let rows = client.query(&w.sql, &w.refs()).await.map_err(pg_err)?;
        let full = rows.len() as i64 == left.min(PAGE);
        for r in &rows {
            let raw: &str = r.try_get(0).map_err(pg_err)?;
            buf.push(decode(raw)?);
        }
        left -= rows.len() as i64;
        for ev in buf.drain(..) {
            if tx.send(Ok(ev)).await.is_err() {
                return Ok(());
            }
        }
        match rows.last() {
            Some(r) if full => {
                let t: i64 = r.try_get(1).map_err(pg_err)?;
                let id: Vec<u8> = r.try_get(2).map_err(pg_err)?;
                cursor = Some((t, id));
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// The stored events among `ids`, in the order asked.
pub(super) async fn by_ids(
    client: &tokio_postgres::Client,
    ids: &[EventId],
) -> Result<Vec<Event>, StoreError> {
    let v: Vec<Vec<u8>> = ids.iter().map(|i| i.to_vec()).collect();
    let rows = client
        .query("SELECT raw FROM events WHERE id = ANY($1)", &[&v])
        .await
        .map_err(pg_err)?;
    let mut found = std::collections::HashMap::new();
    for r in &rows {
        let ev = decode(r.try_get(0).map_err(pg_err)?)?;
        found.insert(ev.id, ev);
    }
    Ok(ids.iter().filter_map(|i| found.remove(i)).collect())
}

/// (created_at, id) of every match, ascending; more than `max` is refused with `TooMany`
/// (at most `max + 1` rows are read).
pub(super) async fn items(
    client: &tokio_postgres::Client,
    f: &Filter,
    max: usize,
) -> Result<Vec<NegItem>, StoreError> {
    let Some(mut w) = where_of(f) else {
        return Ok(Vec::new());
    };
    let cap = i64::try_from(max).unwrap_or(i64::MAX - 1).saturating_add(1);
    w.params.push(Box::new(cap));
    let sql = format!(
        "SELECT e.created_at, e.id FROM events e WHERE {} ORDER BY e.created_at, e.id LIMIT ${}",
        w.sql,
        w.params.len()
    );
    let rows = client.query(&sql, &w.refs()).await.map_err(pg_err)?;
    if rows.len() > max {
        return Err(StoreError::TooMany { max });
    }
    rows.iter()
        .map(|r| item_of(r).map(|it| (it.t, it.id)))
        .collect()
}

/// How many events match (`limit` ignored).
pub(super) async fn count(client: &tokio_postgres::Client, f: &Filter) -> Result<u64, StoreError> {
    let Some(w) = where_of(f) else {
        return Ok(0);
    };
    let sql = format!("SELECT count(*) FROM events e WHERE {}", w.sql);
    let n: i64 = client
        .query_one(&sql, &w.refs())
        .await
        .map_err(pg_err)?
        .get(0);
    Ok(n.max(0) as u64)
}

/// For each id: stored, superseded or deleted here?
pub(super) async fn known(
    client: &tokio_postgres::Client,
    ids: &[EventId],
) -> Result<Vec<bool>, StoreError> {
    let v: Vec<Vec<u8>> = ids.iter().map(|i| i.to_vec()).collect();
    let rows = client
        .query(
            "SELECT id FROM events WHERE id = ANY($1) UNION \
             SELECT id FROM superseded WHERE id = ANY($1) UNION \
             SELECT id FROM tombstones WHERE id = ANY($1)",
            &[&v],
        )
        .await
        .map_err(pg_err)?;
    let mut have = std::collections::HashSet::new();
    for r in &rows {
        let id: &[u8] = r.try_get(0).map_err(pg_err)?;
        have.insert(id.to_vec());
    }
    Ok(ids.iter().map(|i| have.contains(i.as_slice())).collect())
}
