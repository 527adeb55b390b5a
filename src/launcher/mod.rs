//! Supervision (`orly-launcher`): runs orly-db, then orly-relay and, when enabled,
//! orly-sync-negentropy, wired to the db over gRPC; checks readiness by gRPC health (NIP-11 for
//! the relay), restarts a service that exits with exponential backoff, and on SIGTERM/SIGINT
//! stops them in reverse order (SIGTERM, timeout, then SIGKILL).
//!
//! The pieces: `config` (`crate::config::launcher`: every variable read, validated once),
//! `child` (one process and its output), `health` (readiness probes), `backoff` (restart
//! pacing), `supervisor` (order, restarts, shutdown). This module must not depend on the gateway or the services' internals:
//! it runs them as separate binaries and talks to them only through their public protocols.

mod backoff;
mod child;
pub use crate::config::launcher as config;
mod health;
mod supervisor;

pub use backoff::Backoff;
pub use child::{ServiceName, parse_announce};
pub use config::{ConfigErrors, ENV_VARS, EnvSource, LauncherConfig, ProcessEnv};
pub use health::Probe;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// Why the launcher stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A service did not become healthy at start-up.
    #[error("{name} failed to start on {addr} ({attempts} attempt(s)): {reason}")]
    Start {
        /// The service.
        name: ServiceName,
        /// Its configured listen address.
        addr: SocketAddr,
        /// How many starts were tried.
        attempts: u32,
        /// What went wrong on the last one.
        reason: String,
    },
}

/// Runs the services described by `cfg` until SIGTERM or SIGINT, then stops them in reverse
/// order. `Ok` after an orderly shutdown, `Err` if start-up failed (after stopping whatever
/// had started).
pub async fn run(cfg: LauncherConfig) -> Result<(), LaunchError> {
    let stop = StopSignal::on_signals().map_err(LaunchError::Signals)?;
    supervisor::run(cfg, stop).await
}

/// Runs the services until `stop` fires (for embedding and tests; [`run`] uses the signals).
pub async fn run_until(cfg: LauncherConfig, stop: StopSignal) -> Result<(), LaunchError> {
    supervisor::run(cfg, stop).await
}

/// The launcher's "time to stop" flag, shared by every task that waits on something.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// A flag raised by the returned sender.
    pub fn manual() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// A flag raised by the first SIGTERM or SIGINT. The handlers are installed before this
    /// returns, so a signal arriving during start-up is not lost.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, stop) = Self::manual();
        tokio::spawn(async move {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!("{which} received: stopping");
            let _ = tx.send(true);
            // Keep the sender: a dropped one would read as "never stopping".
            std::future::pending::<()>().await;
        });
        Ok(stop)
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the flag is raised (never, if its sender is gone unraised).
    pub async fn stopped(&mut self) {
        if self.0.wait_for(|raised| *raised).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Sleeps for `d`; `true` if the flag was raised first.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_raised(),
            _ = self.stopped() => true,
        }
    }
}
