//! Token verification keys: the [`KeySet`] the gateway loads (`ORLY_TOKEN_KEYS`: one or more
//! PEM public keys, or a JWKS file, so old and new keys overlap during rotation), and the
//! public-key parsing, validation and RFC 7638 thumbprints that `signing_key.rs` shares. Only
//! Ed25519 (EdDSA) and P-256 (ES256) keys exist here; anything else is refused at load time,
//! never at verification time.
//!
//! Every key's default `kid` is its RFC 7638 JWK thumbprint, so a token minted with `token.key`
//! names a kid that `token.pub` yields without any configuration. This file holds no private
//! key material.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::pem::{self, PemError};
use super::strict_json::parse_object;

/// Largest key file read; key files are a few hundred bytes, a JWKS a few kilobytes.
pub const MAX_KEY_FILE_BYTES: u64 = 256 * 1024;
/// Longest `kid` accepted from a JWKS file or a token header.
pub(super) const MAX_KID_LEN: usize = 128;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of a P-256 SubjectPublicKeyInfo, followed by the uncompressed point `04||x||y`.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The only two token signature algorithms orly accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// Ed25519 signatures (RFC 8037).
    EdDSA,
    /// ECDSA on P-256 with SHA-256 (RFC 7518).
    ES256,
}

impl KeyAlg {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }

    /// Parses an exact (case-sensitive) JOSE `alg` name; everything else is `None`.
    pub fn from_jose(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::ES256 => Algorithm::ES256,
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why key material was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exceeds [`MAX_KEY_FILE_BYTES`].
    #[error("key file too large")]
    TooLarge,
    /// The PEM text is malformed.
    #[error("bad PEM: {0}")]
    Pem(#[from] PemError),
    /// A PEM block has the wrong label for this use.
    #[error("expected a {expected} PEM block, found {found}")]
    UnexpectedPemLabel {
        /// The label wanted.
        expected: &'static str,
        /// The label found.
        found: String,
    },
    /// A private key file must hold exactly one PEM block.
    #[error("expected exactly one PEM block")]
    PemBlockCount,
    /// Not an Ed25519 or P-256 key.
    #[error("unsupported key type (want Ed25519 or P-256)")]
    UnsupportedKey,
    /// The key bytes do not form a valid public key.
    #[error("invalid public key")]
    InvalidKey,
    /// The JWKS document is malformed.
    #[error("bad JWKS: {0}")]
    Jwks(&'static str),
    /// A verification key set contains a private parameter (`d`).
    #[error("key set contains private key material")]
    PrivateMaterial,
    /// Two keys share a `kid`.
    #[error("duplicate kid {0:?}")]
    DuplicateKid(String),
    /// A JWKS entry's `alg` disagrees with its key type.
    #[error("alg of key {0:?} does not match its key type")]
    AlgMismatch(String),
    /// The set holds no key.
    #[error("key set is empty")]
    Empty,
    /// The private key parsed but cannot produce a verifiable signature.
    #[error("signing key unusable")]
    Unusable,
}

/// A public key of one of the two supported kinds.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    Ed25519([u8; 32]),
    P256 { x: [u8; 32], y: [u8; 32] },
}

impl PublicKey {
    pub(crate) fn alg(&self) -> KeyAlg {
        match self {
            Self::Ed25519(_) => KeyAlg::EdDSA,
            Self::P256 { .. } => KeyAlg::ES256,
        }
    }

    pub(crate) fn ed25519(bytes: &[u8]) -> Result<Self, KeyError> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidKey)?;
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::InvalidKey)?;
        // Small-order keys let anyone forge signatures that verify for them.
        if key.is_weak() {
            return Err(KeyError::InvalidKey);
        }
        Ok(Self::Ed25519(raw))
    }

    pub(crate) fn p256(x: &[u8], y: &[u8]) -> Result<Self, KeyError> {
        let x: [u8; 32] = x.try_into().map_err(|_| KeyError::InvalidKey)?;
        let y: [u8; 32] = y.try_into().map_err(|_| KeyError::InvalidKey)?;
        let key = Self::P256 { x, y };
        // The crypto backend parses the point when building a verifier; an empty signature then
        // fails as "not valid" for a good point and as an error for a point off the curve.
        jsonwebtoken::crypto::verify("", b"", &key.decoding_key(), Algorithm::ES256)
            .map_err(|_| KeyError::InvalidKey)?;
        Ok(key)
    }

    fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        if let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            return Self::ed25519(raw);
        }
        if let Some(point) = der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            return match point {
                [0x04, xy @ ..] if xy.len() == 64 => Self::p256(&xy[..32], &xy[32..]),
                _ => Err(KeyError::InvalidKey),
            };
        }
        Err(KeyError::UnsupportedKey)
    }

    pub(crate) fn decoding_key(&self) -> DecodingKey {
        match self {
            Self::Ed25519(raw) => DecodingKey::from_ed_der(raw),
            Self::P256 { x, y } => {
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                DecodingKey::from_ec_der(&point)
            }
        }
    }

    /// The required JWK members, in the lexicographic order RFC 7638 hashes them in.
    fn jwk_members(&self) -> Value {
        match self {
            Self::Ed25519(raw) => json!({"crv": "Ed25519", "kty": "OKP", "x": b64(raw)}),
            Self::P256 { x, y } => json!({"crv": "P-256", "kty": "EC", "x": b64(x), "y": b64(y)}),
        }
    }

    /// RFC 7638 JWK SHA-256 thumbprint, base64url without padding.
    pub(crate) fn thumbprint(&self) -> String {
        // serde_json's map is ordered and emits no whitespace: exactly RFC 7638's input.
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.jwk_members().to_string().as_bytes()))
    }

    pub(crate) fn spki_pem(&self) -> String {
        let der = match self {
            Self::Ed25519(raw) => [&ED25519_SPKI_PREFIX[..], raw].concat(),
            Self::P256 { x, y } => [&P256_SPKI_PREFIX[..], &[0x04], x, y].concat(),
        };
        pem::encode("PUBLIC KEY", &der)
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_member(obj: &BTreeMap<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    let text = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or(KeyError::Jwks("missing x or y"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| KeyError::Jwks("x or y is not base64url"))
}

/// One public key a token may be verified with.
#[derive(Clone)]
pub struct VerificationKey {
    kid: String,
    public: PublicKey,
    decoding: DecodingKey,
}

impl VerificationKey {
    pub(crate) fn new(kid: String, public: PublicKey) -> Self {
        let decoding = public.decoding_key();
        Self {
            kid,
            public,
            decoding,
        }
    }

    /// The key id tokens select this key by.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The only algorithm this key verifies.
    pub fn alg(&self) -> KeyAlg {
        self.public.alg()
    }

    /// RFC 7638 thumbprint of the key (equal to `kid` unless a JWKS named it otherwise).
    pub fn thumbprint(&self) -> String {
        self.public.thumbprint()
    }

    /// The key as SubjectPublicKeyInfo PEM.
    pub fn to_spki_pem(&self) -> String {
        self.public.spki_pem()
    }

    /// The key as a public JWK with `kid`, `alg` and `use`.
    pub fn to_jwk(&self) -> Value {
        let mut jwk = self.public.jwk_members();
        if let Value::Object(map) = &mut jwk {
            map.insert("kid".into(), Value::String(self.kid.clone()));
            map.insert("alg".into(), Value::String(self.alg().as_str().into()));
            map.insert("use".into(), Value::String("sig".into()));
        }
        jwk
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg())
            .finish()
    }
}

/// The public keys tokens are verified against, selected by `kid`.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

impl KeySet {
    /// Builds a set; refuses an empty set and duplicate kids.
    pub fn from_keys(keys: Vec<VerificationKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.kid == key.kid) {
                return Err(KeyError::DuplicateKid(key.kid.clone()));
            }
        }
        Ok(Self { keys })
    }

    /// Loads a key file: a JWKS document if it starts with `{`, otherwise PEM.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_text(&read_key_file(path)?)
    }

    /// Parses a JWKS document or one or more `PUBLIC KEY` PEM blocks.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        if text.trim_start().starts_with('{') {
            Self::from_jwks_json(text)
        } else {
            Self::from_pem(text)
        }
    }

    /// Parses one or more SPKI `PUBLIC KEY` PEM blocks (Ed25519 or P-256); each key's kid is
    /// its RFC 7638 thumbprint. Concatenating the old and new `token.pub` gives a rotation set.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for block in pem::parse_all(text)? {
            if block.label != "PUBLIC KEY" {
                return Err(KeyError::UnexpectedPemLabel {
                    expected: "PUBLIC KEY",
                    found: block.label,
                });
            }
            let public = PublicKey::from_spki_der(&block.der)?;
            keys.push(VerificationKey::new(public.thumbprint(), public));
        }
        Self::from_keys(keys)
    }

    /// Parses `{"keys":[{"kty","crv","x","y"?,"kid"?,"alg"?,"use"?}]}`. A missing kid defaults
    /// to the thumbprint; `alg`, if given, must match the key type; `use`, if given, must be
    /// `sig`; a private `d` member or an unsupported key refuses the whole file.
    pub fn from_jwks_json(text: &str) -> Result<Self, KeyError> {
        let doc = parse_object(text.as_bytes()).ok_or(KeyError::Jwks("not a JSON object"))?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(KeyError::Jwks("missing keys array"))?;
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            let obj = match entry {
                Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                _ => return Err(KeyError::Jwks("key is not an object")),
            };
            keys.push(jwk_to_key(&obj)?);
        }
        Self::from_keys(keys)
    }

    /// The key named `kid`, if any.
    pub fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// All keys, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &VerificationKey> {
        self.keys.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false for a set built by this module; present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The set as a public JWKS document (for publishing or for building a rotation file).
    pub fn to_jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(VerificationKey::to_jwk).collect::<Vec<_>>() })
    }
}

fn jwk_to_key(obj: &BTreeMap<String, Value>) -> Result<VerificationKey, KeyError> {
    if obj.contains_key("d") {
        return Err(KeyError::PrivateMaterial);
    }
    let member = |name| obj.get(name).and_then(Value::as_str);
    let public = match (member("kty"), member("crv")) {
        (Some("OKP"), Some("Ed25519")) => PublicKey::ed25519(&b64_member(obj, "x")?)?,
        (Some("EC"), Some("P-256")) => {
            PublicKey::p256(&b64_member(obj, "x")?, &b64_member(obj, "y")?)?
        }
        (None, _) => return Err(KeyError::Jwks("missing kty")),
        _ => return Err(KeyError::UnsupportedKey),
    };
    let kid = match obj.get("kid") {
        None => public.thumbprint(),
        Some(Value::String(kid)) if is_valid_kid(kid) => kid.clone(),
        Some(_) => {
            return Err(KeyError::Jwks(
                "kid must be 1-128 printable ASCII characters",
            ));
        }
    };
    match obj.get("alg") {
        None => {}
        Some(Value::String(alg)) if KeyAlg::from_jose(alg) == Some(public.alg()) => {}
        Some(_) => return Err(KeyError::AlgMismatch(kid)),
    }
    match obj.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err(KeyError::Jwks("use must be sig")),
    }
    Ok(VerificationKey::new(kid, public))
}

/// A kid is 1..=128 printable ASCII characters (it is echoed in logs and errors).
pub(crate) fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_LEN && kid.bytes().all(|b| b.is_ascii_graphic())
}

pub(crate) fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::TooLarge);
    }
    Ok(text)
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
