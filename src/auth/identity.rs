//! Who an admin is, taken from the client certificate the TLS layer already verified
//! (DESIGN.md §7): the first `spiffe://` URI SAN, else the first DNS SAN, else the subject CN.
//! Also the certificate thumbprints that tokens are bound to (RFC 8705 `x5t#S256`).
//!
//! This file parses only; it must not decide whether a certificate is trusted (chain, expiry,
//! revocation belong to the TLS verifier) nor what the identity may do (policy).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::parse_x509_certificate;

/// Longest identity name accepted; longer names are refused rather than truncated.
pub(super) const MAX_IDENTITY_LEN: usize = 256;

const SPIFFE_SCHEME: &str = "spiffe://";

/// Which certificate field an [`AdminIdentity`] name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentitySource {
    /// A `spiffe://` URI subject alternative name.
    SpiffeUri,
    /// A DNS subject alternative name.
    DnsSan,
    /// The subject common name.
    CommonName,
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SpiffeUri => "spiffe-uri",
            Self::DnsSan => "dns-san",
            Self::CommonName => "common-name",
        })
    }
}

/// The identity of an admin, derived from its (already verified) client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdminIdentity {
    /// The full SPIFFE ID, DNS name or common name; policy maps this to an admin entry.
    pub name: String,
    /// Where `name` came from.
    pub source: IdentitySource,
    /// SHA-256 of the certificate DER, the value tokens are bound to.
    pub cert_sha256: [u8; 32],
}

/// Why no identity could be taken from a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not one DER X.509 certificate.
    #[error("certificate does not parse")]
    Unparsable,
    /// The subject alternative name extension is present but malformed or duplicated.
    #[error("certificate subject alternative names do not parse")]
    BadSubjectAltNames,
    /// Neither a SPIFFE URI SAN, a DNS SAN nor a subject CN is present.
    #[error("certificate carries no usable identity")]
    NoIdentity,
    /// The chosen name is empty, too long or contains control characters.
    #[error("certificate identity is not a safe name")]
    UnsafeName,
}

impl AdminIdentity {
    /// Extracts the identity from a DER client certificate.
    ///
    /// A `spiffe://` URI wins over DNS SANs, which win over the CN; within a kind the first
    /// entry wins. Other URI schemes are ignored. The chosen name must be 1..=256 characters
    /// without control characters (it ends up in logs and audit records).
    pub fn from_cert_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (rest, cert) = parse_x509_certificate(der).map_err(|_| IdentityError::Unparsable)?;
        if !rest.is_empty() {
            return Err(IdentityError::Unparsable);
        }
        let names: Vec<&GeneralName<'_>> = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext.value.general_names.iter().collect(),
            Ok(None) => Vec::new(),
            Err(_) => return Err(IdentityError::BadSubjectAltNames),
        };
        let spiffe = names.iter().find_map(|n| match n {
            GeneralName::URI(uri) if is_spiffe_id(uri) => Some(*uri),
            _ => None,
        });
        let dns = || {
            names.iter().find_map(|n| match n {
                GeneralName::DNSName(name) => Some(*name),
                _ => None,
            })
        };
        let cn = || {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|attr| attr.as_str().ok())
        };
        let (name, source) = if let Some(uri) = spiffe {
            (uri, IdentitySource::SpiffeUri)
        } else if let Some(name) = dns() {
            (name, IdentitySource::DnsSan)
        } else if let Some(name) = cn() {
            (name, IdentitySource::CommonName)
        } else {
            return Err(IdentityError::NoIdentity);
        };
        if !is_safe_name(name) {
            return Err(IdentityError::UnsafeName);
        }
        Ok(Self {
            name: name.to_owned(),
            source,
            cert_sha256: cert_sha256(der),
        })
    }

    /// The RFC 8705 `x5t#S256` value of the certificate this identity came from.
    pub fn thumbprint_b64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.cert_sha256)
    }

    /// Lower-case hex SHA-256 fingerprint of the certificate, for logs and audit records.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.cert_sha256)
    }
}

/// SHA-256 of a DER certificate.
pub(super) fn cert_sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// RFC 8705 certificate thumbprint: base64url (no padding) of the SHA-256 of the DER bytes.
pub fn cert_thumbprint_b64url(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(cert_sha256(der))
}

/// Lower-case hex SHA-256 fingerprint of a DER certificate.
pub fn cert_fingerprint_hex(der: &[u8]) -> String {
    hex::encode(cert_sha256(der))
}

/// A SPIFFE ID needs the lower-case scheme and a non-empty trust domain.
fn is_spiffe_id(uri: &str) -> bool {
    uri.strip_prefix(SPIFFE_SCHEME)
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|domain| !domain.is_empty())
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_IDENTITY_LEN
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testpki::{LeafOptions, TestPki};

    fn identity_of(opts: LeafOptions) -> Result<AdminIdentity, IdentityError> {
        let pki = TestPki::new().expect("test CA");
        let leaf = pki.issue_with(&opts).expect("client cert");
        AdminIdentity::from_cert_der(&leaf.cert_der)
    }

    #[test]
    fn identity_sources_in_priority_order() {
        struct Case {
            what: &'static str,
            opts: LeafOptions,
            want: Result<(&'static str, IdentitySource), IdentityError>,
        }
        let cases = [
            Case {
                what: "spiffe wins over dns and cn",
                opts: LeafOptions {
                    common_name: Some("alice".into()),
                    dns_names: vec!["alice.example".into()],
                    uris: vec![
                        "https://example.com/x".into(),
                        "spiffe://orly.local/admin/alice".into(),
                    ],
                    ..LeafOptions::default()
                },
                want: Ok(("spiffe://orly.local/admin/alice", IdentitySource::SpiffeUri)),
            },
            Case {
                what: "dns only",
                opts: LeafOptions {
                    dns_names: vec!["bob.example".into(), "other.example".into()],
                    uris: vec!["https://not-spiffe.example/".into()],
                    ..LeafOptions::default()
                },
                want: Ok(("bob.example", IdentitySource::DnsSan)),
            },
            Case {
                what: "cn only",
                opts: LeafOptions {
                    common_name: Some("carol".into()),
                    ..LeafOptions::default()
                },
                want: Ok(("carol", IdentitySource::CommonName)),
            },
            Case {
                what: "spiffe without trust domain is ignored",
                opts: LeafOptions {
                    common_name: Some("dave".into()),
                    uris: vec!["spiffe:///admin/x".into()],
                    ..LeafOptions::default()
                },
                want: Ok(("dave", IdentitySource::CommonName)),
            },
            Case {
                what: "nothing usable",
                opts: LeafOptions::default(),
                want: Err(IdentityError::NoIdentity),
            },
        ];
        for case in cases {
            let got = identity_of(case.opts);
            match (&got, &case.want) {
                (Ok(id), Ok((name, source))) => {
                    assert_eq!(
                        (id.name.as_str(), id.source),
                        (*name, *source),
                        "{}",
                        case.what
                    );
                }
                (Err(e), Err(want)) => assert_eq!(e, want, "{}", case.what),
                _ => panic!("{}: got {got:?}, want {:?}", case.what, case.want),
            }
        }
    }

    #[test]
    fn thumbprints_match_rfc8705_shape() {
        let pki = TestPki::new().expect("test CA");
        let leaf = pki.issue_client("alice").expect("client cert");
        let id = AdminIdentity::from_cert_der(&leaf.cert_der).expect("identity");
        assert_eq!(
            id.thumbprint_b64url(),
            cert_thumbprint_b64url(&leaf.cert_der)
        );
        assert_eq!(id.thumbprint_b64url().len(), 43);
        assert_eq!(id.fingerprint_hex(), cert_fingerprint_hex(&leaf.cert_der));
        assert_eq!(id.fingerprint_hex().len(), 64);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(
            AdminIdentity::from_cert_der(b"not a cert"),
            Err(IdentityError::Unparsable)
        );
        let pki = TestPki::new().expect("test CA");
        let mut der = pki.issue_client("alice").expect("client cert").cert_der;
        der.push(0);
        assert_eq!(
            AdminIdentity::from_cert_der(&der),
            Err(IdentityError::Unparsable)
        );
    }
}
