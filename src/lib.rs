//! orly: a Nostr event store kept in step with remote relays by NIP-77 negentropy sync, served
//! by a relay and by a secured gRPC sync gateway. See DESIGN.md for the architecture.
#![forbid(unsafe_code)]

pub mod cli;
pub mod event;
pub mod store;

/// Installs the one rustls crypto provider (ring) for the process. Several dependencies enable
/// different providers; without an explicit choice rustls panics at the first TLS config.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub mod negentropy;
pub mod peer;
pub mod sync;
