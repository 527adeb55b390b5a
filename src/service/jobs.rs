//! The running sync jobs of one `NegentropyService`: each spawned into one set, all told to stop
//! (cancelled, each ending with its final progress and finished record) when the service stops,
//! and joined by [`SyncJobs::drain`] before the caller seals the audit log — so no finished-sync
//! record is written after the final checkpoint, or lost with the process.

use crate::tasks::Stop;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// The registry of running jobs. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct SyncJobs {
    stop: Stop,
    set: Arc<Mutex<JoinSet<()>>>,
}

impl SyncJobs {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires when the service stops: a running job ends, cancelled.
    pub fn stopping(&self) -> Stop {
        self.stop.clone()
    }

    /// Tells every job to stop; new ones are refused from now on. Call when shutdown starts,
    /// so that open `SyncWithPeer` streams end and the server's graceful stop does not wait on
    /// them.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// True once the service is stopping: new syncs are refused.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_stopped()
    }

    /// Runs `job` in the registry. Once the registry is stopping (or drained) the job is handed
    /// back: its caller runs it in place (it ends at once, cancelled, with its records), inside
    /// the request the server's graceful stop waits for.
    pub(crate) fn spawn<F>(&self, job: F) -> Result<(), F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut set = match self.set.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if self.stop.is_stopped() {
            return Err(job);
        }
        // Finished jobs leave their results behind until joined: collect them here.
        while set.try_join_next().is_some() {}
        set.spawn(job);
        Ok(())
    }

    /// Stops every job and waits for each to end (its final message sent and its finished
    /// record written); a job still running after `grace` is aborted.
    pub async fn drain(&self, grace: Duration) {
        let mut set = match self.set.lock() {
            Ok(mut g) => {
                self.stop.stop();
                std::mem::take(&mut *g)
            }
            Err(p) => {
                self.stop.stop();
                std::mem::take(&mut *p.into_inner())
            }
        };
        let joined = tokio::time::timeout(grace, async {
            while let Some(r) = set.join_next().await {
                if let Err(e) = r
                    && e.is_panic()
                {
                    tracing::error!("a sync job panicked: {e}");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(left = set.len(), "sync jobs did not stop in time: aborted");
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn drain_waits_for_a_job_to_finish_after_the_stop() {
        let jobs = SyncJobs::new();
        let recorded = Arc::new(AtomicBool::new(false));
        let (stop, rec) = (jobs.stopping(), recorded.clone());
        let spawned = jobs.spawn(async move {
            stop.stopped().await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            rec.store(true, Ordering::SeqCst);
        });
        assert!(spawned.is_ok());
        jobs.drain(Duration::from_secs(5)).await;
        assert!(
            recorded.load(Ordering::SeqCst),
            "drain returned before the job's last write"
        );
        assert!(jobs.is_stopping());
        assert!(
            jobs.spawn(async {}).is_err(),
            "a drained registry hands jobs back"
        );
    }
}
