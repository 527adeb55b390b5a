//! `orly-relay`: a Nostr relay (NIP-01, NIP-11, NIP-42, NIP-77) over the orly store.

use clap::Parser;
use orly::config::{self, StoreConfig};
use orly::relay::{self, RelayConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "orly-relay",
    version,
    about = "Nostr relay over the orly store, serving NIP-77 sync"
)]
struct Args {
    /// Store directory (ORLY_DB_TYPE=fjall) [env: ORLY_DATA_DIR]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address.
    #[arg(long, env = "ORLY_RELAY_LISTEN", default_value = "127.0.0.1:7777")]
    listen: String,
    /// Public ws(s):// URL of this relay, checked in NIP-42 AUTH events.
    #[arg(long)]
    public_url: Option<String>,
    /// Largest WebSocket message accepted (advertised in NIP-11).
    #[arg(long, default_value_t = 16 << 20)]
    max_message_bytes: usize,
    /// NEG-OPEN filters whose set must be loaded into memory (kinds, authors, tags) and
    /// matches more events than this get NEG-ERR "blocked: ..."; time ranges are answered by
    /// the persistent index and not capped.
    #[arg(long, default_value_t = 2_000_000)]
    max_neg_records: usize,
    /// Require NIP-42 AUTH to read (REQ).
    #[arg(long)]
    auth_read: bool,
    /// Require NIP-42 AUTH to write (EVENT).
    #[arg(long)]
    auth_write: bool,
    /// Require NIP-42 AUTH to sync (NEG-OPEN).
    #[arg(long)]
    auth_sync: bool,
    /// Only these pubkeys (hex) pass the AUTH requirements (repeatable; default: any).
    #[arg(long = "auth-pubkey")]
    auth_pubkeys: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    orly::init_crypto();
    let _telemetry = match orly::telemetry::init("orly-relay") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("orly-relay: {e}");
            return ExitCode::from(1);
        }
    };
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orly-relay: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(a: Args) -> anyhow::Result<()> {
    let listen = config::parse_listen("ORLY_RELAY_LISTEN/--listen", &a.listen)
        .map_err(anyhow::Error::msg)?;
    let store_cfg = StoreConfig::from_env(a.data_dir).map_err(anyhow::Error::msg)?;
    let mut pubkeys = std::collections::HashSet::new();
    for p in &a.auth_pubkeys {
        pubkeys.insert(
            orly::event::decode_hex32(p).map_err(|e| anyhow::anyhow!("--auth-pubkey {p}: {e}"))?,
        );
    }
    let cfg = RelayConfig {
        public_url: a.public_url,
        max_message_bytes: a.max_message_bytes,
        max_neg_records: a.max_neg_records,
        auth_read: a.auth_read,
        auth_write: a.auth_write,
        auth_sync: a.auth_sync,
        auth_pubkeys: pubkeys,
        ..RelayConfig::default()
    };
    tracing::info!(store = %store_cfg, ?cfg, "starting orly-relay");
    let store = store_cfg.open().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let handle = relay::serve(listener, store, cfg)?;
    config::keep_alive_on_sighup();
    config::announce("orly-relay", handle.local_addr);
    config::shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
