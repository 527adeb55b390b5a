//! Hot reload: one shared current policy, replaced whole when its file changes or on SIGHUP.
//!
//! Owns the file watching and the swap. A bad file never replaces a good policy: the previous
//! one stays in force and the reason is logged, so an edit cannot open or close the gateway by
//! accident. Requests take a snapshot (`Arc<Policy>`) and decide against it alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

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
    loaded: Option<Fingerprint>,
}

impl PolicyHandle {
    /// A handle serving `policy`, reloadable from `path`.
    pub fn new(path: impl Into<PathBuf>, policy: Policy) -> Self {
        Self {
            path: Arc::new(path.into()),
            current: watch::Sender::new(Arc::new(policy)),
            loaded: None,
        }
    }

    /// Loads `path` for start-up; an error here should stop the process (fail closed).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, PolicyError> {
        let path = path.into();
        // Taken before the read: a change during it is seen as a change (one more reload).
        let loaded = fingerprint_now(&path).ok();
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

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    /// Editors that save by rename change the inode even when size and time look the same.
    inode: u64,
}

async fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    Ok(fingerprint_of(&tokio::fs::metadata(path).await?))
}

fn fingerprint_now(path: &Path) -> std::io::Result<Fingerprint> {
    Ok(fingerprint_of(&std::fs::metadata(path)?))
}

fn fingerprint_of(meta: &std::fs::Metadata) -> Fingerprint {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    }
}

/// Starts a task that reloads `handle` when its file's size, modification time or inode
/// changes (checked every `poll_interval`) and, on unix, on SIGHUP. Failed reloads keep the
/// old policy. Must be called inside a Tokio runtime; abort the returned handle to stop it.
///
/// The SIGHUP handler is installed before this returns, so a signal sent afterwards is never
/// lost to the process's default action (terminate).
pub fn spawn_watcher(handle: PolicyHandle, poll_interval: Duration) -> JoinHandle<()> {
    let mut hangup = Hangup::install();
    tokio::spawn(async move {
        let path = handle.path().to_path_buf();
        let mut last = match handle.loaded {
            Some(loaded) => Some(loaded),
            None => fingerprint(&path).await.ok(),
        };
        if last.is_none() {
            tracing::warn!(path = %path.display(), "policy file not readable; watching for it");
        }
        let mut ticks = tokio::time::interval(poll_interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    match fingerprint(&path).await {
                        Ok(now) if Some(now) != last => {
                            last = Some(now);
                            // reload() logs its own failure; the old policy stays.
                            let _ = handle.reload().await;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            if last.take().is_some() {
                                tracing::warn!(
                                    path = %path.display(),
                                    %error,
                                    "policy file not readable; keeping the current policy"
                                );
                            }
                        }
                    }
                }
                () = hangup.recv() => {
                    tracing::info!(path = %path.display(), "SIGHUP: reloading policy");
                    last = fingerprint(&path).await.ok();
                    let _ = handle.reload().await;
                }
            }
        }
    })
}

/// SIGHUP as a stream; never fires where unsupported or if installation failed.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|error| {
                    tracing::warn!(%error, "cannot listen for SIGHUP; policy reloads on file change only");
                })
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests;
