//! The Nostr relay over the store: NIP-01 (events, subscriptions), NIP-11 (information
//! document), NIP-42 (authentication) and NIP-77 (negentropy sync served to any client).
//!
//! `server` accepts connections and answers HTTP (NIP-11) or upgrades to WebSocket; `conn`
//! runs one client's session and hands each message to its handler (`conn/events`,
//! `conn/subs`, `conn/nip42`, `conn/nip77`); `neg` holds the per-connection negentropy sessions.

mod conn;
mod limits;
mod neg;
mod nip11;
mod server;

pub use server::{RelayHandle, serve};

use std::collections::HashSet;
use std::time::Duration;

/// Largest negentropy reply frame by default, in bytes (4 MiB of hex on the wire).
pub const MAX_REPLY_FRAME: u64 = 2 << 20;

/// Limits and policy of a relay. Every limit has a safe default.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Public URL of the relay (NIP-42 `relay` tag check); None accepts any.
    pub public_url: Option<String>,
    /// Largest WebSocket message accepted, in bytes (advertised in NIP-11). Large so orly ↔ orly
    /// negentropy needs few round trips.
    pub max_message_bytes: usize,
    /// Largest event, in bytes of JSON.
    pub max_event_bytes: usize,
    /// Open `REQ` subscriptions per connection.
    pub max_subscriptions: usize,
    /// Filters per `REQ`.
    pub max_filters: usize,
    /// Cap on `limit` (and default when a filter has none) for stored results.
    pub max_limit: u64,
    /// Open negentropy sessions per connection.
    pub max_neg_sessions: usize,
    /// A filter matching more events than this is refused with `NEG-ERR "blocked: ..."`.
    pub max_neg_records: usize,
    /// Frame size limit of our negentropy replies (0 = derived from `max_message_bytes`).
    pub neg_frame_limit: u64,
    /// Negentropy sessions unused this long are closed and freed.
    pub neg_idle_timeout: Duration,
    /// NIP-42 required to read (`REQ`).
    pub auth_read: bool,
    /// NIP-42 required to write (`EVENT`).
    pub auth_write: bool,
    /// NIP-42 required to sync (`NEG-OPEN`).
    pub auth_sync: bool,
    /// When non-empty, only these authenticated pubkeys pass the auth requirements.
    pub auth_pubkeys: HashSet<[u8; 32]>,
    /// Open connections at most (also kept under the process's open-files limit).
    pub max_connections: usize,
    /// Open connections per client address at most.
    pub max_connections_per_ip: usize,
    /// Longest time from TCP accept to a WebSocket upgrade (or the end of a plain HTTP
    /// exchange such as a NIP-11 fetch).
    pub handshake_timeout: Duration,
    /// A WebSocket silent this long is pinged.
    pub ping_interval: Duration,
    /// A WebSocket from which nothing (not even a pong) arrived this long is closed.
    pub idle_timeout: Duration,
    /// Longest time one message may take to arrive, from its first byte to its last.
    pub message_timeout: Duration,
    /// Bytes of unfinished messages held over all connections at most.
    pub max_pending_bytes: usize,
    /// Messages read per second per connection (reading slows down past it; 0 = no limit).
    pub max_messages_per_second: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            max_message_bytes: 16 << 20,
            max_event_bytes: crate::event::MAX_EVENT_BYTES,
            max_subscriptions: 32,
            max_filters: 16,
            max_limit: 5000,
            max_neg_sessions: 8,
            max_neg_records: 2_000_000,
            neg_frame_limit: 0,
            neg_idle_timeout: Duration::from_secs(60),
            auth_read: false,
            auth_write: false,
            auth_sync: false,
            auth_pubkeys: HashSet::new(),
            max_connections: 4096,
            max_connections_per_ip: 64,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            message_timeout: Duration::from_secs(60),
            max_pending_bytes: 256 << 20,
            max_messages_per_second: 10_000,
        }
    }
}

impl RelayConfig {
    /// Connections the relay admits: the configured cap, kept 64 descriptors under the open
    /// files limit (for the store, the listener and the accept that must fail cleanly).
    pub fn effective_max_connections(&self) -> usize {
        match limits::open_files_limit() {
            Some(files) => self.max_connections.min(files.saturating_sub(64).max(1)),
            None => self.max_connections,
        }
    }

    /// The negentropy frame limit actually used: hex doubles bytes, and the JSON envelope needs
    /// room, so half the message cap less some slack, never below the protocol's 4096.
    pub fn effective_neg_frame_limit(&self) -> u64 {
        use crate::negentropy::FrameLimit;
        if self.neg_frame_limit != 0 {
            return FrameLimit::at_least_min(self.neg_frame_limit).get();
        }
        // Capped so replies stay under the 5 MiB message cap of common clients (nostr-sdk).
        let derived = (self.max_message_bytes as u64 / 2).saturating_sub(1024);
        FrameLimit::at_least_min(derived.min(MAX_REPLY_FRAME)).get()
    }
}
