//! `NEG-OPEN`, `NEG-MSG`, `NEG-CLOSE` (NIP-77): negentropy sessions served over the store,
//! capped per connection and in the records a set may hold.

use super::Conn;
use crate::event::Filter;
use crate::event::wire::{Prefix, RelayMessage};
use crate::negentropy::NegError;
use crate::relay::neg;
use crate::store::StoreError;
use serde_json::Value;

impl Conn {
    pub(super) async fn on_neg_open(&mut self, sub: &str, filter: &Value, msg: &str) {
        let cfg = &self.shared.cfg;
        if sub.is_empty() || sub.len() > 64 {
            return self
                .notice("invalid: subscription id must be 1 to 64 characters")
                .await;
        }
        if !self.auth_ok(cfg.auth_sync) {
            return self.neg_err(sub, self.auth_reason()).await;
        }
        // Re-opening an id replaces its session (NIP-77).
        self.negs.close(sub);
        if self.negs.len() >= cfg.max_neg_sessions {
            let m = Prefix::Closed.reason(format_args!(
                "at most {} open sessions per connection",
                cfg.max_neg_sessions
            ));
            return self.neg_err(sub, m).await;
        }
        let mut filter = match Filter::from_value(filter) {
            Ok(f) => f,
            Err(e) => {
                return self.neg_err(sub, Prefix::Invalid.reason(e.0)).await;
            }
        };
        filter.limit = None;
        let Ok(bytes) = crate::negentropy::from_hex(msg) else {
            return self
                .neg_err(sub, Prefix::Invalid.reason("message is not hex"))
                .await;
        };
        // The cap is the operator's (like strfry's maxSyncEvents) and bounds the sets loaded
        // into memory; time ranges are answered by the persistent index at no memory per item.
        let max = cfg.max_neg_records;
        let frame_limit = cfg.effective_neg_frame_limit();
        match self
            .shared
            .store
            .neg_session(filter, frame_limit, max)
            .await
        {
            Ok(s) => self.reconcile(sub, s, bytes).await,
            Err(StoreError::TooMany { max }) => {
                let reason = Prefix::Blocked.reason(format_args!(
                    "this query matches too many records (max {max})"
                ));
                self.send(RelayMessage::NegErr {
                    sub: sub.into(),
                    reason,
                    max: Some(max as u64),
                })
                .await
            }
            Err(StoreError::Busy(_)) => {
                let m =
                    Prefix::Error.reason("busy: too many negentropy sets open; try again later");
                self.neg_err(sub, m).await
            }
            Err(e) => {
                tracing::error!("negentropy set failed: {e}");
                self.neg_err(sub, Prefix::Error.reason("store failed"))
                    .await
            }
        }
    }

    pub(super) async fn on_neg_msg(&mut self, sub: &str, msg: &str) {
        let Some(session) = self.negs.take(sub) else {
            return self
                .neg_err(sub, Prefix::Closed.reason("no open session with this id"))
                .await;
        };
        let Ok(bytes) = crate::negentropy::from_hex(msg) else {
            return self
                .neg_err(sub, Prefix::Invalid.reason("message is not hex"))
                .await;
        };
        self.reconcile(sub, session, bytes).await;
    }

    /// `NEG-CLOSE`: the session ends (an unknown one is no error).
    pub(super) fn on_neg_close(&mut self, sub: &str) {
        self.negs.close(sub);
    }

    async fn reconcile(&mut self, sub: &str, session: neg::Session, bytes: Vec<u8>) {
        match neg::reconcile(session, bytes).await {
            Ok((session, out)) => {
                self.negs.put(sub.to_string(), session);
                self.send_text(RelayMessage::neg_msg_frame(sub, &out)).await;
            }
            Err(NegError::Storage(e)) => {
                tracing::error!("negentropy step failed: {e}");
                self.neg_err(sub, Prefix::Error.reason("store failed"))
                    .await;
            }
            Err(e) => {
                debug_assert!(!self.negs.contains(sub));
                self.neg_err(sub, Prefix::Invalid.reason(e)).await;
            }
        }
    }
}
