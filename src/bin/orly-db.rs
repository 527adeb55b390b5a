//! `orly-db`: owns the fjall store and serves it over gRPC (`orlydb.v1.DatabaseService`), so the
//! relay and the sync service can share it. Flags and variables are read in `orly::config`.

use clap::Parser;
use orly::config::{self, DbArgs, DbConfig, ProcessEnv};
use orly::store::FjallStore;
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main]
async fn main() -> ExitCode {
    orly::init_crypto();
    let _telemetry = match orly::config::telemetry_settings(&orly::config::ProcessEnv) {
        Ok(settings) => orly::telemetry::init("orly-db", &settings),
        Err(e) => {
            eprintln!("orly-db: {e}");
            return ExitCode::from(1);
        }
    };
    let run = async {
        let cfg = DbConfig::new(DbArgs::parse(), &ProcessEnv)?;
        run(cfg).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orly-db: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cfg: DbConfig) -> anyhow::Result<()> {
    let listen = cfg.listen;
    if cfg.exposed {
        tracing::warn!(
            "--insecure: orly-db has no authentication and listens on {listen}, a non-loopback \
             address; anyone who reaches it can read, write and delete events"
        );
    }
    if cfg.token.is_none() {
        tracing::warn!(
            "ORLY_DB_TOKEN not set: any local user who can reach {listen} can read, write and \
             delete events"
        );
    }
    tracing::info!(data_dir = %cfg.data_dir.display(), %listen, "starting orly-db");
    let store = FjallStore::open(&cfg.data_dir)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    config::keep_alive_on_sighup();
    config::announce("orly-db", listener.local_addr()?);
    orly::server::serve_db(
        listener,
        Arc::new(store.clone()),
        cfg.token,
        config::shutdown_signal(),
    )
    .await?;
    store.close_at_stop()?;
    tracing::info!("stopped");
    Ok(())
}
