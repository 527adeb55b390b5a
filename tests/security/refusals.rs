//! The refusal table: every way the secured service refuses a caller, one row each — at the TLS
//! handshake (no certificate, another CA, expired, revoked), at the token (absent, expired, not
//! yet valid, wrong audience or issuer, unknown key, `alg: none`, HS256 with the public key,
//! revoked, bound to another certificate or admin, unbound, garbage, a key-carrying header), at
//! identity, and at the policy — then the two refusals that need state (over rate, over
//! concurrency). Each row: what is sent → the status → exactly one record with its reason.
//! Rows are data; the runners (`refusal_runs.rs`) do the same thing for every row.

use super::*;

/// Whose certificate a row's channel (or token binding) uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Who {
    Alice,
    Bob,
    Carol,
    /// From the right CA, not in the policy.
    Mallory,
    /// In the policy, revoked.
    Erin,
}

/// Which key signs a minted token.
#[derive(Clone, Copy)]
enum Signer {
    /// The key the service trusts.
    Service,
    /// A key the service has never seen (unknown kid).
    Stranger,
}

/// A token minted with these claims (valid for an hour from `issued_hours` from now).
#[derive(Clone, Copy)]
pub(super) struct Mint {
    signer: Signer,
    sub: &'static str,
    bound_to: Option<Who>,
    iss: &'static str,
    aud: &'static str,
    issued_hours: i64,
}

impl Mint {
    /// What a good token of `sub`, bound to `who`'s certificate, carries.
    const fn of(sub: &'static str, who: Who) -> Self {
        Self {
            signer: Signer::Service,
            sub,
            bound_to: Some(who),
            iss: TOKEN_ISSUER,
            aud: TOKEN_AUDIENCE,
            issued_hours: 0,
        }
    }
    const ALICE: Self = Self::of("alice", Who::Alice);
}

/// The token a row sends.
pub(super) enum Tok {
    Absent,
    Minted(Mint),
    /// Hand-made text (a crafted header, garbage, a token known to be revoked).
    Text(String),
}

/// One gRPC row: a `SyncWithPeer` call and what must come of it.
pub(super) struct Row {
    pub(super) name: &'static str,
    pub(super) on: Who,
    pub(super) token: Tok,
    pub(super) peer: &'static str,
    pub(super) direction: npb::Direction,
    pub(super) kinds: Option<&'static [u32]>,
    pub(super) code: Code,
    pub(super) reason: &'static str,
    /// The admin the record names ("" when the refusal comes before one is known).
    pub(super) admin: &'static str,
}

pub(super) const ANY_PEER: &str = "ws://127.0.0.1:9/";
const CAROLS_RELAY: &str = "wss://relay.example.com";

impl Row {
    /// Alice's call to any peer with `token`, refused UNAUTHENTICATED for `reason`.
    fn alice(name: &'static str, token: Tok, reason: &'static str) -> Self {
        Self {
            name,
            on: Who::Alice,
            token,
            peer: ANY_PEER,
            direction: npb::Direction::Down,
            kinds: None,
            code: Code::Unauthenticated,
            reason,
            admin: "alice",
        }
    }

    /// `who`'s call with its own good token, refused `code` for `reason`.
    fn policy(
        name: &'static str,
        who: Who,
        sub: &'static str,
        code: Code,
        reason: &'static str,
    ) -> Self {
        Self {
            name,
            on: who,
            token: Tok::Minted(Mint::of(sub, who)),
            code,
            reason,
            admin: if matches!(who, Who::Mallory | Who::Erin) {
                ""
            } else {
                sub
            },
            ..Self::alice(name, Tok::Absent, reason)
        }
    }
}

/// Hand-crafted tokens an attacker would try, aimed at alice.
pub(super) struct Crafted {
    alg_none: String,
    hs256_with_public_key: String,
    jku: String,
}

fn crafted(fx: &Fixture, alice: &IssuedCert) -> Crafted {
    let key = &fx.token_key;
    let alg_none = {
        let h = json!({"alg": "none", "kid": key.kid(), "typ": "JWT"});
        format!("{}.{}.", b64(&h), b64(&alice_claims(alice)))
    };
    let hs256_with_public_key = {
        // The classic key-confusion attack: HMAC keyed with the verifier's public key file.
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(key.kid().to_string());
        jsonwebtoken::encode(
            &h,
            &alice_claims(alice),
            &jsonwebtoken::EncodingKey::from_secret(fx.token_pub_pem.as_bytes()),
        )
        .unwrap()
    };
    let jku = {
        let h = json!({"alg": "EdDSA", "kid": key.kid(), "typ": "JWT",
                       "jku": "https://evil.example.net/keys.json"});
        // Signature is irrelevant: the header alone must be refused.
        format!("{}.{}.AAAA", b64(&h), b64(&alice_claims(alice)))
    };
    Crafted {
        alg_none,
        hs256_with_public_key,
        jku,
    }
}

/// Every gRPC row. `revoked` is a good alice token whose jti the policy revokes.
pub(super) fn rows(c: Crafted, revoked: String) -> Vec<Row> {
    use Tok::{Absent, Minted, Text};
    let alice = Mint::ALICE;
    let down = npb::Direction::Down;
    vec![
        Row::alice("no token", Absent, "token required"),
        Row::alice(
            "expired token",
            Minted(Mint {
                issued_hours: -2,
                ..alice
            }),
            "expired",
        ),
        Row::alice(
            "not-yet-valid token",
            Minted(Mint {
                issued_hours: 1,
                ..alice
            }),
            "not yet valid",
        ),
        Row::alice(
            "wrong aud",
            Minted(Mint {
                aud: "some-other-service",
                ..alice
            }),
            "audience",
        ),
        Row::alice(
            "wrong iss",
            Minted(Mint {
                iss: "mallory",
                ..alice
            }),
            "issuer",
        ),
        Row::alice(
            "unknown kid",
            Minted(Mint {
                signer: Signer::Stranger,
                ..alice
            }),
            "unknown kid",
        ),
        Row::alice("alg none", Text(c.alg_none), "algorithm not allowed"),
        Row::alice(
            "HS256 signed with the public key",
            Text(c.hs256_with_public_key),
            "algorithm not allowed",
        ),
        Row::alice("revoked jti", Text(revoked), "revoked"),
        Row::alice(
            "another admin's valid token on this certificate",
            Minted(Mint::of("bob", Who::Bob)),
            "certificate binding mismatch",
        ),
        Row::alice(
            "token for another admin bound to this certificate",
            Minted(Mint::of("bob", Who::Alice)),
            "not to this certificate's admin",
        ),
        Row::alice(
            "unbound token",
            Minted(Mint {
                bound_to: None,
                ..alice
            }),
            "binding required",
        ),
        Row::alice("garbage token", Text("not-a-jwt".into()), "malformed"),
        Row::alice("jku header", Text(c.jku), "forbidden header jku"),
        Row {
            peer: "http://127.0.0.1:9/",
            token: Minted(alice),
            ..Row::alice("invalid request (http:// peer)", Absent, "invalid request")
        }
        .with_code(Code::InvalidArgument),
        Row::policy(
            "unknown identity (certificate from the right CA, not in the policy)",
            Who::Mallory,
            "mallory",
            Code::PermissionDenied,
            "unknown identity",
        ),
        Row::policy(
            "revoked admin",
            Who::Erin,
            "erin",
            Code::PermissionDenied,
            "admin revoked",
        ),
        Row {
            peer: "wss://evil.example.net/",
            ..Row::policy(
                "policy: peer not allowed",
                Who::Carol,
                "carol",
                Code::PermissionDenied,
                "peer not allowed",
            )
        },
        Row {
            peer: CAROLS_RELAY,
            direction: npb::Direction::Up,
            kinds: Some(&[1]),
            ..Row::policy(
                "policy: direction not allowed",
                Who::Carol,
                "carol",
                Code::PermissionDenied,
                "direction not allowed",
            )
        },
        Row {
            peer: CAROLS_RELAY,
            direction: down,
            kinds: Some(&[1, 7]),
            ..Row::policy(
                "policy: kinds out of scope",
                Who::Carol,
                "carol",
                Code::PermissionDenied,
                "kinds out of scope",
            )
        },
    ]
}

impl Row {
    fn with_code(self, code: Code) -> Self {
        Self { code, ..self }
    }
}

/// The service and everyone the table needs.
pub(super) struct Table {
    pub(super) fx: Fixture,
    pub(super) svc: Proc,
    pub(super) certs: Vec<(Who, IssuedCert)>,
    pub(super) stranger: TokenSigningKey,
    pub(super) failures: Vec<String>,
    /// Every token sent: none may appear in the audit files.
    pub(super) tokens: Vec<String>,
}

impl Table {
    pub(super) fn cert(&self, who: Who) -> &IssuedCert {
        &self
            .certs
            .iter()
            .find(|(w, _)| *w == who)
            .expect("certificate")
            .1
    }

    pub(super) fn token(&self, t: &Tok) -> Option<String> {
        match t {
            Tok::Absent => None,
            Tok::Text(s) => Some(s.clone()),
            Tok::Minted(m) => {
                let key = match m.signer {
                    Signer::Service => &self.fx.token_key,
                    Signer::Stranger => &self.stranger,
                };
                let hour = Duration::from_secs(3600);
                let now = SystemTime::now();
                let issued = if m.issued_hours < 0 {
                    now - hour * m.issued_hours.unsigned_abs() as u32
                } else {
                    now + hour * m.issued_hours as u32
                };
                let bound = m.bound_to.map(|w| self.cert(w));
                Some(
                    self.fx
                        .mint_with(key, m.sub, bound, m.iss, m.aud, issued, hour),
                )
            }
        }
    }
}

/// A TLS row: (case, client certificate, reason in the record, alert the client sees).
pub(super) type TlsRow = (&'static str, Option<IssuedCert>, &'static str, &'static str);

/// alice (one sync at a time), bob, carol (down from one relay, kind 1), dave (one request a
/// minute), erin (revoked); a CRL revoking one of alice's certificates; one token revoked.
pub(super) fn table() -> (Table, Vec<TlsRow>, Crafted, String) {
    let mut fx = Fixture::without_policy();
    let certs: Vec<(Who, IssuedCert)> = [
        (Who::Alice, "alice"),
        (Who::Bob, "bob"),
        (Who::Carol, "carol"),
        (Who::Mallory, "mallory"),
        (Who::Erin, "erin"),
    ]
    .into_iter()
    .map(|(w, n)| (w, fx.client(n)))
    .collect();
    // Certificates the TLS layer must refuse.
    let revoked_alice = fx.client("alice");
    let expired_alice = fx.pki.issue_expired_client("alice").unwrap();
    let foreign_alice = TestPki::with_name("some other CA")
        .unwrap()
        .issue_client("alice")
        .unwrap();
    fx.set_crl(&[&revoked_alice]);
    let alice = &certs[0].1;
    let revoked_token = fx.token("alice", alice);
    let crafted = crafted(&fx, alice);
    let admins = [
        AdminSpec {
            max_concurrent: 1,
            ..open("alice")
        },
        open("bob"),
        AdminSpec {
            peers: "\"wss://relay.example.com\"",
            directions: "\"down\"",
            extra: "kinds = [1]",
            ..open("carol")
        },
        AdminSpec {
            rate_per_minute: 1,
            burst: 1,
            ..open("dave")
        },
        open("erin"),
    ];
    fx.write_policy(&policy_full(
        &admins,
        &[jti_of(&revoked_token)],
        &["erin"],
        16,
    ));
    // (case, certificate, reason in the record, alert the client sees)
    let tls_rows = vec![
        (
            "no client certificate",
            None,
            "no certificates",
            "CertificateRequired",
        ),
        (
            "certificate from another CA",
            Some(foreign_alice),
            "UnknownIssuer",
            "UnknownCA",
        ),
        (
            "expired certificate",
            Some(expired_alice),
            "expired",
            "CertificateExpired",
        ),
        (
            "revoked certificate",
            Some(revoked_alice),
            "revoked",
            "CertificateRevoked",
        ),
    ];
    let svc = start_service(&fx);
    let stranger = TokenSigningKey::from_pkcs8_pem(
        &orly::auth::generate_ed25519_pem_pair().unwrap().private_pem,
    )
    .unwrap();
    let t = Table {
        fx,
        svc,
        certs,
        stranger,
        failures: Vec::new(),
        tokens: Vec::new(),
    };
    (t, tls_rows, crafted, revoked_token)
}
