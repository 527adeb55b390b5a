//! Unit tests of [`SecureGate`], the body-level decision of `SyncWithPeer`: the admin's policy
//! (peer, direction), the per-admin and service-wide concurrency caps (a slot held for the
//! admission's life), and the records — one allow record that starts the sync, one denial with
//! its reason and the request, and the finished record naming its decision.

use super::audit_layer::SYNC_PATH;
use super::gate::SecureGate;
use super::test_support::{Harness, admin_toml, assert_denied, policy_toml};
use crate::audit::AuditEvent;
use crate::event::Filter;
use crate::service::{CallInfo, SyncGate};
use crate::sync::{Direction, Progress, SyncRequest};
use std::time::Duration;
use tonic::Code;

fn harness() -> Harness {
    Harness::new(&policy_toml(
        "max_concurrent_total = 3",
        &[
            admin_toml("alice", "max_concurrent = 1"),
            admin_toml(
                "bob",
                "peers = [\"wss://relay.example.com/\"]\ndirections = [\"down\"]",
            ),
        ],
        "",
    ))
}

fn call(admin: Option<&str>) -> CallInfo {
    CallInfo {
        admin: admin.map(str::to_string),
        ..CallInfo::default()
    }
}

/// The one place these tests build a request (the sync engine owns its construction).
fn sync_request(peer: &str, direction: Direction) -> SyncRequest {
    let url = crate::sync::PeerUrl::parse(peer).expect("a valid test URL");
    SyncRequest::new(url, Filter::default(), direction)
}

const RELAY: &str = "wss://relay.example.com/";

/// One refused admission: who asks for which peer and direction → the status and the reason.
struct Row {
    case: &'static str,
    admin: Option<&'static str>,
    peer: &'static str,
    direction: Direction,
    code: Code,
    reason: &'static str,
}

#[tokio::test]
async fn policy_refusals_have_their_status_and_one_record_with_the_request() {
    let row = |case, admin, peer, direction, code, reason| Row {
        case,
        admin,
        peer,
        direction,
        code,
        reason,
    };
    let rows = [
        row(
            "no admin",
            None,
            RELAY,
            Direction::Down,
            Code::Unauthenticated,
            "no authenticated admin",
        ),
        row(
            "unknown admin",
            Some("mallory"),
            RELAY,
            Direction::Down,
            Code::PermissionDenied,
            "mallory",
        ),
        row(
            "peer",
            Some("bob"),
            "wss://other.example.com/",
            Direction::Down,
            Code::PermissionDenied,
            "policy: peer not allowed",
        ),
        row(
            "direction",
            Some("bob"),
            RELAY,
            Direction::Up,
            Code::PermissionDenied,
            "policy: direction not allowed",
        ),
    ];
    for Row {
        case,
        admin,
        peer,
        direction,
        code,
        reason,
    } in rows
    {
        let h = harness();
        let gate = SecureGate::new(h.policy.clone(), h.audit.clone());
        let Err(status) = gate
            .admit(&call(admin), &sync_request(peer, direction))
            .await
        else {
            panic!("{case}: admitted");
        };
        let r = assert_denied(&h, &status, code, SYNC_PATH, reason, admin);
        assert_eq!(r.peer.as_deref(), Some(peer), "{case}");
        assert_eq!(r.direction.as_deref(), Some(direction.as_str()), "{case}");
    }
}

#[tokio::test]
async fn an_admission_is_recorded_and_its_finished_record_names_it() {
    let h = harness();
    let gate = SecureGate::new(h.policy.clone(), h.audit.clone());
    let req = sync_request(RELAY, Direction::Down);
    let adm = gate
        .admit(&call(Some("bob")), &req)
        .await
        .expect("admitted");
    assert_eq!(adm.admin, "bob");
    let recs = h.new_records();
    let [allow] = recs.as_slice() else {
        panic!("expected one allow record: {recs:?}");
    };
    assert_eq!(allow.allowed, Some(true));
    assert_eq!(allow.reason.as_deref(), Some("allowed by policy"));
    assert_eq!(allow.starts_sync, Some(true));
    assert_eq!(allow.peer.as_deref(), Some(RELAY));

    let last = Progress {
        fetched: 3,
        complete: true,
        ..Progress::default()
    };
    gate.finished(&adm, &req, &last, Duration::from_millis(5))
        .await;
    let recs = h.new_records();
    let [done] = recs.as_slice() else {
        panic!("expected one finished record: {recs:?}");
    };
    assert!(matches!(done.event, AuditEvent::SyncFinished), "{done:?}");
    assert_eq!(done.decision_seq, Some(allow.seq));
    assert_eq!(done.admin.as_deref(), Some("bob"));
}

#[tokio::test]
async fn concurrency_caps_hold_a_slot_per_admission_until_it_ends() {
    let h = harness();
    let gate = SecureGate::new(h.policy.clone(), h.audit.clone());
    let req = sync_request(RELAY, Direction::Down);
    let first = gate.admit(&call(Some("alice")), &req).await.expect("first");
    let _ = h.new_records();
    let Err(status) = gate.admit(&call(Some("alice")), &req).await else {
        panic!("alice's second sync admitted over her cap of 1");
    };
    let reason = "too many concurrent syncs (limit of admin alice)";
    assert_denied(
        &h,
        &status,
        Code::ResourceExhausted,
        SYNC_PATH,
        reason,
        Some("alice"),
    );
    drop(first);
    let _again = gate
        .admit(&call(Some("alice")), &req)
        .await
        .expect("slot freed");
    // The service-wide cap of 3: alice holds one, bob two, then nobody gets a fourth.
    let _b1 = gate.admit(&call(Some("bob")), &req).await.expect("bob 1");
    let _b2 = gate.admit(&call(Some("bob")), &req).await.expect("bob 2");
    let _ = h.new_records();
    let Err(status) = gate.admit(&call(Some("bob")), &req).await else {
        panic!("a fourth sync admitted over the service cap of 3");
    };
    let reason = "too many concurrent syncs (service limit)";
    assert_denied(
        &h,
        &status,
        Code::ResourceExhausted,
        SYNC_PATH,
        reason,
        Some("bob"),
    );
}

#[tokio::test]
async fn an_admission_that_cannot_be_recorded_is_refused() {
    let h = harness();
    let gate = SecureGate::new(h.policy.clone(), h.audit.clone());
    h.break_audit();
    let Err(status) = gate
        .admit(&call(Some("bob")), &sync_request(RELAY, Direction::Down))
        .await
    else {
        panic!("admitted without its record");
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("refused: audit log unavailable"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_reloaded_cap_applies_to_the_next_admission() {
    let h = harness();
    let gate = SecureGate::new(h.policy.clone(), h.audit.clone());
    let req = sync_request(RELAY, Direction::Down);
    let _held = gate.admit(&call(Some("bob")), &req).await.expect("first");
    // The operator sheds load: one sync at a time for the whole service.
    h.reload(&policy_toml(
        "max_concurrent_total = 1",
        &[admin_toml("bob", "")],
        "",
    ))
    .await;
    let _ = h.new_records();
    let Err(status) = gate.admit(&call(Some("bob")), &req).await else {
        panic!("admitted over a service cap lowered to 1");
    };
    let reason = "too many concurrent syncs (service limit)";
    assert_denied(
        &h,
        &status,
        Code::ResourceExhausted,
        SYNC_PATH,
        reason,
        Some("bob"),
    );
}
