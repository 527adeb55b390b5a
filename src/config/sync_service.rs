//! `orly-sync-negentropy`'s flags and variables: the listen address, the store, the NIP-42 key
//! and CA for relays, and the security settings; and `ORLY_SYNC_AUTH_KEY`, read here for both
//! the service and the CLI.

use super::env::{ConfigErrors, EnvSource, Problems};
use super::security::SecurityArgs;
use super::{StoreConfig, parse_listen};
use crate::event::Keys;
use crate::gateway::SecurityConfig;
use crate::peer::PeerOptions;
use crate::service::SyncDefaults;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The variable holding the hex secret key for NIP-42 AUTH towards relays.
pub const SYNC_AUTH_KEY_ENV: &str = "ORLY_SYNC_AUTH_KEY";

/// Default listen address (ORLY documents).
pub const DEFAULT_SYNC_LISTEN: &str = "127.0.0.1:50064";

/// The NIP-42 key: from `file` when given (the CLI's `--auth-key-file`), else from
/// `ORLY_SYNC_AUTH_KEY` (the hex key itself); `None` when neither is set.
pub fn sync_auth_key(
    file: Option<&std::path::Path>,
    env: &dyn EnvSource,
) -> Result<Option<Keys>, String> {
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        return Keys::from_hex(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", f.display()));
    }
    match env.var(SYNC_AUTH_KEY_ENV)? {
        Some(hex) => Keys::from_hex(&hex)
            .map(Some)
            .map_err(|e| format!("{SYNC_AUTH_KEY_ENV}: {e}")),
        None => Ok(None),
    }
}

/// The service's flags.
#[derive(clap::Parser, Debug, Clone, Default)]
#[command(
    name = "orly-sync-negentropy",
    version,
    about = "gRPC service running NIP-77 syncs on the orly store"
)]
pub struct SyncServiceArgs {
    /// Listen address [env: ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN, or ORLY's ORLY_SYNC_NEGENTROPY_LISTEN;
    /// default: 127.0.0.1:50064]
    #[arg(long)]
    pub listen: Option<String>,
    /// Store directory when ORLY_DB_TYPE=fjall (default) [env: ORLY_DATA_DIR]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Extra CA (PEM) trusted for wss:// relays.
    #[arg(long)]
    pub peer_ca: Option<PathBuf>,
    /// Serve without TLS and client authentication on a non-loopback address (dangerous).
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// The service's validated configuration.
#[derive(Debug, Clone)]
pub struct SyncServiceConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its store.
    pub store: StoreConfig,
    /// Defaults of every sync it runs (relay CA, NIP-42 key).
    pub defaults: SyncDefaults,
    /// `None`: plaintext (loopback, or `--insecure`).
    pub security: Option<SecurityConfig>,
    /// The security settings as given (paths only), for the start-up log line.
    pub security_args: SecurityArgs,
}

impl SyncServiceConfig {
    /// Reads `args` with `env` behind them; every problem is reported.
    pub fn new(args: SyncServiceArgs, env: &dyn EnvSource) -> Result<Self, ConfigErrors> {
        let mut p = Problems::new("orly-sync-negentropy");
        let listen_value = p
            .flag_or_env(args.listen, env, "ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN")
            // ORLY's name for the setting, when neither the flag nor ours is given.
            .or_else(|| p.flag_or_env(None, env, "ORLY_SYNC_NEGENTROPY_LISTEN"))
            .unwrap_or_else(|| DEFAULT_SYNC_LISTEN.to_string());
        let listen = p.take(parse_listen(
            "ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN/--listen",
            &listen_value,
        ));
        let store = p.take(StoreConfig::from_env(args.data_dir, env));
        let auth_keys = p.take(sync_auth_key(None, env));
        let mut errors = Vec::new();
        let security_args = args.security.merged(env, &mut errors);
        for e in errors {
            p.push(e);
        }
        let security = listen.and_then(|l| p.take(security_args.validate(&l, args.insecure)));
        p.finish(|| {
            Some(Self {
                listen: listen?,
                store: store?,
                defaults: SyncDefaults {
                    peer: PeerOptions {
                        ca_file: args.peer_ca,
                        auth_keys: auth_keys?,
                        ..Default::default()
                    },
                },
                security: security?,
                security_args,
            })
        })
    }
}
