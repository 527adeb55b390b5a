//! `orly peers`: the managed peers of a sync service and their background sync (`GetPeers`,
//! `AddPeer`, `RemovePeer`, `TriggerSync`, `GetSyncStatus`, `GetPeerSyncState`, `Start`,
//! `Stop`), in client mode; the connection, failures and exit codes are `service_call`'s.

use super::output;
use super::service_call::{
    Failed, ago, due, due_in, fail, plain, print_json, print_json_lines, run, table, unix_now,
};
use super::sync::ServiceConn;
use crate::config::{ClientArgs, EnvSource, PeersCmd};
use crate::errln;
use crate::event::Filter;
use crate::peer::redact_url;
use crate::proto::orlysync::common::v1 as common;
use crate::proto::orlysync::negentropy::v1 as pb;
use crate::sync::{Direction, exit};
use std::io::Write;
use std::process::ExitCode;

/// `--filter` as the wire's filter; `None` when not given.
fn wire_filter(filter: Option<&str>) -> Result<Option<common::Filter>, Failed> {
    filter
        .map(|json| {
            Filter::from_json(json)
                .map(|f| common::Filter::from(&f))
                .map_err(|e| Failed::Usage(format!("--filter: {e}")))
        })
        .transpose()
}

/// `orly peers ...`: see `orly peers --help`.
pub(super) fn peers(cmd: PeersCmd, env: &dyn EnvSource) -> anyhow::Result<ExitCode> {
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
            let flags_given = filter.is_some() || direction.is_some();
            run("orly peers add", client, env, |conn| async move {
                let req = pb::AddPeerRequest {
                    peer_url: url.clone(),
                    filter: wire,
                    direction: direction.map_or(0, |d| pb::Direction::from(d) as i32),
                };
                add(&conn, req, flags_given, json).await
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
                let now = unix_now();
                match state_of(&conn, &url).await? {
                    Some(st) => Ok(show_peer(&st, now, json).map(|()| exit::SUCCESS)),
                    None if json => {
                        let shown = redact_url(&url);
                        errln!("error: {} is not a managed peer", plain(&shown));
                        let v = serde_json::json!({ "peer_url": shown, "found": false });
                        Ok(print_json(&v).map(|()| exit::FAILURE))
                    }
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

/// A managed peer's state, `None` when the URL names none.
async fn state_of(conn: &ServiceConn, url: &str) -> Result<Option<pb::PeerSyncState>, Failed> {
    let req = pb::PeerSyncStateRequest {
        peer_url: url.to_string(),
    };
    let r = conn.client().get_peer_sync_state(conn.request(req)).await;
    let r = r.map_err(|s| Failed::call(conn, &s))?.into_inner();
    Ok(r.state.filter(|_| r.found))
}

/// `AddPeer`, then the peer as the service keeps it. `AddPeer` answers the same whether or not
/// the URL was listed already (and then changes nothing), so the state is asked before and
/// after: the output says what is true, not what was asked.
async fn add(
    conn: &ServiceConn,
    req: pb::AddPeerRequest,
    flags_given: bool,
    json: bool,
) -> Result<anyhow::Result<u8>, Failed> {
    let url = req.peer_url.clone();
    // What the service keeps when asked: unspecified is both (ORLY's service syncs both ways).
    let asked = match req.direction {
        0 => Direction::Both,
        d => crate::proto::direction_from_pb(d).unwrap_or(Direction::Both),
    };
    // A refused look (no right, a limit) is left to `AddPeer` to say, and to record.
    let listed = state_of(conn, &url).await.ok().flatten().is_some();
    let r = conn.client().add_peer(conn.request(req)).await;
    r.map_err(|s| Failed::call(conn, &s))?;
    let kept = state_of(conn, &url)
        .await?
        .unwrap_or_else(|| pb::PeerSyncState {
            // Removed again at once by someone else: what was asked.
            peer_url: redact_url(&url),
            direction: asked.as_str().into(),
            ..Default::default()
        });
    if listed {
        let flags = if flags_given {
            "; --dir and --filter were not applied (remove it and add it again to change them)"
        } else {
            ""
        };
        errln!(
            "warning: {} was listed already: nothing changed{flags}",
            plain(&kept.peer_url)
        );
    }
    let or = |s: &str, none: &str| match s {
        "" => none.to_string(),
        s => plain(s),
    };
    Ok(if json {
        let filter = serde_json::from_str::<serde_json::Value>(&kept.filter).ok();
        print_json(&serde_json::json!({
            "peer_url": kept.peer_url,
            "added": !listed,
            "direction": kept.direction,
            "filter": filter,
            "owner": (!kept.owner.is_empty()).then_some(&kept.owner),
        }))
    } else {
        output::print(|out| {
            writeln!(
                out,
                "{} peer {} (direction {}, filter {}, owner {})",
                if listed { "kept" } else { "added" },
                plain(&kept.peer_url),
                plain(&kept.direction),
                or(&kept.filter, "the service's default"),
                or(&kept.owner, "the operator"),
            )
        })
    }
    .map(|()| exit::SUCCESS))
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
    use crate::cli::sync::ServiceTarget;
    use crate::config::Problems;

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
}
