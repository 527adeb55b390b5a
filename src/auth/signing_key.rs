//! The key that mints admin tokens (`token.key`, PKCS#8 Ed25519 or P-256) and Ed25519 key
//! pair generation for `orly certs init` (token and audit keys). Its kid is derived exactly as
//! [`super::keys::KeySet`] derives it from the public half, so no configuration links the two.
//!
//! Must not hold verification policy; see `token.rs` for what a valid token is.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey};
use rand::RngCore;

use super::keys::{KeyAlg, KeyError, PublicKey, VerificationKey, is_valid_kid, read_key_file};
use super::pem;

/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410), followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A private key that mints tokens. `Debug` never shows key bytes.
#[derive(Clone)]
pub struct TokenSigningKey {
    kid: String,
    public: PublicKey,
    encoding: EncodingKey,
}

impl TokenSigningKey {
    /// Loads a PKCS#8 `PRIVATE KEY` PEM file (Ed25519 or P-256).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pkcs8_pem(&read_key_file(path)?)
    }

    /// Parses one PKCS#8 `PRIVATE KEY` PEM block. The kid is the public key's RFC 7638
    /// thumbprint; a test signature is made and verified before the key is accepted.
    pub fn from_pkcs8_pem(text: &str) -> Result<Self, KeyError> {
        let mut blocks = pem::parse_all(text)?;
        let block = match (blocks.pop(), blocks.is_empty()) {
            (Some(block), true) => block,
            _ => return Err(KeyError::PemBlockCount),
        };
        if block.label != "PRIVATE KEY" {
            return Err(KeyError::UnexpectedPemLabel {
                expected: "PRIVATE KEY",
                found: block.label,
            });
        }
        Self::from_pkcs8_der(&block.der)
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let (public, encoding) = if let Ok(sk) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
            (
                PublicKey::ed25519(sk.verifying_key().as_bytes())?,
                EncodingKey::from_ed_der(der),
            )
        } else {
            let encoding = EncodingKey::from_ec_der(der);
            let jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
                .map_err(|_| KeyError::UnsupportedKey)?;
            let public = match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    let x = URL_SAFE_NO_PAD
                        .decode(&p.x)
                        .map_err(|_| KeyError::InvalidKey)?;
                    let y = URL_SAFE_NO_PAD
                        .decode(&p.y)
                        .map_err(|_| KeyError::InvalidKey)?;
                    PublicKey::p256(&x, &y)?
                }
                _ => return Err(KeyError::UnsupportedKey),
            };
            (public, encoding)
        };
        let key = Self {
            kid: public.thumbprint(),
            public,
            encoding,
        };
        key.self_test()?;
        Ok(key)
    }

    fn self_test(&self) -> Result<(), KeyError> {
        let alg = self.alg().jwt();
        let msg = b"orly signing key self-test";
        let sig =
            jsonwebtoken::crypto::sign(msg, &self.encoding, alg).map_err(|_| KeyError::Unusable)?;
        match jsonwebtoken::crypto::verify(&sig, msg, &self.public.decoding_key(), alg) {
            Ok(true) => Ok(()),
            _ => Err(KeyError::Unusable),
        }
    }

    /// Replaces the derived kid, for a JWKS that names keys differently.
    pub fn with_kid(mut self, kid: &str) -> Result<Self, KeyError> {
        if !is_valid_kid(kid) {
            return Err(KeyError::Jwks(
                "kid must be 1-128 printable ASCII characters",
            ));
        }
        self.kid = kid.to_owned();
        Ok(self)
    }

    /// The kid written into minted token headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm minted tokens use.
    pub fn alg(&self) -> KeyAlg {
        self.public.alg()
    }

    /// The matching verification key (same kid).
    pub fn verification_key(&self) -> VerificationKey {
        VerificationKey::new(self.kid.clone(), self.public.clone())
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

impl fmt::Debug for TokenSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg())
            .field("key", &"[secret]")
            .finish()
    }
}

/// A freshly generated key pair as PEM text. `Debug` hides the private half.
#[derive(Clone)]
pub struct PemKeyPair {
    /// PKCS#8 v1 `PRIVATE KEY` PEM; write it with mode 0600.
    pub private_pem: String,
    /// SPKI `PUBLIC KEY` PEM.
    pub public_pem: String,
    /// RFC 7638 thumbprint of the public key (the kid tokens will carry).
    pub kid: String,
}

impl fmt::Debug for PemKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemKeyPair")
            .field("private_pem", &"[secret]")
            .field("public_pem", &self.public_pem)
            .field("kid", &self.kid)
            .finish()
    }
}

/// Generates an Ed25519 key pair from the OS-seeded thread RNG (for token and audit keys).
pub fn generate_ed25519_pem_pair() -> Result<PemKeyPair, KeyError> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let der = [&ED25519_PKCS8_PREFIX[..], &seed].concat();
    seed.fill(0);
    let public = PublicKey::ed25519(signing.verifying_key().as_bytes())?;
    Ok(PemKeyPair {
        private_pem: pem::encode("PRIVATE KEY", &der),
        public_pem: public.spki_pem(),
        kid: public.thumbprint(),
    })
}
