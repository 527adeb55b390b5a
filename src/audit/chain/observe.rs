//! Who hears of checkpoints: the one observer a chain tells of every checkpoint it makes durable
//! (the public anchors, `crate::audit::anchor`), and the audit public key they name the log by.

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::{AuditChain, AuditRecordRef};

/// A checkpoint the writer just made durable: what a public anchor of it holds
/// ([`AuditChain::on_checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointWritten {
    /// The checkpoint record's own seq.
    pub seq: u64,
    /// Hex SHA-256 of the checkpoint record's line (the chain hash after it).
    pub hash: String,
    /// The checkpoint record's `time`.
    pub time: String,
}

/// Called with every checkpoint written after it is set (under the chain's lock: it must not
/// block or call back into the chain).
pub(super) type CheckpointObserver = Box<dyn Fn(CheckpointWritten) + Send + Sync>;

impl AuditChain {
    /// The public half of the audit key (what `orly audit verify --pubkey` is given).
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        self.key.as_ref().map(SigningKey::verifying_key)
    }

    /// Sets the one function told of every checkpoint written from now on, once durable. It
    /// runs under the chain's lock: it must only hand the value on (e.g. into a channel).
    /// Returns `false` (and drops `observer`) when one is set already.
    pub fn on_checkpoint(
        &self,
        observer: impl Fn(CheckpointWritten) + Send + Sync + 'static,
    ) -> bool {
        self.checkpoint_observer.set(Box::new(observer)).is_ok()
    }

    /// Tells the observer, if any, of a checkpoint just written (under the state lock).
    pub(super) fn notify_checkpoint(&self, written: &AuditRecordRef, time: &str) {
        if let Some(observer) = self.checkpoint_observer.get() {
            observer(CheckpointWritten {
                seq: written.seq,
                hash: written.hash.clone(),
                time: time.to_string(),
            });
        }
    }
}
