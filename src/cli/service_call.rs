//! Running one `orly peers` or `orly syncs` command against a sync service, in client mode (the
//! service's address, TLS and token as `orly sync --server`): connecting, the call, a failure
//! turned into its message and an exit code of `orly sync`'s classes (plus "not found"), and
//! what the commands show alike: JSON lines, times, tables, service text made safe for a
//! terminal.

use super::output;
use super::sync::{ServiceConn, ServiceFailure, ServiceTarget};
use crate::config::{ClientArgs, EnvSource, Problems};
use crate::errln;
use crate::sync::{ErrorKind, exit};
use std::future::Future;
use std::io::{self, Write};
use std::process::ExitCode;

/// Why a command did not do what it was asked.
pub(super) enum Failed {
    /// No such managed peer or sync (NOT_FOUND): exit 1.
    NotFound(String),
    /// A bad flag caught here (a filter, a direction): exit 2.
    Usage(String),
    /// The connection or the call failed: exit by its class, as `orly sync`.
    Service(ServiceFailure),
}

impl Failed {
    /// A call the service refused or did not answer; NOT_FOUND is its own class.
    pub(super) fn call(conn: &ServiceConn, s: &tonic::Status) -> Self {
        let f = conn.refusal(s);
        match s.code() {
            tonic::Code::NotFound => Failed::NotFound(f.message),
            _ => Failed::Service(f),
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Failed::NotFound(_) => exit::FAILURE,
            Failed::Usage(_) => exit::USAGE,
            Failed::Service(f) => f.kind.exit_code(),
        }
    }

    fn parts(&self) -> (&str, &str) {
        match self {
            Failed::NotFound(m) => ("not_found", m),
            Failed::Usage(m) => (ErrorKind::Invalid.as_str(), m),
            Failed::Service(f) => (f.kind.as_str(), &f.message),
        }
    }
}

/// Runs one command against the service of `client` (`of` names it in configuration errors):
/// connects, then `call`, which prints what it got and returns the exit code. A failure is
/// told on stderr (and as `{"error", "error_kind"}` on stdout with `--json`) and exits by its
/// class.
pub(super) fn run<F, Fut>(
    of: &'static str,
    client: ClientArgs,
    env: &dyn EnvSource,
    call: F,
) -> anyhow::Result<ExitCode>
where
    F: FnOnce(ServiceConn) -> Fut,
    Fut: Future<Output = Result<anyhow::Result<u8>, Failed>>,
{
    let mut p = Problems::new(of);
    let service = client.service.with_env(env, &mut p);
    p.finish(|| Some(()))?;
    let json = client.json;
    let Some(addr) = service.server.clone() else {
        return fail(json, Failed::Usage("give --server HOST:PORT".into()));
    };
    let target = ServiceTarget::new(addr, service);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let conn = ServiceConn::open(&target).await.map_err(Failed::Service)?;
        call(conn).await
    });
    match outcome {
        Ok(code) => Ok(ExitCode::from(code?)),
        Err(f) => fail(json, f),
    }
}

/// Tells `f` (on stderr; also on stdout as one JSON object with `--json`); its exit code.
pub(super) fn fail(json: bool, f: Failed) -> anyhow::Result<ExitCode> {
    let (kind, message) = f.parts();
    errln!("error: {}", plain(message));
    if json {
        print_json(&serde_json::json!({ "error": message, "error_kind": kind }))?;
    }
    Ok(ExitCode::from(f.exit_code()))
}

/// Prints `v` as one JSON line.
pub(super) fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    output::print(|out| writeln!(out, "{v}"))
}

/// Prints `lines` (one JSON value per line).
pub(super) fn print_json_lines(lines: &[serde_json::Value]) -> anyhow::Result<()> {
    output::print(|out| lines.iter().try_for_each(|v| writeln!(out, "{v}")))
}

/// `text` (from the service) safe for a terminal: control characters escaped.
pub(super) fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Now, in Unix seconds.
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A Unix time as `2026-12-03 07:00:00 UTC`.
pub(super) fn utc(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => format!("{t} (unix)"),
    }
}

/// A past time (0: never) with how long ago, e.g. `2026-12-03 07:00:00 UTC (12 s ago)`.
pub(super) fn ago(t: i64, now: i64) -> String {
    match t {
        0 => "never".into(),
        t => format!("{} ({} s ago)", utc(t), now.saturating_sub(t).max(0)),
    }
}

/// Seconds from `now` until `t` (0 when due).
pub(super) fn due_in(t: i64, now: i64) -> i64 {
    t.saturating_sub(now).max(0)
}

/// When an attempt is due (0 or past: now), e.g. `2026-12-03 07:01:00 UTC (in 42 s)`.
pub(super) fn due(t: i64, now: i64) -> String {
    match due_in(t, now) {
        0 => "now".into(),
        n => format!("{} (in {n} s)", utc(t)),
    }
}

/// `rows` under `header`, columns aligned (two spaces apart); the last column is not padded.
pub(super) fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            match i == last {
                true => text.push_str(cell),
                false => text.push_str(&format!("{cell:<w$}  ")),
            }
        }
        text.trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_and_relative() {
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(ago(0, 100), "never");
        assert_eq!(
            ago(1_700_000_000, 1_700_000_012),
            "2023-11-14 22:13:20 UTC (12 s ago)"
        );
        assert_eq!(due(0, 100), "now");
        assert_eq!(due(90, 100), "now");
        assert_eq!(
            due(1_700_000_042, 1_700_000_000),
            "2023-11-14 22:14:02 UTC (in 42 s)"
        );
    }

    #[test]
    fn service_text_cannot_drive_the_terminal() {
        assert_eq!(plain("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(plain("ws://h/ é"), "ws://h/ é");
    }

    #[test]
    fn tables_align_columns_and_leave_the_last_unpadded() {
        let mut out = Vec::new();
        let rows = vec![vec!["ws://a/".to_string(), "idle".into(), "-".into()]];
        table(&mut out, &["PEER", "STATUS", "LAST ERROR"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PEER     STATUS  LAST ERROR\nws://a/  idle    -\n"
        );
    }
}
