//! Unit tests of [`AdminRateLimit`]: each admin has its own GCRA bucket from the policy; a call
//! over it is RESOURCE_EXHAUSTED with the retry delay and one record; a call without an admin,
//! or of an admin the policy does not know, is refused; health checks are not counted.

use super::admin_limit::AdminRateLimit;
use super::check::CheckLayer;
use super::test_support::{
    Harness, Reached, admin_toml, as_admin, assert_passed, assert_refused, inner, policy_toml,
    request, rpc, send,
};
use tonic::Code;
use tonic::body::Body;
use tonic_types::StatusExt;
use tower::Layer;

fn harness() -> Harness {
    Harness::new(&policy_toml(
        "",
        &[
            admin_toml("alice", "rate_per_minute = 1\nburst = 2"),
            admin_toml("bob", "rate_per_minute = 1\nburst = 1"),
        ],
        "",
    ))
}

async fn call(
    h: &Harness,
    limit: &AdminRateLimit,
    path: &str,
    admin: Option<&str>,
) -> (tonic::Status, Reached) {
    let reached = Reached::default();
    let svc = CheckLayer::new(limit.clone(), h.audit.clone()).layer(inner(&reached));
    let mut b = request(path, None);
    if let Some(a) = admin {
        b = as_admin(b, a);
    }
    (send(svc, b.body(Body::empty()).unwrap()).await, reached)
}

#[tokio::test]
async fn an_admin_over_its_rate_is_told_when_to_return_and_others_are_not_charged() {
    let h = harness();
    let limit = AdminRateLimit::new(h.policy.clone());
    let path = rpc("ListSyncs");
    for _ in 0..2 {
        let (status, reached) = call(&h, &limit, &path, Some("alice")).await;
        assert_passed(&h, &reached, &status);
    }
    let (status, reached) = call(&h, &limit, &path, Some("alice")).await;
    let reason = "rate limited: admin alice is over its request rate";
    assert_refused(
        &h,
        &reached,
        &status,
        Code::ResourceExhausted,
        &path,
        reason,
        Some("alice"),
    );
    let retry = status.get_details_retry_info().expect("retry info");
    assert!(retry.retry_delay.is_some_and(|d| !d.is_zero()), "{retry:?}");
    // Bob's bucket is his own; health checks take nothing from anyone.
    let (status, reached) = call(&h, &limit, &path, Some("bob")).await;
    assert_passed(&h, &reached, &status);
    for _ in 0..3 {
        let (status, reached) = call(&h, &limit, "/grpc.health.v1.Health/Check", None).await;
        assert_passed(&h, &reached, &status);
    }
}

#[tokio::test]
async fn a_call_without_a_known_admin_is_refused() {
    let h = harness();
    let limit = AdminRateLimit::new(h.policy.clone());
    let path = rpc("ListSyncs");
    let (status, reached) = call(&h, &limit, &path, None).await;
    assert_refused(
        &h,
        &reached,
        &status,
        Code::Unauthenticated,
        &path,
        "no authenticated admin",
        None,
    );
    let (status, reached) = call(&h, &limit, &path, Some("mallory")).await;
    assert_refused(
        &h,
        &reached,
        &status,
        Code::PermissionDenied,
        &path,
        "unknown admin: mallory",
        Some("mallory"),
    );
}

#[tokio::test]
async fn a_reloaded_quota_applies_to_the_next_call() {
    let h = harness();
    let limit = AdminRateLimit::new(h.policy.clone());
    let path = rpc("ListSyncs");
    for _ in 0..2 {
        let (status, reached) = call(&h, &limit, &path, Some("alice")).await;
        assert_passed(&h, &reached, &status);
    }
    let (status, reached) = call(&h, &limit, &path, Some("alice")).await;
    let reason = "rate limited: admin alice is over its request rate";
    assert_refused(
        &h,
        &reached,
        &status,
        Code::ResourceExhausted,
        &path,
        reason,
        Some("alice"),
    );
    // The operator raises alice's burst: her next call is let through at once.
    h.reload(&policy_toml(
        "",
        &[admin_toml("alice", "rate_per_minute = 1\nburst = 5")],
        "",
    ))
    .await;
    let (status, reached) = call(&h, &limit, &path, Some("alice")).await;
    assert_passed(&h, &reached, &status);
}
