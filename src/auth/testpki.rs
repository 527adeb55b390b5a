//! In-memory PKI for tests of this module and of the TLS layer: a CA that issues server and
//! client certificates (valid, expired or not yet valid), CRLs revoking chosen certificates,
//! and a signature check for "was this certificate signed by that CA". Create two
//! [`TestPki`]s for an unrelated second CA.
//!
//! Compiled only for this crate's unit tests and with the `test-support` feature (which the
//! crate's dev-dependency on itself turns on for integration tests and benches), so it is not
//! part of the production library; it must never serve real traffic: keys live only in memory
//! and nothing here is persisted or rotated.

use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use rcgen::{
    CertificateRevocationListParams, CertifiedIssuer, KeyIdMethod, KeyPair, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ED25519,
};
use x509_parser::prelude::parse_x509_certificate;

use super::certs::{CertError, LeafSpec, ca_params, dev_spiffe_id, issue_leaf, validity_window};
use super::pem;

/// When a test leaf certificate is valid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LeafValidity {
    /// From an hour ago for a day.
    #[default]
    Current,
    /// Ended a day ago.
    Expired,
    /// Starts in a day.
    NotYetValid,
}

/// Everything a test leaf certificate can vary in. The default has no names at all.
#[derive(Debug, Clone, Default)]
pub struct LeafOptions {
    /// Subject CN; `None` leaves the subject empty.
    pub common_name: Option<String>,
    /// DNS SANs, in order.
    pub dns_names: Vec<String>,
    /// IP SANs, in order (after the DNS names).
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs (e.g. SPIFFE IDs), in order.
    pub uris: Vec<String>,
    /// Add the serverAuth extended key usage.
    pub server_auth: bool,
    /// Add the clientAuth extended key usage.
    pub client_auth: bool,
    /// Validity window.
    pub validity: LeafValidity,
}

/// A certificate issued by a [`TestPki`], with its private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// PEM certificate.
    pub cert_pem: String,
    /// PKCS#8 DER private key (ECDSA P-256).
    pub key_pkcs8_der: Vec<u8>,
    /// PKCS#8 PEM private key.
    pub key_pem: String,
    /// Serial number bytes as encoded in the certificate (what a CRL names).
    pub serial: Vec<u8>,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("serial", &hex::encode(&self.serial))
            .field("key", &"[secret]")
            .finish()
    }
}

/// A signed CRL.
#[derive(Debug, Clone)]
pub struct TestCrl {
    /// DER CRL.
    pub der: Vec<u8>,
    /// PEM (`X509 CRL`) CRL.
    pub pem: String,
}

/// A throw-away certificate authority (ECDSA P-256).
pub struct TestPki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPki").field("ca", &*self.ca).finish()
    }
}

impl TestPki {
    /// A CA named "orly test CA", valid from an hour ago for a year.
    pub fn new() -> Result<Self, CertError> {
        Self::with_name("orly test CA")
    }

    /// A CA with the given common name (use a second one as an unrelated CA).
    pub fn with_name(common_name: &str) -> Result<Self, CertError> {
        let (not_before, not_after) = validity_window(365);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let ca = CertifiedIssuer::self_signed(ca_params(common_name, not_before, not_after), key)?;
        Ok(Self { ca })
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `hosts` (DNS names or IP addresses), serverAuth only.
    pub fn issue_server(&self, hosts: &[&str]) -> Result<IssuedCert, CertError> {
        let (ips, dns): (Vec<&str>, Vec<&str>) =
            hosts.iter().partition(|h| h.parse::<IpAddr>().is_ok());
        self.issue_with(&LeafOptions {
            common_name: hosts.first().map(|h| (*h).to_owned()),
            dns_names: dns.into_iter().map(String::from).collect(),
            ip_addresses: ips.into_iter().filter_map(|h| h.parse().ok()).collect(),
            server_auth: true,
            ..LeafOptions::default()
        })
    }

    /// A server certificate for localhost, 127.0.0.1 and ::1.
    pub fn issue_localhost_server(&self) -> Result<IssuedCert, CertError> {
        self.issue_server(&["localhost", "127.0.0.1", "::1"])
    }

    /// A clientAuth certificate for admin `name`: SPIFFE URI SAN
    /// `spiffe://orly.local/admin/NAME` and CN `NAME`, as `orly certs init` issues.
    pub fn issue_client(&self, name: &str) -> Result<IssuedCert, CertError> {
        self.issue_with(&Self::client_options(name))
    }

    /// Like [`Self::issue_client`] but expired a day ago.
    pub fn issue_expired_client(&self, name: &str) -> Result<IssuedCert, CertError> {
        let opts = LeafOptions {
            validity: LeafValidity::Expired,
            ..Self::client_options(name)
        };
        self.issue_with(&opts)
    }

    fn client_options(name: &str) -> LeafOptions {
        LeafOptions {
            common_name: Some(name.to_owned()),
            uris: vec![dev_spiffe_id(name)],
            client_auth: true,
            ..LeafOptions::default()
        }
    }

    /// Issues any leaf described by `opts` (server, client, both or neither).
    pub fn issue_with(&self, opts: &LeafOptions) -> Result<IssuedCert, CertError> {
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = match opts.validity {
            LeafValidity::Current => (now - Duration::hours(1), now + Duration::days(1)),
            LeafValidity::Expired => (now - Duration::days(2), now - Duration::days(1)),
            LeafValidity::NotYetValid => (now + Duration::days(1), now + Duration::days(2)),
        };
        let mut hosts = opts.dns_names.clone();
        hosts.extend(opts.ip_addresses.iter().map(IpAddr::to_string));
        let spec = LeafSpec {
            common_name: opts.common_name.as_deref(),
            hosts: &hosts,
            uris: &opts.uris,
            server: opts.server_auth,
            client: opts.client_auth,
        };
        let (cert_pem, key) = issue_leaf(&self.ca, &spec, not_before, not_after)?;
        let cert_der = pem::parse_all(&cert_pem)
            .ok()
            .and_then(|mut blocks| blocks.pop())
            .map(|block| block.der)
            .ok_or(CertError::Parse)?;
        let serial = parse_x509_certificate(&cert_der)
            .map_err(|_| CertError::Parse)?
            .1
            .raw_serial()
            .to_vec();
        Ok(IssuedCert {
            cert_der,
            cert_pem,
            key_pkcs8_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }

    /// A CRL from this CA (valid from an hour ago for a day) revoking `revoked`.
    pub fn crl_revoking(&self, revoked: &[&IssuedCert]) -> Result<TestCrl, CertError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|cert| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&cert.serial),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.ca)?;
        Ok(TestCrl {
            der: crl.der().to_vec(),
            pem: crl.pem()?,
        })
    }
}

/// Whether `cert_der` names `issuer_der`'s subject as its issuer and carries a valid signature
/// by its key. Supports ecdsa-with-SHA256 (P-256) and Ed25519 issuers; `Ok(false)` otherwise.
/// For tests and `orly certs` sanity checks; it does not check validity dates or extensions.
pub fn cert_signed_by(cert_der: &[u8], issuer_der: &[u8]) -> Result<bool, CertError> {
    let (_, cert) = parse_x509_certificate(cert_der).map_err(|_| CertError::Parse)?;
    let (_, issuer) = parse_x509_certificate(issuer_der).map_err(|_| CertError::Parse)?;
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Ok(false);
    }
    let spki = issuer.public_key();
    let key_bytes: &[u8] = &spki.subject_public_key.data;
    let tbs = cert.tbs_certificate.as_ref();
    let sig: &[u8] = &cert.signature_value.data;
    let sig_alg = &cert.signature_algorithm.algorithm;
    let (key, alg, raw_sig) = if *sig_alg == OID_SIG_ECDSA_WITH_SHA256
        && spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && key_bytes.len() == 65
    {
        match ecdsa_der_to_raw(sig) {
            Some(raw) => (DecodingKey::from_ec_der(key_bytes), Algorithm::ES256, raw),
            None => return Ok(false),
        }
    } else if *sig_alg == OID_SIG_ED25519
        && spki.algorithm.algorithm == OID_SIG_ED25519
        && key_bytes.len() == 32
    {
        (
            DecodingKey::from_ed_der(key_bytes),
            Algorithm::EdDSA,
            sig.to_vec(),
        )
    } else {
        return Ok(false);
    };
    let sig_b64 = URL_SAFE_NO_PAD.encode(raw_sig);
    Ok(jsonwebtoken::crypto::verify(&sig_b64, tbs, &key, alg).unwrap_or(false))
}

/// Converts a DER `ECDSA-Sig-Value` (SEQUENCE of two INTEGERs) into fixed 32+32 bytes.
fn ecdsa_der_to_raw(der: &[u8]) -> Option<Vec<u8>> {
    let (tag, body, rest) = der_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (r_tag, r, after_r) = der_tlv(body)?;
    let (s_tag, s, after_s) = der_tlv(after_r)?;
    if r_tag != 0x02 || s_tag != 0x02 || !after_s.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(64);
    for int in [r, s] {
        let trimmed: Vec<u8> = int.iter().copied().skip_while(|b| *b == 0).collect();
        if trimmed.len() > 32 {
            return None;
        }
        out.extend(std::iter::repeat_n(0u8, 32 - trimmed.len()));
        out.extend(trimmed);
    }
    Some(out)
}

/// One DER TLV with a short-form length (all an ECDSA P-256 signature needs).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if len >= 0x80 || rest.len() < usize::from(len) {
        return None;
    }
    let (value, rest) = rest.split_at(usize::from(len));
    Some((tag, value, rest))
}
