//! `orly syncs`: the syncs a sync service runs or recently ran (`ListSyncs`, `GetSync`,
//! `CancelSync`), in client mode; each sync's progress in the shape of `orly sync --json`.
//! The connection, failures, exit codes and tables are `service_call`'s.

use super::output;
use super::service_call::{Failed, ago, plain, print_json, print_json_lines, run, table, unix_now};
use crate::config::{EnvSource, SyncsCmd};
use crate::proto::orlysync::negentropy::v1 as pb;
use crate::proto::progress_from_pb;
use crate::sync::{Progress, exit};
use std::io::Write;
use std::process::ExitCode;

/// `orly syncs ...`: see `orly syncs --help`.
pub(super) fn syncs(cmd: SyncsCmd, env: &dyn EnvSource) -> anyhow::Result<ExitCode> {
    match cmd {
        SyncsCmd::List(client) => {
            let json = client.json;
            run("orly syncs list", client, env, |conn| async move {
                let r = conn
                    .client()
                    .list_syncs(conn.request(pb::ListSyncsRequest {}))
                    .await;
                let syncs = r.map_err(|s| Failed::call(&conn, &s))?.into_inner().syncs;
                Ok(show_list(&syncs, unix_now(), json).map(|()| exit::SUCCESS))
            })
        }
        SyncsCmd::Status { sync_id, client } => {
            let json = client.json;
            run("orly syncs status", client, env, |conn| async move {
                let req = pb::GetSyncRequest { sync_id };
                let r = conn.client().get_sync(conn.request(req)).await;
                let st = r.map_err(|s| Failed::call(&conn, &s))?.into_inner();
                Ok(show_one(&st, unix_now(), json).map(|()| exit::SUCCESS))
            })
        }
        SyncsCmd::Cancel { sync_id, client } => {
            let json = client.json;
            run("orly syncs cancel", client, env, |conn| async move {
                let req = pb::CancelSyncRequest {
                    sync_id: sync_id.clone(),
                };
                let r = conn.client().cancel_sync(conn.request(req)).await;
                let cancelled = r
                    .map_err(|s| Failed::call(&conn, &s))?
                    .into_inner()
                    .cancelled;
                let code = if cancelled {
                    exit::SUCCESS
                } else {
                    exit::FAILURE
                };
                let printed = if json {
                    print_json(&serde_json::json!({ "sync_id": sync_id, "cancelled": cancelled }))
                } else {
                    output::print(|out| match cancelled {
                        true => writeln!(out, "sync {} cancelled", plain(&sync_id)),
                        false => writeln!(
                            out,
                            "sync {} not cancelled: none of your syncs with that id is running",
                            plain(&sync_id)
                        ),
                    })
                };
                Ok(printed.map(|()| code))
            })
        }
    }
}

/// A sync's progress as `orly sync --json` shows it.
fn progress(st: &pb::SyncStatus) -> Progress {
    st.progress
        .as_ref()
        .map(progress_from_pb)
        .unwrap_or_default()
}

/// Where a sync stands: `running`, `complete`, `complete, differs (dropped)`, `failed (kind)`.
fn state(st: &pb::SyncStatus, p: &Progress) -> String {
    match (st.running, p.complete, &p.error_kind) {
        (true, _, _) => "running".into(),
        (false, true, _) if !p.differs.is_empty() => {
            format!("complete, differs ({})", p.differs.join(", "))
        }
        (false, true, _) => "complete".into(),
        (false, false, Some(kind)) => format!("failed ({kind})"),
        (false, false, None) => "failed".into(),
    }
}

fn sync_json(st: &pb::SyncStatus) -> serde_json::Value {
    serde_json::json!({
        "sync_id": st.sync_id,
        "running": st.running,
        "admin": st.admin,
        "direction": st.direction,
        "started_at": st.started_at,
        "progress": progress(st),
    })
}

fn show_list(syncs: &[pb::SyncStatus], now: i64, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json_lines(&syncs.iter().map(sync_json).collect::<Vec<_>>());
    }
    if syncs.is_empty() {
        crate::errln!("no syncs");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = syncs
        .iter()
        .map(|st| {
            let p = progress(st);
            vec![
                plain(&st.sync_id),
                state(st, &p),
                plain(&st.direction),
                plain(&st.admin),
                ago(st.started_at, now),
                p.fetched.to_string(),
                p.sent.to_string(),
                plain(&p.peer_url),
            ]
        })
        .collect();
    output::print(|out| {
        table(
            out,
            &[
                "SYNC", "STATE", "DIR", "ADMIN", "STARTED", "FETCHED", "SENT", "PEER",
            ],
            &rows,
        )
    })
}

fn show_one(st: &pb::SyncStatus, now: i64, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&sync_json(st));
    }
    let p = progress(st);
    output::print(|out| {
        writeln!(out, "sync: {}", plain(&st.sync_id))?;
        writeln!(out, "state: {}", state(st, &p))?;
        writeln!(out, "peer: {}", plain(&p.peer_url))?;
        writeln!(out, "direction: {}", plain(&st.direction))?;
        writeln!(out, "admin: {}", plain(&st.admin))?;
        writeln!(out, "started: {}", ago(st.started_at, now))?;
        writeln!(out, "progress: {}", p.counts_text())?;
        if let Some(why) = &p.last_refusal {
            writeln!(out, "last refused upload: {}", plain(why))?;
        }
        if let Some(e) = &p.error {
            writeln!(out, "error: {}", plain(e))?;
        }
        Ok(())
    })
}
