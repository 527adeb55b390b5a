//! NIP-77 serving: the negentropy sessions of one connection, capped in number and expired when
//! idle. Dropping the connection drops them all.

use crate::negentropy::NegError;
use crate::store::NegSession;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(super) type Session = Box<dyn NegSession>;

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

    /// Ends the session of `sub`, if any (dropped off the connection's task).
    pub(super) fn close(&mut self, sub: &str) -> bool {
        self.open
            .remove(sub)
            .map(|(s, _)| crate::store::retire(s))
            .is_some()
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
            self.close(k);
        }
        dead
    }
}

/// Answers one peer message. On error the session is gone: the caller answers `NEG-ERR`.
pub(super) async fn reconcile(
    mut s: Session,
    msg: Vec<u8>,
) -> Result<(Session, Vec<u8>), NegError> {
    // A different version gets the one-byte "my version" reply; anything else must be well
    // formed before any work is done for it.
    if msg.first() == Some(&crate::negentropy::PROTOCOL_VERSION) {
        crate::negentropy::check_message(&msg).map_err(NegError::Malformed)?;
    }
    let out = s.respond(msg).await?;
    Ok((s, out))
}
