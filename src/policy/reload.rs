//! Hot reload: one shared current policy, replaced whole when its file changes or on SIGHUP.
//!
//! Owns the file watching and the swap. A bad file never replaces a good policy: the previous
//! one stays in force and the reason is logged, so an edit cannot open or close the gateway by
//! accident. Requests take a snapshot (`Arc<Policy>`) and decide against it alone.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::tasks::{FileWatch, Fingerprints, Stop};

use super::PolicyError;
use super::load::{check_len, parse_policy};
use super::model::Policy;

/// The current policy, shared by every request and replaced by reloads. Clones share state.
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    path: Arc<PathBuf>,
    current: watch::Sender<Arc<Policy>>,
    /// The file's fingerprint when [`PolicyHandle::load`] read it: the watcher starts from it,
    /// so a change made between the load and the watcher's start is not missed.
    loaded: Fingerprints,
}

impl PolicyHandle {
    /// A handle serving `policy`, reloadable from `path`.
    pub fn new(path: impl Into<PathBuf>, policy: Policy) -> Self {
        Self {
            path: Arc::new(path.into()),
            current: watch::Sender::new(Arc::new(policy)),
            loaded: Fingerprints::default(),
        }
    }

    /// Loads `path` for start-up; an error here should stop the process (fail closed).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, PolicyError> {
        let path = path.into();
        // Taken before the read: a change during it is seen as a change (one more reload).
        let loaded = Fingerprints::now(std::slice::from_ref(&path));
        let policy = Policy::load(&path)?;
        Ok(Self {
            loaded,
            ..Self::new(path, policy)
        })
    }

    /// The policy file this handle reloads from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A snapshot of the current policy: one `Arc` clone, no waiting on reloads.
    pub fn current(&self) -> Arc<Policy> {
        self.current.borrow().clone()
    }

    /// A receiver that wakes on every successful reload, for state derived from the policy
    /// (per-admin rate limiters, concurrency semaphores).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.current.subscribe()
    }

    /// Re-reads the file. On success the new policy is current; on error the old one stays
    /// and the reason is logged at `warn` and returned.
    pub async fn reload(&self) -> Result<(), PolicyError> {
        match read_policy(&self.path).await {
            Ok(policy) => {
                let admins = policy.admins().len();
                self.current.send_replace(Arc::new(policy));
                tracing::info!(path = %self.path.display(), admins, "policy reloaded");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    path = %self.path.display(),
                    %error,
                    "policy reload failed; keeping the previous policy"
                );
                Err(error)
            }
        }
    }
}

async fn read_policy(path: &Path) -> Result<Policy, PolicyError> {
    let io = |source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = tokio::fs::metadata(path).await.map_err(io)?.len();
    check_len(path, len)?;
    let text = tokio::fs::read_to_string(path).await.map_err(io)?;
    parse_policy(&text, &path.display().to_string())
}

/// A watcher that reloads `handle` under the rule of [`FileWatch`] (file change, polled every
/// `poll_interval`, or SIGHUP) until `stop` fires. Failed reloads keep the old policy. The SIGHUP
/// handler is installed before this returns; spawn the future (a service owns it in its task
/// set).
pub fn watcher(
    handle: PolicyHandle,
    poll_interval: Duration,
    stop: Stop,
) -> impl Future<Output = ()> + Send + 'static {
    let path = handle.path().to_path_buf();
    if !handle.loaded.all_readable() {
        tracing::warn!(path = %path.display(), "policy file not readable; watching for it");
    }
    let watch = FileWatch::new("policy", vec![path], handle.loaded.clone(), poll_interval);
    watch.run(stop, move || {
        let handle = handle.clone();
        async move {
            // reload() logs its own failure; the old policy stays.
            let _ = handle.reload().await;
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests;
