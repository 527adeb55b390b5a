//! `orly-sync-negentropy`'s flags and variables: the listen address, the store, the NIP-42 key
//! and CA for relays, the security settings, managed peers (ORLY's `ORLY_SYNC_NEGENTROPY_*`
//! variables and our state directory); and `ORLY_SYNC_AUTH_KEY`, read here for both the service
//! and the CLI.

use super::env::{ConfigErrors, EnvSource, Problems};
use super::security::SecurityArgs;
use super::{StoreConfig, parse_listen};
use crate::event::{Filter, Keys};
use crate::gateway::SecurityConfig;
use crate::peer::PeerOptions;
use crate::policy::normalize_peer_url;
use crate::service::SyncDefaults;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The variable holding the hex secret key for NIP-42 AUTH towards relays.
pub(super) const SYNC_AUTH_KEY_ENV: &str = "ORLY_SYNC_AUTH_KEY";

/// Default listen address (ORLY documents).
pub(super) const DEFAULT_SYNC_LISTEN: &str = "127.0.0.1:50064";

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

/// ORLY's variable with the managed peers the service starts with (comma-separated URLs).
pub const PEERS_ENV: &str = "ORLY_SYNC_NEGENTROPY_PEERS";
/// ORLY's variable with the background sync interval.
pub const INTERVAL_ENV: &str = "ORLY_SYNC_NEGENTROPY_INTERVAL";
/// ORLY's variable with the background sync's default filter (NIP-01 JSON).
pub const FILTER_ENV: &str = "ORLY_SYNC_NEGENTROPY_FILTER";
/// ORLY's variable with the idle timeout of sessions held for relays.
pub const SESSION_TIMEOUT_ENV: &str = "ORLY_SYNC_NEGENTROPY_SESSION_TIMEOUT";
/// Ours: where the peer list and states are kept across restarts.
pub const STATE_DIR_ENV: &str = "ORLY_SYNC_NEGENTROPY_STATE_DIR";
/// Ours: how many managed peers sync at once.
pub const PEER_CONCURRENCY_ENV: &str = "ORLY_SYNC_NEGENTROPY_PEER_CONCURRENCY";

/// Managed peers, their background sync, and the sessions held for relays.
#[derive(Debug, Clone)]
pub struct ManagedPeersConfig {
    /// The operator's peers (`ORLY_SYNC_NEGENTROPY_PEERS`), normalized. When there are any,
    /// the background loop runs from start-up.
    pub initial: Vec<String>,
    /// Between a peer's syncs (`ORLY_SYNC_NEGENTROPY_INTERVAL`, default 60 s).
    pub interval: Duration,
    /// The filter of peers that have none of their own (`ORLY_SYNC_NEGENTROPY_FILTER`; default:
    /// every event).
    pub default_filter: Filter,
    /// The peer list and states (`ORLY_SYNC_NEGENTROPY_STATE_DIR`, default
    /// `$XDG_STATE_HOME/orly-sync-negentropy`, else `~/.local/state/orly-sync-negentropy`).
    pub state_dir: PathBuf,
    /// Peers synced at once (`ORLY_SYNC_NEGENTROPY_PEER_CONCURRENCY`, default 4).
    pub max_concurrent: usize,
    /// Idle sessions held for relays are closed after this long
    /// (`ORLY_SYNC_NEGENTROPY_SESSION_TIMEOUT`, default 5 min).
    pub session_timeout: Duration,
}

/// The default state directory: `$XDG_STATE_HOME/orly-sync-negentropy`, else
/// `~/.local/state/orly-sync-negentropy`, else `.orly-sync-negentropy` (no home).
fn default_state_dir(env: &dyn EnvSource) -> Result<PathBuf, String> {
    if let Some(d) = env.var("XDG_STATE_HOME")?.filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("orly-sync-negentropy"));
    }
    Ok(match env.var("HOME")?.filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/state/orly-sync-negentropy"),
        None => PathBuf::from(".orly-sync-negentropy"),
    })
}

/// A duration as ORLY's variables give it: `90` (seconds), or with a unit, `500ms`, `90s`,
/// `5m`, `1h`, `1m30s`.
pub fn parse_duration(name: &str, value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let bad =
        || format!("{name}={value:?}: not a duration (seconds, or e.g. 500ms, 90s, 5m, 1h, 1m30s)");
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = v;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

impl ManagedPeersConfig {
    /// No operator peers, every default, the state kept in `state_dir` (embedding, benches).
    pub fn in_dir(state_dir: PathBuf) -> Self {
        Self {
            initial: Vec::new(),
            interval: Duration::from_secs(60),
            default_filter: Filter::default(),
            state_dir,
            max_concurrent: 4,
            session_timeout: Duration::from_secs(300),
        }
    }

    /// From ORLY's variables and ours; every problem is pushed to `p`.
    fn from_env(env: &dyn EnvSource, p: &mut Problems) -> Option<Self> {
        let mut initial = Vec::new();
        if let Some(list) = p.take(env.var(PEERS_ENV)).flatten() {
            for (i, raw) in list.split(',').map(str::trim).enumerate() {
                if raw.is_empty() {
                    continue;
                }
                match normalize_peer_url(raw) {
                    Ok(u) if !initial.contains(&u.as_str().to_string()) => {
                        initial.push(u.as_str().to_string())
                    }
                    Ok(_) => {}
                    Err(e) => p.push(format!("{PEERS_ENV}: entry {}: {e}", i + 1)),
                }
            }
        }
        let duration =
            |p: &mut Problems, name: &str, default: Duration| match p.take(env.var(name)).flatten()
            {
                None => Some(default),
                Some(v) => p.take(parse_duration(name, &v).and_then(|d| {
                    if d.is_zero() {
                        Err(format!("{name}={v:?}: must be more than zero"))
                    } else {
                        Ok(d)
                    }
                })),
            };
        let interval = duration(p, INTERVAL_ENV, Duration::from_secs(60));
        let session_timeout = duration(p, SESSION_TIMEOUT_ENV, Duration::from_secs(300));
        let default_filter = match p.take(env.var(FILTER_ENV)).flatten() {
            None => Some(Filter::default()),
            Some(json) => {
                p.take(Filter::from_json(&json).map_err(|e| format!("{FILTER_ENV}: {e}")))
            }
        };
        let state_dir = match p.take(env.var(STATE_DIR_ENV)).flatten() {
            Some(d) if !d.trim().is_empty() => Some(PathBuf::from(d)),
            _ => p.take(default_state_dir(env)),
        };
        let max_concurrent = match p.take(env.var(PEER_CONCURRENCY_ENV)).flatten() {
            None => Some(4),
            Some(v) => p.take(match v.trim().parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => Ok(n),
                _ => Err(format!("{PEER_CONCURRENCY_ENV}={v:?}: must be 1 to 256")),
            }),
        };
        Some(Self {
            initial,
            interval: interval?,
            default_filter: default_filter?,
            state_dir: state_dir?,
            max_concurrent: max_concurrent?,
            session_timeout: session_timeout?,
        })
    }
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
    /// Managed peers and sessions held for relays.
    pub peers: ManagedPeersConfig,
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
        let peers = ManagedPeersConfig::from_env(env, &mut p);
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
                peers: peers?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_orly_writes_them() {
        for (v, secs_ms) in [
            ("60", 60_000),
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            ("500ms", 500),
        ] {
            let d = parse_duration("X", v).unwrap();
            assert_eq!(d.as_millis(), secs_ms, "{v}");
        }
        for v in ["", "m", "5x", "-1s", "1.5s", "s5"] {
            assert!(parse_duration("X", v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn managed_peers_from_orly_variables() {
        let env = [
            (
                PEERS_ENV,
                "wss://Relay.Example.com, ws://127.0.0.1:7777/x,,wss://relay.example.com/",
            ),
            (INTERVAL_ENV, "2s"),
            (FILTER_ENV, r#"{"kinds":[1]}"#),
            (SESSION_TIMEOUT_ENV, "1m"),
            (STATE_DIR_ENV, "/tmp/s"),
        ];
        let mut p = Problems::new("t");
        let c = ManagedPeersConfig::from_env(&env, &mut p).unwrap();
        assert_eq!(
            c.initial,
            ["wss://relay.example.com/", "ws://127.0.0.1:7777/x"]
        );
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.session_timeout, Duration::from_secs(60));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.max_concurrent, 4);
        assert!(c.default_filter.kinds.is_some());
        assert!(p.finish(|| Some(())).is_ok());

        let env = [
            (PEERS_ENV, "http://x/"),
            (INTERVAL_ENV, "0"),
            (FILTER_ENV, "{"),
            (HOME_FOR_TEST, "/h"),
        ];
        let mut p = Problems::new("t");
        assert!(ManagedPeersConfig::from_env(&env, &mut p).is_none());
        let e = p.finish(|| Some(())).unwrap_err().to_string();
        for needle in [PEERS_ENV, INTERVAL_ENV, FILTER_ENV] {
            assert!(e.contains(needle), "{e}");
        }

        let mut p = Problems::new("t");
        let c = ManagedPeersConfig::from_env(&[("HOME", "/h")], &mut p).unwrap();
        assert_eq!(
            c.state_dir,
            PathBuf::from("/h/.local/state/orly-sync-negentropy")
        );
        assert!(c.initial.is_empty());
        assert_eq!(c.interval, Duration::from_secs(60));
        assert_eq!(c.session_timeout, Duration::from_secs(300));
    }

    const HOME_FOR_TEST: &str = "HOME";
}
