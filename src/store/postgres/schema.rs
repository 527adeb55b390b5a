//! The schema as versioned migrations (refinery, SQL files in `migrations/`), applied at start.
//! A database whose schema is newer than this binary knows is refused before anything runs, and
//! two processes starting at once take turns through a session advisory lock.

use super::super::StoreError;
use super::pg_err;

refinery::embed_migrations!("src/store/postgres/migrations");

/// The history table refinery keeps.
const HISTORY: &str = "orly_schema_history";
/// Advisory lock key held while migrating (any constant unique to orly).
const MIGRATE_LOCK: i64 = 0x6f72_6c79_6d69_6772;

/// The newest schema version this binary knows.
pub(super) fn known_version() -> i64 {
    migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// The newest applied schema version (0 on an empty database).
pub(super) async fn applied_version(client: &tokio_postgres::Client) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY])
        .await
        .map_err(pg_err)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one(&format!("SELECT max(version) FROM {HISTORY}"), &[])
        .await
        .map_err(pg_err)?
        .get(0);
    Ok(v.map_or(0, i64::from))
}

fn refuse_newer(v: i64) -> Result<(), StoreError> {
    let known = known_version();
    if v > known {
        return Err(StoreError::Engine(format!(
            "the PostgreSQL schema is version {v}, written by a newer orly; this one knows up to \
             version {known}"
        )));
    }
    Ok(())
}

/// Applies the migrations this database lacks (on the primary).
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    // A session lock: a second process starting now waits here, then finds nothing to do.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(pg_err)?;
    let res = async {
        refuse_newer(applied_version(client).await?)?;
        let mut runner = migrations::runner();
        runner.set_migration_table_name(HISTORY);
        runner
            .set_grouped(true)
            .run_async(client)
            .await
            .map_err(|e| StoreError::Engine(format!("schema migration failed: {e}")))?;
        Ok(())
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(pg_err)?;
    res
}

/// On a standby (which cannot migrate): the schema must be exactly the one this binary knows.
pub(super) async fn check_current(client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let v = applied_version(client).await?;
    refuse_newer(v)?;
    if v < known_version() {
        return Err(StoreError::Engine(format!(
            "the PostgreSQL schema on this standby is version {v}, this orly needs {}: start \
             orly against the primary first, which migrates it",
            known_version()
        )));
    }
    Ok(())
}
