//! Runs the refusal table (`refusals.rs`): one runner per kind of row — a raw TLS attempt, a
//! gRPC call — and the two refusals that need state (over rate, over concurrency), collecting
//! every failure so one run reports them all.

use super::refusals::{ANY_PEER, Row, Table, Who, rows, table};
use super::*;

pub(super) async fn refusal_table() {
    let (mut t, tls_rows, crafted, revoked) = table();
    for (name, cert, reason, alert) in tls_rows {
        tls_row(&mut t, name, cert.as_ref(), reason, alert).await;
    }
    tls_control(&mut t).await;
    let mut channels = Vec::new();
    for who in [Who::Alice, Who::Carol, Who::Mallory, Who::Erin] {
        channels.push((who, connect(&t.svc.addr, &t.fx.ca_pem, t.cert(who)).await));
    }
    for (i, row) in rows(crafted, revoked).into_iter().enumerate() {
        let ch = &channels
            .iter()
            .find(|(w, _)| *w == row.on)
            .expect("channel")
            .1;
        grpc_row(&mut t, ch, &trace_id(100 + i as u32), row).await;
    }
    over_rate(&mut t).await;
    let ch_alice = channels.swap_remove(0).1;
    over_concurrency(&mut t, &ch_alice).await;
    no_token_in_the_audit_files(&mut t);

    let Table {
        fx, svc, failures, ..
    } = t;
    drop(svc);
    if std::env::var_os("ORLY_TEST_DUMP_AUDIT").is_some() {
        for r in audit_records(&fx.audit_dir) {
            eprintln!("AUDIT {r}");
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} security case(s) failed:\n  - {}\n--- service log (tail) ---\n{}",
            failures.len(),
            failures.join("\n  - "),
            tail(&fx.log_text(0), 40)
        );
    }
}

/// One raw connection attempt: refused with `alert`, and one `connect` record naming `reason`.
async fn tls_row(t: &mut Table, name: &str, cert: Option<&IssuedCert>, reason: &str, alert: &str) {
    let before = audit_records(&t.fx.audit_dir).len();
    let out = tls_attempt(&t.svc.addr, &t.fx.ca_pem, cert).await;
    if !out.summary.starts_with("refused") {
        t.failures
            .push(format!("[{name}] connection not refused: {}", out.summary));
    } else if !out.summary.contains(alert) {
        t.failures.push(format!(
            "[{name}] refused, but the client saw {:?}, expected the {alert} alert",
            out.summary
        ));
    }
    let recs = new_records(&t.fx.audit_dir, before, 1).await;
    if let Err(e) = one_refusal_traced(&recs, reason, None, None) {
        t.failures.push(format!("[{name}] {e}"));
    } else if s(&recs[0], "rpc") != "connect" {
        t.failures.push(format!(
            "[{name}] rpc {:?}, expected connect",
            s(&recs[0], "rpc")
        ));
    }
    eprintln!("[{name}] client: {}", out.summary);
}

/// Control: the same raw client with a good certificate is let in, and leaves no record.
async fn tls_control(t: &mut Table) {
    let before = audit_records(&t.fx.audit_dir).len();
    let out = tls_attempt(&t.svc.addr, &t.fx.ca_pem, Some(t.cert(Who::Alice))).await;
    if !out.summary.starts_with("accepted") {
        t.failures.push(format!(
            "[control: valid certificate] not accepted: {}",
            out.summary
        ));
    }
    let recs = new_records(&t.fx.audit_dir, before, 0).await;
    if !recs.is_empty() {
        t.failures.push(format!(
            "[control: valid certificate] a bare handshake left audit records: {recs:?}"
        ));
    }
}

/// One call: refused with the row's code (never echoing the token), one record with its reason.
async fn grpc_row(t: &mut Table, ch: &Channel, trace: &str, row: Row) {
    let token = t.token(&row.token);
    t.tokens.extend(token.clone());
    let mut body = sync_req(row.peer, row.direction, 10);
    if let Some(kinds) = row.kinds {
        body.filter = Some(cpb::Filter {
            kinds: kinds.to_vec(),
            ..Default::default()
        });
    }
    let before = audit_records(&t.fx.audit_dir).len();
    match sync_call_traced(ch, token.as_deref(), trace, body).await {
        Ok(msgs) => t.failures.push(format!(
            "[{}] not refused: the call was admitted ({} progress messages)",
            row.name,
            msgs.len()
        )),
        Err(st) => {
            if st.code() != row.code {
                t.failures.push(format!(
                    "[{}] status {:?} ({}), expected {:?}",
                    row.name,
                    st.code(),
                    st.message(),
                    row.code
                ));
            }
            if let Some(tok) = &token
                && tok.len() > 12
                && st.message().contains(tok.as_str())
            {
                t.failures
                    .push(format!("[{}] the status echoes the token", row.name));
            }
        }
    }
    let recs = new_records(&t.fx.audit_dir, before, 1).await;
    let admin = Some(row.admin).filter(|a| !a.is_empty());
    if let Err(e) = one_refusal_traced(&recs, row.reason, Some(trace), admin) {
        t.failures.push(format!("[{}] {e}", row.name));
    }
}

/// Dave may make one request a minute: the second is RESOURCE_EXHAUSTED with a retry delay.
async fn over_rate(t: &mut Table) {
    let name = "over rate";
    let dave = t.fx.client("dave");
    let ch_dave = connect(&t.svc.addr, &t.fx.ca_pem, &dave).await;
    let dave_token = t.fx.token("dave", &dave);
    t.tokens.push(dave_token.clone());
    if let Err(st) = list_syncs_traced(&ch_dave, Some(&dave_token), &trace_id(200)).await {
        t.failures
            .push(format!("[{name}] dave's first request refused: {st:?}"));
    }
    let trace = trace_id(201);
    let before = audit_records(&t.fx.audit_dir).len();
    let body = sync_req(ANY_PEER, npb::Direction::Down, 10);
    match sync_call_traced(&ch_dave, Some(&dave_token), &trace, body).await {
        Ok(_) => t.failures.push(format!(
            "[{name}] second request within the minute admitted"
        )),
        Err(st) => {
            if st.code() != Code::ResourceExhausted {
                t.failures.push(format!(
                    "[{name}] status {:?} ({}), expected ResourceExhausted",
                    st.code(),
                    st.message()
                ));
            }
            match st.get_details_retry_info() {
                Some(ri) if ri.retry_delay.is_some_and(|d| d > Duration::ZERO) => {}
                other => t.failures.push(format!(
                    "[{name}] no usable google.rpc.RetryInfo in the status: {other:?}"
                )),
            }
        }
    }
    let recs = new_records(&t.fx.audit_dir, before, 1).await;
    if let Err(e) = one_refusal_traced(&recs, "rate limited", Some(&trace), Some("dave")) {
        t.failures.push(format!("[{name}] {e}"));
    }
}

/// Alice may run one sync at a time: hold one open on a relay that never answers, then ask for
/// a second; walking away from the first cancels it, audited as finished.
async fn over_concurrency(t: &mut Table, ch_alice: &Channel) {
    let name = "over concurrency";
    let (stall_addr, stall_task) = stalling_relay().await;
    let alice_token = t.fx.token("alice", t.cert(Who::Alice));
    t.tokens.push(alice_token.clone());
    let held_trace = trace_id(300);
    let mut c = NegentropyServiceClient::new(ch_alice.clone());
    let body = npb::SyncPeerRequest {
        timeout_seconds: 120,
        ..sync_req(&format!("ws://{stall_addr}/"), npb::Direction::Down, 10)
    };
    let held = tokio::time::timeout(
        CALL_LIMIT,
        c.sync_with_peer(traced(body.clone(), Some(&alice_token), &held_trace)),
    )
    .await
    .expect("first sync call timed out");
    let held = match held {
        Err(st) => {
            t.failures.push(format!(
                "[{name}] the first (held) sync was refused: {st:?}"
            ));
            stall_task.abort();
            return;
        }
        Ok(held) => held,
    };
    let trace = trace_id(301);
    let before = audit_records(&t.fx.audit_dir).len();
    let mut c2 = NegentropyServiceClient::new(ch_alice.clone());
    let second = tokio::time::timeout(
        CALL_LIMIT,
        c2.sync_with_peer(traced(body.clone(), Some(&alice_token), &trace)),
    )
    .await
    .expect("second sync call timed out");
    match second {
        Ok(_) => t.failures.push(format!(
            "[{name}] a second concurrent sync was admitted (max_concurrent = 1)"
        )),
        Err(st) => {
            if st.code() != Code::ResourceExhausted {
                t.failures.push(format!(
                    "[{name}] status {:?} ({}), expected ResourceExhausted",
                    st.code(),
                    st.message()
                ));
            }
            if st.get_details_retry_info().is_none() {
                t.failures.push(format!("[{name}] no google.rpc.RetryInfo"));
            }
        }
    }
    let recs = new_records(&t.fx.audit_dir, before, 1).await;
    if let Err(e) = one_refusal_traced(
        &recs,
        "too many concurrent syncs",
        Some(&trace),
        Some("alice"),
    ) {
        t.failures.push(format!("[{name}] {e}"));
    }
    drop(held);
    let start = Instant::now();
    let finished = loop {
        let f = audit_records(&t.fx.audit_dir)
            .into_iter()
            .find(|r| s(r, "event") == "sync_finished" && s(r, "trace_id") == held_trace);
        if f.is_some() || start.elapsed() > AUDIT_WAIT {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match finished {
        None => t.failures.push(format!(
            "[{name}] the cancelled held sync left no sync_finished record"
        )),
        Some(r) if !s(&r, "error").contains("cancel") => t.failures.push(format!(
            "[{name}] the held sync's record does not say it was cancelled: {r}"
        )),
        Some(_) => {}
    }
    stall_task.abort();
}

/// No token text anywhere in the audit directory: not whole, not its signature.
fn no_token_in_the_audit_files(t: &mut Table) {
    let audit_text = all_text(&t.fx.audit_dir);
    for tok in t.tokens.iter().filter(|tok| tok.len() > 40) {
        let sig = tok.rsplit('.').next().unwrap_or("");
        if audit_text.contains(tok.as_str()) || (sig.len() > 20 && audit_text.contains(sig)) {
            t.failures.push(format!(
                "token text found in the audit files: {}...",
                &tok[..20]
            ));
        }
    }
}
