//! Tasks a service owns: a [`Stop`] signal every background task watches, and [`Tasks`], the
//! set that spawns them and joins them all at shutdown, so nothing outlives the process's final
//! write (the audit log's last checkpoint). Also [`FileWatch`], the one reload rule for the files
//! a service reads while it runs (TLS certificates, token keys, the policy).
//!
//! Must not touch: what a task does; this module only starts, stops and joins.

mod filewatch;

pub use filewatch::{FileWatch, Fingerprints};

use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A cancellation signal shared by the tasks of one service: cheap to clone, fired once.
#[derive(Debug, Clone)]
pub struct Stop(Arc<watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl Stop {
    /// A signal not yet fired.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }

    /// Fires the signal: every [`Stop::stopped`] resolves, now and later.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// True once [`Stop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the signal fires (at once if it already has).
    pub async fn stopped(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so this only ends when the value turns true.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

/// Background tasks of one service, each told to end by the set's [`Stop`] and joined by
/// [`Tasks::shutdown`]. A task that ignores the signal is aborted after a grace period rather
/// than left running.
#[derive(Debug, Default)]
pub struct Tasks {
    stop: Stop,
    set: JoinSet<()>,
}

impl Tasks {
    /// An empty set with a fresh signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// The signal the tasks of this set watch.
    pub fn stop_signal(&self) -> Stop {
        self.stop.clone()
    }

    /// Spawns `task`, which must end soon after [`Tasks::stop_signal`] fires.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.set.spawn(task);
    }

    /// Spawns `task`, ended at the signal: for loops with no end of their own.
    pub fn spawn_until_stopped(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.set.spawn(async move {
            tokio::select! {
                () = stop.stopped() => {}
                () = task => {}
            }
        });
    }

    /// Fires the signal and waits for every task to end; one still running after `grace` is
    /// aborted (and then joined). A task that panicked is logged.
    pub async fn shutdown(mut self, grace: std::time::Duration) {
        self.stop.stop();
        let joined = tokio::time::timeout(grace, async {
            while let Some(r) = self.set.join_next().await {
                log_join(r);
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                left = self.set.len(),
                "background tasks did not stop in time: aborted"
            );
            self.set.abort_all();
            while let Some(r) = self.set.join_next().await {
                log_join(r);
            }
        }
    }
}

fn log_join(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r
        && e.is_panic()
    {
        tracing::error!("a background task panicked: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn shutdown_joins_every_task_after_it_finishes_its_work() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Tasks::new();
        for _ in 0..3 {
            let (stop, done) = (tasks.stop_signal(), done.clone());
            tasks.spawn(async move {
                stop.stopped().await;
                // Work after the signal (a final record) is waited for.
                tokio::time::sleep(Duration::from_millis(20)).await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        tasks.spawn_until_stopped(std::future::pending());
        tasks.shutdown(Duration::from_secs(5)).await;
        assert_eq!(done.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_task_ignoring_the_signal_is_aborted_after_the_grace() {
        let mut tasks = Tasks::new();
        tasks.spawn(std::future::pending());
        let started = std::time::Instant::now();
        tasks.shutdown(Duration::from_millis(50)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn stopped_resolves_for_late_watchers() {
        let stop = Stop::new();
        stop.stop();
        assert!(stop.is_stopped());
        tokio::time::timeout(Duration::from_secs(1), stop.stopped())
            .await
            .expect("an already fired signal resolves at once");
    }
}
