//! NIP-77 sessions held for a relay that hands its WebSocket clients' `NEG-OPEN`, `NEG-MSG` and
//! `NEG-CLOSE` to this service (ORLY's `HandleNegOpen`, `HandleNegMsg` and `HandleNegClose`,
//! listed by `ListSessions`, closed by `CloseSession`).
//!
//! This service answers as the relay would: it is the responder, over the store's negentropy
//! sessions (so the persistent index serves whole-store and time-range sets, and loaded sets
//! share the store's memory budget), with orly-relay's caps — sessions per client connection,
//! records per loaded set, the frame limit — and an idle expiry. A session is keyed by the
//! relay's connection id and the client's subscription id; opening a key again replaces its
//! session, as NIP-77 says. Errors carry NIP-01 reason prefixes, ready for the relay's
//! `NEG-ERR`; after one, the session is gone.
//!
//! A session is taken out of the table while a step runs on it and put back after, so a slow
//! step never holds the table's lock; a second message for the same session meanwhile is
//! refused as busy (a client waits for each reply before sending the next message).

use super::unix_now;
use crate::event::Filter;
use crate::event::wire::Prefix;
use crate::negentropy::{NegError, PROTOCOL_VERSION, check_message, fingerprint_ranges};
use crate::store::{NegSession, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest subscription id accepted (NIP-01 relays commonly allow 64 characters).
pub const MAX_SUBSCRIPTION_ID: usize = 64;
/// Longest connection id accepted (the relay's own identifier for a client connection).
pub const MAX_CONNECTION_ID: usize = 128;

/// The caps of delegated sessions.
#[derive(Debug, Clone)]
pub struct DelegatedLimits {
    /// Sessions held at once, over all connections.
    pub max_sessions: usize,
    /// Sessions of one client connection (orly-relay's `--max-neg-sessions`).
    pub max_per_connection: usize,
    /// Items of a set that has to be loaded into memory (orly-relay's `--max-neg-records`).
    pub max_records: usize,
    /// Largest reply, in bytes (0: none, else at least 4096).
    pub frame_limit: u64,
    /// A session with no message for this long is closed
    /// (`ORLY_SYNC_NEGENTROPY_SESSION_TIMEOUT`, ORLY's default 5 minutes).
    pub idle: Duration,
}

impl Default for DelegatedLimits {
    fn default() -> Self {
        Self {
            max_sessions: 4096,
            max_per_connection: 8,
            max_records: 2_000_000,
            frame_limit: 4 * 1024 * 1024,
            idle: Duration::from_secs(300),
        }
    }
}

/// A session's key: the relay's connection id and the client's subscription id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// The relay's id of the client connection.
    pub connection: String,
    /// The client's subscription id.
    pub subscription: String,
}

impl SessionKey {
    /// A key, checked: a subscription id of 1 to 64 characters, a connection id of at most 128.
    pub fn new(connection: &str, subscription: &str) -> Result<Self, DelegatedError> {
        if subscription.is_empty() || subscription.chars().count() > MAX_SUBSCRIPTION_ID {
            return Err(DelegatedError::Invalid(format!(
                "subscription id must be 1 to {MAX_SUBSCRIPTION_ID} characters"
            )));
        }
        if connection.chars().count() > MAX_CONNECTION_ID {
            return Err(DelegatedError::Invalid(format!(
                "connection id must be at most {MAX_CONNECTION_ID} characters"
            )));
        }
        Ok(Self {
            connection: connection.to_string(),
            subscription: subscription.to_string(),
        })
    }
}

/// What `ListSessions` shows of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its key.
    pub key: SessionKey,
    /// Opened at (Unix seconds).
    pub created_at: i64,
    /// Last message at (Unix seconds).
    pub last_activity: i64,
    /// Messages answered, the opening one included.
    pub rounds: u32,
}

/// The answer to one client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The responder's message for the client (`NEG-MSG`).
    pub message: Vec<u8>,
    /// True when the message holds no fingerprint ranges: the client's next step ends the
    /// reconciliation (it has nothing more to ask; it may still close or start again).
    pub complete: bool,
}

/// Why a message was not answered. [`DelegatedError::reason`] is the `NEG-ERR` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegatedError {
    /// Malformed ids or message: the client's fault.
    #[error("{0}")]
    Invalid(String),
    /// No such session (never opened, closed, expired, or lost to an earlier error).
    #[error("{0}")]
    Closed(String),
    /// The filter's set would be loaded and has more than `max` items.
    #[error("this query matches too many records (max {max})")]
    Blocked {
        /// The cap that was hit.
        max: usize,
    },
    /// A cap on sessions or memory is full, or a message for the session is being answered.
    #[error("{0}")]
    Busy(String),
    /// The store failed (details are logged, not shown).
    #[error("store failed")]
    Store,
}

impl DelegatedError {
    /// The NIP-77 `NEG-ERR` reason, with its machine-readable prefix.
    pub fn reason(&self) -> String {
        match self {
            Self::Invalid(m) => Prefix::Invalid.reason(m),
            Self::Closed(m) => Prefix::Closed.reason(m),
            Self::Blocked { .. } => Prefix::Blocked.reason(self),
            Self::Busy(m) => Prefix::Error.reason(format_args!("busy: {m}")),
            Self::Store => Prefix::Error.reason(self),
        }
    }
}

struct Entry {
    /// `None` while a step runs on the session.
    session: Option<Box<dyn NegSession>>,
    /// Tells a session reopened under the same key from the one a step took out.
    generation: u64,
    created_at: i64,
    last_unix: i64,
    last: Instant,
    rounds: u32,
}

#[derive(Default)]
struct Table {
    open: HashMap<SessionKey, Entry>,
    next_generation: u64,
}

/// The sessions held for relays, with their caps.
pub struct DelegatedSessions {
    store: Arc<dyn Store>,
    limits: DelegatedLimits,
    table: Mutex<Table>,
}

impl DelegatedSessions {
    /// Sessions over `store` within `limits`.
    pub fn new(store: Arc<dyn Store>, limits: DelegatedLimits) -> Self {
        Self {
            store,
            limits,
            table: Mutex::new(Table::default()),
        }
    }

    /// The caps in force.
    pub fn limits(&self) -> &DelegatedLimits {
        &self.limits
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock leaves a table that is still consistent (every
        // change is a single map operation), so a poisoned lock is used as it is.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `NEG-OPEN`: opens (or replaces) the session of `key` over `filter`'s set and answers the
    /// client's first message.
    pub async fn open(
        &self,
        key: SessionKey,
        mut filter: Filter,
        initial: Vec<u8>,
    ) -> Result<Reply, DelegatedError> {
        let generation = {
            let mut t = self.table();
            // Re-opening an id replaces its session (NIP-77).
            t.open.remove(&key);
            let of_connection = t
                .open
                .keys()
                .filter(|k| k.connection == key.connection)
                .count();
            if of_connection >= self.limits.max_per_connection {
                return Err(DelegatedError::Closed(format!(
                    "at most {} open sessions per connection",
                    self.limits.max_per_connection
                )));
            }
            if t.open.len() >= self.limits.max_sessions {
                return Err(DelegatedError::Busy(format!(
                    "the service holds its maximum of {} sessions; try again later",
                    self.limits.max_sessions
                )));
            }
            t.next_generation += 1;
            let generation = t.next_generation;
            let now = unix_now();
            // The slot is reserved (no session yet) while the set is opened.
            t.open.insert(
                key.clone(),
                Entry {
                    session: None,
                    generation,
                    created_at: now,
                    last_unix: now,
                    last: Instant::now(),
                    rounds: 0,
                },
            );
            generation
        };
        filter.limit = None;
        let opened = self
            .store
            .neg_session(filter, self.limits.frame_limit, self.limits.max_records)
            .await;
        let session = match opened {
            Ok(s) => s,
            Err(e) => {
                self.remove_if(&key, generation);
                return Err(match e {
                    StoreError::TooMany { max } => DelegatedError::Blocked { max },
                    StoreError::Busy(_) => DelegatedError::Busy(
                        "too many negentropy sets open; try again later".into(),
                    ),
                    e => {
                        tracing::error!("delegated negentropy set failed: {e}");
                        DelegatedError::Store
                    }
                });
            }
        };
        self.step(&key, generation, session, initial).await
    }

    /// `NEG-MSG`: the session's answer to the client's next message.
    pub async fn message(&self, key: &SessionKey, msg: Vec<u8>) -> Result<Reply, DelegatedError> {
        let (session, generation) = {
            let mut t = self.table();
            let Some(entry) = t.open.get_mut(key) else {
                return Err(DelegatedError::Closed(
                    "no open session with this id".into(),
                ));
            };
            let Some(session) = entry.session.take() else {
                return Err(DelegatedError::Busy(
                    "the previous message of this session is still being answered".into(),
                ));
            };
            (session, entry.generation)
        };
        self.step(key, generation, session, msg).await
    }

    async fn step(
        &self,
        key: &SessionKey,
        generation: u64,
        mut session: Box<dyn NegSession>,
        msg: Vec<u8>,
    ) -> Result<Reply, DelegatedError> {
        // A different version gets the one-byte "my version" reply; anything else must be
        // well formed before any work is done for it.
        if msg.first() == Some(&PROTOCOL_VERSION)
            && let Err(e) = check_message(&msg)
        {
            self.remove_if(key, generation);
            return Err(DelegatedError::Invalid(NegError::Malformed(e).to_string()));
        }
        match session.respond(msg).await {
            Ok(message) => {
                let mut t = self.table();
                // Closed or replaced meanwhile: the answer still goes out, the session does not
                // come back.
                if let Some(entry) = t.open.get_mut(key)
                    && entry.generation == generation
                {
                    entry.session = Some(session);
                    entry.rounds = entry.rounds.saturating_add(1);
                    entry.last = Instant::now();
                    entry.last_unix = unix_now();
                }
                // Our own reply is well formed; a version reply (another protocol) is not final.
                let complete = fingerprint_ranges(&message).is_ok_and(|n| n == 0);
                Ok(Reply { message, complete })
            }
            Err(e) => {
                self.remove_if(key, generation);
                Err(match e {
                    NegError::Storage(e) => {
                        tracing::error!("delegated negentropy step failed: {e}");
                        DelegatedError::Store
                    }
                    e => DelegatedError::Invalid(e.to_string()),
                })
            }
        }
    }

    fn remove_if(&self, key: &SessionKey, generation: u64) {
        let mut t = self.table();
        if t.open.get(key).is_some_and(|e| e.generation == generation) {
            t.open.remove(key);
        }
    }

    /// `NEG-CLOSE`: closes one session; false when there was none.
    pub fn close(&self, key: &SessionKey) -> bool {
        self.table().open.remove(key).is_some()
    }

    /// `CloseSession`: closes the sessions with `subscription` on `connection`, or on every
    /// connection when `connection` is empty. Returns how many were closed.
    pub fn close_subscription(&self, connection: &str, subscription: &str) -> usize {
        let mut t = self.table();
        let before = t.open.len();
        t.open.retain(|k, _| {
            !(k.subscription == subscription
                && (connection.is_empty() || k.connection == connection))
        });
        before - t.open.len()
    }

    /// Closes every session of a client connection (the relay saw it go). Returns how many.
    pub fn close_connection(&self, connection: &str) -> usize {
        let mut t = self.table();
        let before = t.open.len();
        t.open.retain(|k, _| k.connection != connection);
        before - t.open.len()
    }

    /// `ListSessions`: every session held, ordered by key.
    pub fn list(&self) -> Vec<SessionInfo> {
        let t = self.table();
        let mut v: Vec<SessionInfo> = t
            .open
            .iter()
            .map(|(k, e)| SessionInfo {
                key: k.clone(),
                created_at: e.created_at,
                last_activity: e.last_unix,
                rounds: e.rounds,
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.table().open.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the sessions idle for longer than the limit (not those a step is running on),
    /// returning their keys.
    pub fn expire(&self) -> Vec<SessionKey> {
        let idle = self.limits.idle;
        let now = Instant::now();
        let mut t = self.table();
        let dead: Vec<SessionKey> = t
            .open
            .iter()
            .filter(|(_, e)| e.session.is_some() && now.duration_since(e.last) > idle)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            t.open.remove(k);
        }
        dead
    }

    /// Expires idle sessions until `shutdown` completes, checking a few times per idle period.
    pub async fn run_expiry(&self, shutdown: impl std::future::Future<Output = ()>) {
        let every =
            (self.limits.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {
                    let gone = self.expire();
                    if !gone.is_empty() {
                        tracing::debug!(sessions = gone.len(), "idle delegated negentropy sessions closed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "delegated_tests.rs"]
mod tests;
