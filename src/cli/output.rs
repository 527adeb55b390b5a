//! Where the CLI writes: a stdout that ends a command quietly when its reader goes away
//! (`orly stats | head -n 3`, `orly export | true`), and a stderr that never panics.
//!
//! Rust starts every program with SIGPIPE ignored, so a write to a pipe whose reader has gone
//! fails with EPIPE, and `println!`/`eprintln!` panic on it (exit 101 and a backtrace). Here a
//! broken stdout is a normal end: the command stops writing (a long export stops early) and
//! exits with the code it would have had, 0 unless its own verdict says otherwise (`stats
//! --check` with problems, `audit verify` of a broken chain). We do not die of SIGPIPE (status
//! 141) like C tools: under `set -o pipefail` that would fail `orly stats | head -n 3`, and a
//! reader that has read what it wanted is no error of ours. A broken stderr loses the message,
//! never the command's work.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Stdout's reader has gone away (EPIPE): not a failure, the command just stops writing.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct ReaderGone;

/// Buffered stdout whose EPIPE errors carry [`ReaderGone`]; other write errors pass unchanged.
pub struct Stdout {
    inner: io::BufWriter<io::StdoutLock<'static>>,
}

impl Stdout {
    /// Stdout with a buffer of `capacity` bytes (large for bulk JSONL, small for reports).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: io::BufWriter::with_capacity(capacity, io::stdout().lock()),
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(mark)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(mark)
    }
}

fn mark(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, ReaderGone)
    } else {
        e
    }
}

/// Whether `e` is stdout's reader going away (from a [`Stdout`]).
pub fn is_reader_gone(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<ReaderGone>())
}

/// Runs `write` on a stdout buffered with `capacity` bytes and flushes it. Stdout's reader
/// going away ends the output early and is `Ok`; any other write error is an error.
pub fn print_with(
    capacity: usize,
    write: impl FnOnce(&mut Stdout) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = Stdout::with_capacity(capacity);
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if !is_reader_gone(&e) => Err(anyhow::Error::new(e).context("writing stdout")),
        _ => Ok(()),
    }
}

/// [`print_with`] with a small buffer, for reports of a few lines.
pub fn print(write: impl FnOnce(&mut Stdout) -> io::Result<()>) -> anyhow::Result<()> {
    print_with(8 << 10, write)
}

/// Set once stdout has failed: later [`stdout_line`]s are dropped.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout now (progress lines of a running command). Once stdout has failed
/// (its reader gone, or a full disk) further lines are dropped and the command carries on: a
/// sync is not abandoned because nobody watches its progress.
pub fn stdout_line(args: fmt::Arguments<'_>) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out
        .write_fmt(format_args!("{args}\n"))
        .and_then(|()| out.flush())
    {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            stderr_line(format_args!(
                "warning: cannot write to stdout ({e}); no more output lines"
            ));
        }
    }
}

/// Writes one line to stderr; a closed or broken stderr loses the line, never the command.
pub fn stderr_line(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(format_args!("{args}\n"));
}

/// `eprintln!` that never panics (see [`stderr_line`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::stderr_line(format_args!($($arg)*))
    };
}

/// A writer on stderr that swallows its errors, for reports streamed while work goes on
/// (`orly import`'s rejected lines): losing the report must not stop the import.
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_pipe_is_the_reader_going_away() {
        let gone = mark(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_reader_gone(&gone));
        assert_eq!(gone.kind(), io::ErrorKind::BrokenPipe);
        assert!(!is_reader_gone(&mark(io::Error::from(
            io::ErrorKind::StorageFull
        ))));
        // A broken pipe that did not come through `Stdout` (a socket, say) is not stdout's.
        assert!(!is_reader_gone(&io::Error::from(io::ErrorKind::BrokenPipe)));
    }
}
