//! The launcher's lifecycle: start the services in order (orly-db, then orly-relay, then
//! orly-sync-negentropy), each only after the one before is healthy; restart any that exits,
//! with backoff; on SIGTERM/SIGINT stop them in reverse order.
//!
//! Start-up is strict: a service that cannot become healthy is tried a bounded number of times,
//! then everything already started is stopped and the launcher fails naming the service and its
//! address. Once all are up, the supervisor never gives up on a service: it restarts it with
//! exponential backoff (see backoff.rs), forever, until told to stop.
//!
//! Owns: ordering, wiring addresses between services, restart decisions, shutdown order.
//! Must not touch processes directly (child.rs) nor speak any protocol (health.rs).

use super::backoff::Backoff;
use super::child::{RunningChild, ServiceName, ServiceSpec};
use super::config::LauncherConfig;
use super::health::{Probe, dialable};
use super::{LaunchError, StopSignal};
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// Timeouts and limits shared by every service.
#[derive(Debug, Clone, Copy)]
struct Timing {
    ready_timeout: Duration,
    stop_timeout: Duration,
    start_attempts: u32,
    liveness_interval: Duration,
    liveness_failures: u32,
}

/// Why one start did not give a healthy service.
#[derive(Debug)]
enum StartFailure {
    Spawn(std::io::Error),
    Exited {
        status: ExitStatus,
        last_words: String,
    },
    NotReady {
        last_error: String,
    },
}

impl StartFailure {
    /// An exit may be transient (a port still held by a previous run); a spawn error or a
    /// service that runs but never turns healthy will not fix itself by retrying at once.
    fn worth_retrying(&self) -> bool {
        matches!(self, Self::Exited { .. })
    }

    fn describe(&self, timing: &Timing) -> String {
        match self {
            Self::Spawn(e) => format!("cannot run the binary: {e}"),
            Self::Exited { status, last_words } if last_words.is_empty() => {
                format!("it exited ({status}) before becoming healthy")
            }
            Self::Exited { status, last_words } => {
                format!(
                    "it exited ({status}) before becoming healthy; its last words: {last_words}"
                )
            }
            Self::NotReady { last_error } => format!(
                "not healthy within {:?} (ORLY_LAUNCHER_READY_TIMEOUT); last probe: {last_error}",
                timing.ready_timeout
            ),
        }
    }
}

/// A start that did not end with a healthy service.
enum StartError {
    Failed(StartFailure),
    /// A stop signal came first; the process, if one was spawned, still has to be stopped.
    Stopped(Option<Box<RunningChild>>),
}

enum Readiness {
    Ready(SocketAddr),
    Failed(StartFailure),
    Stopped,
}

/// Runs the services until `stop` fires. `Ok` after an orderly shutdown; `Err` when start-up
/// failed (everything started is stopped first).
pub(super) async fn run(cfg: LauncherConfig, mut stop: StopSignal) -> Result<(), LaunchError> {
    let timing = Timing {
        ready_timeout: cfg.ready_timeout,
        stop_timeout: cfg.stop_timeout,
        start_attempts: cfg.start_attempts,
        liveness_interval: cfg.liveness_interval,
        liveness_failures: cfg.liveness_failures,
    };
    let mut started: Vec<(ServiceSpec, RunningChild)> = Vec::new();
    let mut db_addr: Option<SocketAddr> = None;
    for mut spec in plan(&cfg) {
        if let Some(db) = db_addr {
            spec.env
                .push(("ORLY_GRPC_SERVER", dialable(db).to_string()));
        }
        match start_with_attempts(&spec, &timing, &mut stop).await {
            Ok((child, addr)) => {
                // Restarts reuse the address the first start got (matters for port 0), so the
                // others' ORLY_GRPC_SERVER stays right.
                spec.listen = addr;
                if spec.name == ServiceName::Db {
                    db_addr = Some(addr);
                }
                started.push((spec, child));
            }
            Err((StartError::Stopped(child), _)) => {
                note(format_args!("stop signal during start-up"));
                stop_in_reverse(
                    started.into_iter().map(|(_, c)| Some(c)),
                    child.map(|c| *c),
                    &timing,
                )
                .await;
                return Ok(());
            }
            Err((StartError::Failed(f), attempts)) => {
                let error = LaunchError::Start {
                    name: spec.name,
                    addr: spec.listen,
                    attempts,
                    reason: f.describe(&timing),
                };
                note(format_args!(
                    "{error}; stopping the services already started"
                ));
                stop_in_reverse(started.into_iter().map(|(_, c)| Some(c)), None, &timing).await;
                return Err(error);
            }
        }
    }
    note(format_args!("all services ready"));

    let supervisors: Vec<_> = started
        .into_iter()
        .map(|(spec, child)| tokio::spawn(supervise(spec, child, stop.clone(), timing)))
        .collect();
    stop.stopped().await;
    note(format_args!("stopping services in reverse order"));
    let mut children = Vec::new();
    for s in supervisors {
        // Each supervisor returns promptly on stop, handing back the process it runs.
        children.push(s.await.ok().flatten());
    }
    stop_in_reverse(children.into_iter(), None, &timing).await;
    note(format_args!("stopped"));
    Ok(())
}

/// The services to run, in start order, with their environment (the db address is added to
/// the later ones once orly-db has announced it).
fn plan(cfg: &LauncherConfig) -> Vec<ServiceSpec> {
    let token = (crate::store::db_auth::TOKEN_ENV, cfg.db_token.0.clone());
    let mut db_env = vec![token.clone()];
    if let Some(dir) = &cfg.data_dir {
        db_env.push(("ORLY_DATA_DIR", dir.display().to_string()));
    }
    let grpc_store = || vec![("ORLY_DB_TYPE", "grpc".to_string()), token.clone()];
    let mut specs = vec![
        ServiceSpec {
            name: ServiceName::Db,
            binary: cfg.binaries.db.clone(),
            listen_var: "ORLY_DB_LISTEN",
            listen: cfg.db_listen,
            env: db_env,
            env_remove: vec![],
            probe: Probe::Grpc {
                service: crate::service::DB_SERVICE_NAME,
                tls: None,
            },
        },
        ServiceSpec {
            name: ServiceName::Relay,
            binary: cfg.binaries.relay.clone(),
            listen_var: "ORLY_RELAY_LISTEN",
            listen: cfg.relay_listen,
            env: grpc_store(),
            env_remove: vec![],
            probe: Probe::Nip11,
        },
    ];
    if cfg.postgres {
        // The services share PostgreSQL (ORLY_POSTGRES_* pass through): no orly-db to start.
        specs.remove(0);
        specs[0].env = vec![("ORLY_DB_TYPE", "postgres".to_string())];
    }
    if let (Some(sync), Some(binary)) = (&cfg.sync, &cfg.binaries.sync) {
        specs.push(ServiceSpec {
            name: ServiceName::Sync,
            binary: binary.clone(),
            listen_var: "ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN",
            listen: sync.listen,
            env: if cfg.postgres {
                vec![("ORLY_DB_TYPE", "postgres".to_string())]
            } else {
                grpc_store()
            },
            env_remove: vec![],
            probe: Probe::Grpc {
                service: crate::service::SYNC_SERVICE_NAME,
                tls: sync.health_tls.clone(),
            },
        });
    }
    specs
}

/// Start-up: up to `start_attempts` starts, with backoff between them, while the failure is
/// one a retry can fix. The error comes with the number of starts tried.
async fn start_with_attempts(
    spec: &ServiceSpec,
    timing: &Timing,
    stop: &mut StopSignal,
) -> Result<(RunningChild, SocketAddr), (StartError, u32)> {
    let mut backoff = Backoff::default();
    let mut attempt = 1;
    loop {
        match start_once(spec, timing, stop).await {
            Err(StartError::Failed(f)) if f.worth_retrying() && attempt < timing.start_attempts => {
                let delay = backoff.delay_after(Duration::ZERO);
                note(format_args!(
                    "{} failed to start on {} (attempt {attempt} of {}): {}; retrying in {delay:?}",
                    spec.name,
                    spec.listen,
                    timing.start_attempts,
                    f.describe(timing)
                ));
                if stop.sleep(delay).await {
                    return Err((StartError::Stopped(None), attempt));
                }
                attempt += 1;
            }
            other => return other.map_err(|e| (e, attempt)),
        }
    }
}

/// One start: spawn, then wait until healthy. A start that fails is cleaned up here.
async fn start_once(
    spec: &ServiceSpec,
    timing: &Timing,
    stop: &mut StopSignal,
) -> Result<(RunningChild, SocketAddr), StartError> {
    let mut child =
        RunningChild::spawn(spec).map_err(|e| StartError::Failed(StartFailure::Spawn(e)))?;
    note(format_args!("{} started: pid {}", spec.name, child.pid()));
    match wait_ready(&mut child, spec, timing.ready_timeout, stop).await {
        Readiness::Ready(addr) => {
            note(format_args!(
                "{} ready on {addr} (pid {})",
                spec.name,
                child.pid()
            ));
            Ok((child, addr))
        }
        Readiness::Stopped => Err(StartError::Stopped(Some(Box::new(child)))),
        Readiness::Failed(f) => {
            let outcome = child.stop(timing.stop_timeout).await;
            tracing::debug!(service = %spec.name, %outcome, "failed start cleaned up");
            Err(StartError::Failed(f))
        }
    }
}

/// Ready = the child announced "NAME listening on ADDR" and its probe passes on ADDR. Waiting
/// for the announce line first means a foreign server already on a fixed port is never
/// mistaken for ours: our child fails to bind and exits instead.
async fn wait_ready(
    child: &mut RunningChild,
    spec: &ServiceSpec,
    timeout: Duration,
    stop: &mut StopSignal,
) -> Readiness {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("it has not announced its address");
    loop {
        if let Some(status) = child.try_exited() {
            let last_words = child.last_words().await;
            return Readiness::Failed(StartFailure::Exited { status, last_words });
        }
        if let Some(addr) = child.announced() {
            tokio::select! {
                r = spec.probe.check(addr) => match r {
                    Ok(()) => return Readiness::Ready(addr),
                    Err(e) => last_error = e,
                },
                _ = stop.stopped() => return Readiness::Stopped,
            }
        }
        if Instant::now() >= deadline {
            return Readiness::Failed(StartFailure::NotReady { last_error });
        }
        if stop.sleep(PROBE_INTERVAL).await {
            return Readiness::Stopped;
        }
    }
}

/// Why a running service is being replaced.
enum Down {
    Exited(std::io::Result<ExitStatus>),
    /// Alive but failing its health probe that many times in a row (hung, deadlocked, wedged).
    Unhealthy(u32, String),
}

/// Watches one running service, probing its health every `liveness_interval`, and restarts it
/// whenever it exits or fails `liveness_failures` probes in a row, until `stop` fires; then
/// hands back the process it runs (if any) for the ordered shutdown.
async fn supervise(
    spec: ServiceSpec,
    mut child: RunningChild,
    mut stop: StopSignal,
    timing: Timing,
) -> Option<RunningChild> {
    let mut backoff = Backoff::default();
    loop {
        let mut failed = 0;
        let down = loop {
            // Each branch but the probe is cancel-safe, so a probe in flight never delays
            // noticing an exit or the stop signal.
            let probe = async {
                tokio::time::sleep(timing.liveness_interval).await;
                spec.probe.alive(spec.listen).await
            };
            tokio::select! {
                s = child.wait() => break Down::Exited(s),
                _ = stop.stopped() => return Some(child),
                r = probe => match r {
                    Ok(()) => failed = 0,
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(service = %spec.name, failed, "health probe failed: {e}");
                        if failed >= timing.liveness_failures {
                            break Down::Unhealthy(failed, e);
                        }
                    }
                },
            }
        };
        let uptime = child.uptime();
        let how = match down {
            Down::Exited(status) => {
                child.drain_output().await;
                let how = status.map_or_else(|e| format!("wait failed: {e}"), |s| s.to_string());
                format!("exited ({how})")
            }
            Down::Unhealthy(n, last) => {
                let outcome = child.stop(timing.stop_timeout).await;
                format!("failed {n} health probes in a row (last: {last}), so it was {outcome}")
            }
        };
        let mut delay = backoff.delay_after(uptime);
        note(format_args!(
            "{} {how} after {uptime:.1?}; restarting in {delay:?}",
            spec.name
        ));
        child = loop {
            if stop.sleep(delay).await {
                return None;
            }
            match start_once(&spec, &timing, &mut stop).await {
                Ok((c, _)) => break c,
                Err(StartError::Stopped(c)) => return c.map(|c| *c),
                Err(StartError::Failed(f)) => {
                    delay = backoff.delay_after(Duration::ZERO);
                    note(format_args!(
                        "{} restart failed: {}; retrying in {delay:?}",
                        spec.name,
                        f.describe(&timing)
                    ));
                }
            }
        };
    }
}

/// Stops `extra` (a process caught mid-start), then `children` last to first, each with
/// SIGTERM and the stop timeout.
async fn stop_in_reverse(
    children: impl Iterator<Item = Option<RunningChild>>,
    extra: Option<RunningChild>,
    timing: &Timing,
) {
    let all: Vec<RunningChild> = children.flatten().chain(extra).collect();
    for child in all.into_iter().rev() {
        let (name, pid) = (child.name(), child.pid());
        let outcome = child.stop(timing.stop_timeout).await;
        note(format_args!("{name} (pid {pid}) {outcome}"));
    }
}

/// A lifecycle line on stdout, `[orly-launcher] ...`, beside the services' own prefixed lines.
fn note(what: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[orly-launcher] {what}");
    let _ = out.flush();
}
