//! Typed configuration of the binaries: every flag and environment variable they read, parsed
//! here through an injected environment ([`EnvSource`]) and validated once at start-up, with
//! every problem reported together ([`ConfigErrors`]). Also where the store is (`ORLY_DB_TYPE`,
//! `ORLY_DATA_DIR`, `ORLY_GRPC_SERVER`, `ORLY_POSTGRES_*`) and how to open it, and the process plumbing every
//! service shares (signals, the announce line).
//!
//! Must not start anything: binaries build their servers from what this module returns.

mod cli;
mod db;
mod env;
pub mod launcher;
mod relay;
mod security;
mod sync_service;
#[cfg(test)]
mod tests;

pub use cli::{
    AuditCmd, CertsCmd, Cli, ClientArgs, Cmd, DataDir, PeersCmd, ServiceArgs, SyncArgs, SyncsCmd,
    TokenCmd,
};
pub use db::{DbArgs, DbConfig};
pub use env::{ConfigErrors, EnvSource, Problems, ProcessEnv};
pub use relay::{RelayArgs, RelayServiceConfig};
pub use security::SecurityArgs;
pub use sync_service::{
    FILTER_ENV, INTERVAL_ENV, ManagedPeersConfig, PEER_CONCURRENCY_ENV, PEERS_ENV,
    SESSION_TIMEOUT_ENV, STATE_DIR_ENV, SyncServiceArgs, SyncServiceConfig, parse_duration,
    sync_auth_key,
};

use crate::store::db_auth::{DbToken, TOKEN_ENV, check_token};
use crate::store::postgres::PgConfig;
use crate::store::{FjallStore, Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

/// Which store a service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded fjall store in this directory (`ORLY_DB_TYPE=fjall`, the default).
    Fjall(PathBuf),
    /// The `orly-db` service at this address (`ORLY_DB_TYPE=grpc`, `ORLY_GRPC_SERVER`), with its
    /// secret (`ORLY_DB_TOKEN`) when set.
    Grpc(String, Option<DbToken>),
    /// PostgreSQL (`ORLY_DB_TYPE=postgres`, `ORLY_POSTGRES_URL`, `ORLY_POSTGRES_READ_URL`,
    /// `ORLY_POSTGRES_PASSWORD_FILE`).
    Postgres(Box<PgConfig>),
}

/// orly-db's secret from `ORLY_DB_TOKEN`: `None` when unset or empty.
pub fn db_token_from_env(env: &dyn EnvSource) -> Result<Option<DbToken>, String> {
    match env.var(TOKEN_ENV)? {
        None => Ok(None),
        Some(t) => check_token(t.trim()).map(|()| Some(DbToken(t.trim().to_string()))),
    }
}

/// Our variable `ours`, or ORLY's name for the same setting (`orly_name`, accepted so an ORLY
/// deployment's env file works unchanged). Both set to different values is an error.
pub fn env_aliased(
    env: &dyn EnvSource,
    ours: &str,
    orly_name: &str,
) -> Result<Option<String>, String> {
    let read = |k: &str| -> Result<Option<String>, String> {
        Ok(env
            .var(k)?
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty()))
    };
    match (read(ours)?, read(orly_name)?) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "{ours}={a:?} and its alias {orly_name}={b:?} disagree: set one"
        )),
        (a, b) => Ok(a.or(b)),
    }
}

impl StoreConfig {
    /// From `ORLY_DB_TYPE`, `ORLY_DATA_DIR` (or `data_dir`) and `ORLY_GRPC_SERVER`.
    pub fn from_env(data_dir: Option<PathBuf>, env: &dyn EnvSource) -> Result<Self, String> {
        let kind = env_aliased(env, "ORLY_DB_TYPE", "ORLY_SYNC_NEGENTROPY_DB_TYPE")?
            .unwrap_or_else(|| "fjall".into());
        match kind.as_str() {
            "fjall" => Ok(Self::Fjall(match data_dir {
                Some(d) => d,
                None => env
                    .var("ORLY_DATA_DIR")?
                    .map_or_else(default_data_dir, PathBuf::from),
            })),
            "grpc" => match env_aliased(env, "ORLY_GRPC_SERVER", "ORLY_SYNC_NEGENTROPY_DB_SERVER")?
            {
                Some(addr) => Ok(Self::Grpc(addr.trim().to_string(), db_token_from_env(env)?)),
                _ => Err(
                    "ORLY_DB_TYPE=grpc needs ORLY_GRPC_SERVER=HOST:PORT (the orly-db address)"
                        .into(),
                ),
            },
            "postgres" => Ok(Self::Postgres(Box::new(PgConfig::from_vars(|n| {
                env.var(n)
            })?))),
            other => Err(format!(
                "ORLY_DB_TYPE must be fjall, grpc or postgres, not {other:?}"
            )),
        }
    }

    /// Opens the store.
    pub async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            Self::Fjall(dir) => Ok(Arc::new(FjallStore::open(dir)?)),
            Self::Grpc(addr, token) => Ok(Arc::new(
                crate::store::RemoteStore::connect(addr, token.as_ref()).await?,
            )),
            Self::Postgres(cfg) => Ok(Arc::new(crate::store::PgStore::open(cfg).await?)),
        }
    }

    /// The PostgreSQL settings when `ORLY_DB_TYPE=postgres` (the `orly` store commands use
    /// PostgreSQL then, fjall in `--data-dir` otherwise).
    pub fn postgres_from_env(env: &dyn EnvSource) -> Result<Option<PgConfig>, String> {
        match env_aliased(env, "ORLY_DB_TYPE", "ORLY_SYNC_NEGENTROPY_DB_TYPE")?.as_deref() {
            Some("postgres") => PgConfig::from_vars(|n| env.var(n)).map(Some),
            _ => Ok(None),
        }
    }
}

impl std::fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fjall(d) => write!(f, "fjall at {}", d.display()),
            Self::Grpc(a, _) => write!(f, "orly-db at {a}"),
            Self::Postgres(c) => write!(f, "{c}"),
        }
    }
}

pub use crate::telemetry::DEFAULT_LOG_FILTER;

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {},
                    _ = i.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// True for 127.0.0.0/8 and ::1.
pub fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Parses a listen address (HOST:PORT), naming the variable or flag it came from on error.
pub fn parse_listen(what: &str, value: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    value
        .to_socket_addrs()
        .map_err(|e| format!("{what}: {value:?} is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{what}: {value:?} resolves to no address"))
}

/// Prints the bound address on stdout as the first line, so scripts and tests that start a
/// service on port 0 learn where it listens.
pub fn announce(name: &str, addr: std::net::SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{name} listening on {addr}");
    let _ = out.flush();
}

/// Installs a SIGHUP handler for the life of the process, so a `systemctl reload` (or any
/// SIGHUP) never kills a service: without a handler the default action is to exit. Components
/// that reload on SIGHUP register their own listeners as well. Call before announcing.
pub fn keep_alive_on_sighup() {
    #[cfg(unix)]
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received");
            }
        });
    }
}

/// `--data-dir`, else `$ORLY_DATA_DIR` (clap reads it), else `~/.local/share/ORLY`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/ORLY"),
        None => PathBuf::from(".orly-data"),
    }
}

/// How the process logs and exports: `ORLY_LOG_FORMAT` (`text` or `json`), `RUST_LOG` and
/// `OTEL_EXPORTER_OTLP_ENDPOINT`. Fails on a bad `ORLY_LOG_FORMAT`, before anything is logged.
pub fn telemetry_settings(
    env: &dyn EnvSource,
) -> Result<crate::telemetry::TelemetrySettings, String> {
    let format =
        crate::telemetry::LogFormat::parse(env.var(crate::telemetry::LOG_FORMAT_ENV)?.as_deref())?;
    Ok(crate::telemetry::TelemetrySettings {
        format,
        filter: env.var("RUST_LOG")?,
        otlp_endpoint: env.var("OTEL_EXPORTER_OTLP_ENDPOINT")?,
    })
}
