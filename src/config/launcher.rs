//! The launcher's typed configuration: every environment variable it reads, parsed and checked
//! once, with every problem reported together. The environment comes through [`EnvSource`] so
//! tests inject values instead of mutating the process environment.
//!
//! Owns: the list of variables ([`ENV_VARS`]), defaults, validation, and finding the service
//! binaries. Must not start anything.

use crate::store::db_auth::{self, DbToken};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every variable the launcher itself reads, with what it means. Anything else in the
/// environment is passed through to the children untouched (e.g. `ORLY_POLICY`, `RUST_LOG`).
pub const ENV_VARS: &[(&str, &str)] = &[
    (
        "ORLY_DATA_DIR",
        "store directory, handed to orly-db (default: orly-db's own, ~/.local/share/ORLY)",
    ),
    (
        "ORLY_DB_LISTEN",
        "orly-db listen address (default 127.0.0.1:50051); also the others' ORLY_GRPC_SERVER",
    ),
    (
        "ORLY_RELAY_LISTEN",
        "orly-relay listen address (default 127.0.0.1:7777)",
    ),
    (
        "ORLY_DB_TYPE",
        "postgres: no orly-db; the relay and sync service share the PostgreSQL database of \
         ORLY_POSTGRES_URL (passed through, with ORLY_POSTGRES_READ_URL and \
         ORLY_POSTGRES_PASSWORD_FILE); anything else: orly-db over ORLY_DATA_DIR",
    ),
    (
        "ORLY_DB_TOKEN",
        "secret orly-db requires of the other services (default: a new random one per run)",
    ),
    (
        "ORLY_LOG_FORMAT",
        "text (default; colours only on a terminal) or json (one object per line) for the \
         launcher's log lines and, passed through, the services'",
    ),
    (
        "ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED",
        "true to also run orly-sync-negentropy (default false)",
    ),
    (
        "ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN",
        "orly-sync-negentropy listen address (default 127.0.0.1:50064)",
    ),
    (
        "ORLY_TLS_CERT",
        "when set, orly-sync-negentropy serves mTLS, so its health probe uses TLS",
    ),
    ("ORLY_TLS_CLIENT_CA", "default for ORLY_LAUNCHER_HEALTH_CA"),
    (
        "ORLY_LAUNCHER_HEALTH_CA",
        "CA (PEM) that verifies orly-sync-negentropy's server certificate in the health probe",
    ),
    (
        "ORLY_LAUNCHER_HEALTH_CERT",
        "client certificate (PEM) for the mTLS health probe; needed when ORLY_TLS_CERT is set",
    ),
    (
        "ORLY_LAUNCHER_HEALTH_KEY",
        "client key (PEM) for the mTLS health probe; needed when ORLY_TLS_CERT is set",
    ),
    (
        "ORLY_LAUNCHER_HEALTH_SERVER_NAME",
        "name checked in the server certificate (default: the probed host)",
    ),
    (
        "ORLY_LAUNCHER_READY_TIMEOUT",
        "seconds a service has to become healthy after each start (default 30)",
    ),
    (
        "ORLY_LAUNCHER_START_ATTEMPTS",
        "starts tried per service at launcher start-up before giving up (default 3)",
    ),
    (
        "ORLY_LAUNCHER_LIVENESS_INTERVAL",
        "seconds between health probes of each running service (default 10)",
    ),
    (
        "ORLY_LAUNCHER_LIVENESS_FAILURES",
        "failed probes in a row after which a running service is killed and restarted (default 3)",
    ),
    (
        "ORLY_LAUNCHER_STOP_TIMEOUT",
        "seconds a service has to exit after SIGTERM before it is killed (default 10)",
    ),
    (
        "PATH",
        "searched for a service binary that is not beside orly-launcher",
    ),
    ("RUST_LOG", "log filter of the launcher's own log lines"),
];

pub use super::env::{EnvSource, ProcessEnv};

/// Everything that was wrong with the configuration, in one error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid launcher configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

/// Client credentials for the mTLS health probe of orly-sync-negentropy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTls {
    /// CA bundle (PEM) that verifies the server certificate.
    pub ca: PathBuf,
    /// Client certificate (PEM), signed by the service's `ORLY_TLS_CLIENT_CA`.
    pub cert: PathBuf,
    /// Client key (PEM). Only its path is held, so `Debug` shows no secret.
    pub key: PathBuf,
    /// Name checked in the server certificate; `None`: the probed host.
    pub server_name: Option<String>,
}

/// The optional sync service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    /// `ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN`.
    pub listen: SocketAddr,
    /// `Some` when the service serves mTLS (`ORLY_TLS_CERT` set).
    pub health_tls: Option<HealthTls>,
}

/// Paths of the service binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// `orly-db`.
    pub db: PathBuf,
    /// `orly-relay`.
    pub relay: PathBuf,
    /// `orly-sync-negentropy` (only looked up when enabled).
    pub sync: Option<PathBuf>,
}

/// The validated launcher configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LauncherConfig {
    /// Store directory for orly-db; `None`: orly-db's default.
    pub data_dir: Option<PathBuf>,
    /// orly-db's listen address (port 0: learned from its announce line, then kept).
    pub db_listen: SocketAddr,
    /// orly-relay's listen address.
    pub relay_listen: SocketAddr,
    /// The sync service, when enabled.
    pub sync: Option<SyncSettings>,
    /// Time each start has to become healthy.
    pub ready_timeout: Duration,
    /// Starts tried per service during launcher start-up.
    pub start_attempts: u32,
    /// Time each service has to exit after SIGTERM.
    pub stop_timeout: Duration,
    /// Pause between health probes of a running service.
    pub liveness_interval: Duration,
    /// Failed probes in a row that get a running service killed and restarted.
    pub liveness_failures: u32,
    /// Where the binaries are.
    pub binaries: Binaries,
    /// The secret orly-db requires of the other services (`ORLY_DB_TOKEN`, else made at start).
    pub db_token: DbToken,
    /// `ORLY_DB_TYPE=postgres`: no orly-db; the services open PostgreSQL themselves.
    pub postgres: bool,
}

/// Default orly-db address (ORLY documents).
pub const DEFAULT_DB_LISTEN: &str = "127.0.0.1:50051";
/// Default orly-relay address.
pub const DEFAULT_RELAY_LISTEN: &str = "127.0.0.1:7777";
/// Default orly-sync-negentropy address (ORLY documents).
pub const DEFAULT_SYNC_LISTEN: &str = "127.0.0.1:50064";

impl LauncherConfig {
    /// Reads and validates the configuration. `exe_dir` is the folder of the launcher's own
    /// executable, searched for the service binaries before `PATH`.
    pub fn from_env<E: EnvSource + ?Sized>(
        env: &E,
        exe_dir: Option<&Path>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut listen = |name: &str, default: &str| {
            let value = env.get(name).unwrap_or_else(|| default.to_string());
            crate::config::parse_listen(name, value.trim()).unwrap_or_else(|e| {
                errors.push(e);
                SocketAddr::from(([127, 0, 0, 1], 0))
            })
        };
        let db_listen = listen("ORLY_DB_LISTEN", DEFAULT_DB_LISTEN);
        let relay_listen = listen("ORLY_RELAY_LISTEN", DEFAULT_RELAY_LISTEN);
        let sync_listen = listen("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN", DEFAULT_SYNC_LISTEN);
        let sync_enabled = parse_bool(env, "ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED", &mut errors);
        let ready_timeout = parse_secs(env, "ORLY_LAUNCHER_READY_TIMEOUT", 30, &mut errors);
        let stop_timeout = parse_secs(env, "ORLY_LAUNCHER_STOP_TIMEOUT", 10, &mut errors);
        let db_token = match env.get(db_auth::TOKEN_ENV) {
            Some(t) if !t.trim().is_empty() => {
                if let Err(e) = db_auth::check_token(t.trim()) {
                    errors.push(e);
                }
                DbToken(t.trim().to_string())
            }
            // One per launcher run: only the services it starts know it.
            _ => DbToken(hex::encode(rand::random::<[u8; 32]>())),
        };
        let postgres = match env.get("ORLY_DB_TYPE").as_deref().map(str::trim) {
            Some("postgres") => {
                if env.get(crate::store::postgres::config::URL_ENV).is_none() {
                    errors.push(
                        "ORLY_DB_TYPE=postgres needs ORLY_POSTGRES_URL=postgres://USER@HOST/DB"
                            .into(),
                    );
                }
                true
            }
            None | Some("" | "fjall" | "grpc") => false,
            Some(other) => {
                errors.push(format!(
                    "ORLY_DB_TYPE must be fjall (orly-db) or postgres, not {other:?}"
                ));
                false
            }
        };
        let start_attempts = parse_count(env, "ORLY_LAUNCHER_START_ATTEMPTS", 3, &mut errors);
        let liveness_interval = parse_secs(env, "ORLY_LAUNCHER_LIVENESS_INTERVAL", 10, &mut errors);
        let liveness_failures = parse_count(env, "ORLY_LAUNCHER_LIVENESS_FAILURES", 3, &mut errors);

        let mut taken: Vec<(&str, SocketAddr)> = vec![("ORLY_DB_LISTEN", db_listen)];
        taken.push(("ORLY_RELAY_LISTEN", relay_listen));
        if sync_enabled {
            taken.push(("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN", sync_listen));
        }
        if !crate::config::is_loopback(&db_listen) {
            errors.push(format!(
                "ORLY_DB_LISTEN: {db_listen} is not a loopback address; orly-db has no \
                 authentication and the launcher's services reach it on loopback"
            ));
        }
        for (i, (a_name, a)) in taken.iter().enumerate() {
            for (b_name, b) in &taken[i + 1..] {
                if a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || unspecified(a, b))
                {
                    errors.push(format!("{a_name} and {b_name} are both {a}"));
                }
            }
        }

        let health_tls = if sync_enabled && env.get("ORLY_TLS_CERT").is_some() {
            health_tls(env, &mut errors)
        } else {
            if sync_enabled && env.get("ORLY_LAUNCHER_HEALTH_CERT").is_some() {
                tracing::warn!(
                    "ORLY_LAUNCHER_HEALTH_CERT is set but ORLY_TLS_CERT is not: \
                     orly-sync-negentropy serves plaintext, the health probe does too"
                );
            }
            None
        };

        let path_var = env.get("PATH");
        let mut find = |name: &str| {
            locate(name, exe_dir, path_var.as_deref()).unwrap_or_else(|| {
                errors.push(format!(
                    "cannot find the {name} binary beside orly-launcher ({}) or on PATH",
                    exe_dir.map_or("unknown folder".into(), |d| d.display().to_string())
                ));
                PathBuf::from(name)
            })
        };
        let binaries = Binaries {
            db: find("orly-db"),
            relay: find("orly-relay"),
            sync: sync_enabled.then(|| find("orly-sync-negentropy")),
        };

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Self {
            data_dir: env.get("ORLY_DATA_DIR").map(PathBuf::from),
            db_listen,
            relay_listen,
            sync: sync_enabled.then_some(SyncSettings {
                listen: sync_listen,
                health_tls,
            }),
            ready_timeout,
            start_attempts,
            stop_timeout,
            liveness_interval,
            liveness_failures,
            binaries,
            db_token,
            postgres,
        })
    }
}

impl fmt::Display for LauncherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = self
            .data_dir
            .as_ref()
            .map_or("(orly-db default)".into(), |d| d.display().to_string());
        write!(
            f,
            "data_dir={dir} db={} relay={} sync=",
            if self.postgres {
                "postgres".to_string()
            } else {
                self.db_listen.to_string()
            },
            self.relay_listen
        )?;
        match &self.sync {
            None => write!(f, "disabled")?,
            Some(s) => write!(
                f,
                "{} (health probe {})",
                s.listen,
                if s.health_tls.is_some() {
                    "mTLS"
                } else {
                    "plaintext"
                }
            )?,
        }
        write!(
            f,
            " ready_timeout={:?} start_attempts={} stop_timeout={:?} liveness={:?}x{}",
            self.ready_timeout,
            self.start_attempts,
            self.stop_timeout,
            self.liveness_interval,
            self.liveness_failures
        )
    }
}

fn unspecified(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.ip().is_unspecified() || b.ip().is_unspecified()
}

fn parse_bool<E: EnvSource + ?Sized>(env: &E, name: &str, errors: &mut Vec<String>) -> bool {
    match env.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                errors.push(format!("{name}: {v:?} is not true or false"));
                false
            }
        },
    }
}

fn parse_count<E: EnvSource + ?Sized>(
    env: &E,
    name: &str,
    default: u32,
    errors: &mut Vec<String>,
) -> u32 {
    let Some(v) = env.get(name) else {
        return default;
    };
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=100).contains(&n) => n,
        _ => {
            errors.push(format!("{name}: {v:?} is not a whole number from 1 to 100"));
            default
        }
    }
}

fn parse_secs<E: EnvSource + ?Sized>(
    env: &E,
    name: &str,
    default: u64,
    errors: &mut Vec<String>,
) -> Duration {
    let Some(v) = env.get(name) else {
        return Duration::from_secs(default);
    };
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Duration::from_secs_f64(s),
        _ => {
            errors.push(format!(
                "{name}: {v:?} is not a number of seconds above 0 and at most 3600"
            ));
            Duration::from_secs(default)
        }
    }
}

fn health_tls<E: EnvSource + ?Sized>(env: &E, errors: &mut Vec<String>) -> Option<HealthTls> {
    let mut file = |name: &str, fallback: Option<&str>| {
        let value = env.get(name).or_else(|| fallback.and_then(|f| env.get(f)));
        match value {
            None => {
                let also = fallback.map_or(String::new(), |f| format!(" (or {f})"));
                errors.push(format!(
                    "{name}{also} is needed: ORLY_TLS_CERT is set, so orly-sync-negentropy serves \
                     mTLS and its health probe needs a client certificate"
                ));
                None
            }
            Some(p) if !Path::new(&p).is_file() => {
                errors.push(format!("{name}: {p} is not a readable file"));
                None
            }
            Some(p) => Some(PathBuf::from(p)),
        }
    };
    let ca = file("ORLY_LAUNCHER_HEALTH_CA", Some("ORLY_TLS_CLIENT_CA"));
    let cert = file("ORLY_LAUNCHER_HEALTH_CERT", None);
    let key = file("ORLY_LAUNCHER_HEALTH_KEY", None);
    Some(HealthTls {
        ca: ca?,
        cert: cert?,
        key: key?,
        server_name: env.get("ORLY_LAUNCHER_HEALTH_SERVER_NAME"),
    })
}

/// Finds `name` as an executable file in `exe_dir`, else in the folders of `path_var`.
pub fn locate(name: &str, exe_dir: Option<&Path>, path_var: Option<&str>) -> Option<PathBuf> {
    let beside = exe_dir.map(|d| d.join(name));
    let on_path = path_var
        .into_iter()
        .flat_map(std::env::split_paths)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name));
    beside.into_iter().chain(on_path).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
#[path = "launcher_tests.rs"]
mod tests;
