//! ORLY's sync service API (`orlysync.negentropy.v1.NegentropyService`, every method ORLY-API.md
//! lists) against our real, secured `orly-sync-negentropy`, with a client compiled from
//! tests/proto/orly/ (written from ORLY's field list in ORLY-API.md, not from our proto/):
//!
//! - every method answers ORLY's client in ORLY's shape (readiness, the background sync's status
//!   and its Start/Stop, managed peers, a sync with a real orly-relay, NIP-77 answered for a
//!   relay, sessions listed and closed);
//! - every method that needs a policy right is refused to an admin without it
//!   (PERMISSION_DENIED naming the right) and served to one with it, each call leaving exactly
//!   one audit record;
//! - NIP-77 through `HandleNegOpen`/`HandleNegMsg` reconciles to the same have/need sets as the
//!   same client over WebSocket against orly-relay on the same events; idle sessions expire;
//! - tag values that are not UTF-8 are an INVALID_ARGUMENT naming the field, never INTERNAL;
//! - reflection lists the service with ORLY's methods.
//!
//! Every wait is bounded; nothing binds anything but 127.0.0.1 port 0.
//!
//! Layout: the tests, one group per file under `orly_negentropy_api/`: `orly_client.rs` (every
//! method as ORLY's client calls it, `since`, the loopback service without credentials),
//! `rights.rs`, `nip77.rs` (delegated NIP-77 against orly-relay, odd messages, idle expiry),
//! `non_utf8.rs`, `reflection.rs`. What they share — ORLY's client compiled from tests/proto/orly/,
//! the `Caller` that makes ORLY's calls as one admin, the service and relay they start — is
//! `orly_negentropy_api/harness.rs`; the gateway fixture is the shared one in `common/`.

mod common;
#[path = "common/gateway.rs"]
mod gateway;
#[path = "orly_negentropy_api/harness.rs"]
mod harness;
#[path = "orly_negentropy_api/nip77.rs"]
mod nip77;
#[path = "orly_negentropy_api/non_utf8.rs"]
mod non_utf8;
#[path = "orly_negentropy_api/orly_client.rs"]
mod orly_client;
#[path = "orly_negentropy_api/reflection.rs"]
mod reflection;
#[path = "orly_negentropy_api/rights.rs"]
mod rights;
