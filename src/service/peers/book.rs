//! The managed peer list and each peer's sync state (ORLY's `GetPeers`, `AddPeer`,
//! `RemovePeer`, `GetPeerSyncState`), kept in a state directory so both survive a restart.
//!
//! The file `peers.json` is replaced atomically (written beside, fsynced, renamed, directory
//! fsynced) at every change of the list and after every finished sync. A state reported as
//! `syncing` when the process died is read back as `idle` with the sync's failure noted.

use super::backoff::Backoff;
use crate::sync::Direction;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The state file in the state directory.
pub const STATE_FILE: &str = "peers.json";
const STATE_TMP: &str = "peers.json.tmp";
const STATE_VERSION: u32 = 1;

/// One managed peer: what the background loop syncs with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The relay's URL (checked and normalized by the caller).
    pub url: String,
    /// The peer's own filter (NIP-01 JSON), or `None` for the service's default filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The peer's direction, or `None` for the default (`both`, as ORLY's service syncs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The admin who added it, whose policy every background sync with it is checked
    /// against; `None` for a peer the operator configured (`ORLY_SYNC_NEGENTROPY_PEERS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Peer {
    /// A peer with the service's defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            filter: None,
            direction: None,
            owner: None,
        }
    }

    /// The direction its syncs run in.
    pub fn direction(&self) -> Direction {
        self.direction
            .as_deref()
            .and_then(Direction::parse)
            .unwrap_or(Direction::Both)
    }
}

/// What one background run with a peer did, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRun {
    /// A sync ran and moved this many events (fetched plus sent).
    Moved(u64),
    /// Another replica of the service holds this peer's lease (a store shared by several
    /// services): nothing ran here this time.
    HeldElsewhere,
}

/// What a peer's syncs have done, as ORLY's `PeerSyncState` says it (plus when the next
/// attempt is due).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    /// Last successful sync (Unix seconds; 0: never).
    pub last_sync: i64,
    /// Events moved by this peer's syncs in all (fetched plus sent).
    pub events_synced: i64,
    /// `idle`, `syncing` or `error`.
    pub status: String,
    /// The last failure's reason (URL secrets redacted, bounded), empty after a success.
    pub last_error: String,
    /// Failures since the last success.
    pub consecutive_failures: i32,
    /// When the next background attempt is due (Unix seconds; 0: at once).
    pub next_attempt: i64,
}

/// A peer's status names, as ORLY writes them.
pub mod status {
    /// No sync running, the last one succeeded (or none ran yet).
    pub const IDLE: &str = "idle";
    /// A sync is running.
    pub const SYNCING: &str = "syncing";
    /// The last sync failed; the peer backs off.
    pub const ERROR: &str = "error";
}

/// Why the peer list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// Reading or writing the state file failed.
    #[error("peer state {path}: {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The state file is not what this version writes.
    #[error("peer state {path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    version: u32,
    peers: Vec<SavedPeer>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedPeer {
    #[serde(flatten)]
    peer: Peer,
    #[serde(default)]
    state: PeerState,
}

/// The peers and their states, in URL order, optionally backed by a state directory.
#[derive(Debug, Default)]
pub struct PeerBook {
    dir: Option<PathBuf>,
    peers: BTreeMap<String, (Peer, PeerState)>,
}

impl PeerBook {
    /// A book kept only in memory (no state directory configured).
    pub fn in_memory(initial: impl IntoIterator<Item = Peer>) -> Self {
        let mut b = Self::default();
        for p in initial {
            b.insert(p);
        }
        b
    }

    /// Opens the book in `dir` (created if missing), with the saved peers and states. `initial`
    /// is the operator's list (`ORLY_SYNC_NEGENTROPY_PEERS`, peers without an owner): it is
    /// merged in at every start — its peers missing from the saved list are added, and saved
    /// operator peers no longer in it are dropped — while peers admins added at run time stay
    /// with their states. The result is saved.
    pub fn open(dir: &Path, initial: impl IntoIterator<Item = Peer>) -> Result<Self, BookError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| BookError::Io {
                action,
                path,
                source,
            }
        };
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let path = dir.join(STATE_FILE);
        let mut b = Self {
            dir: Some(dir.to_path_buf()),
            peers: BTreeMap::new(),
        };
        match fs::read(&path) {
            Ok(bytes) => {
                let saved: Saved =
                    serde_json::from_slice(&bytes).map_err(|e| BookError::Format {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if saved.version != STATE_VERSION {
                    return Err(BookError::Format {
                        path,
                        reason: format!(
                            "version {} (this binary reads version {STATE_VERSION})",
                            saved.version
                        ),
                    });
                }
                for SavedPeer { peer, mut state } in saved.peers {
                    if state.status == status::SYNCING {
                        // The process stopped during that sync.
                        state.status = status::ERROR.into();
                        state.last_error =
                            "interrupted: the service stopped during this sync".into();
                        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                        state.next_attempt = 0;
                    }
                    b.peers.insert(peer.url.clone(), (peer, state));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", &path)(e)),
        }
        let initial: Vec<Peer> = initial.into_iter().collect();
        let before = b.peers.len();
        b.peers
            .retain(|url, (p, _)| p.owner.is_some() || initial.iter().any(|i| &i.url == url));
        let mut changed = b.peers.len() != before;
        for p in initial {
            changed |= b.insert(p);
        }
        // Written when there is something to keep: a service without peers leaves no file.
        if changed {
            b.save()?;
        }
        Ok(b)
    }

    fn insert(&mut self, p: Peer) -> bool {
        if self.peers.contains_key(&p.url) {
            return false;
        }
        let state = PeerState {
            status: status::IDLE.into(),
            ..PeerState::default()
        };
        self.peers.insert(p.url.clone(), (p, state));
        true
    }

    /// Adds a peer; false (and nothing changes) when its URL is listed already.
    pub fn add(&mut self, p: Peer) -> Result<bool, BookError> {
        let added = self.insert(p);
        if added {
            self.save()?;
        }
        Ok(added)
    }

    /// Removes a peer; false when it was not listed.
    pub fn remove(&mut self, url: &str) -> Result<bool, BookError> {
        let removed = self.peers.remove(url).is_some();
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    /// The listed URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        self.peers.keys().cloned().collect()
    }

    /// A peer and its state.
    pub fn get(&self, url: &str) -> Option<&(Peer, PeerState)> {
        self.peers.get(url)
    }

    /// Every peer and its state, in URL order.
    pub fn all(&self) -> impl Iterator<Item = &(Peer, PeerState)> {
        self.peers.values()
    }

    /// Peers listed.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when no peer is listed.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Marks a peer's sync as started (saved, so a restart reports it interrupted); false when
    /// it is not listed or syncing already.
    pub fn start(&mut self, url: &str) -> bool {
        match self.peers.get_mut(url) {
            Some((_, st)) if st.status != status::SYNCING => {
                st.status = status::SYNCING.into();
                if let Err(e) = self.save() {
                    tracing::warn!("peer state not saved: {e}");
                }
                true
            }
            _ => false,
        }
    }

    /// Makes a peer due at once (`TriggerSync`); false when it is not listed.
    pub fn make_due(&mut self, url: &str) -> bool {
        match self.peers.get_mut(url) {
            Some((_, st)) => {
                st.next_attempt = 0;
                true
            }
            None => false,
        }
    }

    /// Records a finished sync at `now` and schedules the next one: after `interval` on
    /// success (or when another replica holds the peer), after the backoff's delay on failure.
    /// A peer removed meanwhile stays removed.
    pub fn finish(
        &mut self,
        url: &str,
        now: i64,
        outcome: Result<PeerRun, String>,
        interval_secs: i64,
        backoff: &Backoff,
    ) -> Result<(), BookError> {
        let Some((_, st)) = self.peers.get_mut(url) else {
            return Ok(());
        };
        match outcome {
            Ok(PeerRun::HeldElsewhere) => {
                // Not a failure: this replica waits its turn, its last sync unchanged.
                st.status = status::IDLE.into();
                st.next_attempt = now.saturating_add(interval_secs);
            }
            Ok(PeerRun::Moved(moved)) => {
                st.status = status::IDLE.into();
                st.last_sync = now;
                st.events_synced = st
                    .events_synced
                    .saturating_add(i64::try_from(moved).unwrap_or(i64::MAX));
                st.last_error.clear();
                st.consecutive_failures = 0;
                st.next_attempt = now.saturating_add(interval_secs);
            }
            Err(reason) => {
                st.status = status::ERROR.into();
                st.last_error = reason;
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                let wait = backoff.delay_secs(st.consecutive_failures);
                st.next_attempt = now.saturating_add(wait);
            }
        }
        self.save()
    }

    /// The URLs due at `now` (not syncing), soonest first.
    pub fn due(&self, now: i64) -> Vec<String> {
        let mut due: Vec<(&String, i64)> = self
            .peers
            .iter()
            .filter(|(_, (_, st))| st.status != status::SYNCING && st.next_attempt <= now)
            .map(|(u, (_, st))| (u, st.next_attempt))
            .collect();
        due.sort_by_key(|&(_, at)| at);
        due.into_iter().map(|(u, _)| u.clone()).collect()
    }

    /// When the soonest idle peer is due (Unix seconds), if any is listed.
    pub fn next_due(&self) -> Option<i64> {
        self.peers
            .values()
            .filter(|(_, st)| st.status != status::SYNCING)
            .map(|(_, st)| st.next_attempt)
            .min()
    }

    /// Writes the state file (a no-op for an in-memory book).
    fn save(&self) -> Result<(), BookError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let saved = Saved {
            version: STATE_VERSION,
            peers: self
                .peers
                .values()
                .map(|(p, st)| SavedPeer {
                    peer: p.clone(),
                    state: st.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| BookError::Format {
            path: dir.join(STATE_FILE),
            reason: e.to_string(),
        })?;
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| BookError::Io {
                action,
                path,
                source,
            }
        };
        let tmp = dir.join(STATE_TMP);
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        let path = dir.join(STATE_FILE);
        fs::rename(&tmp, &path).map_err(io("replace", &path))?;
        #[cfg(unix)]
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", dir))?;
        Ok(())
    }
}
