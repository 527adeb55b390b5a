//! orly: a Nostr event store kept in step with remote relays by NIP-77 negentropy sync, served
//! by a relay and by a secured gRPC sync gateway. See DESIGN.md for the architecture.
//!
//! Layers, lowest first: `negentropy` (NIP-77, no other orly module) → `event` → `store` (its
//! persistent index implements `negentropy::NegStorage`) → `peer` → `sync` → `relay`, `service`
//! → `gateway` → `cli`/`config` → binaries. Lower modules never import higher ones.
#![forbid(unsafe_code)]
// `pub` only where the item is reachable from outside the crate; the rest says `pub(crate)`.
#![warn(unreachable_pub)]

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod event;
pub mod gateway;
pub mod launcher;
pub mod negentropy;
pub mod peer;
pub mod policy;
pub mod proto;
pub mod relay;
pub mod server;
pub mod service;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod telemetry;

/// Installs the one rustls crypto provider (ring) for the process. Several dependencies enable
/// different providers; without an explicit choice rustls panics at the first TLS config.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
