use std::time::{Duration as StdDuration, SystemTime};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate, parse_x509_certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::*;
use crate::auth::identity::{AdminIdentity, IdentitySource};
use crate::auth::keys::KeySet;
use crate::auth::pem;
use crate::auth::signing_key::TokenSigningKey;
use crate::auth::testpki::{LeafOptions, LeafValidity, TestPki, cert_signed_by};
use crate::auth::token::{MintRequest, TokenVerifier, mint};

fn der_of(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("read pem");
    let mut blocks = pem::parse_all(&text).expect("pem");
    assert_eq!(blocks.len(), 1, "{}", path.display());
    blocks.pop().map(|b| b.der).unwrap_or_default()
}

fn with_cert<T>(der: &[u8], f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (rest, cert) = parse_x509_certificate(der).expect("certificate");
    assert!(rest.is_empty());
    f(&cert)
}

#[test]
fn dev_pki_files_parse_chain_and_work_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("pki");
    let admins = ["alice".to_string(), "bob".to_string()];
    let pki = init_dev_pki(
        &root,
        &admins,
        &["orly.example".into(), "10.0.0.7".into()],
        30,
        false,
    )
    .expect("init");
    let ca = der_of(&pki.ca_cert);
    with_cert(&ca, |c| {
        assert!(c.is_ca());
        assert_eq!(c.subject(), c.issuer());
    });
    assert!(
        cert_signed_by(&ca, &ca).expect("check"),
        "CA is self-signed"
    );

    let server = der_of(&pki.server_cert);
    assert!(cert_signed_by(&server, &ca).expect("check"));
    with_cert(&server, |c| {
        let eku = c.extended_key_usage().expect("eku").expect("present").value;
        assert!(eku.server_auth && !eku.client_auth);
        let sans = c.subject_alternative_name().expect("san").expect("present");
        let names: Vec<String> = sans
            .value
            .general_names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        for want in [
            "localhost",
            "orly.example",
            "[127, 0, 0, 1]",
            "[10, 0, 0, 7]",
        ] {
            assert!(
                names.iter().any(|n| n.contains(want)),
                "{want} in {names:?}"
            );
        }
        assert!(
            names
                .iter()
                .any(|n| n.contains("[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]"))
        );
        let days =
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86400;
        assert_eq!(days, 30, "30 days plus the hour of skew, truncated");
    });

    assert_eq!(pki.admins.len(), 2);
    for admin in &pki.admins {
        let der = der_of(&admin.cert);
        assert!(
            cert_signed_by(&der, &ca).expect("check"),
            "{} chains to ca",
            admin.name
        );
        with_cert(&der, |c| {
            let eku = c.extended_key_usage().expect("eku").expect("present").value;
            assert!(eku.client_auth && !eku.server_auth);
            let cn = c
                .subject()
                .iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok());
            assert_eq!(cn, Some(admin.name.as_str()));
        });
        let id = AdminIdentity::from_cert_der(&der).expect("identity");
        assert_eq!(
            (id.name.as_str(), id.source),
            (admin.spiffe_id.as_str(), IdentitySource::SpiffeUri)
        );
        assert_eq!(
            admin.spiffe_id,
            format!("spiffe://orly.local/admin/{}", admin.name)
        );
        assert!(
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(&admin.key).expect("key")).is_ok()
        );
    }
    assert!(rcgen::KeyPair::from_pem(&std::fs::read_to_string(&pki.ca_key).expect("key")).is_ok());

    // token.key mints what token.pub verifies, bound to alice's certificate.
    let signing = TokenSigningKey::from_file(&pki.token_key).expect("token.key");
    assert_eq!(signing.kid(), pki.token_kid);
    let alice = der_of(&pki.admins[0].cert);
    let now = SystemTime::now();
    let req = MintRequest {
        issuer: "orly",
        audience: "gw",
        admin: &pki.admins[0].spiffe_id,
        ttl: StdDuration::from_secs(60),
        cert_der: Some(&alice),
        now,
    };
    let token = mint(&signing, &req).expect("mint");
    let verifier = TokenVerifier::new(
        KeySet::from_file(&pki.token_pub).expect("pub"),
        "orly",
        "gw",
    );
    assert_eq!(
        verifier
            .verify(&token, Some(&alice), now)
            .expect("verify")
            .admin,
        pki.admins[0].spiffe_id
    );
    // The audit pair is an independent Ed25519 pair.
    let audit = TokenSigningKey::from_file(&pki.audit_key).expect("audit.key");
    let audit_set = KeySet::from_file(&pki.audit_pub).expect("audit.pub");
    assert!(audit_set.get(audit.kid()).is_some());
    assert_ne!(audit.kid(), signing.kid());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let mut private = vec![&pki.ca_key, &pki.server_key, &pki.token_key, &pki.audit_key];
        private.extend(pki.admins.iter().map(|a| &a.key));
        for key in private {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        assert_eq!(mode(&root) & 0o077, 0, "created directory is private");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn dev_pki_refuses_overwrite_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admins = ["alice".to_string()];
    let first = init_dev_pki(dir.path(), &admins, &[], 1, false).expect("first");
    let ca_before = std::fs::read(&first.ca_key).expect("ca.key");
    let again = init_dev_pki(dir.path(), &admins, &[], 1, false);
    assert!(
        matches!(again, Err(CertError::AlreadyExists(ref p)) if p.ends_with("ca.key")),
        "{again:?}"
    );
    assert_eq!(
        std::fs::read(&first.ca_key).expect("ca.key"),
        ca_before,
        "untouched"
    );
    let forced = init_dev_pki(dir.path(), &admins, &[], 1, true).expect("forced");
    assert_ne!(
        std::fs::read(&forced.ca_key).expect("ca.key"),
        ca_before,
        "replaced"
    );
}

#[test]
fn dev_pki_validates_inputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for bad in ["", ".", "..", "a/b", "ca", "token", "x y", &"a".repeat(65)] {
        let got = init_dev_pki(dir.path(), &names(&[bad]), &[], 1, false);
        assert!(
            matches!(got, Err(CertError::InvalidAdminName(_))),
            "{bad:?}: {got:?}"
        );
    }
    let dup = init_dev_pki(dir.path(), &names(&["a", "a"]), &[], 1, false);
    assert!(matches!(dup, Err(CertError::InvalidAdminName(_))));
    for bad in ["", "a b", "a..b", "-\n"] {
        let got = init_dev_pki(dir.path(), &[], &names(&[bad]), 1, false);
        assert!(
            matches!(got, Err(CertError::InvalidHost(_))),
            "{bad:?}: {got:?}"
        );
    }
    for days in [0, MAX_VALIDITY_DAYS + 1] {
        let got = init_dev_pki(dir.path(), &[], &[], days, false);
        assert!(matches!(got, Err(CertError::InvalidValidity)));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "nothing written"
    );
}

#[test]
fn test_pki_expired_unrelated_ca_and_crl() {
    let pki = TestPki::new().expect("pki");
    let other = TestPki::with_name("unrelated CA").expect("other");
    let alice = pki.issue_client("alice").expect("alice");
    let bob = pki.issue_client("bob").expect("bob");
    let stranger = other.issue_client("alice").expect("stranger");
    let ca = pki.ca_cert_der();
    assert!(cert_signed_by(&alice.cert_der, &ca).expect("check"));
    assert!(!cert_signed_by(&stranger.cert_der, &ca).expect("check"));
    assert!(!cert_signed_by(&alice.cert_der, &other.ca_cert_der()).expect("check"));

    // Same CA name, different key: only the signature check can tell them apart.
    let twin = TestPki::new().expect("twin");
    assert!(!cert_signed_by(&alice.cert_der, &twin.ca_cert_der()).expect("check"));
    let mut forged = alice.cert_der.clone();
    if let Some(last) = forged.last_mut() {
        *last ^= 1;
    }
    assert!(!cert_signed_by(&forged, &ca).unwrap_or(false));

    let expired = pki.issue_expired_client("carol").expect("expired");
    with_cert(&expired.cert_der, |c| assert!(!c.validity().is_valid()));
    with_cert(&alice.cert_der, |c| assert!(c.validity().is_valid()));
    let later = pki
        .issue_with(&LeafOptions {
            common_name: Some("dave".into()),
            client_auth: true,
            validity: LeafValidity::NotYetValid,
            ..LeafOptions::default()
        })
        .expect("not yet valid");
    with_cert(&later.cert_der, |c| assert!(!c.validity().is_valid()));

    let server = pki.issue_localhost_server().expect("server");
    with_cert(&server.cert_der, |c| {
        let sans = c.subject_alternative_name().expect("san").expect("present");
        assert!(
            sans.value
                .general_names
                .contains(&GeneralName::DNSName("localhost"))
        );
    });
    assert!(AdminIdentity::from_cert_der(&alice.cert_der).is_ok());
    assert!(rcgen::KeyPair::from_pem(&alice.key_pem).is_ok());

    let crl = pki.crl_revoking(&[&bob]).expect("crl");
    assert!(crl.pem.starts_with("-----BEGIN X509 CRL-----"));
    let (_, parsed) = CertificateRevocationList::from_der(&crl.der).expect("crl parses");
    let revoked: Vec<&[u8]> = parsed
        .iter_revoked_certificates()
        .map(|r| r.raw_serial())
        .collect();
    assert_eq!(revoked, vec![bob.serial.as_slice()]);
    with_cert(&ca, |c| assert_eq!(parsed.issuer(), c.subject()));
}
