//! `orly-db`: owns the fjall store and serves it over gRPC (`orlydb.v1.DatabaseService`), so the
//! relay and the sync service can share it.

use clap::Parser;
use orly::config;
use orly::store::FjallStore;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "orly-db",
    version,
    about = "Serves the orly fjall store over gRPC"
)]
struct Args {
    /// Store directory [env: ORLY_DATA_DIR; default: ~/.local/share/ORLY]
    #[arg(long, env = "ORLY_DATA_DIR", hide_env = true)]
    data_dir: Option<PathBuf>,
    /// Listen address.
    #[arg(long, env = "ORLY_DB_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// Listen on a non-loopback address although orly-db has no authentication (dangerous:
    /// anyone who reaches the port can read, write and delete events).
    #[arg(long)]
    insecure: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    orly::init_crypto();
    let _telemetry = match orly::telemetry::init("orly-db") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("orly-db: {e}");
            return ExitCode::from(1);
        }
    };
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orly-db: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(a: Args) -> anyhow::Result<()> {
    let listen =
        config::parse_listen("ORLY_DB_LISTEN/--listen", &a.listen).map_err(anyhow::Error::msg)?;
    if !config::is_loopback(&listen) {
        if !a.insecure {
            anyhow::bail!(
                "refusing to listen on {listen}: orly-db has no authentication, so anyone who \
                 reaches a non-loopback address could read, write and delete events; keep it on \
                 loopback (127.0.0.1 or ::1), or pass --insecure on a network you control"
            );
        }
        tracing::warn!(
            "--insecure: orly-db has no authentication and listens on {listen}, a non-loopback \
             address; anyone who reaches it can read, write and delete events"
        );
    }
    let token = config::db_token_from_env().map_err(anyhow::Error::msg)?;
    if token.is_none() {
        tracing::warn!(
            "ORLY_DB_TOKEN not set: any local user who can reach {listen} can read, write and \
             delete events"
        );
    }
    let dir = a.data_dir.unwrap_or_else(orly::cli::default_data_dir);
    tracing::info!(data_dir = %dir.display(), %listen, "starting orly-db");
    let store = FjallStore::open(&dir)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    config::keep_alive_on_sighup();
    config::announce("orly-db", listener.local_addr()?);
    orly::server::serve_db(
        listener,
        Arc::new(store.clone()),
        token,
        config::shutdown_signal(),
    )
    .await?;
    store.close_at_stop()?;
    tracing::info!("stopped");
    Ok(())
}
