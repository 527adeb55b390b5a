//! `orly peers`: the managed peers of a sync service and their background sync, in client mode
//! (the service's address, TLS and token as `orly sync --server`). Also the plumbing `orly
//! syncs` shares: running one call, turning its failure into a message and an exit code of
//! `orly sync`'s classes (plus "not found"), and showing times and tables.

use super::output;
use super::sync::{ServiceConn, ServiceFailure, ServiceTarget};
use crate::config::{ClientArgs, EnvSource, PeersCmd, Problems};
use crate::errln;
use crate::event::Filter;
use crate::peer::redact_url;
use crate::proto::orlysync::common::v1 as common;
use crate::proto::orlysync::negentropy::v1 as pb;
use crate::sync::{Direction, ErrorKind, exit};
use std::future::Future;
use std::io::{self, Write};
use std::process::ExitCode;

/// Why a command did not do what it was asked.
pub(super) enum Failed {
    /// No such managed peer or sync (NOT_FOUND, or a sync not cancelled): exit 1.
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

fn fail(json: bool, f: Failed) -> anyhow::Result<ExitCode> {
    let (kind, message) = f.parts();
    errln!("error: {message}");
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
    text.chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default().to_string());
            escaped
                .unwrap_or_else(|| c.to_string())
                .chars()
                .collect::<Vec<_>>()
        })
        .collect()
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
fn due_in(t: i64, now: i64) -> i64 {
    t.saturating_sub(now).max(0)
}

/// When an attempt is due (0 or past: now), e.g. `2026-12-03 07:01:00 UTC (in 42 s)`.
fn due(t: i64, now: i64) -> String {
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
    let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let cells: Vec<&str> = cells.collect();
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &mut header.iter().copied())?;
    for row in rows {
        line(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// `--filter` as the wire's filter; `None` when not given.
pub(super) fn wire_filter(filter: Option<&str>) -> Result<Option<common::Filter>, Failed> {
    filter
        .map(|json| {
            Filter::from_json(json)
                .map(|f| common::Filter::from(&f))
                .map_err(|e| Failed::Usage(format!("--filter: {e}")))
        })
        .transpose()
}

/// `orly peers ...`: see `orly peers --help`.
pub fn peers(cmd: PeersCmd, env: &dyn EnvSource) -> anyhow::Result<ExitCode> {
    match cmd {
        PeersCmd::List(client) => {
            let json = client.json;
            run("orly peers list", client, env, |conn| async move {
                let r = conn
                    .client()
                    .get_peers(conn.request(common::Empty {}))
                    .await;
                let peers = r.map_err(|s| Failed::call(&conn, &s))?.into_inner().peers;
                Ok(show_list(&peers, json).map(|()| exit::SUCCESS))
            })
        }
        PeersCmd::Add {
            url,
            filter,
            dir,
            client,
        } => {
            let json = client.json;
            let checked = wire_filter(filter.as_deref()).and_then(|f| {
                let d = dir
                    .as_deref()
                    .map(|d| {
                        Direction::parse(d).ok_or_else(|| {
                            Failed::Usage(format!("--dir: {d:?} is not down, up, both or none"))
                        })
                    })
                    .transpose()?;
                Ok((f, d))
            });
            let (wire, direction) = match checked {
                Ok(v) => v,
                Err(f) => return fail(json, f),
            };
            run("orly peers add", client, env, |conn| async move {
                let req = pb::AddPeerRequest {
                    peer_url: url.clone(),
                    filter: wire,
                    direction: direction.map_or(0, |d| pb::Direction::from(d) as i32),
                };
                let r = conn.client().add_peer(conn.request(req)).await;
                r.map_err(|s| Failed::call(&conn, &s))?;
                let shown = redact_url(&url);
                // As the service keeps it: unspecified is both (ORLY's service syncs both ways).
                let direction = direction.unwrap_or(Direction::Both);
                Ok(if json {
                    let filter = filter
                        .as_deref()
                        .and_then(|f| serde_json::from_str::<serde_json::Value>(f).ok());
                    print_json(&serde_json::json!({
                        "added": shown,
                        "direction": direction.as_str(),
                        "filter": filter,
                    }))
                } else {
                    let filter = filter
                        .as_deref()
                        .map_or_else(|| "the service's default".into(), plain);
                    output::print(|out| {
                        writeln!(
                            out,
                            "added peer {} (direction {direction}, filter {filter})",
                            plain(&shown),
                        )
                    })
                }
                .map(|()| exit::SUCCESS))
            })
        }
        PeersCmd::Remove { url, client } => {
            let json = client.json;
            run("orly peers remove", client, env, |conn| async move {
                let req = pb::RemovePeerRequest {
                    peer_url: url.clone(),
                };
                let r = conn.client().remove_peer(conn.request(req)).await;
                r.map_err(|s| Failed::call(&conn, &s))?;
                let shown = redact_url(&url);
                Ok(done(
                    json,
                    "removed",
                    &shown,
                    &format!("removed peer {shown}"),
                ))
            })
        }
        PeersCmd::Trigger {
            url,
            filter,
            client,
        } => {
            let json = client.json;
            let wire = match wire_filter(filter.as_deref()) {
                Ok(f) => f,
                Err(f) => return fail(json, f),
            };
            run("orly peers trigger", client, env, |conn| async move {
                let req = pb::TriggerSyncRequest {
                    peer_url: url.clone().unwrap_or_default(),
                    filter: wire,
                };
                let r = conn.client().trigger_sync(conn.request(req)).await;
                r.map_err(|s| Failed::call(&conn, &s))?;
                let shown = url.as_deref().map(redact_url);
                let text = match &shown {
                    Some(u) => format!("sync of {u} triggered"),
                    None => "sync of every managed peer triggered".into(),
                };
                Ok(if json {
                    print_json(&serde_json::json!({ "triggered": shown.as_deref().unwrap_or("*") }))
                } else {
                    output::print(|out| writeln!(out, "{}", plain(&text)))
                }
                .map(|()| exit::SUCCESS))
            })
        }
        PeersCmd::Status {
            url: Some(url),
            client,
        } => {
            let json = client.json;
            run("orly peers status", client, env, |conn| async move {
                let req = pb::PeerSyncStateRequest {
                    peer_url: url.clone(),
                };
                let r = conn.client().get_peer_sync_state(conn.request(req)).await;
                let r = r.map_err(|s| Failed::call(&conn, &s))?.into_inner();
                let now = unix_now();
                match r.state.filter(|_| r.found) {
                    Some(st) => Ok(show_peer(&st, now, json).map(|()| exit::SUCCESS)),
                    None if json => Ok(print_json(&serde_json::json!({
                        "peer_url": redact_url(&url),
                        "found": false,
                    }))
                    .map(|()| exit::FAILURE)),
                    None => Err(Failed::NotFound(format!(
                        "{} is not a managed peer",
                        redact_url(&url)
                    ))),
                }
            })
        }
        PeersCmd::Status { url: None, client } => {
            let json = client.json;
            run("orly peers status", client, env, |conn| async move {
                let r = conn
                    .client()
                    .get_sync_status(conn.request(common::Empty {}))
                    .await;
                let st = r.map_err(|s| Failed::call(&conn, &s))?.into_inner();
                Ok(show_status(&st, unix_now(), json).map(|()| exit::SUCCESS))
            })
        }
        PeersCmd::Start(client) => start_stop(client, env, true),
        PeersCmd::Stop(client) => start_stop(client, env, false),
    }
}

/// Prints a one-line result, or `{key: url}` with `--json`.
fn done(json: bool, key: &str, url: &str, text: &str) -> anyhow::Result<u8> {
    if json {
        print_json(&serde_json::json!({ key: url }))?;
    } else {
        output::print(|out| writeln!(out, "{}", plain(text)))?;
    }
    Ok(exit::SUCCESS)
}

fn start_stop(client: ClientArgs, env: &dyn EnvSource, start: bool) -> anyhow::Result<ExitCode> {
    let json = client.json;
    let of = if start {
        "orly peers start"
    } else {
        "orly peers stop"
    };
    run(of, client, env, |conn| async move {
        let mut c = conn.client();
        let r = if start {
            c.start(conn.request(common::Empty {})).await
        } else {
            c.stop(conn.request(common::Empty {})).await
        };
        r.map_err(|s| Failed::call(&conn, &s))?;
        Ok(if json {
            print_json(&serde_json::json!({ "active": start }))
        } else {
            let word = if start { "started" } else { "stopped" };
            output::print(|out| writeln!(out, "background sync {word}"))
        }
        .map(|()| exit::SUCCESS))
    })
}

fn show_list(peers: &[String], json: bool) -> anyhow::Result<()> {
    if json {
        let lines: Vec<_> = peers
            .iter()
            .map(|p| serde_json::json!({ "peer_url": p }))
            .collect();
        return print_json_lines(&lines);
    }
    if peers.is_empty() {
        errln!("no managed peers");
    }
    output::print(|out| peers.iter().try_for_each(|p| writeln!(out, "{}", plain(p))))
}

/// One peer's state as a JSON object (times in Unix seconds, `next_attempt_in` in seconds).
fn peer_json(st: &pb::PeerSyncState, now: i64) -> serde_json::Value {
    serde_json::json!({
        "peer_url": st.peer_url,
        "status": st.status,
        "direction": st.direction,
        "filter": (!st.filter.is_empty()).then_some(&st.filter),
        "owner": (!st.owner.is_empty()).then_some(&st.owner),
        "last_sync": st.last_sync,
        "events_synced": st.events_synced,
        "consecutive_failures": st.consecutive_failures,
        "last_error": (!st.last_error.is_empty()).then_some(&st.last_error),
        "next_attempt": st.next_attempt,
        "next_attempt_in": due_in(st.next_attempt, now),
    })
}

fn show_peer(st: &pb::PeerSyncState, now: i64, json: bool) -> anyhow::Result<()> {
    if json {
        let mut v = peer_json(st, now);
        v["found"] = true.into();
        return print_json(&v);
    }
    let or = |s: &str, none: &str| {
        if s.is_empty() {
            none.to_string()
        } else {
            plain(s)
        }
    };
    output::print(|out| {
        writeln!(out, "peer: {}", plain(&st.peer_url))?;
        writeln!(out, "status: {}", plain(&st.status))?;
        writeln!(out, "direction: {}", plain(&st.direction))?;
        writeln!(out, "filter: {}", or(&st.filter, "the service's default"))?;
        writeln!(out, "owner: {}", or(&st.owner, "the operator"))?;
        writeln!(out, "last sync: {}", ago(st.last_sync, now))?;
        writeln!(out, "events synced: {}", st.events_synced)?;
        writeln!(out, "consecutive failures: {}", st.consecutive_failures)?;
        writeln!(out, "last error: {}", or(&st.last_error, "-"))?;
        writeln!(out, "next attempt: {}", due(st.next_attempt, now))
    })
}

fn show_status(st: &pb::SyncStatusResponse, now: i64, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!({
            "active": st.active,
            "last_sync": st.last_sync,
            "peer_count": st.peer_count,
            "peers": st.peer_states.iter().map(|p| peer_json(p, now)).collect::<Vec<_>>(),
        }));
    }
    let rows: Vec<Vec<String>> = st
        .peer_states
        .iter()
        .map(|p| {
            vec![
                plain(&p.peer_url),
                plain(&p.status),
                plain(&p.direction),
                ago(p.last_sync, now),
                p.events_synced.to_string(),
                p.consecutive_failures.to_string(),
                due(p.next_attempt, now),
                if p.last_error.is_empty() {
                    "-".into()
                } else {
                    plain(&p.last_error)
                },
            ]
        })
        .collect();
    output::print(|out| {
        let state = if st.active { "running" } else { "stopped" };
        writeln!(out, "background sync: {state}")?;
        writeln!(out, "last sync: {}", ago(st.last_sync, now))?;
        writeln!(out, "peers: {}", st.peer_count)?;
        if rows.is_empty() {
            return Ok(());
        }
        table(
            out,
            &[
                "PEER",
                "STATUS",
                "DIR",
                "LAST SYNC",
                "EVENTS",
                "FAILURES",
                "NEXT ATTEMPT",
                "LAST ERROR",
            ],
            &rows,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `orly peers` and `orly syncs` take `orly sync`'s service flags and variables, after the
    /// subcommand; `--server` is required.
    #[test]
    fn the_service_flags_and_variables_are_orly_syncs() {
        use crate::config::{Cli, Cmd, SyncsCmd};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "orly",
            "peers",
            "add",
            "ws://h/",
            "--dir",
            "down",
            "--server",
            "h:1",
            "--cert",
            "/flag/me.pem",
        ])
        .expect("parse");
        let Cmd::Peers(PeersCmd::Add {
            url, dir, client, ..
        }) = cli.cmd
        else {
            panic!("not peers add");
        };
        assert_eq!((url.as_str(), dir.as_deref()), ("ws://h/", Some("down")));
        let mut p = Problems::new("orly peers add");
        let env = [
            ("ORLY_SYNC_CA", "/env/ca.pem"),
            ("ORLY_SYNC_CERT", "/env/me.pem"),
            ("ORLY_SYNC_KEY", "/env/me.key"),
            ("ORLY_SYNC_TOKEN", "/env/me.token"),
        ];
        let s = client.service.with_env(&env, &mut p);
        assert!(p.finish(|| Some(())).is_ok());
        let t = ServiceTarget::new(s.server.clone().expect("server"), s);
        assert_eq!(t.addr, "h:1");
        assert_eq!(
            t.cert.as_deref(),
            Some(std::path::Path::new("/flag/me.pem"))
        );
        assert_eq!(t.ca.as_deref(), Some(std::path::Path::new("/env/ca.pem")));
        assert_eq!(t.key.as_deref(), Some(std::path::Path::new("/env/me.key")));
        assert_eq!(
            t.token_file.as_deref(),
            Some(std::path::Path::new("/env/me.token"))
        );
        assert!(
            Cli::try_parse_from(["orly", "peers", "list"]).is_err(),
            "--server is required"
        );
        let cli =
            Cli::try_parse_from(["orly", "syncs", "cancel", "ab", "--server", "h:1", "--json"])
                .expect("parse");
        assert!(matches!(cli.cmd, Cmd::Syncs(SyncsCmd::Cancel { client, .. }) if client.json));
        // `orly sync` without --server stays direct mode.
        let cli = Cli::try_parse_from(["orly", "sync", "ws://h/"]).expect("parse");
        assert!(matches!(cli.cmd, Cmd::Sync(a) if a.service.server.is_none()));
    }

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
