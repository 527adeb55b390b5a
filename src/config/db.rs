//! `orly-db`'s flags and variables: the store directory, the listen address (loopback unless
//! `--insecure`) and the secret its clients must present.

use super::env::{ConfigErrors, EnvSource, Problems};
use super::{db_token_from_env, is_loopback, parse_listen};
use crate::store::db_auth::DbToken;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Default listen address (ORLY documents).
pub(super) const DEFAULT_DB_LISTEN: &str = "127.0.0.1:50051";

/// orly-db's flags.
#[derive(clap::Parser, Debug, Clone, Default)]
#[command(
    name = "orly-db",
    version,
    about = "Serves the orly fjall store over gRPC"
)]
pub struct DbArgs {
    /// Store directory [env: ORLY_DATA_DIR; default: ~/.local/share/ORLY]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Listen address [env: ORLY_DB_LISTEN; default: 127.0.0.1:50051]
    #[arg(long)]
    pub listen: Option<String>,
    /// Listen on a non-loopback address although orly-db has no authentication (dangerous:
    /// anyone who reaches the port can read, write and delete events).
    #[arg(long)]
    pub insecure: bool,
}

/// orly-db's validated configuration.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// The store directory.
    pub data_dir: PathBuf,
    /// Where it listens.
    pub listen: SocketAddr,
    /// True when it listens beyond loopback (allowed by `--insecure`): warn loudly.
    pub exposed: bool,
    /// The secret clients present (`ORLY_DB_TOKEN`); `None`: any local user may call.
    pub token: Option<DbToken>,
}

impl DbConfig {
    /// Reads `args` with `env` behind them; every problem is reported.
    pub fn new(args: DbArgs, env: &dyn EnvSource) -> Result<Self, ConfigErrors> {
        let mut p = Problems::new("orly-db");
        let data_dir = match args.data_dir {
            Some(d) => Some(d),
            None => p
                .take(env.var("ORLY_DATA_DIR"))
                .map(|d| d.map_or_else(super::default_data_dir, PathBuf::from)),
        };
        let listen_value = p
            .flag_or_env(args.listen, env, "ORLY_DB_LISTEN")
            .unwrap_or_else(|| DEFAULT_DB_LISTEN.to_string());
        let listen = p.take(parse_listen("ORLY_DB_LISTEN/--listen", &listen_value));
        if let Some(l) = listen
            && !is_loopback(&l)
            && !args.insecure
        {
            p.push(format!(
                "refusing to listen on {l}: orly-db has no authentication, so anyone who \
                 reaches a non-loopback address could read, write and delete events; keep it on \
                 loopback (127.0.0.1 or ::1), or pass --insecure on a network you control"
            ));
        }
        let token = p.take(db_token_from_env(env));
        p.finish(|| {
            let listen = listen?;
            Some(Self {
                data_dir: data_dir?,
                exposed: !is_loopback(&listen),
                listen,
                token: token?,
            })
        })
    }
}
