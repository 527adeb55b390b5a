//! Unit tests of [`RightsCheck`]: each method that needs a right is refused, with one record
//! naming the right, to an admin the policy does not grant it, and passes for one it does;
//! methods needing no right, unknown methods (refused later, by the body layer) and health
//! checks pass untouched; a revoked admin holds no right.

use super::check::CheckLayer;
use super::rights::RightsCheck;
use super::test_support::{
    Harness, Reached, admin_toml, as_admin, assert_passed, assert_refused, inner, policy_toml,
    request, rpc, send,
};
use crate::service::METHODS;
use tonic::Code;
use tonic::body::Body;
use tower::Layer;

fn harness() -> Harness {
    Harness::new(&policy_toml(
        "",
        &[
            admin_toml("plain", ""),
            admin_toml(
                "all",
                "rights = [\"manage_peers\", \"serve_nip77\", \"sessions\"]",
            ),
            admin_toml("relay", "rights = [\"serve_nip77\"]"),
            admin_toml("gone", "rights = [\"manage_peers\", \"sessions\"]"),
        ],
        "\n[revoked]\nadmins = [\"gone\"]\n",
    ))
}

async fn call(h: &Harness, path: &str, admin: Option<&str>) -> (tonic::Status, Reached) {
    let reached = Reached::default();
    let check = RightsCheck {
        policy: h.policy.clone(),
    };
    let svc = CheckLayer::new(check, h.audit.clone()).layer(inner(&reached));
    let mut b = request(path, None);
    if let Some(a) = admin {
        b = as_admin(b, a);
    }
    (send(svc, b.body(Body::empty()).unwrap()).await, reached)
}

#[tokio::test]
async fn every_method_needing_a_right_is_refused_without_it_and_passes_with_it() {
    let h = harness();
    for m in METHODS {
        let path = m.path();
        let (status, reached) = call(&h, &path, Some("all")).await;
        assert_passed(&h, &reached, &status);
        let (status, reached) = call(&h, &path, Some("plain")).await;
        match m.right {
            None => {
                assert_passed(&h, &reached, &status);
            }
            Some(right) => {
                let reason =
                    format!("policy: right not granted: {right} (admin plain does not hold it)");
                assert_refused(
                    &h,
                    &reached,
                    &status,
                    Code::PermissionDenied,
                    &path,
                    &reason,
                    Some("plain"),
                );
            }
        }
    }
}

#[tokio::test]
async fn a_relay_may_only_serve_nip77_and_a_revoked_admin_nothing() {
    let h = harness();
    let (status, reached) = call(&h, &rpc("HandleNegMsg"), Some("relay")).await;
    assert_passed(&h, &reached, &status);
    let path = rpc("ListSessions");
    let (status, reached) = call(&h, &path, Some("relay")).await;
    let reason = "policy: right not granted: sessions (admin relay does not hold it)";
    let code = Code::PermissionDenied;
    assert_refused(&h, &reached, &status, code, &path, reason, Some("relay"));
    let path = rpc("GetPeers");
    let (status, reached) = call(&h, &path, Some("gone")).await;
    let reason = "policy: admin revoked: gone";
    assert_refused(&h, &reached, &status, code, &path, reason, Some("gone"));
}

#[tokio::test]
async fn unknown_methods_health_and_calls_without_an_admin() {
    let h = harness();
    for path in [rpc("Nope"), "/grpc.health.v1.Health/Check".to_string()] {
        let (status, reached) = call(&h, &path, None).await;
        assert_passed(&h, &reached, &status);
    }
    let path = rpc("Start");
    let (status, reached) = call(&h, &path, None).await;
    let code = Code::Unauthenticated;
    assert_refused(
        &h,
        &reached,
        &status,
        code,
        &path,
        "no authenticated admin",
        None,
    );
}
