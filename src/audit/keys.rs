//! The audit key pair: PEM loading and creation (`orly certs init` writes `audit.key` and
//! `audit.pub`), and the sign/verify primitives for checkpoints and the head.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::TryRngCore;
use rand::rngs::OsRng;

use super::AuditError;

fn key_err(path: &Path, reason: impl std::fmt::Display) -> AuditError {
    AuditError::Key {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Loads an Ed25519 signing key from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, AuditError> {
    let pem = fs::read_to_string(path).map_err(|e| key_err(path, e))?;
    // The parse error names the problem, never the key material.
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| key_err(path, format!("not an Ed25519 PKCS#8 PEM key: {e}")))
}

/// Loads an Ed25519 verifying key from an SPKI PEM file (`-----BEGIN PUBLIC KEY-----`).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, AuditError> {
    let pem = fs::read_to_string(path).map_err(|e| key_err(path, e))?;
    VerifyingKey::from_public_key_pem(&pem)
        .map_err(|e| key_err(path, format!("not an Ed25519 SPKI PEM public key: {e}")))
}

/// A fresh signing key from the operating system's RNG.
pub fn generate_signing_key() -> Result<SigningKey, AuditError> {
    let mut seed = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| key_err(Path::new("<os rng>"), e))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// Generates a key pair and writes the private key (PKCS#8 PEM, mode 0600 on Unix) and the public
/// key (SPKI PEM). Refuses to overwrite either file; returns the verifying key.
pub fn write_key_pair(key_path: &Path, pub_path: &Path) -> Result<VerifyingKey, AuditError> {
    let key = generate_signing_key()?;
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| key_err(key_path, format!("cannot encode: {e}")))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| key_err(pub_path, format!("cannot encode: {e}")))?;
    write_new(key_path, private_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(pub_path, public_pem.as_bytes(), 0o644) {
        // Don't leave half a key pair behind: the next `certs init` would refuse to overwrite it.
        let _ = fs::remove_file(key_path);
        return Err(e);
    }
    Ok(key.verifying_key())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AuditError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| key_err(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| key_err(path, e))
}

/// Base64 Ed25519 signature over `message`.
pub(crate) fn sign(key: &SigningKey, message: &str) -> String {
    STANDARD.encode(key.sign(message.as_bytes()).to_bytes())
}

/// Whether `sig_b64` is a valid (strict) signature over `message` by `key`.
pub(crate) fn verify_sig(key: &VerifyingKey, message: &str, sig_b64: &str) -> bool {
    let Ok(bytes) = STANDARD.decode(sig_b64) else {
        return false;
    };
    let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return false;
    };
    key.verify_strict(message.as_bytes(), &Signature::from_bytes(&bytes))
        .is_ok()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn key_pair_round_trips_through_pem_and_refuses_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (k, p) = (dir.path().join("audit.key"), dir.path().join("audit.pub"));
        let vk = write_key_pair(&k, &p).expect("write");
        let sk = load_signing_key(&k).expect("load private");
        assert_eq!(sk.verifying_key(), vk);
        assert_eq!(load_verifying_key(&p).expect("load public"), vk);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&k).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "private key readable by others");
        }
        assert!(write_key_pair(&k, &p).is_err());
        // The public file is not a private key and vice versa.
        assert!(load_signing_key(&p).is_err());
        assert!(load_verifying_key(&k).is_err());
    }

    #[test]
    fn signatures_verify_only_with_the_right_key_and_message() {
        let a = generate_signing_key().expect("key");
        let b = generate_signing_key().expect("key");
        let sig = sign(&a, "m");
        assert!(verify_sig(&a.verifying_key(), "m", &sig));
        assert!(!verify_sig(&b.verifying_key(), "m", &sig));
        assert!(!verify_sig(&a.verifying_key(), "n", &sig));
        assert!(!verify_sig(&a.verifying_key(), "m", "not base64!"));
        assert!(!verify_sig(&a.verifying_key(), "m", "AAAA"));
    }
}
