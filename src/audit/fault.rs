//! The writer's line writes and fsyncs, with a fault that tests can arm for the next one: root
//! ignores permissions, so tests cannot provoke a failed write or fsync for real.

use std::fs::File;
use std::io::{self, Write};

/// An I/O failure to simulate.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// Half the line reaches the file, then the write fails (ENOSPC mid-record).
    PartialWrite,
    /// The line is written but fsync fails.
    Fsync,
}

/// The fault armed for one operation (never one outside tests).
#[cfg(test)]
pub(crate) type Armed = Option<Fault>;
/// The fault armed for one operation (never one outside tests).
#[cfg(not(test))]
pub(crate) type Armed = Option<()>;

/// `file.write_all(line)`, or the armed fault.
pub(crate) fn write_all_or_fault(file: &mut File, line: &[u8], fault: Armed) -> io::Result<()> {
    #[cfg(test)]
    if let Some(Fault::PartialWrite) = fault {
        file.write_all(&line[..line.len() / 2])?;
        return Err(io::Error::other("injected: no space left on device"));
    }
    let _ = fault;
    file.write_all(line)
}

/// `file.sync_data()`, or the armed fault.
pub(crate) fn sync_or_fault(file: &File, fault: Armed) -> io::Result<()> {
    #[cfg(test)]
    if let Some(Fault::Fsync) = fault {
        return Err(io::Error::other("injected: fsync failed"));
    }
    let _ = fault;
    file.sync_data()
}
