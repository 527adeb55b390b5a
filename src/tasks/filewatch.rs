//! The one reload rule for files a service reads while it runs (TLS certificates, token keys,
//! the policy): reload when a file's size, modification time or inode changes (polled), and on
//! SIGHUP. A file that cannot be read is not reloaded from: the current version stays, with one
//! warning, until the file is back. A failed reload keeps the current version too; the watcher
//! logs why.

use super::Stop;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::time::MissedTickBehavior;

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    /// Editors that save by rename change the inode even when size and time look the same.
    inode: u64,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

/// The versions of a list of files (`None` for one that cannot be read). Take them right
/// before reading the files at start-up: a change made between that read and the watcher's
/// start is then seen as a change, never taken for the version already loaded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprints(Vec<Option<Fingerprint>>);

impl Fingerprints {
    /// The versions of `paths` now.
    pub fn now(paths: &[PathBuf]) -> Self {
        Self(
            paths
                .iter()
                .map(|p| std::fs::metadata(p).ok().map(|m| Fingerprint::of(&m)))
                .collect(),
        )
    }

    pub(crate) fn all_readable(&self) -> bool {
        self.0.iter().all(Option::is_some)
    }
}

/// Watches some files for one component; see the module comment for the rule.
pub struct FileWatch {
    what: &'static str,
    paths: Vec<PathBuf>,
    last: Fingerprints,
    poll: Duration,
    hangup: Hangup,
}

impl FileWatch {
    /// Watches `paths` (what they are, for the logs: `what`), starting from `loaded`, every
    /// `poll`. The SIGHUP handler is installed before this returns, so a signal sent afterwards
    /// is never lost to the process's default action (terminate).
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        loaded: Fingerprints,
        poll: Duration,
    ) -> Self {
        Self {
            what,
            paths,
            last: loaded,
            poll: poll.max(Duration::from_millis(10)),
            hangup: Hangup::install(what),
        }
    }

    /// Calls `reload` on every change and SIGHUP until `stop` fires. `reload` returns why it
    /// failed; the watcher logs it and goes on.
    pub async fn run<F, Fut>(mut self, stop: Stop, mut reload: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                () = stop.stopped() => return,
                _ = ticks.tick() => false,
                () = self.hangup.recv() => true,
            };
            let now = Fingerprints::now(&self.paths);
            if forced {
                tracing::info!(what = self.what, "SIGHUP: reloading");
            } else if now == self.last {
                continue;
            } else if !now.all_readable() {
                if self.last.all_readable() {
                    tracing::warn!(
                        what = self.what,
                        "a watched file is not readable; keeping the current version"
                    );
                }
                self.last = now;
                continue;
            }
            self.last = now;
            if let Err(e) = reload().await {
                tracing::warn!(
                    what = self.what,
                    "reload failed, keeping the previous version: {e}"
                );
            }
        }
    }
}

/// SIGHUP as a stream; never fires where unsupported or if installation failed.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn install(what: &'static str) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|error| {
                    tracing::warn!(%error, what, "cannot listen for SIGHUP; reloads on file change only");
                })
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        {
            let _ = what;
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
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn wait_for(count: &AtomicUsize, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while count.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} reloads expected, saw {}", count.load(Ordering::SeqCst)));
    }

    /// A change, a vanished file (no reload), its return (a reload), then stop ends the task.
    #[tokio::test]
    async fn reloads_on_change_not_while_a_file_is_missing_and_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        std::fs::write(&a, "one").expect("write");
        let paths = vec![a.clone()];
        let watch = FileWatch::new(
            "test file",
            paths.clone(),
            Fingerprints::now(&paths),
            Duration::from_millis(10),
        );
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Stop::new();
        let task = tokio::spawn({
            let (count, stop) = (count.clone(), stop.clone());
            watch.run(stop, move || {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
        });
        std::fs::write(&a, "two, longer").expect("write");
        wait_for(&count, 1).await;
        std::fs::remove_file(&a).expect("remove");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "reloaded from a missing file"
        );
        std::fs::write(&a, "three").expect("write");
        wait_for(&count, 2).await;
        stop.stop();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the watcher ends at stop")
            .expect("no panic");
    }
}
