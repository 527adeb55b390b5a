//! Unit tests of [`TokenCheck`]: a bearer token must be present, genuine, bound to the
//! connection's certificate, issued to the certificate's admin, not revoked and living no longer
//! than the policy allows. Each refusal: UNAUTHENTICATED and one record with its reason (and
//! the token's `jti` once the token is known genuine); a good token puts its `jti` in the call.

use super::check::CheckLayer;
use super::test_support::{
    Harness, Reached, admin_toml, as_admin, assert_passed, assert_refused, inner, policy_toml,
    request, rpc, send,
};
use super::token::TokenCheck;
use crate::auth::{
    MintRequest, TOKEN_AUDIENCE, TOKEN_ISSUER, TestPki, TokenSigningKey, generate_ed25519_pem_pair,
};
use std::time::{Duration, SystemTime};
use tonic::Code;
use tonic::body::Body;
use tower::Layer;

const HOUR: Duration = Duration::from_secs(3600);

/// Keys, certificates and a way to mint tokens, before the policy exists (a revoked `jti` must
/// be known to write the policy).
struct Tokens {
    key: TokenSigningKey,
    public_pem: String,
    alice: Vec<u8>,
    other: Vec<u8>,
}

impl Tokens {
    fn new() -> Self {
        let pair = generate_ed25519_pem_pair().unwrap();
        let pki = TestPki::new().unwrap();
        Self {
            key: TokenSigningKey::from_pkcs8_pem(&pair.private_pem).unwrap(),
            public_pem: pair.public_pem,
            alice: pki.issue_client("alice").unwrap().cert_der,
            other: pki.issue_client("alice").unwrap().cert_der,
        }
    }

    fn mint(&self, sub: &str, cert: &[u8], issued: SystemTime, ttl: Duration) -> String {
        let req = MintRequest {
            issuer: TOKEN_ISSUER,
            audience: TOKEN_AUDIENCE,
            admin: sub,
            ttl,
            cert_der: Some(cert),
            now: issued,
        };
        crate::auth::mint(&self.key, &req).unwrap()
    }

    /// The harness: alice and bob, tokens living at most two hours, `revoked` jtis.
    fn harness(&self, revoked: &[&str]) -> (Harness, TokenCheck) {
        let list: Vec<String> = revoked.iter().map(|j| format!("{j:?}")).collect();
        let h = Harness::new(&policy_toml(
            "max_token_lifetime_seconds = 7200",
            &[admin_toml("alice", ""), admin_toml("bob", "")],
            &format!("\n[revoked]\njti = [{}]\n", list.join(", ")),
        ));
        let keys = h.path("token.pub");
        std::fs::write(&keys, &self.public_pem).unwrap();
        let check = TokenCheck::new(keys, h.policy.clone()).unwrap();
        (h, check)
    }
}

fn jti(token: &str) -> String {
    let v = crate::auth::inspect(token).unwrap();
    v["claims"]["jti"].as_str().unwrap().to_string()
}

/// Alice's call on her certificate, with `authorization` when given.
async fn call(
    h: &Harness,
    check: &TokenCheck,
    cert: &[u8],
    authorization: Option<&str>,
) -> (tonic::Status, Reached) {
    let reached = Reached::default();
    let svc = CheckLayer::new(check.clone(), h.audit.clone()).layer(inner(&reached));
    let mut b = as_admin(request(&rpc("ListSyncs"), Some(cert)), "alice");
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    (send(svc, b.body(Body::empty()).unwrap()).await, reached)
}

#[tokio::test]
async fn each_token_refusal_has_its_reason_and_one_record() {
    let t = Tokens::new();
    let now = SystemTime::now();
    let revoked = t.mint("alice", &t.alice, now, HOUR);
    let bearer = |tok: &str| format!("Bearer {tok}");
    // (case, authorization header, reason, whether the record carries the token's jti)
    let rows: Vec<(&str, Option<String>, &str, bool)> = vec![
        ("absent", None, "token required", false),
        (
            "not bearer",
            Some(format!("Basic {}", t.mint("alice", &t.alice, now, HOUR))),
            "token required",
            false,
        ),
        ("garbage", Some(bearer("a.b.c")), "token refused", false),
        (
            "other certificate",
            Some(bearer(&t.mint("alice", &t.other, now, HOUR))),
            "certificate binding mismatch",
            false,
        ),
        (
            "expired",
            Some(bearer(&t.mint("alice", &t.alice, now - 3 * HOUR, HOUR))),
            "token expired",
            false,
        ),
        (
            "other admin",
            Some(bearer(&t.mint("bob", &t.alice, now, HOUR))),
            "issued to \"bob\", not to this certificate's admin",
            true,
        ),
        (
            "revoked",
            Some(bearer(&revoked)),
            "token refused: token revoked",
            true,
        ),
        (
            "too long",
            Some(bearer(&t.mint("alice", &t.alice, now, 3 * HOUR))),
            "token refused: token lifetime too long",
            true,
        ),
    ];
    let path = rpc("ListSyncs");
    for (case, auth, reason, has_jti) in rows {
        let (h, check) = t.harness(&[&jti(&revoked)]);
        let (status, reached) = call(&h, &check, &t.alice, auth.as_deref()).await;
        let r = assert_refused(
            &h,
            &reached,
            &status,
            Code::Unauthenticated,
            &path,
            reason,
            Some("alice"),
        );
        let want = auth
            .filter(|_| has_jti)
            .and_then(|a| a.strip_prefix("Bearer ").map(jti));
        assert_eq!(r.token_jti, want, "{case}");
    }
}

#[tokio::test]
async fn a_good_token_reaches_the_handler_with_its_jti() {
    let t = Tokens::new();
    let (h, check) = t.harness(&[]);
    let token = t.mint("alice", &t.alice, SystemTime::now(), HOUR);
    let (status, reached) = call(&h, &check, &t.alice, Some(&format!("Bearer {token}"))).await;
    let seen = assert_passed(&h, &reached, &status);
    assert_eq!(seen.token_jti, Some(jti(&token)));
    assert_eq!(seen.admin.as_deref(), Some("alice"));
}
