//! Unit tests of [`AuditAllowed`]: a call past every check is recorded as allowed before its
//! handler runs, and refused UNAVAILABLE (handler not reached) when that record cannot be
//! written; `SyncWithPeer` and `CancelSync` are left to the gate, health to nobody.

use super::audit_layer::AuditAllowed;
use super::check::CheckLayer;
use super::test_support::{
    Harness, Reached, admin_toml, as_admin, inner, policy_toml, request, rpc, send,
};
use crate::audit::AuditEvent;
use tonic::Code;
use tonic::body::Body;
use tower::Layer;

fn harness() -> Harness {
    Harness::new(&policy_toml("", &[admin_toml("alice", "")], ""))
}

async fn call(h: &Harness, path: &str) -> (tonic::Status, Reached) {
    let reached = Reached::default();
    let check = AuditAllowed {
        audit: h.audit.clone(),
    };
    let svc = CheckLayer::new(check, h.audit.clone()).layer(inner(&reached));
    let req = as_admin(request(path, None), "alice")
        .body(Body::empty())
        .unwrap();
    (send(svc, req).await, reached)
}

#[tokio::test]
async fn an_allowed_call_is_recorded_once_before_its_handler() {
    let h = harness();
    let path = rpc("ListSyncs");
    let (status, reached) = call(&h, &path).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert_eq!(reached.calls().len(), 1);
    let recs = h.new_records();
    let [r] = recs.as_slice() else {
        panic!("expected one record: {recs:?}");
    };
    assert!(matches!(r.event, AuditEvent::Decision));
    assert_eq!(r.allowed, Some(true));
    assert_eq!(r.reason.as_deref(), Some("allowed"));
    assert_eq!(r.rpc.as_deref(), Some(path.as_str()));
    assert_eq!(r.admin.as_deref(), Some("alice"));
}

#[tokio::test]
async fn calls_the_gate_records_and_health_write_nothing_here() {
    let h = harness();
    for path in [
        rpc("SyncWithPeer"),
        rpc("CancelSync"),
        "/grpc.health.v1.Health/Check".to_string(),
    ] {
        let (status, reached) = call(&h, &path).await;
        assert_eq!(status.code(), Code::Ok, "{path}: {status:?}");
        assert_eq!(reached.calls().len(), 1, "{path}");
        assert!(h.new_records().is_empty(), "{path}");
    }
}

#[tokio::test]
async fn an_allowed_call_that_cannot_be_recorded_is_refused() {
    let h = harness();
    h.break_audit();
    let (status, reached) = call(&h, &rpc("ListSyncs")).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("refused: audit log unavailable"),
        "{status:?}"
    );
    assert!(
        reached.calls().is_empty(),
        "the handler ran without its record"
    );
    // The failed write left no record saying the call was allowed (a refusal may follow it).
    let recs = h.new_records();
    assert!(recs.iter().all(|r| r.allowed != Some(true)), "{recs:?}");
}
