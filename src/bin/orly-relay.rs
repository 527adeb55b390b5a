//! `orly-relay`: a Nostr relay (NIP-01, NIP-11, NIP-42, NIP-77) over the orly store.

use clap::Parser;
use orly::config::{self, StoreConfig};
use orly::relay::{self, RelayConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Open connections at most (also kept 64 under the open-files limit).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Open connections per client address at most.
    #[arg(long, default_value_t = 64)]
    max_connections_per_ip: usize,
    /// Seconds from TCP accept to the WebSocket upgrade (or the end of a NIP-11 fetch).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    handshake_timeout: f64,
    /// Seconds of silence after which a WebSocket is pinged.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    ping_interval: f64,
    /// Seconds without any frame (pongs included) after which a WebSocket is closed.
    #[arg(long, default_value_t = 90.0, value_parser = seconds)]
    idle_timeout: f64,
    /// Seconds one message may take from its first byte to its last.
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    message_timeout: f64,
    /// Bytes of unfinished messages held over all connections at most; past it, the connection
    /// whose bytes do not fit is closed.
    #[arg(long, default_value_t = 256 << 20)]
    max_pending_bytes: usize,
    /// Messages read per second per connection; reading slows down past it (0: no limit).
    #[arg(long, default_value_t = 10_000)]
    max_messages_per_second: u32,
}

/// A positive number of seconds (fractions allowed).
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 * 365.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds above 0")),
    }
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
        max_connections: a.max_connections.max(1),
        max_connections_per_ip: a.max_connections_per_ip.max(1),
        handshake_timeout: Duration::from_secs_f64(a.handshake_timeout),
        ping_interval: Duration::from_secs_f64(a.ping_interval),
        idle_timeout: Duration::from_secs_f64(a.idle_timeout),
        message_timeout: Duration::from_secs_f64(a.message_timeout),
        max_pending_bytes: a.max_pending_bytes,
        max_messages_per_second: a.max_messages_per_second,
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
