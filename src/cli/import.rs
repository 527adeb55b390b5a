//! `orly import`: JSONL in, every event verified on all cores, written in atomic batches.
//!
//! Reading, verifying and writing overlap: a reader fills chunks, rayon verifies a chunk while
//! the writer thread commits the previous one.

use super::lines::{Line, next_line};
use crate::event::{Event, MAX_EVENT_BYTES};
use crate::store::{FjallStore, SaveOutcome, StoreError};
use rayon::prelude::*;
use std::io::{BufRead, Write};

/// Lines verified and written together.
const CHUNK: usize = 4096;

/// Totals of an import.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Lines read (blank lines included).
    pub lines: u64,
    /// Stored, new.
    pub accepted: u64,
    /// Stored, replacing an older version.
    pub replaced: u64,
    /// Already stored.
    pub duplicate: u64,
    /// Valid, but an equal or newer version is stored.
    pub superseded: u64,
    /// Valid, but deleted by its author earlier.
    pub deleted: u64,
    /// Valid ephemeral events (never stored).
    pub ephemeral: u64,
    /// Invalid lines.
    pub rejected: u64,
}

impl ImportSummary {
    fn count(&mut self, o: SaveOutcome) {
        match o {
            SaveOutcome::Accepted => self.accepted += 1,
            SaveOutcome::Replaced => self.replaced += 1,
            SaveOutcome::Duplicate => self.duplicate += 1,
            SaveOutcome::Superseded => self.superseded += 1,
            SaveOutcome::Deleted => self.deleted += 1,
            SaveOutcome::Ephemeral => self.ephemeral += 1,
        }
    }
}

/// Imports JSONL from `input`, writing one `line N: reason` per rejected line to `errors`.
pub fn import<R: BufRead + Send>(
    store: &FjallStore,
    input: R,
    errors: &mut (dyn Write + Send),
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<ImportSummary> {
    import_with(&|batch| store.save_blocking(batch), input, errors, progress)
}

/// One batch written by [`import_with`] (any store engine).
pub type SaveBatch<'a> = dyn Fn(&[Event]) -> Result<Vec<SaveOutcome>, StoreError> + Sync + 'a;

/// [`import`] into any store: `save` writes one verified batch (on the writer thread).
pub fn import_with<R: BufRead + Send>(
    save: &SaveBatch<'_>,
    mut input: R,
    errors: &mut (dyn Write + Send),
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<ImportSummary> {
    let mut summary = ImportSummary::default();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(2);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let writer = scope.spawn(move || -> anyhow::Result<Vec<SaveOutcome>> {
            let mut outcomes = Vec::new();
            for batch in rx {
                outcomes.extend(save(&batch)?);
            }
            Ok(outcomes)
        });
        let mut line_no = 0u64;
        let mut eof = false;
        while !eof {
            let mut chunk: Vec<(u64, Line)> = Vec::with_capacity(CHUNK);
            while chunk.len() < CHUNK {
                match next_line(&mut input, MAX_EVENT_BYTES)? {
                    Some(l) => {
                        line_no += 1;
                        chunk.push((line_no, l));
                    }
                    None => {
                        eof = true;
                        break;
                    }
                }
            }
            let checked: Vec<(u64, Result<Option<Event>, String>)> = chunk
                .into_par_iter()
                .map(|(n, l)| (n, check_line(l)))
                .collect();
            let mut batch = Vec::with_capacity(checked.len());
            for (n, r) in checked {
                match r {
                    Ok(Some(ev)) => batch.push(ev),
                    Ok(None) => {}
                    Err(reason) => {
                        summary.rejected += 1;
                        writeln!(errors, "line {n}: {reason}")?;
                    }
                }
            }
            summary.lines = line_no;
            progress.set_position(line_no);
            if !batch.is_empty() && tx.send(batch).is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        drop(tx);
        let outcomes = writer
            .join()
            .map_err(|_| anyhow::anyhow!("store writer thread panicked"))??;
        for o in outcomes {
            summary.count(o);
        }
        Ok(())
    })?;
    Ok(summary)
}

fn check_line(l: Line) -> Result<Option<Event>, String> {
    match l {
        Line::TooLong(n) => Err(format!("line too long ({n} bytes, max {MAX_EVENT_BYTES})")),
        Line::Data(d) if d.iter().all(u8::is_ascii_whitespace) => Ok(None),
        Line::Data(d) => Event::from_json_verified(&d)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}
