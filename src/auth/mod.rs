//! Admin authentication for the sync gateway (DESIGN.md §7): who the caller is (mTLS identity),
//! whether its bearer token is genuine and bound to that certificate, the key material both
//! need, and the development/test PKI behind `orly certs init`.
//!
//! Owns: certificate identity extraction, JWT minting and verification, token key sets, PEM
//! key handling, development PKI files and in-memory test PKI (only with `cfg(test)` or the
//! `test-support` feature: never part of the production library).
//! Must not touch: TLS sockets and rustls configuration (the gateway owns those), policy
//! decisions, rate limits, audit records. This module only answers "who" and "is this token
//! valid for them"; it never decides what an admin may do.

mod certs;
mod identity;
mod keys;
mod pem;
mod signing_key;
mod strict_json;
#[cfg(any(test, feature = "test-support"))]
pub mod testpki;
mod token;

pub use certs::{AdminCertPaths, CertError, DevPki, MAX_VALIDITY_DAYS, init_dev_pki};
pub use identity::{
    AdminIdentity, IdentityError, IdentitySource, cert_fingerprint_hex, cert_thumbprint_b64url,
};
pub use keys::{KeyAlg, KeyError, KeySet, MAX_KEY_FILE_BYTES, VerificationKey};
pub use pem::PemError;
pub use signing_key::{PemKeyPair, TokenSigningKey, generate_ed25519_pem_pair};
#[cfg(any(test, feature = "test-support"))]
pub use testpki::{IssuedCert, LeafOptions, LeafValidity, TestCrl, TestPki, cert_signed_by};
pub use token::{
    DEFAULT_LEEWAY_SECS, MAX_TOKEN_LEN, MintRequest, TOKEN_AUDIENCE, TOKEN_ISSUER, TokenError,
    TokenVerifier, VerifiedToken, inspect, mint,
};
