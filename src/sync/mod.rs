//! One sync job, used by every mode (direct CLI, the gRPC service): reconcile a filter's item
//! set with a relay over NIP-77 and move the differences, reporting progress as it goes.

//!
//! The parts: `request` (what to sync, valid by construction), `ranges` (time ranges and their
//! splitting), `transfers` (fetches and uploads under the event cap), `nip42` (authentication
//! and the work it parks), `job` (the loop driving them), `progress` (counters and errors).

mod job;
mod nip42;
mod progress;
mod ranges;
mod request;
mod transfers;

pub use crate::negentropy::{FrameLimit, FrameLimitError};
pub use crate::peer::PeerUrl;
pub use job::SyncJob;
pub use progress::{Direction, ErrorKind, Progress, SyncError, exit};
pub use request::SyncRequest;

/// Default negentropy frame size limit in (binary) bytes: 60 000, as strfry, which keeps
/// hex-encoded frames under the common 131 072-byte WebSocket cap.
pub const DEFAULT_FRAME_SIZE_LIMIT: FrameLimit = match FrameLimit::new(60_000) {
    Ok(l) => l,
    Err(_) => panic!("60 000 is a valid frame limit"),
};
/// Ids per `REQ` when fetching.
pub const FETCH_BATCH: usize = 50;
/// `REQ`s in flight at once.
pub const FETCH_IN_FLIGHT: usize = 8;
/// `EVENT`s in flight at once, counted by `OK` (a relay that stores bursts in one batch, as
/// orly-relay does, gets bigger batches from a wider window).
pub const UPLOAD_WINDOW: usize = 400;
/// Fewest free places in the upload window worth a refill (unless the rest of the queue fits).
pub const UPLOAD_REFILL: usize = 100;
