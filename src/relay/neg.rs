//! NIP-77 serving: the negentropy sessions of one connection, capped in number and expired when
//! idle. Dropping the connection drops them all.

use crate::negentropy::{Negentropy, NegentropyStorageVector};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(super) type Session = Negentropy<'static, NegentropyStorageVector>;

#[derive(Default)]
pub(super) struct NegSessions {
    open: HashMap<String, (Session, Instant)>,
}

impl NegSessions {
    pub(super) fn len(&self) -> usize {
        self.open.len()
    }

    pub(super) fn contains(&self, sub: &str) -> bool {
        self.open.contains_key(sub)
    }

    pub(super) fn take(&mut self, sub: &str) -> Option<Session> {
        self.open.remove(sub).map(|(s, _)| s)
    }

    pub(super) fn put(&mut self, sub: String, s: Session) {
        self.open.insert(sub, (s, Instant::now()));
    }

    pub(super) fn close(&mut self, sub: &str) -> bool {
        self.open.remove(sub).is_some()
    }

    /// Removes sessions idle for longer than `idle`, returning their subscription ids.
    pub(super) fn expire(&mut self, idle: Duration) -> Vec<String> {
        let now = Instant::now();
        let dead: Vec<String> = self
            .open
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > idle)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            self.open.remove(k);
        }
        dead
    }
}

/// Runs one reconciliation step off the async threads (it is CPU work over the whole set), and
/// turns a decoder panic on hostile input into an error instead of a dead task. On error the
/// session is gone: the caller answers `NEG-ERR`.
pub(super) async fn reconcile(mut s: Session, msg: Vec<u8>) -> Result<(Session, Vec<u8>), String> {
    // A different version gets the crate's one-byte "my version" reply; anything else must be
    // well formed.
    if msg.first() == Some(&crate::negentropy::PROTOCOL_VERSION) {
        crate::negentropy::check_message(&msg)?;
    }
    tokio::task::spawn_blocking(move || {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.reconcile(&msg))) {
            Ok(Ok(out)) => Ok((s, out)),
            Ok(Err(e)) => Err(format!("{e:?}")),
            Err(_) => Err("decoder failed".to_string()),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}
