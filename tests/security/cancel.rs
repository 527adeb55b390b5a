//! CancelSync between admins: only the owner may cancel a sync; another admin's attempt is
//! refused and audited, a malformed id is refused without being echoed, an unknown one is
//! allowed with nothing to cancel.

use super::*;

pub(super) async fn cancel_ownership() {
    let fx = Fixture::without_policy();
    let (alice, bob) = (fx.client("alice"), fx.client("bob"));
    fx.write_policy(&policy(&[open("alice"), open("bob")], &[]));
    let svc = start_service(&fx);
    let (stall, stall_task) = stalling_relay().await;
    let ch_a = connect(&svc.addr, &fx.ca_pem, &alice).await;
    let ch_b = connect(&svc.addr, &fx.ca_pem, &bob).await;
    let (ta, tb) = (fx.token("alice", &alice), fx.token("bob", &bob));
    let body = npb::SyncPeerRequest {
        timeout_seconds: 120,
        ..sync_req(&format!("ws://{stall}/"), npb::Direction::Down, 10)
    };
    let mut ca = NegentropyServiceClient::new(ch_a.clone());
    let _held = tokio::time::timeout(
        CALL_LIMIT,
        ca.sync_with_peer(traced(body, Some(&ta), &trace_id(1))),
    )
    .await
    .expect("sync call timed out")
    .expect("alice's sync is admitted");
    // The stalled peer never answers, so no progress arrives: find the id in ListSyncs.
    let start = Instant::now();
    let id = loop {
        let syncs = NegentropyServiceClient::new(ch_a.clone())
            .list_syncs(traced(npb::ListSyncsRequest {}, Some(&ta), &trace_id(5)))
            .await
            .expect("ListSyncs")
            .into_inner()
            .syncs;
        if let Some(s) = syncs.iter().find(|s| s.admin == "alice" && s.running) {
            break s.sync_id.clone();
        }
        assert!(start.elapsed() < CALL_LIMIT, "alice's sync never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let cancel = |ch: &Channel, token: &str, trace: String| {
        let mut c = NegentropyServiceClient::new(ch.clone());
        let req = traced(
            npb::CancelSyncRequest {
                sync_id: id.clone(),
            },
            Some(token),
            &trace,
        );
        async move {
            tokio::time::timeout(CALL_LIMIT, c.cancel_sync(req))
                .await
                .expect("CancelSync timed out")
        }
    };
    let before = audit_records(&fx.audit_dir).len();
    let refused = cancel(&ch_b, &tb, trace_id(2))
        .await
        .expect_err("bob cancelled alice's sync");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let recs = new_records(&fx.audit_dir, before, 1).await;
    assert_eq!(
        recs.len(),
        1,
        "one record for the refused cancel: {recs:#?}"
    );
    let r = &recs[0];
    assert_eq!(s(r, "event"), "decision", "{r}");
    assert_eq!(r.get("allowed"), Some(&Value::Bool(false)), "{r}");
    assert_eq!(s(r, "admin"), "bob", "{r}");
    assert_eq!(s(r, "rpc"), CANCEL_PATH, "{r}");
    assert!(s(r, "reason").contains("another admin"), "{r}");

    let status = NegentropyServiceClient::new(ch_a.clone())
        .get_sync(traced(
            npb::GetSyncRequest {
                sync_id: id.clone(),
            },
            Some(&ta),
            &trace_id(3),
        ))
        .await
        .expect("GetSyncStatus")
        .into_inner();
    assert!(
        status.running,
        "alice's sync still runs after bob's refused cancel: {status:?}"
    );

    // A malformed id is refused (and audited without echoing it); an unknown one is allowed,
    // with nothing to cancel.
    let mut cb = NegentropyServiceClient::new(ch_b.clone());
    let before = audit_records(&fx.audit_dir).len();
    let huge = "x".repeat(100_000);
    let st = cb
        .cancel_sync(traced(
            npb::CancelSyncRequest {
                sync_id: huge.clone(),
            },
            Some(&tb),
            &trace_id(6),
        ))
        .await
        .expect_err("a malformed id");
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    let unknown = cb
        .cancel_sync(traced(
            npb::CancelSyncRequest {
                sync_id: "00".repeat(12),
            },
            Some(&tb),
            &trace_id(7),
        ))
        .await
        .expect("an unknown id is not an error")
        .into_inner();
    assert!(!unknown.cancelled);
    let recs = new_records(&fx.audit_dir, before, 2).await;
    assert_eq!(recs.len(), 2, "{recs:#?}");
    assert_eq!(
        recs[0].get("allowed"),
        Some(&Value::Bool(false)),
        "{}",
        recs[0]
    );
    assert!(
        !recs[0].to_string().contains(&huge[..100]),
        "the id is not echoed"
    );
    assert_eq!(
        recs[1].get("allowed"),
        Some(&Value::Bool(true)),
        "{}",
        recs[1]
    );
    assert!(
        s(&recs[1], "reason").contains("nothing to cancel"),
        "{}",
        recs[1]
    );

    let before = audit_records(&fx.audit_dir).len();
    let ok = cancel(&ch_a, &ta, trace_id(4))
        .await
        .expect("alice cancels her own sync")
        .into_inner();
    assert!(ok.cancelled, "{ok:?}");
    let recs = new_records(&fx.audit_dir, before, 2).await;
    let allow: Vec<_> = recs.iter().filter(|r| s(r, "rpc") == CANCEL_PATH).collect();
    assert_eq!(
        allow.len(),
        1,
        "one record for the allowed cancel: {recs:#?}"
    );
    assert_eq!(
        allow[0].get("allowed"),
        Some(&Value::Bool(true)),
        "{}",
        allow[0]
    );
    assert_eq!(s(allow[0], "admin"), "alice", "{}", allow[0]);
    stall_task.abort();
}
