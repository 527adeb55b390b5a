//! Event storage: the [`Store`] trait every mode writes through, the embedded fjall engine,
//! (in `remote`) the same trait over the `orly-db` gRPC service, and (in `postgres`) over a
//! PostgreSQL database shared by several processes.
//!
//! The store owns the storage semantics of NIP-01 (replaceable, addressable, ephemeral, deletion)
//! and the (created_at, id) order that negentropy needs. It assumes events were verified by the
//! caller: every entry point that takes events from outside verifies them first.

mod budget;
pub mod db_auth;
mod fjall_store;
mod journal;
mod keys;
mod merge;
mod neg_index;
mod overlay;
pub mod postgres;
mod remote;
mod remote_orly;
mod remote_session;
mod session;

pub use budget::DEFAULT_LOADED_ITEMS;
pub use fjall_store::{FjallStore, IntegrityReport, StoreStats};
pub use neg_index::IndexedSet;
pub use postgres::PgStore;
pub use remote::RemoteStore;
pub use session::{LocalSession, NegSession, NegStep, retire};

use crate::event::{Event, EventId, Filter};
use crate::negentropy::{NegStorage, VecStorage};
use futures_util::stream::BoxStream;
use std::time::Duration;

/// What happened to one event handed to [`Store::save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaveOutcome {
    /// Stored; nothing was replaced.
    Accepted,
    /// Stored, and an older version of this replaceable or addressable event was removed.
    Replaced,
    /// Already stored; ignored.
    Duplicate,
    /// A newer version of this replaceable/addressable event is stored; not stored.
    Superseded,
    /// Deleted earlier by its author (kind 5); not stored.
    Deleted,
    /// Ephemeral kind; never stored.
    Ephemeral,
}

impl SaveOutcome {
    /// Is the event in the store after this save (newly or already)?
    pub fn is_stored(self) -> bool {
        matches!(self, Self::Accepted | Self::Replaced | Self::Duplicate)
    }

    /// The NIP-01 `OK` pair (accepted?, message) for this outcome.
    pub fn ok_reply(self) -> (bool, &'static str) {
        match self {
            Self::Accepted | Self::Replaced => (true, ""),
            Self::Duplicate => (true, "duplicate: already have this event"),
            Self::Superseded => (false, "duplicate: a newer version is stored"),
            Self::Deleted => (false, "blocked: deleted by its author"),
            Self::Ephemeral => (true, ""),
        }
    }
}

/// Result order of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest `created_at` first (NIP-01's order for `REQ`).
    #[default]
    NewestFirst,
    /// Oldest first.
    OldestFirst,
}

/// A storage failure. The message is safe to show to an operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O, corruption, lock held by another process).
    #[error("store: {0}")]
    Engine(String),
    /// A stored value could not be decoded.
    #[error("store: corrupt record: {0}")]
    Corrupt(String),
    /// The store cannot be reached (remote store down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request was refused (e.g. invalid event handed to a remote store).
    #[error("store refused: {0}")]
    Refused(String),
    /// The negentropy sets loaded now fill the memory budget: try again later.
    #[error("store busy: {0}")]
    Busy(String),
    /// The filter's negentropy set would be loaded into memory and has more than `max` items.
    #[error("this query matches more than {max} records")]
    TooMany {
        /// The cap that was hit.
        max: usize,
    },
}

/// A stream of stored events.
pub type EventStream = BoxStream<'static, Result<Event, StoreError>>;

/// One negentropy item: (created_at, id).
pub type NegItem = (u64, EventId);

/// The storage operations every mode needs. Implemented by [`FjallStore`] (embedded) and the
/// gRPC client of `orly-db`.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores verified events in one atomic batch, returning one outcome per event in order.
    async fn save(&self, events: Vec<Event>) -> Result<Vec<SaveOutcome>, StoreError>;
    /// Events matching `filter` (its `limit` honoured), in `order`.
    fn query(&self, filter: Filter, order: Order) -> EventStream;
    /// The stored events among `ids` (missing ones are left out).
    async fn get_by_ids(&self, ids: Vec<EventId>) -> Result<Vec<Event>, StoreError>;
    /// (created_at, id) of every event matching `filter`, sorted ascending: the negentropy set.
    async fn neg_items(&self, filter: Filter) -> Result<Vec<NegItem>, StoreError>;
    /// The negentropy set of `filter`, ready to reconcile. A set that has to be loaded into
    /// memory is refused with [`StoreError::TooMany`] past `max_items`. This default loads
    /// [`Store::neg_items`]; the fjall store answers time-range filters from its persistent
    /// index instead, and stops loading at the cap.
    async fn neg_storage(
        &self,
        filter: Filter,
        max_items: usize,
    ) -> Result<Box<dyn NegStorage>, StoreError> {
        let items = self.neg_items(filter).await?;
        if items.len() > max_items {
            return Err(StoreError::TooMany { max: max_items });
        }
        Ok(Box::new(VecStorage::from_pairs(items)))
    }
    /// A negentropy session over the set of `filter` (see [`Store::neg_storage`] for
    /// `max_items`), with messages of at most `frame_limit` bytes (0: none, else ≥ 4096).
    /// This default reconciles here over [`Store::neg_storage`]; the remote store runs the
    /// session inside `orly-db`, next to the index.
    async fn neg_session(
        &self,
        filter: Filter,
        frame_limit: u64,
        max_items: usize,
    ) -> Result<Box<dyn NegSession>, StoreError> {
        let storage = self.neg_storage(filter, max_items).await?;
        let s = LocalSession::new(storage, frame_limit)
            .map_err(|e| StoreError::Refused(e.to_string()))?;
        Ok(Box::new(s))
    }
    /// How many events match `filter` (ignoring `limit`).
    async fn count(&self, filter: Filter) -> Result<u64, StoreError>;
    /// For each id: should a sync skip fetching it? True when it is stored already, or was
    /// superseded or deleted here — so a repeated sync converges to zero work.
    async fn known(&self, ids: Vec<EventId>) -> Result<Vec<bool>, StoreError>;
    /// Ok when the store can serve requests.
    async fn ready(&self) -> Result<(), StoreError>;
    /// Where the store lives on this machine, when it is a directory (orly-db's `GetPath`).
    fn path(&self) -> Option<String> {
        None
    }
    /// Takes or renews the lease `name` for `holder` until `ttl` from now: true when `holder`
    /// holds it after the call, false when another holder's lease has not expired. A store
    /// one process owns grants every lease (nothing else works on it: this default); a store
    /// several processes share keeps leases in the store itself (PostgreSQL), so that work
    /// only one of them may do — a managed peer's background sync — runs on one at a time.
    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let _ = (name, holder, ttl);
        Ok(true)
    }
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}

#[cfg(test)]
mod tests;
