//! Unit tests of the generic [`CheckLayer`]: what every check gets for free — a refusal answers
//! its status (with retry info when it has one) and writes exactly one record with its reason,
//! URL secrets kept out of both; a refusal whose record cannot be written answers UNAVAILABLE
//! (fail closed); a passing check reaches the handler with a [`CallInfo`] it may have enriched.

use super::check::{Check, CheckLayer};
use super::refusal::Refusal;
use super::test_support::{
    Harness, Reached, admin_toml, as_admin, assert_refused, inner, policy_toml, request, rpc, send,
};
use crate::service::CallInfo;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tonic::Code;
use tonic::body::Body;
use tonic_types::StatusExt;
use tower::Layer;

/// A stand-in check: refuses with its refusal, or passes and names an admin in the call.
#[derive(Clone)]
struct StandIn(Option<Refusal>);

impl Check for StandIn {
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(r) = &self.0 {
                return Err(r.clone());
            }
            if let Some(call) = parts.extensions.get_mut::<CallInfo>() {
                call.admin = Some("named-by-check".into());
            }
            Ok(())
        })
    }
}

fn harness() -> Harness {
    Harness::new(&policy_toml("", &[admin_toml("alice", "")], ""))
}

async fn call(h: &Harness, check: StandIn, req: http::Request<Body>) -> (tonic::Status, Reached) {
    let reached = Reached::default();
    let svc = CheckLayer::new(check, h.audit.clone()).layer(inner(&reached));
    (send(svc, req).await, reached)
}

#[tokio::test]
async fn a_refusal_answers_its_status_with_retry_info_and_one_record() {
    let h = harness();
    let path = rpc("ListSyncs");
    let refusal = Refusal::exhausted("slow down", Duration::from_secs(7));
    let req = as_admin(request(&path, None), "alice")
        .body(Body::empty())
        .unwrap();
    let (status, reached) = call(&h, StandIn(Some(refusal)), req).await;
    assert_refused(
        &h,
        &reached,
        &status,
        Code::ResourceExhausted,
        &path,
        "slow down",
        Some("alice"),
    );
    let retry = status.get_details_retry_info().expect("retry info sent");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn url_secrets_in_a_reason_reach_neither_the_caller_nor_the_log() {
    let h = harness();
    let path = rpc("SyncWithPeer");
    let reason = "peer wss://user:hunter2@relay.example.com/?key=s3cret refused";
    let req = request(&path, None).body(Body::empty()).unwrap();
    let (status, reached) = call(
        &h,
        StandIn(Some(Refusal::new(Code::PermissionDenied, reason))),
        req,
    )
    .await;
    let r = assert_refused(
        &h,
        &reached,
        &status,
        Code::PermissionDenied,
        &path,
        "relay.example.com",
        None,
    );
    let logged = r.reason.unwrap_or_default();
    for secret in ["hunter2", "s3cret"] {
        assert!(!status.message().contains(secret), "shown: {status:?}");
        assert!(!logged.contains(secret), "logged: {logged}");
    }
}

#[tokio::test]
async fn a_refusal_that_cannot_be_recorded_is_unavailable() {
    let h = harness();
    h.break_audit();
    let req = request(&rpc("ListSyncs"), None)
        .body(Body::empty())
        .unwrap();
    let refusal = Refusal::new(Code::PermissionDenied, "no");
    let (status, reached) = call(&h, StandIn(Some(refusal)), req).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("refused: audit log unavailable"),
        "{status:?}"
    );
    assert!(reached.calls().is_empty());
}

#[tokio::test]
async fn a_passing_check_reaches_the_handler_with_what_it_learned() {
    let h = harness();
    // No CallInfo yet: the layer adds one for the check to fill.
    let req = request(&rpc("ListSyncs"), None)
        .body(Body::empty())
        .unwrap();
    let (status, reached) = call(&h, StandIn(None), req).await;
    let seen = super::test_support::assert_passed(&h, &reached, &status);
    assert_eq!(seen.admin.as_deref(), Some("named-by-check"));
}
