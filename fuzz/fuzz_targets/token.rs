//! Admin bearer tokens as the gateway reads them (`authorization: Bearer ...`). The first byte
//! picks the mode:
//! - even: the rest is the token text, verified against a fixed Ed25519 key set (header
//!   parsing and judging before any key is used, then the signature) and shown by
//!   `orly token inspect`;
//! - odd: the rest is a header and claims (JSON, split at the first 0x00), encoded and signed
//!   with the trusted key, so the claim checks after the signature run on fuzz-made claims.
//!
//! Checked: no panic; a token that verifies names a safe admin and jti and is unexpired at the
//! verifier's clock; an accepted bound token matched the presented certificate.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use libfuzzer_sys::fuzz_target;
use orly::auth::{KeySet, TokenSigningKey, TokenVerifier, inspect};
use orly_fuzz::{
    TOKEN_AUDIENCE, TOKEN_CERT, TOKEN_ISSUER, TOKEN_NOW, TOKEN_SEP, token_key_pem, token_raw_key,
};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

fn verifier() -> &'static TokenVerifier {
    static V: OnceLock<TokenVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let key = TokenSigningKey::from_pkcs8_pem(&token_key_pem()).expect("fixed key");
        let keys = KeySet::from_keys(vec![key.verification_key()]).expect("key set");
        TokenVerifier::new(keys, TOKEN_ISSUER, TOKEN_AUDIENCE)
    })
}

fn check(token: &str) {
    let now = UNIX_EPOCH + Duration::from_secs(TOKEN_NOW);
    let _ = inspect(token);
    for cert in [Some(TOKEN_CERT), None] {
        let Ok(v) = verifier().verify(token, cert, now) else {
            continue;
        };
        assert!(!v.admin.is_empty() && !v.admin.chars().any(char::is_control));
        assert!(!v.jti.is_empty() && !v.jti.chars().any(char::is_control));
        assert!(
            v.exp + verifier().leeway_secs > TOKEN_NOW,
            "expired token accepted"
        );
        assert!(
            v.cert_bound,
            "an unbound token passed a verifier that requires binding"
        );
        assert!(cert.is_some(), "a bound token passed without a certificate");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(token) = std::str::from_utf8(rest) {
            check(token);
        }
        return;
    }
    let (header, claims) = match rest.iter().position(|b| *b == TOKEN_SEP) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &b""[..]),
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    static KEY: OnceLock<ed25519_dalek::SigningKey> = OnceLock::new();
    let sig = KEY
        .get_or_init(token_raw_key)
        .sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    check(&token);
});
