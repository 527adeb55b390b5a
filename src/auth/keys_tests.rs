use super::*;
use crate::auth::signing_key::{TokenSigningKey, generate_ed25519_pem_pair};

fn p256_pair() -> (String, String) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256 key");
    (kp.serialize_pem(), kp.public_key_pem())
}

#[test]
fn rfc8037_thumbprint_vector() {
    // RFC 8037 appendix A.2/A.3: the Ed25519 example key and its RFC 7638 thumbprint.
    let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519",
        "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    let set = KeySet::from_jwks_json(jwks).expect("jwks");
    let key = set.iter().next().expect("one key");
    assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    assert_eq!(key.alg(), KeyAlg::EdDSA);
}

#[test]
fn generated_ed25519_pair_kids_agree() {
    let pair = generate_ed25519_pem_pair().expect("generate");
    let signing = TokenSigningKey::from_pkcs8_pem(&pair.private_pem).expect("signing key");
    let set = KeySet::from_pem(&pair.public_pem).expect("public key");
    assert_eq!(signing.kid(), pair.kid);
    assert_eq!(
        set.get(&pair.kid).map(VerificationKey::alg),
        Some(KeyAlg::EdDSA)
    );
    assert!(!format!("{pair:?}").contains("PRIVATE"));
    assert!(!format!("{signing:?}").contains(&pair.private_pem));
    // The PKCS#8 we write is readable by ring (through rcgen) too.
    assert!(rcgen::KeyPair::from_pem(&pair.private_pem).is_ok());
}

#[test]
fn p256_pair_kids_agree() {
    let (private_pem, public_pem) = p256_pair();
    let signing = TokenSigningKey::from_pkcs8_pem(&private_pem).expect("signing key");
    let set = KeySet::from_text(&public_pem).expect("public key");
    assert_eq!(signing.alg(), KeyAlg::ES256);
    assert_eq!(
        set.get(signing.kid()).map(VerificationKey::alg),
        Some(KeyAlg::ES256)
    );
    assert_eq!(
        signing.verification_key().to_spki_pem(),
        public_pem.replace("\r\n", "\n")
    );
}

#[test]
fn pem_rotation_and_jwks_round_trip() {
    let a = generate_ed25519_pem_pair().expect("generate");
    let (_, b_pub) = p256_pair();
    let set = KeySet::from_pem(&format!("{}\n{}", a.public_pem, b_pub)).expect("two keys");
    assert_eq!(set.len(), 2);
    let again = KeySet::from_text(&set.to_jwks().to_string()).expect("jwks");
    let kids = |s: &KeySet| s.iter().map(|k| k.kid().to_owned()).collect::<Vec<_>>();
    assert_eq!(kids(&set), kids(&again));
    let dup = KeySet::from_pem(&format!("{}{}", a.public_pem, a.public_pem));
    assert!(matches!(dup, Err(KeyError::DuplicateKid(_))));
}

#[test]
fn bad_key_material_is_refused() {
    let ed = generate_ed25519_pem_pair().expect("generate");
    let jwk = |extra: &str| {
        format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"{extra}}}]}}"#
        )
    };
    let zero32 = URL_SAFE_NO_PAD.encode([0u8; 32]);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = URL_SAFE_NO_PAD.encode(identity);
    let cases: Vec<(&str, Result<KeySet, KeyError>, &str)> = vec![
        (
            "private d",
            KeySet::from_jwks_json(&jwk(r#","d":"AAAA""#)),
            "private key material",
        ),
        (
            "alg mismatch",
            KeySet::from_jwks_json(&jwk(r#","alg":"ES256""#)),
            "does not match",
        ),
        (
            "alg none",
            KeySet::from_jwks_json(&jwk(r#","alg":"none""#)),
            "does not match",
        ),
        (
            "use enc",
            KeySet::from_jwks_json(&jwk(r#","use":"enc""#)),
            "use must be sig",
        ),
        ("empty", KeySet::from_jwks_json(r#"{"keys":[]}"#), "empty"),
        (
            "no keys",
            KeySet::from_jwks_json(r#"{"k":[]}"#),
            "missing keys",
        ),
        (
            "rsa",
            KeySet::from_jwks_json(r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#),
            "unsupported",
        ),
        (
            "oct",
            KeySet::from_jwks_json(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
            "unsupported",
        ),
        (
            "p256 off curve",
            KeySet::from_jwks_json(&format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"{zero32}","y":"{zero32}"}}]}}"#
            )),
            "invalid public key",
        ),
        (
            "weak ed25519",
            KeySet::from_jwks_json(&format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{weak}"}}]}}"#
            )),
            "invalid public key",
        ),
        (
            "private pem as public",
            KeySet::from_pem(&ed.private_pem),
            "expected a PUBLIC KEY",
        ),
        ("garbage", KeySet::from_text("hello"), "bad PEM"),
    ];
    for (what, got, want) in cases {
        let err = got.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(want), "{what}: got {err:?}, want {want:?}");
    }
    let as_signing = TokenSigningKey::from_pkcs8_pem(&ed.public_pem);
    assert!(matches!(
        as_signing,
        Err(KeyError::UnexpectedPemLabel { .. })
    ));
    let rsa_like = pem::encode("PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(matches!(
        TokenSigningKey::from_pkcs8_pem(&rsa_like),
        Err(KeyError::UnsupportedKey)
    ));
}

#[test]
fn files_load_and_size_is_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = generate_ed25519_pem_pair().expect("generate");
    let (pub_path, key_path) = (dir.path().join("token.pub"), dir.path().join("token.key"));
    std::fs::write(&pub_path, &pair.public_pem).expect("write");
    std::fs::write(&key_path, &pair.private_pem).expect("write");
    assert_eq!(KeySet::from_file(&pub_path).expect("load").len(), 1);
    assert_eq!(
        TokenSigningKey::from_file(&key_path).expect("load").kid(),
        pair.kid
    );
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b' '; MAX_KEY_FILE_BYTES as usize + 1]).expect("write");
    assert!(matches!(KeySet::from_file(&big), Err(KeyError::TooLarge)));
    assert!(matches!(
        KeySet::from_file(&dir.path().join("nope")),
        Err(KeyError::Io { .. })
    ));
}
