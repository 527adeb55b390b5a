//! Signing, for `orly gen`, tests and NIP-42 AUTH. Keys derive deterministically from a seed.

use super::{Event, canonical};
use sha2::{Digest, Sha256};

/// A secp256k1 key pair for signing events.
#[derive(Clone)]
pub struct Keys {
    keypair: secp256k1::Keypair,
    /// The x-only public key (the event `pubkey`).
    pub pubkey: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({})", hex::encode(self.pubkey))
    }
}

impl Keys {
    /// Keys from a 32-byte secret; errors if it is not a valid scalar.
    pub fn from_secret(secret: [u8; 32]) -> Result<Self, String> {
        let keypair = secp256k1::Keypair::from_secret_bytes(secret)
            .map_err(|_| "invalid secret key".to_string())?;
        let (xonly, _) = keypair.x_only_public_key();
        Ok(Self {
            keypair,
            pubkey: xonly.to_byte_array(),
        })
    }

    /// Keys from a 64-hex secret (as in a key file or `ORLY_SYNC_AUTH_KEY`).
    pub fn from_hex(s: &str) -> Result<Self, String> {
        Self::from_secret(super::decode_hex32(s.trim())?)
    }

    /// Deterministic keys: secret = sha256(seed || index), retried past invalid scalars.
    pub fn from_seed(seed: &[u8], index: u64) -> Self {
        let mut counter = 0u32;
        loop {
            let mut h = Sha256::new();
            h.update(seed);
            h.update(index.to_be_bytes());
            h.update(counter.to_be_bytes());
            if let Ok(k) = Self::from_secret(h.finalize().into()) {
                return k;
            }
            counter += 1;
        }
    }

    /// Signs a 32-byte message (an event id or a NIP-42 auth event id).
    pub fn sign(&self, msg: &[u8; 32]) -> [u8; 64] {
        secp256k1::schnorr::sign_no_aux_rand(msg, &self.keypair).to_byte_array()
    }
}

/// Builds and signs an event (deterministic: no auxiliary randomness).
pub fn sign_event(
    keys: &Keys,
    created_at: u64,
    kind: u16,
    tags: Vec<Vec<String>>,
    content: &str,
) -> Event {
    let mut h = Sha256::new();
    canonical::write_canonical(
        &mut h,
        canonical::Form::Signers,
        &keys.pubkey,
        created_at,
        kind,
        &tags,
        content,
    );
    let id: [u8; 32] = h.finalize().into();
    Event {
        id,
        pubkey: keys.pubkey,
        created_at,
        kind,
        tags,
        content: content.to_string(),
        sig: keys.sign(&id),
    }
}
