//! Admin bearer tokens (DESIGN.md §7): asymmetric JWTs (EdDSA or ES256), selected by `kid` from
//! a [`KeySet`], carrying `iss`, `aud`, `sub`, `exp`, `nbf`, `iat` and `jti`, and bound to the
//! admin's client certificate by `cnf.x5t#S256` (RFC 8705) so a stolen token is useless alone.
//!
//! The header is parsed and judged here before any key is touched (RFC 8725: no `none`, no HMAC,
//! no RSA, no key-carrying headers); jsonwebtoken only checks the signature, restricted to the
//! algorithm of the selected key. Every claim, and the clock, is checked here against an
//! injected `now`. This file must not look up policy or revocation: callers get the `jti` and
//! `sub` back and decide.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use rand::RngCore;
use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::identity::cert_thumbprint_b64url;
use super::keys::{KeyAlg, KeySet, is_valid_kid};
use super::signing_key::TokenSigningKey;
use super::strict_json::parse_object;

/// `iss` of orly admin tokens (minted by `orly token`, required by the gateway).
pub const TOKEN_ISSUER: &str = "orly";
/// `aud` of orly admin tokens: the sync service.
pub const TOKEN_AUDIENCE: &str = "orly-sync-negentropy";

/// Clock skew tolerated on `exp`, `nbf` and `iat` unless configured otherwise.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Longest token accepted, checked before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Claims every token must carry, checked in this order.
pub(super) const REQUIRED_CLAIMS: [&str; 7] = ["iss", "aud", "sub", "exp", "nbf", "iat", "jti"];

/// Header parameters a token may carry; any other is refused.
const ALLOWED_HEADER: [&str; 3] = ["alg", "kid", "typ"];
/// Header parameters refused by name, so the reason names them.
const NAMED_FORBIDDEN_HEADER: [&str; 10] = [
    "jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit", "b64", "cty", "zip",
];
/// The RFC 8705 confirmation member.
const CNF_X5T: &str = "x5t#S256";
/// Longest `sub` or `jti` accepted.
const MAX_CLAIM_TEXT: usize = 256;

/// Why a token was refused (or could not be minted). `Display` is a short, stable reason fit
/// for audit records and error responses; it never echoes token content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too large")]
    TooLarge,
    /// Not three base64url parts of JSON objects with unique member names.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not EdDSA or ES256 (this covers `none`, HMAC and RSA).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// A header parameter other than `alg`, `kid`, `typ`; "unknown" when not a JOSE name.
    #[error("forbidden header {0}")]
    ForbiddenHeader(&'static str),
    /// `typ` present and not `JWT`.
    #[error("unexpected token type")]
    UnexpectedType,
    /// No usable `kid` in the header.
    #[error("missing kid")]
    MissingKid,
    /// The `kid` names no key in the set.
    #[error("unknown kid")]
    UnknownKid,
    /// `alg` differs from the algorithm of the key the `kid` selects.
    #[error("algorithm does not match key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is absent.
    #[error("missing claim: {0}")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an unacceptable value.
    #[error("invalid claim: {0}")]
    InvalidClaim(&'static str),
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `now` is at or past `exp` plus leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is after `now` plus leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is after `now` plus leeway.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// The token is bound to a different certificate than the one presented.
    #[error("certificate binding mismatch")]
    CertificateMismatch,
    /// The token is bound but no client certificate was presented.
    #[error("certificate binding needs a client certificate")]
    CertificateMissing,
    /// The verifier requires bound tokens and this one has no `cnf`.
    #[error("certificate binding required")]
    BindingRequired,
    /// A mint request was refused before signing.
    #[error("invalid mint request: {0}")]
    InvalidMintRequest(&'static str),
    /// The signing backend failed.
    #[error("token signing failed")]
    Signing,
}

/// What to put in a new token.
#[derive(Debug, Clone)]
pub struct MintRequest<'a> {
    /// `iss`: who issues the token (must equal the verifier's issuer).
    pub issuer: &'a str,
    /// `aud`: the gateway the token is for (must equal the verifier's audience).
    pub audience: &'a str,
    /// `sub`: the admin identity name, as [`crate::auth::AdminIdentity::name`] reports it.
    pub admin: &'a str,
    /// Lifetime; `exp = now + ttl` (whole seconds, at least one).
    pub ttl: Duration,
    /// The admin's DER client certificate; when given the token is bound to it (`cnf`).
    pub cert_der: Option<&'a [u8]>,
    /// Issue time (`iat` and `nbf`).
    pub now: SystemTime,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<BTreeMap<&'static str, String>>,
}

/// Signs a token for `req.admin` with `key`; the header carries the key's alg and kid and a
/// fresh random 128-bit `jti` (hex) makes every token unique.
pub fn mint(key: &TokenSigningKey, req: &MintRequest<'_>) -> Result<String, TokenError> {
    for (value, what) in [
        (req.issuer, "issuer"),
        (req.audience, "audience"),
        (req.admin, "admin"),
    ] {
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(TokenError::InvalidMintRequest(what));
        }
    }
    let ttl = req.ttl.as_secs();
    if ttl == 0 {
        return Err(TokenError::InvalidMintRequest("ttl"));
    }
    let now = req
        .now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TokenError::InvalidMintRequest("clock"))?
        .as_secs();
    let exp = now
        .checked_add(ttl)
        .ok_or(TokenError::InvalidMintRequest("ttl"))?;
    let mut jti = [0u8; 16];
    rand::rng().fill_bytes(&mut jti);
    let claims = Claims {
        iss: req.issuer,
        aud: req.audience,
        sub: req.admin,
        exp,
        nbf: now,
        iat: now,
        jti: hex::encode(jti),
        cnf: req
            .cert_der
            .map(|der| BTreeMap::from([(CNF_X5T, cert_thumbprint_b64url(der))])),
    };
    let mut header = Header::new(key.alg().jwt());
    header.kid = Some(key.kid().to_owned());
    jsonwebtoken::encode(&header, &claims, key.encoding_key()).map_err(|_| TokenError::Signing)
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `sub`: the admin the token was issued to. Callers should check it against the
    /// certificate identity (or its policy mapping).
    pub admin: String,
    /// `jti`, for revocation lists and audit records.
    pub jti: String,
    /// `exp`, unix seconds.
    pub exp: u64,
    /// How long the token lives: `exp` minus the earlier of `iat` and `nbf`, in seconds (the
    /// caller holds it to its policy's maximum).
    pub lifetime_secs: u64,
    /// The kid of the key that verified the signature.
    pub kid: String,
    /// Whether the token was bound to (and matched) the presented certificate.
    pub cert_bound: bool,
}

/// Verifies admin tokens against a key set and the gateway's expected issuer and audience.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    /// Keys selected by `kid`.
    pub keys: KeySet,
    /// Required `iss`, compared exactly.
    pub issuer: String,
    /// Required member of `aud`, compared exactly.
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Refuse tokens without `cnf` (DESIGN.md §7 requires binding; keep this on in production).
    pub require_cnf: bool,
}

impl TokenVerifier {
    /// A verifier with [`DEFAULT_LEEWAY_SECS`] and certificate binding required.
    pub fn new(keys: KeySet, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            require_cnf: true,
        }
    }

    /// Verifies `token` as presented on a connection whose (already TLS-verified) client
    /// certificate is `presented_cert_der`, at time `now`.
    ///
    /// Order: size and shape, header (alg, forbidden parameters, typ, kid) with no key use,
    /// key selection and alg/key agreement, signature, then claims, clock and binding.
    pub fn verify(
        &self,
        token: &str,
        presented_cert_der: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<VerifiedToken, TokenError> {
        let parts = split(token)?;
        let header = decode_part(parts.header)?;
        let (alg, kid) = check_header(&header)?;
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKid)?;
        if key.alg() != alg {
            return Err(TokenError::AlgorithmMismatch);
        }
        if parts.signature.is_empty() {
            return Err(TokenError::BadSignature);
        }
        let mut validation = Validation::new(alg.jwt());
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        jsonwebtoken::decode::<IgnoredAny>(token, key.decoding_key(), &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed,
                _ => TokenError::Malformed,
            },
        )?;
        let claims = decode_part(parts.payload)?;
        self.check_claims(&claims, presented_cert_der, unix_secs(now), key.kid())
    }

    fn check_claims(
        &self,
        claims: &BTreeMap<String, Value>,
        presented_cert_der: Option<&[u8]>,
        now: u64,
        kid: &str,
    ) -> Result<VerifiedToken, TokenError> {
        if let Some(missing) = REQUIRED_CLAIMS
            .iter()
            .find(|name| !claims.contains_key(**name))
        {
            return Err(TokenError::MissingClaim(missing));
        }
        let text = |name: &'static str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| is_safe_text(s))
                .ok_or(TokenError::InvalidClaim(name))
        };
        let time = |name: &'static str| {
            claims
                .get(name)
                .and_then(Value::as_u64)
                .ok_or(TokenError::InvalidClaim(name))
        };
        let (iss, sub, jti) = (text("iss")?, text("sub")?, text("jti")?);
        let (exp, nbf, iat) = (time("exp")?, time("nbf")?, time("iat")?);
        if iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(list)) if list.iter().all(Value::is_string) => list
                .iter()
                .any(|a| a.as_str() == Some(self.audience.as_str())),
            _ => return Err(TokenError::InvalidClaim("aud")),
        };
        if !aud_ok {
            return Err(TokenError::WrongAudience);
        }
        if exp <= nbf || exp <= iat {
            return Err(TokenError::InvalidClaim("exp"));
        }
        if now >= exp.saturating_add(self.leeway_secs) {
            return Err(TokenError::Expired);
        }
        if nbf > now.saturating_add(self.leeway_secs) {
            return Err(TokenError::NotYetValid);
        }
        if iat > now.saturating_add(self.leeway_secs) {
            return Err(TokenError::IssuedInFuture);
        }
        let cert_bound = self.check_binding(claims.get("cnf"), presented_cert_der)?;
        Ok(VerifiedToken {
            admin: sub.to_owned(),
            jti: jti.to_owned(),
            exp,
            lifetime_secs: exp.saturating_sub(nbf.min(iat)),
            kid: kid.to_owned(),
            cert_bound,
        })
    }

    fn check_binding(&self, cnf: Option<&Value>, cert: Option<&[u8]>) -> Result<bool, TokenError> {
        let Some(cnf) = cnf else {
            return if self.require_cnf {
                Err(TokenError::BindingRequired)
            } else {
                Ok(false)
            };
        };
        // Only the certificate confirmation method is understood; a cnf naming another
        // (e.g. a JWK) is refused rather than half-honoured.
        let bound_to = match cnf {
            Value::Object(map) if map.len() == 1 => map.get(CNF_X5T).and_then(Value::as_str),
            _ => None,
        }
        .ok_or(TokenError::InvalidClaim("cnf"))?;
        let cert = cert.ok_or(TokenError::CertificateMissing)?;
        if cert_thumbprint_b64url(cert) != bound_to {
            return Err(TokenError::CertificateMismatch);
        }
        Ok(true)
    }
}

/// Shows a token's header and claims WITHOUT verifying anything, for `orly token inspect`.
/// The output says so in `"verified": false`; the signature itself is never included, only
/// its decoded length.
pub fn inspect(token: &str) -> Result<Value, TokenError> {
    let parts = split(token)?;
    let header = decode_part(parts.header)?;
    let claims = decode_part(parts.payload)?;
    let signature_len = URL_SAFE_NO_PAD
        .decode(parts.signature)
        .map_err(|_| TokenError::Malformed)?
        .len();
    Ok(json!({
        "verified": false,
        "warning": "UNVERIFIED: signature, issuer, audience, expiry and binding were not checked",
        "header": header,
        "claims": claims,
        "signature_bytes": signature_len,
    }))
}

struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(header), Some(payload), Some(signature), None)
            if !header.is_empty() && !payload.is_empty() =>
        {
            Ok(Parts {
                header,
                payload,
                signature,
            })
        }
        _ => Err(TokenError::Malformed),
    }
}

fn decode_part(part: &str) -> Result<BTreeMap<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    parse_object(&bytes).ok_or(TokenError::Malformed)
}

/// Judges the header alone: nothing here touches a key.
fn check_header(header: &BTreeMap<String, Value>) -> Result<(KeyAlg, &str), TokenError> {
    let alg = match header.get("alg") {
        Some(Value::String(name)) => {
            KeyAlg::from_jose(name).ok_or(TokenError::AlgorithmNotAllowed)?
        }
        Some(_) => return Err(TokenError::AlgorithmNotAllowed),
        None => return Err(TokenError::Malformed),
    };
    if let Some(name) = header
        .keys()
        .find(|k| !ALLOWED_HEADER.contains(&k.as_str()))
    {
        let named = NAMED_FORBIDDEN_HEADER.iter().find(|n| **n == name.as_str());
        return Err(TokenError::ForbiddenHeader(
            named.copied().unwrap_or("unknown"),
        ));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(TokenError::UnexpectedType),
    }
    match header.get("kid") {
        Some(Value::String(kid)) if is_valid_kid(kid) => Ok((alg, kid.as_str())),
        _ => Err(TokenError::MissingKid),
    }
}

fn is_safe_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_TEXT && !s.chars().any(char::is_control)
}

/// Unix seconds; a clock before 1970 reads as 0, which only makes tokens look not yet valid.
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
