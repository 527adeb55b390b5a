//! Unit tests of [`IpLimiter`] as a check: each call pays one token of its source address
//! (the connection's first call is paid at accept), a call over the quota is RESOURCE_EXHAUSTED
//! with the retry delay and one record naming the source, and a call with no transport identity
//! is refused.

use super::check::CheckLayer;
use super::ip_limit::IpLimiter;
use super::test_support::{
    Harness, Reached, admin_toml, assert_passed, assert_refused, inner, policy_toml, request, rpc,
    send,
};
use super::tls::ConnInfo;
use std::sync::atomic::Ordering;
use tonic::Code;
use tonic::body::Body;
use tonic_types::StatusExt;
use tower::Layer;

fn harness() -> Harness {
    Harness::new(&policy_toml(
        "per_ip_rate_per_minute = 1\nper_ip_burst = 2",
        &[admin_toml("alice", "")],
        "",
    ))
}

async fn call(h: &Harness, ip: &IpLimiter, req: http::Request<Body>) -> (tonic::Status, Reached) {
    let reached = Reached::default();
    let svc = CheckLayer::new(ip.clone(), h.audit.clone()).layer(inner(&reached));
    (send(svc, req).await, reached)
}

#[tokio::test]
async fn calls_over_the_ip_quota_are_refused_with_the_retry_delay_and_their_source() {
    let h = harness();
    let ip = IpLimiter::new(&h.policy);
    let path = rpc("ListSyncs");
    for _ in 0..2 {
        let (status, reached) =
            call(&h, &ip, request(&path, None).body(Body::empty()).unwrap()).await;
        let seen = assert_passed(&h, &reached, &status);
        assert_eq!(seen.source, Some("127.0.0.1:40000".parse().unwrap()));
    }
    let (status, reached) = call(&h, &ip, request(&path, None).body(Body::empty()).unwrap()).await;
    let reason = "rate limited: too many requests from 127.0.0.1";
    let r = assert_refused(
        &h,
        &reached,
        &status,
        Code::ResourceExhausted,
        &path,
        reason,
        None,
    );
    assert_eq!(r.source.as_deref(), Some("127.0.0.1:40000"));
    assert!(status.get_details_retry_info().is_some(), "{status:?}");

    // The token taken at accept pays for the connection's first call only.
    let req = request(&path, None).body(Body::empty()).unwrap();
    let conn = req.extensions().get::<ConnInfo>().unwrap().clone();
    conn.prepaid.store(true, Ordering::Release);
    let (status, reached) = call(&h, &ip, req).await;
    assert_passed(&h, &reached, &status);
    let mut again = request(&path, None).body(Body::empty()).unwrap();
    again.extensions_mut().insert(conn);
    let (status, reached) = call(&h, &ip, again).await;
    assert_refused(
        &h,
        &reached,
        &status,
        Code::ResourceExhausted,
        &path,
        reason,
        None,
    );
}

#[tokio::test]
async fn a_call_without_transport_identity_is_refused() {
    let h = harness();
    let ip = IpLimiter::new(&h.policy);
    let path = rpc("ListSyncs");
    let req = http::Request::builder()
        .uri(&path)
        .body(Body::empty())
        .unwrap();
    let (status, reached) = call(&h, &ip, req).await;
    assert_refused(
        &h,
        &reached,
        &status,
        Code::Unauthenticated,
        &path,
        "no transport identity",
        None,
    );
}
