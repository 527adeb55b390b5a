//! `orly-relay`'s flags and variables: the listen address, the store, and the relay's limits
//! and NIP-42 requirements.

use super::env::{ConfigErrors, EnvSource, Problems};
use super::{StoreConfig, parse_listen};
use crate::relay::RelayConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default listen address.
pub(super) const DEFAULT_RELAY_LISTEN: &str = "127.0.0.1:7777";

/// The relay's flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "orly-relay",
    version,
    about = "Nostr relay over the orly store, serving NIP-77 sync"
)]
pub struct RelayArgs {
    /// Store directory (ORLY_DB_TYPE=fjall) [env: ORLY_DATA_DIR]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Listen address [env: ORLY_RELAY_LISTEN; default: 127.0.0.1:7777]
    #[arg(long)]
    pub listen: Option<String>,
    /// Public ws(s):// URL of this relay, checked in NIP-42 AUTH events.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Largest WebSocket message accepted (advertised in NIP-11).
    #[arg(long, default_value_t = 16 << 20)]
    pub max_message_bytes: usize,
    /// NEG-OPEN filters whose set must be loaded into memory (kinds, authors, tags) and
    /// matches more events than this get NEG-ERR "blocked: ..."; time ranges are answered by
    /// the persistent index and not capped.
    #[arg(long, default_value_t = 2_000_000)]
    pub max_neg_records: usize,
    /// Require NIP-42 AUTH to read (REQ).
    #[arg(long)]
    pub auth_read: bool,
    /// Require NIP-42 AUTH to write (EVENT).
    #[arg(long)]
    pub auth_write: bool,
    /// Require NIP-42 AUTH to sync (NEG-OPEN).
    #[arg(long)]
    pub auth_sync: bool,
    /// Only these pubkeys (hex) pass the AUTH requirements (repeatable; default: any).
    #[arg(long = "auth-pubkey")]
    pub auth_pubkeys: Vec<String>,
    /// Open connections at most (also kept 64 under the open-files limit).
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Open connections per client address at most.
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_ip: usize,
    /// Seconds from TCP accept to the WebSocket upgrade (or the end of a NIP-11 fetch).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub handshake_timeout: f64,
    /// Seconds of silence after which a WebSocket is pinged.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    pub ping_interval: f64,
    /// Seconds without any frame (pongs included) after which a WebSocket is closed.
    #[arg(long, default_value_t = 90.0, value_parser = seconds)]
    pub idle_timeout: f64,
    /// Seconds one message may take from its first byte to its last.
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    pub message_timeout: f64,
    /// Bytes of unfinished messages held over all connections at most; past it, the connection
    /// whose bytes do not fit is closed.
    #[arg(long, default_value_t = 256 << 20)]
    pub max_pending_bytes: usize,
    /// Messages read per second per connection; reading slows down past it (0: no limit).
    #[arg(long, default_value_t = 10_000)]
    pub max_messages_per_second: u32,
}

/// A positive number of seconds (fractions allowed).
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 * 365.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds above 0")),
    }
}

/// The relay's validated configuration.
#[derive(Debug, Clone)]
pub struct RelayServiceConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its store.
    pub store: StoreConfig,
    /// The relay's own settings.
    pub relay: RelayConfig,
}

impl RelayServiceConfig {
    /// Reads `a` with `env` behind it; every problem is reported.
    pub fn new(a: RelayArgs, env: &dyn EnvSource) -> Result<Self, ConfigErrors> {
        let mut p = Problems::new("orly-relay");
        let listen_value = p
            .flag_or_env(a.listen, env, "ORLY_RELAY_LISTEN")
            .unwrap_or_else(|| DEFAULT_RELAY_LISTEN.to_string());
        let listen = p.take(parse_listen("ORLY_RELAY_LISTEN/--listen", &listen_value));
        let store = p.take(StoreConfig::from_env(a.data_dir, env));
        let mut auth_pubkeys = std::collections::HashSet::new();
        for k in &a.auth_pubkeys {
            if let Some(k) =
                p.take(crate::event::decode_hex32(k).map_err(|e| format!("--auth-pubkey {k}: {e}")))
            {
                auth_pubkeys.insert(k);
            }
        }
        let relay = RelayConfig {
            public_url: a.public_url,
            max_message_bytes: a.max_message_bytes,
            max_neg_records: a.max_neg_records,
            auth_read: a.auth_read,
            auth_write: a.auth_write,
            auth_sync: a.auth_sync,
            auth_pubkeys,
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
        p.finish(|| {
            Some(Self {
                listen: listen?,
                store: store?,
                relay,
            })
        })
    }
}
