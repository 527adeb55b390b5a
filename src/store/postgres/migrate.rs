//! `orly migrate`: copies every stored event from one store to another (fjall to PostgreSQL or
//! back), oldest first, in batches, through the ordinary `Store::save` (so the destination
//! applies NIP-01 itself and its negentropy index follows). After each batch the position
//! (created_at, id) is written to a checkpoint file; a copy that stops (killed, a lost
//! connection) resumes after it. Copying an event twice is harmless (a duplicate).

use super::super::{Order, Store, StoreError};
use crate::event::{EventId, Filter};
use futures_util::StreamExt;
use std::path::Path;

/// Events saved per batch.
const BATCH: usize = 1000;

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrateSummary {
    /// Events read from the source (after the checkpoint).
    pub read: u64,
    /// Newly stored in the destination (accepted or replacing).
    pub stored: u64,
    /// Already there, superseded or deleted in the destination.
    pub skipped: u64,
    /// Whether the copy started from a checkpoint.
    pub resumed: bool,
}

fn read_checkpoint(p: &Path) -> Result<Option<(u64, EventId)>, StoreError> {
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Engine(format!("{}: {e}", p.display()))),
    };
    let bad = || StoreError::Corrupt(format!("{}: not a migrate checkpoint", p.display()));
    let (t, id) = text.trim().split_once(' ').ok_or_else(bad)?;
    let t: u64 = t.parse().map_err(|_| bad())?;
    let id = crate::event::decode_hex32(id).map_err(|_| bad())?;
    Ok(Some((t, id)))
}

fn write_checkpoint(p: &Path, t: u64, id: &EventId) -> Result<(), StoreError> {
    let tmp = p.with_extension("tmp");
    let io = |e: std::io::Error| StoreError::Engine(format!("{}: {e}", p.display()));
    std::fs::write(&tmp, format!("{t} {}\n", hex::encode(id))).map_err(io)?;
    std::fs::rename(&tmp, p).map_err(io)
}

/// Copies `from` into `to`, resuming after `checkpoint` when it exists, and removes it when
/// done. `progress` gets the total (events after the checkpoint) and the position.
pub async fn copy(
    from: &dyn Store,
    to: &dyn Store,
    checkpoint: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<MigrateSummary, StoreError> {
    let start = read_checkpoint(checkpoint)?;
    let mut sum = MigrateSummary {
        resumed: start.is_some(),
        ..Default::default()
    };
    let filter = Filter {
        since: start.map(|(t, _)| t),
        ..Default::default()
    };
    let total = from.count(filter.clone()).await?;
    progress.set_length(total);
    let mut events = from.query(filter, Order::OldestFirst);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let next = events.next().await.transpose()?;
        let done = next.is_none();
        if let Some(ev) = next {
            // Events at the checkpoint's time up to its id were copied before.
            if start.is_some_and(|(t, id)| (ev.created_at, ev.id) <= (t, id)) {
                progress.inc(1);
                continue;
            }
            batch.push(ev);
        }
        if batch.len() >= BATCH || (done && !batch.is_empty()) {
            let last = batch.last().map(|e| (e.created_at, e.id));
            let n = batch.len() as u64;
            for o in to.save(std::mem::take(&mut batch)).await? {
                if matches!(
                    o,
                    super::super::SaveOutcome::Accepted | super::super::SaveOutcome::Replaced
                ) {
                    sum.stored += 1;
                } else {
                    sum.skipped += 1;
                }
            }
            sum.read += n;
            progress.inc(n);
            if let Some((t, id)) = last {
                write_checkpoint(checkpoint, t, &id)?;
            }
        }
        if done {
            break;
        }
    }
    match std::fs::remove_file(checkpoint) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::Engine(format!("{}: {e}", checkpoint.display()))),
    }
    Ok(sum)
}
