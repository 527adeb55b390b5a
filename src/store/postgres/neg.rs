//! The negentropy bucket index on PostgreSQL: per-bucket deltas of one write transaction, their
//! upsert (one atomic `INSERT … ON CONFLICT DO UPDATE` that adds to the stored count and limb
//! sums, so concurrent writers never lose an update), and the [`SetSource`] a session reads
//! through: one REPEATABLE READ, READ ONLY transaction on a connection of its own, so the bucket
//! sums and the items it reads are one snapshot even while syncs write.

use super::super::StoreError;
use super::super::neg_index::{BUCKET_SHIFT, SetSource, bucket_of};
use super::pg_err;
use crate::negentropy::{Item, Sum};
use std::collections::BTreeMap;

/// Count and exact limb sums (signed: removals subtract) of one bucket's change.
#[derive(Default, Clone, Copy)]
pub(super) struct Delta {
    count: i64,
    limbs: [i128; 4],
}

/// Per-bucket changes of one write transaction, ordered by bucket so upserts lock rows in one
/// order everywhere (no deadlock between writers).
#[derive(Default)]
pub(super) struct Deltas(BTreeMap<i64, Delta>);

fn limbs(id: &[u8; 32]) -> [u64; 4] {
    Sum::of(id).0
}

impl Deltas {
    pub(super) fn add(&mut self, t: i64, id: &[u8; 32], sign: i64) {
        let b = bucket_of(t.max(0) as u64) as i64;
        let d = self.0.entry(b).or_default();
        d.count += sign;
        for (acc, l) in d.limbs.iter_mut().zip(limbs(id)) {
            *acc += i128::from(sign) * i128::from(l);
        }
    }

    /// Adds the changes to `neg_buckets` inside `tx`, then drops buckets left empty.
    pub(super) async fn apply(
        self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        let changed: Vec<(i64, Delta)> = self
            .0
            .into_iter()
            .filter(|(_, d)| d.count != 0 || d.limbs != [0; 4])
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let buckets: Vec<i64> = changed.iter().map(|(b, _)| *b).collect();
        let counts: Vec<i64> = changed.iter().map(|(_, d)| d.count).collect();
        let s: Vec<Vec<String>> = (0..4)
            .map(|i| {
                changed
                    .iter()
                    .map(|(_, d)| d.limbs[i].to_string())
                    .collect()
            })
            .collect();
        // ON CONFLICT DO UPDATE takes the row lock and adds to the committed value, so two
        // writers touching one bucket serialize on that row and both deltas land.
        let up = tx
            .prepare_cached(
                "INSERT INTO neg_buckets (bucket, count, s0, s1, s2, s3) \
                 SELECT b, c, x0::numeric, x1::numeric, x2::numeric, x3::numeric \
                 FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], \
                 $6::text[]) AS d(b, c, x0, x1, x2, x3) ORDER BY b \
                 ON CONFLICT (bucket) DO UPDATE SET count = neg_buckets.count + EXCLUDED.count, \
                 s0 = neg_buckets.s0 + EXCLUDED.s0, s1 = neg_buckets.s1 + EXCLUDED.s1, \
                 s2 = neg_buckets.s2 + EXCLUDED.s2, s3 = neg_buckets.s3 + EXCLUDED.s3",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&up, &[&buckets, &counts, &s[0], &s[1], &s[2], &s[3]])
            .await
            .map_err(pg_err)?;
        let gc = tx
            .prepare_cached("DELETE FROM neg_buckets WHERE bucket = ANY($1) AND count = 0")
            .await
            .map_err(pg_err)?;
        tx.execute(&gc, &[&buckets]).await.map_err(pg_err)?;
        Ok(())
    }
}

/// The sum modulo 2^256 of limb sums `s[i]` (each the exact sum of limb `i` of the ids).
pub(super) fn reduce(s: [u128; 4]) -> Sum {
    let mut out = Sum::default();
    for (i, v) in s.into_iter().enumerate() {
        let mut part = [0u64; 4];
        part[i] = v as u64;
        if i + 1 < 4 {
            part[i + 1] = (v >> 64) as u64;
        }
        out.add(&Sum(part));
    }
    out
}

/// Parses the limb sums of a `neg_buckets` row (read as text).
pub(super) fn parse_limbs(row: &tokio_postgres::Row, first: usize) -> Result<Sum, StoreError> {
    let mut s = [0u128; 4];
    for (i, v) in s.iter_mut().enumerate() {
        let text: String = row.try_get(first + i).map_err(pg_err)?;
        *v = text
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("neg_buckets limb sum {text:?}")))?;
    }
    Ok(reduce(s))
}

/// Reads `(created_at, id)` rows into items.
pub(super) fn item_of(row: &tokio_postgres::Row) -> Result<Item, StoreError> {
    let t: i64 = row.try_get(0).map_err(pg_err)?;
    let id: &[u8] = row.try_get(1).map_err(pg_err)?;
    let id = <[u8; 32]>::try_from(id)
        .map_err(|_| StoreError::Corrupt(format!("event id of {} bytes", id.len())))?;
    Ok(Item { t: t as u64, id })
}

/// A session's view: a connection of its own inside one repeatable-read transaction. Its
/// calls run on the blocking pool (see `LocalSession`), so they wait on the runtime's handle.
pub(super) struct PgSource {
    pub(super) client: tokio_postgres::Client,
    pub(super) handle: tokio::runtime::Handle,
}

/// Signed view of a `created_at` bound (the schema stores BIGINT; times past 2^63-1 are never
/// stored).
fn clamp(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

impl SetSource for PgSource {
    fn reads_are_round_trips(&self) -> bool {
        true
    }

    fn buckets(&self, lo: u64, hi: u64) -> Result<Vec<(u64, u64, Sum)>, StoreError> {
        let rows = self
            .handle
            .block_on(self.client.query(
                "SELECT bucket, count, s0::text, s1::text, s2::text, s3::text FROM neg_buckets \
                 WHERE bucket BETWEEN $1 AND $2 ORDER BY bucket",
                &[&clamp(lo), &clamp(hi)],
            ))
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let b: i64 = r.try_get(0).map_err(pg_err)?;
                let c: i64 = r.try_get(1).map_err(pg_err)?;
                Ok((b as u64, c.max(0) as u64, parse_limbs(r, 2)?))
            })
            .collect()
    }

    fn read(&self, lo: u64, hi: u64) -> Result<Vec<Item>, StoreError> {
        let rows = self
            .handle
            .block_on(self.client.query(
                "SELECT created_at, id FROM events WHERE created_at BETWEEN $1 AND $2 \
                 ORDER BY created_at, id",
                &[&clamp(lo), &clamp(hi)],
            ))
            .map_err(pg_err)?;
        rows.iter().map(item_of).collect()
    }
}

/// Bucket counts and sums recomputed from the events, for `orly stats --check`.
pub(super) async fn recount(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<u64, (u64, Sum)>, StoreError> {
    let mut out: BTreeMap<u64, (u64, Sum)> = BTreeMap::new();
    let rows = client
        .query(
            "SELECT created_at >> $1, id FROM events ORDER BY created_at, id",
            &[&(BUCKET_SHIFT as i32)],
        )
        .await
        .map_err(pg_err)?;
    for r in &rows {
        let it = item_of(r)?;
        let e = out.entry(it.t).or_default();
        e.0 += 1;
        e.1.add_id(&it.id);
    }
    Ok(out)
}

/// The stored buckets.
pub(super) async fn stored(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<u64, (u64, Sum)>, StoreError> {
    let rows = client
        .query(
            "SELECT bucket, count, s0::text, s1::text, s2::text, s3::text FROM neg_buckets",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let mut out = BTreeMap::new();
    for r in &rows {
        let b: i64 = r.try_get(0).map_err(pg_err)?;
        let c: i64 = r.try_get(1).map_err(pg_err)?;
        out.insert(b as u64, (c.max(0) as u64, parse_limbs(r, 2)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limb_sums_reduce_to_the_wrapping_sum() {
        let ids: Vec<[u8; 32]> = (0..50u8).map(|i| [0xff - i; 32]).collect();
        let mut want = Sum::default();
        let mut s = [0u128; 4];
        for id in &ids {
            want.add_id(id);
            for (acc, l) in s.iter_mut().zip(limbs(id)) {
                *acc += u128::from(l);
            }
        }
        assert_eq!(reduce(s), want);
        let mut d = Deltas::default();
        d.add(5, &ids[0], 1);
        d.add(5, &ids[0], -1);
        assert!(d.0.values().all(|d| d.count == 0 && d.limbs == [0; 4]));
    }
}
