//! Managed peers and their background sync, against the real `orly-sync-negentropy`, real
//! `orly-relay`s and nostr-relay-builder relays, all on 127.0.0.1 port 0:
//!
//! 1. peers configured by `ORLY_SYNC_NEGENTROPY_PEERS` converge to the union of every good
//!    peer's events (both ways), while a peer where nothing listens shows `error`, counts its
//!    failures and backs off further at every failure;
//! 2. the peer list survives a restart: peers added at run time stay with their state, the
//!    operator's list is merged in again, and a peer dropped from it goes;
//! 3. `Stop` stops background syncs, `TriggerSync` still runs one, `Start` resumes them;
//! 4. on a secured service, a background sync is its owner's, checked against the owner's
//!    current policy and recorded at `orly:peer-loop` (the operator's peers as `(operator)`);
//!    an `AddPeer` the policy refuses is PERMISSION_DENIED with exactly one record.
//!
//! Every wait is bounded; the interval is 1 s so each test runs in seconds.
//!
//! Layout: one file per numbered group under `background_sync/` — `convergence.rs`, `restart.rs`,
//! `start_stop.rs`, `secured.rs` — and what they share (the plain service, its client calls,
//! bounded waits) in `background_sync/harness.rs`.

mod common;
#[path = "background_sync/convergence.rs"]
mod convergence;
#[path = "common/gateway.rs"]
mod gateway;
#[path = "background_sync/harness.rs"]
mod harness;
#[path = "common/nrb.rs"]
mod nrb;
#[path = "background_sync/restart.rs"]
mod restart;
#[path = "background_sync/secured.rs"]
mod secured;
#[path = "background_sync/start_stop.rs"]
mod start_stop;
