//! The PostgreSQL engine (`ORLY_DB_TYPE=postgres`): the whole [`Store`] trait over one database
//! that several `orly-relay` and `orly-sync-negentropy` processes share, with reads optionally
//! on a hot standby (`ORLY_POSTGRES_READ_URL`).
//!
//! Why tokio-postgres (with deadpool for the pool and refinery for migrations) rather than sqlx:
//! it is async on the runtime we already run, speaks the binary protocol with arrays (a write
//! batch is a handful of `unnest` statements), takes TLS through a rustls connector we build
//! with the process's one crypto provider (ring), and has no compile-time database access.
//!
//! Layout: `config` (URLs, password file, sslmode), `schema` (migrations), `ingest` (NIP-01
//! writes and what makes them safe under concurrent writers), `query` (filters as SQL), `neg`
//! (the bucket index and negentropy sets), `check` (`orly stats [--check]`), `migrate`
//! (`orly migrate`, fjall to PostgreSQL and back).

mod check;
pub mod config;
mod ingest;
pub mod migrate;
mod neg;
mod query;
mod schema;

pub use config::{PgConfig, PgTarget};

use super::budget::{Budget, Budgeted, DEFAULT_LOADED_ITEMS, Share};
use super::neg_index::IndexedSet;
use super::{EventStream, NegItem, Order, SaveOutcome, Store, StoreError};
use crate::event::{Event, EventId, Filter};
use crate::negentropy::NegStorage;
use std::sync::Arc;

/// Maps a driver error: a lost or refused connection is `Unavailable`, a write on a standby is
/// `Refused` with the reason, anything else `Engine` (the server's message, never the URL).
pub(super) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        return match db.code().code() {
            "25006" => StoreError::Refused(
                "read-only: this PostgreSQL server is a hot standby; writes go to the primary"
                    .into(),
            ),
            "40001" | "40P01" => StoreError::Busy(format!("postgres: {}", db.message())),
            _ => StoreError::Engine(format!("postgres: {}", db.message())),
        };
    }
    if e.is_closed() || e.to_string().contains("connect") {
        return StoreError::Unavailable(format!("postgres: {e}"));
    }
    StoreError::Engine(format!("postgres: {e}"))
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        other => StoreError::Unavailable(format!("postgres pool: {other}")),
    }
}

/// Opens connections to one server, with TLS when the target asks for it.
#[derive(Clone)]
struct Connector {
    target: PgTarget,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    fn new(target: &PgTarget) -> Result<Self, StoreError> {
        let tls = target
            .rustls()?
            .map(tokio_postgres_rustls::MakeRustlsConnect::new);
        Ok(Self {
            target: target.clone(),
            tls,
        })
    }

    /// A connection of its own (its driver task ends when the client is dropped).
    async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        let unreachable = |e: tokio_postgres::Error| {
            StoreError::Unavailable(format!("cannot connect to {}: {e}", self.target))
        };
        let client = match &self.tls {
            Some(tls) => {
                let (c, conn) = self
                    .target
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(unreachable)?;
                tokio::spawn(conn);
                c
            }
            None => {
                let (c, conn) = self
                    .target
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(unreachable)?;
                tokio::spawn(conn);
                c
            }
        };
        Ok(client)
    }

    fn pool(&self, size: usize) -> Result<deadpool_postgres::Pool, StoreError> {
        let mc = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let mgr = match &self.tls {
            Some(tls) => {
                deadpool_postgres::Manager::from_config(self.target.config.clone(), tls.clone(), mc)
            }
            None => deadpool_postgres::Manager::from_config(
                self.target.config.clone(),
                tokio_postgres::NoTls,
                mc,
            ),
        };
        deadpool_postgres::Pool::builder(mgr)
            .max_size(size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Engine(format!("postgres pool: {e}")))
    }
}

/// Connections each pool keeps at most.
const POOL_SIZE: usize = 16;

/// The PostgreSQL-backed store. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    write: deadpool_postgres::Pool,
    read: deadpool_postgres::Pool,
    /// Opens the connections negentropy sessions hold for their snapshot.
    reader: Connector,
    /// The "primary" is a hot standby: reads only, writes refused with the reason.
    read_only: bool,
    budget: Arc<Budget>,
    label: String,
}

impl PgStore {
    /// Connects, applies the schema migrations on the primary (refusing a database whose schema
    /// is newer than this binary's), and checks the standby's schema.
    pub async fn open(cfg: &PgConfig) -> Result<Self, StoreError> {
        let primary = Connector::new(&cfg.primary)?;
        let mut client = primary.connect().await?;
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        if in_recovery {
            schema::check_current(&client).await?;
            tracing::warn!(
                "{} is a hot standby: serving reads only, writes are refused",
                cfg.primary
            );
        } else {
            schema::migrate(&mut client).await?;
        }
        drop(client);
        let reader = match &cfg.read {
            Some(t) => {
                let r = Connector::new(t)?;
                schema::check_current(&r.connect().await?).await?;
                r
            }
            None => primary.clone(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                write: primary.pool(POOL_SIZE)?,
                read: reader.pool(POOL_SIZE)?,
                reader,
                read_only: in_recovery,
                budget: Budget::new(DEFAULT_LOADED_ITEMS),
                label: cfg.to_string(),
            }),
        })
    }

    async fn writer(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.inner.read_only {
            return Err(StoreError::Refused(format!(
                "read-only: {} is a hot standby; writes go to the primary",
                self.inner.label
            )));
        }
        self.inner.write.get().await.map_err(pool_err)
    }

    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.read.get().await.map_err(pool_err)
    }

    /// After a bulk load (`orly import`, `orly migrate`): `VACUUM (ANALYZE)` of the tables a
    /// sync reads, so the next reads find planner statistics (without them a range of the
    /// negentropy set is planned for a few rows and read through a bitmap heap scan and a
    /// sort) and a visibility map (index-only scans without a heap fetch per row) — what
    /// autovacuum would do later, done before the sync that usually follows. On a standby
    /// this is refused like any write.
    pub async fn after_bulk_load(&self) -> Result<(), StoreError> {
        let c = self.writer().await?;
        c.batch_execute("VACUUM (ANALYZE) events, event_tags, neg_buckets, superseded")
            .await
            .map_err(pg_err)
    }

    /// Counts by kind and time bounds (`orly stats`).
    pub async fn stats(&self) -> Result<super::StoreStats, StoreError> {
        check::stats(&**self.reader().await?).await
    }

    /// Every index and the bucket sums checked against the events (`orly stats --check`).
    pub async fn check_integrity(&self) -> Result<super::IntegrityReport, StoreError> {
        check::integrity(&**self.reader().await?).await
    }

    /// The plan PostgreSQL picks for the first page of `filter` (`EXPLAIN`), for operators
    /// checking that their REQs use the indexes.
    pub async fn explain(&self, filter: &Filter, order: Order) -> Result<String, StoreError> {
        let limit = filter
            .limit
            .map_or(1000, |l| i64::try_from(l).unwrap_or(1000));
        let Some(w) = query::page_sql(filter, order, None, limit.min(1000)) else {
            return Ok("(matches nothing: no query)".into());
        };
        let client = self.reader().await?;
        let rows = client
            .query(&format!("EXPLAIN {}", w.sql), &w.refs())
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// Calls `emit` with each matching event in `order` until it returns false.
    pub async fn query_each(
        &self,
        filter: &Filter,
        order: Order,
        mut emit: impl FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        use futures_util::StreamExt;
        let mut events = self.query(filter.clone(), order);
        while let Some(ev) = events.next().await {
            if !emit(ev?) {
                break;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.inner.label)
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn save(&self, events: Vec<Event>) -> Result<Vec<SaveOutcome>, StoreError> {
        let mut client = self.writer().await?;
        ingest::save(&mut client, &events).await
    }

    fn query(&self, filter: Filter, order: Order) -> EventStream {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let s = self.clone();
        tokio::spawn(async move {
            let client = match s.reader().await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if let Err(e) = query::stream(&client, &filter, order, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    async fn get_by_ids(&self, ids: Vec<EventId>) -> Result<Vec<Event>, StoreError> {
        query::by_ids(&**self.reader().await?, &ids).await
    }

    async fn neg_items(&self, filter: Filter) -> Result<Vec<NegItem>, StoreError> {
        query::items(&**self.reader().await?, &filter, usize::MAX).await
    }

    async fn neg_storage(
        &self,
        filter: Filter,
        max_items: usize,
    ) -> Result<Box<dyn NegStorage>, StoreError> {
        if filter.is_time_range_only() && !filter.matches_nothing() {
            let (lo, hi) = (filter.since.unwrap_or(0), filter.until.unwrap_or(u64::MAX));
            // A connection of its own, in one repeatable-read transaction for the session's
            // life: its bucket sums and items are one snapshot, whatever syncs write meanwhile.
            // Dropping the set drops the connection, which ends the transaction.
            let client = self.inner.reader.connect().await?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(pg_err)?;
            let src = neg::PgSource {
                client,
                handle: tokio::runtime::Handle::current(),
            };
            let set =
                tokio::task::spawn_blocking(move || IndexedSet::from_source(Box::new(src), lo, hi))
                    .await
                    .map_err(|e| StoreError::Engine(format!("store task failed: {e}")))??;
            return Ok(Box::new(set));
        }
        let items = query::items(&**self.reader().await?, &filter, max_items).await?;
        let mut share = Share::new(self.inner.budget.clone());
        for _ in 0..items.len() {
            if !share.take_one() {
                return Err(StoreError::Busy(format!(
                    "the negentropy sets open now fill the memory budget ({} items); try \
                     again later",
                    self.inner.budget.limit()
                )));
            }
        }
        let set = crate::negentropy::VecStorage::from_pairs(items);
        Ok(Box::new(Budgeted::new(set, share)))
    }

    async fn count(&self, filter: Filter) -> Result<u64, StoreError> {
        query::count(&**self.reader().await?, &filter).await
    }

    async fn known(&self, ids: Vec<EventId>) -> Result<Vec<bool>, StoreError> {
        // The primary: what a sync is about to write must be judged where it writes.
        let client = if self.inner.read_only {
            self.reader().await?
        } else {
            self.writer().await?
        };
        query::known(&client, &ids).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let c = self.reader().await?;
        c.simple_query("SELECT 1").await.map_err(pg_err)?;
        Ok(())
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        // One statement, so two replicas racing for a free or expired lease are serialized by
        // the primary key: the insert, or the update of a row that is ours or expired, returns
        // the row; a live lease of another holder makes the update's WHERE false, and no row
        // comes back. Times are the database's (now()), never a replica's clock.
        let secs = ttl.as_secs_f64();
        let c = self.writer().await?;
        let rows = c
            .query(
                "INSERT INTO orly_leases (name, holder, expires_at) \
                 VALUES ($1, $2, now() + make_interval(secs => $3)) \
                 ON CONFLICT (name) DO UPDATE \
                 SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                 WHERE orly_leases.holder = EXCLUDED.holder OR orly_leases.expires_at < now() \
                 RETURNING holder",
                &[&name, &holder, &secs],
            )
            .await
            .map_err(pg_err)?;
        Ok(!rows.is_empty())
    }
}
