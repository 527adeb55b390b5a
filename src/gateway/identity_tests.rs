//! Unit tests of [`IdentityCheck`]: the admin comes from the verified client certificate,
//! mapped through the policy; no certificate, an unusable one, an unknown identity and a
//! revoked admin are each refused with their status and one record naming the cause.

use super::check::CheckLayer;
use super::identity::IdentityCheck;
use super::test_support::{
    Harness, Reached, admin_toml, assert_passed, assert_refused, inner, policy_toml, request, rpc,
    send, spiffe,
};
use crate::auth::{TestPki, cert_fingerprint_hex};
use tonic::Code;
use tonic::body::Body;
use tower::Layer;

fn harness() -> Harness {
    Harness::new(&policy_toml(
        "",
        &[admin_toml("alice", ""), admin_toml("bob", "")],
        "\n[revoked]\nadmins = [\"bob\"]\n",
    ))
}

async fn call(h: &Harness, path: &str, cert: Option<&[u8]>) -> (tonic::Status, Reached) {
    let reached = Reached::default();
    let check = IdentityCheck {
        policy: h.policy.clone(),
    };
    let svc = CheckLayer::new(check, h.audit.clone()).layer(inner(&reached));
    let req = request(path, cert).body(Body::empty()).unwrap();
    (send(svc, req).await, reached)
}

/// One refused call: the certificate presented → the status, the reason, and whether the
/// record names the certificate's fingerprint.
struct Row<'a> {
    case: &'a str,
    cert: Option<&'a Vec<u8>>,
    code: Code,
    reason: &'a str,
    fingerprinted: bool,
}

#[tokio::test]
async fn each_identity_refusal_has_its_status_and_one_record() {
    let pki = TestPki::new().unwrap();
    let mallory = pki.issue_client("mallory").unwrap().cert_der;
    let bob = pki.issue_client("bob").unwrap().cert_der;
    let garbage = b"not a certificate".to_vec();
    let unknown = format!("unknown identity: {}", spiffe("mallory"));
    let row = |case, cert, code, reason, fingerprinted| Row {
        case,
        cert,
        code,
        reason,
        fingerprinted,
    };
    let rows = [
        row(
            "no certificate",
            None,
            Code::Unauthenticated,
            "no client certificate",
            false,
        ),
        row(
            "unusable",
            Some(&garbage),
            Code::Unauthenticated,
            "unusable client certificate",
            false,
        ),
        row(
            "unknown",
            Some(&mallory),
            Code::PermissionDenied,
            &unknown,
            true,
        ),
        row(
            "revoked",
            Some(&bob),
            Code::PermissionDenied,
            "admin revoked: bob",
            true,
        ),
    ];
    let path = rpc("ListSyncs");
    for Row {
        case,
        cert,
        code,
        reason,
        fingerprinted,
    } in rows
    {
        let h = harness();
        let (status, reached) = call(&h, &path, cert.map(Vec::as_slice)).await;
        let r = assert_refused(&h, &reached, &status, code, &path, reason, None);
        let want = cert
            .filter(|_| fingerprinted)
            .map(|c| cert_fingerprint_hex(c));
        assert_eq!(r.cert_fingerprint, want, "{case}");
    }
}

#[tokio::test]
async fn a_known_certificate_names_its_admin_and_health_needs_none() {
    let h = harness();
    let alice = TestPki::new()
        .unwrap()
        .issue_client("alice")
        .unwrap()
        .cert_der;
    let (status, reached) = call(&h, &rpc("ListSyncs"), Some(&alice)).await;
    let seen = assert_passed(&h, &reached, &status);
    assert_eq!(seen.admin.as_deref(), Some("alice"));
    assert_eq!(seen.cert_fingerprint, Some(cert_fingerprint_hex(&alice)));

    let (status, reached) = call(&h, "/grpc.health.v1.Health/Check", None).await;
    assert_eq!(assert_passed(&h, &reached, &status).admin, None);
}
