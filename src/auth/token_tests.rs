use super::*;
use crate::auth::signing_key::generate_ed25519_pem_pair;
use crate::auth::testpki::TestPki;

const ISS: &str = "orly-admin";
const AUD: &str = "orly-gateway";
const ADMIN: &str = "spiffe://orly.local/admin/alice";
const TTL: u64 = 300;

struct Fixture {
    ed: TokenSigningKey,
    ed_public_pem: String,
    es: TokenSigningKey,
    stranger: TokenSigningKey,
    cert_a: Vec<u8>,
    cert_b: Vec<u8>,
    now: SystemTime,
}

impl Fixture {
    fn new() -> Self {
        let pair = generate_ed25519_pem_pair().expect("ed25519 pair");
        let ed = TokenSigningKey::from_pkcs8_pem(&pair.private_pem).expect("ed key");
        let es_kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        let es = TokenSigningKey::from_pkcs8_pem(&es_kp.serialize_pem()).expect("es key");
        let stranger_pem = generate_ed25519_pem_pair().expect("pair").private_pem;
        let stranger = TokenSigningKey::from_pkcs8_pem(&stranger_pem).expect("stranger key");
        let pki = TestPki::new().expect("pki");
        Self {
            ed,
            ed_public_pem: pair.public_pem,
            es,
            stranger,
            cert_a: pki.issue_client("alice").expect("cert a").cert_der,
            cert_b: pki.issue_client("bob").expect("cert b").cert_der,
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    /// Both keys in one JWKS: the rotation case (old and new valid together).
    fn verifier(&self) -> TokenVerifier {
        let jwks = KeySet::from_keys(vec![self.ed.verification_key(), self.es.verification_key()])
            .expect("set")
            .to_jwks()
            .to_string();
        TokenVerifier::new(KeySet::from_jwks_json(&jwks).expect("jwks"), ISS, AUD)
    }

    fn mint_with(
        &self,
        key: &TokenSigningKey,
        iss: &str,
        aud: &str,
        cert: Option<&[u8]>,
    ) -> String {
        let req = MintRequest {
            issuer: iss,
            audience: aud,
            admin: ADMIN,
            ttl: Duration::from_secs(TTL),
            cert_der: cert,
            now: self.now,
        };
        mint(key, &req).expect("mint")
    }

    fn good(&self) -> String {
        self.mint_with(&self.ed, ISS, AUD, Some(&self.cert_a))
    }

    fn claims(&self) -> Value {
        let now = unix_secs(self.now);
        json!({"iss": ISS, "aud": AUD, "sub": ADMIN, "exp": now + TTL, "nbf": now, "iat": now,
               "jti": "00112233445566778899aabbccddeeff",
               "cnf": {"x5t#S256": cert_thumbprint_b64url(&self.cert_a)}})
    }

    fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "JWT", "kid": self.ed.kid()})
    }

    /// Hand-crafts a token, signing with `key` whatever header and claims it is given.
    fn craft(&self, key: &TokenSigningKey, header: &Value, claims: &Value) -> String {
        let msg = format!("{}.{}", b64json(header), b64json(claims));
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key.encoding_key(), key.alg().jwt())
            .expect("sign");
        format!("{msg}.{sig}")
    }

    fn header_set(&self, name: &str, value: Value) -> String {
        let mut header = self.header();
        header[name] = value;
        self.craft(&self.ed, &header, &self.claims())
    }

    fn header_without(&self, name: &str) -> String {
        let mut header = self.header();
        if let Value::Object(map) = &mut header {
            map.remove(name);
        }
        self.craft(&self.ed, &header, &self.claims())
    }

    fn claim_set(&self, name: &str, value: Value) -> String {
        let mut claims = self.claims();
        claims[name] = value;
        self.craft(&self.ed, &self.header(), &claims)
    }

    fn claim_without(&self, name: &str) -> String {
        let mut claims = self.claims();
        if let Value::Object(map) = &mut claims {
            map.remove(name);
        }
        self.craft(&self.ed, &self.header(), &claims)
    }

    /// A case presenting certificate A at the mint time.
    fn case(&self, what: &'static str, token: String, want: Result<(), TokenError>) -> Case {
        Case {
            what,
            token,
            cert: Some(self.cert_a.clone()),
            at: self.now,
            want,
        }
    }
}

struct Case {
    what: &'static str,
    token: String,
    cert: Option<Vec<u8>>,
    at: SystemTime,
    want: Result<(), TokenError>,
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn verifier_matrix() {
    use TokenError as E;
    let f = Fixture::new();
    let secs = Duration::from_secs;
    let (exp, leeway) = (f.now + secs(TTL), secs(DEFAULT_LEEWAY_SECS));
    let hs256 = {
        let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(f.ed.kid().to_owned());
        let key = jsonwebtoken::EncodingKey::from_secret(f.ed_public_pem.as_bytes());
        jsonwebtoken::encode(&h, &f.claims(), &key).expect("hs256")
    };
    let none_header = json!({"alg": "none", "kid": f.ed.kid()});
    let none = format!("{}.{}.", b64json(&none_header), b64json(&f.claims()));
    let tampered = {
        let sig = f.good().rsplit('.').next().unwrap_or_default().to_owned();
        let mut claims = f.claims();
        claims["sub"] = json!("spiffe://orly.local/admin/mallory");
        format!("{}.{}.{sig}", b64json(&f.header()), b64json(&claims))
    };
    let unsigned = format!("{}.{}.", b64json(&f.header()), b64json(&f.claims()));
    let dup_alg = format!(r#"{{"alg":"EdDSA","kid":"{}","alg":"none"}}"#, f.ed.kid());
    let dup_alg = format!(
        "{}.{}.x",
        URL_SAFE_NO_PAD.encode(dup_alg),
        b64json(&f.claims())
    );
    let in_future = json!(unix_secs(f.now) + 100);
    let mut cases = vec![
        f.case("valid eddsa", f.good(), Ok(())),
        f.case(
            "valid es256",
            f.mint_with(&f.es, ISS, AUD, Some(&f.cert_a)),
            Ok(()),
        ),
        Case {
            at: exp + leeway - secs(1),
            ..f.case("leeway after exp", f.good(), Ok(()))
        },
        Case {
            at: f.now - leeway,
            ..f.case("leeway before nbf", f.good(), Ok(()))
        },
        Case {
            at: exp + leeway,
            ..f.case("expired", f.good(), Err(E::Expired))
        },
        Case {
            at: f.now - leeway - secs(1),
            ..f.case("nbf", f.good(), Err(E::NotYetValid))
        },
        f.case(
            "wrong aud",
            f.mint_with(&f.ed, ISS, "x", None),
            Err(E::WrongAudience),
        ),
        f.case(
            "wrong iss",
            f.mint_with(&f.ed, "x", AUD, None),
            Err(E::WrongIssuer),
        ),
        f.case(
            "unknown kid",
            f.mint_with(&f.stranger, ISS, AUD, None),
            Err(E::UnknownKid),
        ),
        f.case("alg none", none, Err(E::AlgorithmNotAllowed)),
        f.case(
            "alg None",
            f.header_set("alg", json!("None")),
            Err(E::AlgorithmNotAllowed),
        ),
        f.case(
            "hs256 keyed with public pem",
            hs256,
            Err(E::AlgorithmNotAllowed),
        ),
        f.case(
            "rs256",
            f.header_set("alg", json!("RS256")),
            Err(E::AlgorithmNotAllowed),
        ),
        f.case(
            "alg array",
            f.header_set("alg", json!(["EdDSA"])),
            Err(E::AlgorithmNotAllowed),
        ),
        f.case("no alg", f.header_without("alg"), Err(E::Malformed)),
        f.case(
            "es256 on eddsa kid",
            f.header_set("alg", json!("ES256")),
            Err(E::AlgorithmMismatch),
        ),
        f.case(
            "jku",
            f.header_set("jku", json!("https://e/k")),
            Err(E::ForbiddenHeader("jku")),
        ),
        f.case(
            "x5u",
            f.header_set("x5u", json!("https://e/c")),
            Err(E::ForbiddenHeader("x5u")),
        ),
        f.case(
            "jwk",
            f.header_set("jwk", f.ed.verification_key().to_jwk()),
            Err(E::ForbiddenHeader("jwk")),
        ),
        f.case(
            "x5c",
            f.header_set("x5c", json!(["MIIB"])),
            Err(E::ForbiddenHeader("x5c")),
        ),
        f.case(
            "crit",
            f.header_set("crit", json!(["exp"])),
            Err(E::ForbiddenHeader("crit")),
        ),
        f.case(
            "other header",
            f.header_set("foo", json!(1)),
            Err(E::ForbiddenHeader("unknown")),
        ),
        f.case(
            "typ",
            f.header_set("typ", json!("at+jwt")),
            Err(E::UnexpectedType),
        ),
        f.case("no kid", f.header_without("kid"), Err(E::MissingKid)),
        f.case(
            "empty kid",
            f.header_set("kid", json!("")),
            Err(E::MissingKid),
        ),
        Case {
            cert: Some(f.cert_b.clone()),
            ..f.case("cert b", f.good(), Err(E::CertificateMismatch))
        },
        Case {
            cert: None,
            ..f.case("no cert", f.good(), Err(E::CertificateMissing))
        },
        f.case(
            "unbound",
            f.mint_with(&f.ed, ISS, AUD, None),
            Err(E::BindingRequired),
        ),
        f.case(
            "cnf jkt",
            f.claim_set("cnf", json!({"jkt": "x"})),
            Err(E::InvalidClaim("cnf")),
        ),
        f.case("aud array", f.claim_set("aud", json!(["x", AUD])), Ok(())),
        f.case(
            "aud number",
            f.claim_set("aud", json!(7)),
            Err(E::InvalidClaim("aud")),
        ),
        f.case(
            "exp float",
            f.claim_set("exp", json!(1.7e9)),
            Err(E::InvalidClaim("exp")),
        ),
        f.case(
            "exp <= nbf",
            f.claim_set("exp", f.claims()["nbf"].clone()),
            Err(E::InvalidClaim("exp")),
        ),
        f.case(
            "iat in future",
            f.claim_set("iat", in_future),
            Err(E::IssuedInFuture),
        ),
        f.case(
            "sub empty",
            f.claim_set("sub", json!("")),
            Err(E::InvalidClaim("sub")),
        ),
        f.case("tampered payload", tampered, Err(E::BadSignature)),
        f.case(
            "stranger signs our kid",
            f.craft(&f.stranger, &f.header(), &f.claims()),
            Err(E::BadSignature),
        ),
        f.case("empty signature", unsigned, Err(E::BadSignature)),
        f.case("two parts", "a.b".into(), Err(E::Malformed)),
        f.case("four parts", format!("{}.x", f.good()), Err(E::Malformed)),
        f.case(
            "padded base64",
            f.good().replacen('.', "=.", 1),
            Err(E::Malformed),
        ),
        f.case("duplicate alg", dup_alg, Err(E::Malformed)),
        f.case("too large", "a".repeat(MAX_TOKEN_LEN + 1), Err(E::TooLarge)),
    ];
    for claim in REQUIRED_CLAIMS {
        cases.push(f.case(
            "missing claim",
            f.claim_without(claim),
            Err(E::MissingClaim(claim)),
        ));
    }
    let v = f.verifier();
    for case in cases {
        let got = v
            .verify(&case.token, case.cert.as_deref(), case.at)
            .map(|_| ());
        assert_eq!(got, case.want, "case {:?}", case.what);
    }
}

#[test]
fn verified_token_fields_and_rotation() {
    let f = Fixture::new();
    let v = f.verifier();
    for key in [&f.ed, &f.es] {
        let token = f.mint_with(key, ISS, AUD, Some(&f.cert_a));
        let ok = v.verify(&token, Some(&f.cert_a), f.now).expect("verifies");
        assert_eq!(ok.admin, ADMIN);
        assert_eq!(ok.kid, key.kid());
        assert_eq!(ok.exp, unix_secs(f.now) + TTL);
        assert_eq!(ok.lifetime_secs, TTL);
        assert_eq!(ok.jti.len(), 32);
        assert!(ok.cert_bound);
    }
    let t1 = f.good();
    let t2 = f.good();
    let jti = |t: &str| v.verify(t, Some(&f.cert_a), f.now).map(|ok| ok.jti);
    assert_ne!(jti(&t1), jti(&t2), "jti must be unique per token");
}

#[test]
fn unbound_tokens_only_when_allowed() {
    let f = Fixture::new();
    let mut v = f.verifier();
    v.require_cnf = false;
    let token = f.mint_with(&f.ed, ISS, AUD, None);
    let ok = v.verify(&token, None, f.now).expect("unbound allowed");
    assert!(!ok.cert_bound);
    // A bound token still needs its certificate even when binding is optional.
    assert_eq!(
        v.verify(&f.good(), Some(&f.cert_b), f.now),
        Err(TokenError::CertificateMismatch)
    );
}

#[test]
fn token_pub_pem_verifies_token_key_mints() {
    let f = Fixture::new();
    let keys = KeySet::from_pem(&f.ed_public_pem).expect("token.pub");
    let v = TokenVerifier::new(keys, ISS, AUD);
    assert!(v.verify(&f.good(), Some(&f.cert_a), f.now).is_ok());
}

#[test]
fn mint_refuses_bad_requests() {
    let f = Fixture::new();
    let base = MintRequest {
        issuer: ISS,
        audience: AUD,
        admin: ADMIN,
        ttl: Duration::from_secs(60),
        cert_der: None,
        now: f.now,
    };
    let cases = [
        (
            MintRequest {
                ttl: Duration::from_millis(500),
                ..base.clone()
            },
            "ttl",
        ),
        (
            MintRequest {
                admin: "",
                ..base.clone()
            },
            "admin",
        ),
        (
            MintRequest {
                issuer: "a\nb",
                ..base.clone()
            },
            "issuer",
        ),
        (
            MintRequest {
                ttl: Duration::from_secs(u64::MAX),
                ..base.clone()
            },
            "ttl",
        ),
    ];
    for (req, what) in cases {
        assert_eq!(mint(&f.ed, &req), Err(TokenError::InvalidMintRequest(what)));
    }
}

#[test]
fn inspect_shows_unverified_content_without_signature() {
    let f = Fixture::new();
    let token = f.good();
    let out = inspect(&token).expect("inspect");
    assert_eq!(out["verified"], json!(false));
    assert_eq!(out["header"]["kid"], json!(f.ed.kid()));
    assert_eq!(out["claims"]["sub"], json!(ADMIN));
    assert_eq!(out["signature_bytes"], json!(64));
    let sig = token.rsplit('.').next().unwrap_or_default();
    assert!(!out.to_string().contains(sig));
    assert_eq!(inspect("nope"), Err(TokenError::Malformed));
}

/// The lifetime runs from the earlier of `iat` and `nbf`: a token cannot look short-lived by
/// naming a late `nbf` (or a late `iat`).
#[test]
fn lifetime_counts_from_the_earlier_of_iat_and_nbf() {
    let f = Fixture::new();
    let v = f.verifier();
    let now = unix_secs(f.now);
    let ten_years = 10 * 365 * 86_400;
    for (iat, nbf, want) in [
        (now, now, ten_years),
        (now - 3600, now, ten_years + 3600),
        (now, now - 7200, ten_years + 7200),
    ] {
        let mut claims = f.claims();
        claims["iat"] = json!(iat);
        claims["nbf"] = json!(nbf);
        claims["exp"] = json!(now + ten_years);
        let token = f.craft(&f.ed, &f.header(), &claims);
        let ok = v.verify(&token, Some(&f.cert_a), f.now).expect("verifies");
        assert_eq!(ok.lifetime_secs, want, "iat {iat}, nbf {nbf}");
    }
}
