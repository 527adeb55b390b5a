//! The directory layout: segment names, listing, line splitting and durable writes. Shared by the
//! writer ([`super::AuditChain`]) and the verifier so both read the directory the same way.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::AuditError;
use super::record::Head;

/// The signed head file.
pub(crate) const HEAD_FILE: &str = "HEAD.json";
const HEAD_TMP: &str = "HEAD.json.tmp";
/// Advisory lock held by the one writer of a directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// `audit-000001.jsonl` for index 1; indexes start at 1 and have no gaps.
pub(crate) fn segment_name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}

/// The index of a canonical segment name; anything else (backups, temp files) is not a segment.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u64 = digits.parse().ok()?;
    (index > 0 && segment_name(index) == name).then_some(index)
}

/// Segments in `dir`, sorted by index (gaps are the caller's business).
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_segment_name) {
            segments.push((index, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(index, _)| *index);
    Ok(segments)
}

/// Complete lines (without `\n`) and the trailing bytes after the last newline, if any.
pub(crate) fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, Option<&[u8]>) {
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // `split` always yields a last piece: empty when the data ends with '\n' (or is empty).
    let tail = lines.pop().filter(|t| !t.is_empty());
    (lines, tail)
}

/// Reads a segment, refusing anything that is not a regular file (a symlink to a device, a dir).
pub(crate) fn read_segment(path: &Path) -> io::Result<Vec<u8>> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    fs::read(path)
}

/// Maps an I/O error to [`AuditError::Io`] naming what was attempted on which path.
pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.to_path_buf();
    move |source| AuditError::Io {
        action,
        path,
        source,
    }
}

/// Takes the directory's advisory `LOCK` (released when the file is closed, also on a crash).
pub(crate) fn lock_dir(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AuditError::InUse(dir.to_path_buf())),
        Err(TryLockError::Error(source)) => Err(io_err("lock", &path)(source)),
    }
}

/// Whether a writer has the directory open now (it holds `LOCK`). Takes a shared lock on a
/// read-only handle for an instant: never writes, never creates the file.
pub(crate) fn writer_active(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

/// The first line of a segment (without `\n`), read without reading the rest; `None` when it
/// cannot be read or has no complete line within `max` bytes.
pub(crate) fn first_line(path: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::{BufRead, BufReader, Read};
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    let mut reader = BufReader::new(File::open(path).ok()?.take(max));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    (line.pop() == Some(b'\n')).then_some(line)
}

/// Reads `HEAD.json`; `Ok(None)` when it does not exist.
pub(crate) fn read_head(dir: &Path) -> Result<Option<Head>, String> {
    let path = dir.join(HEAD_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {HEAD_FILE}: {e}")),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{HEAD_FILE} is not valid: {e}"))
}

/// Replaces `HEAD.json` atomically: temp file, fsync, rename. The directory is fsynced only when
/// the head is created: a replacement that a power cut undoes leaves the previous head, which
/// names an earlier record (reported as lag), while a head that vanished would refuse the log.
pub(crate) fn write_head(dir: &Path, head: &Head) -> Result<(), AuditError> {
    let bytes = serde_json::to_vec(head)?;
    let tmp = dir.join(HEAD_TMP);
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io {
            action,
            path,
            source,
        }
    };
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(&bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(file);
    let head_path = dir.join(HEAD_FILE);
    let replacing = head_path.is_file();
    fs::rename(&tmp, &head_path).map_err(io_err("replace", &head_path))?;
    if replacing { Ok(()) } else { sync_dir(dir) }
}

/// Makes created and renamed directory entries durable (a no-op where directories can't be
/// opened, i.e. outside Unix).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| AuditError::Io {
                action: "fsync directory",
                path: dir.to_path_buf(),
                source,
            })?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_name(1), "audit-000001.jsonl");
        assert_eq!(parse_segment_name("audit-000042.jsonl"), Some(42));
        assert_eq!(parse_segment_name("audit-1234567.jsonl"), Some(1_234_567));
        for bad in [
            "audit-000000.jsonl",
            "audit-00001.jsonl",
            "audit-0000001.jsonl",
            "audit-000001.jsonl.bak",
            "audit-+00001.jsonl",
            "HEAD.json",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn split_lines_separates_partial_tail() {
        assert_eq!(split_lines(b""), (vec![], None));
        assert_eq!(split_lines(b"a\nb\n"), (vec![&b"a"[..], b"b"], None));
        assert_eq!(split_lines(b"a\nb"), (vec![&b"a"[..]], Some(&b"b"[..])));
    }
}
