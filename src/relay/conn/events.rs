//! `EVENT`: each event checked (size, shape, signature, kind, NIP-42 write rule), then the
//! accepted ones of a burst stored in one write, and every one answered `OK`, in order.

use super::Conn;
use crate::event::Event;
use crate::event::wire::{Prefix, RelayMessage, kind};
use crate::store::{SaveOutcome, StoreError};
use serde_json::Value;
use std::sync::Arc;

/// An `EVENT` after its checks: to store, or answered already.
pub(super) enum Pending {
    Store(Event),
    Refused(RelayMessage),
    Notice(String),
}

impl Conn {
    /// One `EVENT` outside a batch.
    pub(super) async fn on_event(&mut self, raw: &Value) {
        let p = self.check_event(raw, 0);
        self.save_events(vec![p]).await;
    }

    /// Everything about an `EVENT` short of storing it: size, parse, signature, auth.
    pub(super) fn check_event(&self, raw: &Value, len: usize) -> Pending {
        let id = raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let refuse = |message: String| {
            Pending::Refused(RelayMessage::Ok {
                id,
                accepted: false,
                message,
            })
        };
        if len > self.shared.cfg.max_event_bytes + 64 {
            return refuse(Prefix::Invalid.reason(format_args!(
                "event too large (max {} bytes)",
                self.shared.cfg.max_event_bytes
            )));
        }
        let ev = match Event::from_value(raw.clone()).and_then(|e| e.verify().map(|()| e)) {
            Ok(ev) => ev,
            Err(e) => return refuse(e.to_string()),
        };
        if ev.kind == kind::CLIENT_AUTH {
            return refuse(Prefix::Invalid.reason("AUTH events go in an AUTH message"));
        }
        if !self.auth_ok(self.shared.cfg.auth_write) {
            return refuse(self.auth_reason());
        }
        Pending::Store(ev)
    }

    /// Stores the accepted events of `batch` in one write and answers every one, in order.
    pub(super) async fn save_events(&mut self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let events: Vec<Event> = batch
            .iter()
            .filter_map(|p| match p {
                Pending::Store(ev) => Some(ev.clone()),
                _ => None,
            })
            .collect();
        let mut outcomes = if events.is_empty() {
            Ok(Vec::new())
        } else {
            self.shared.store.save(events).await
        }
        .map(Vec::into_iter);
        // A store that refuses writes (a read-only standby) says why; other failures stay
        // generic for the client and are logged here.
        let failed = match &outcomes {
            Err(StoreError::Refused(why)) => Prefix::Blocked.reason(why),
            Err(e) => {
                tracing::error!("store failed: {e}");
                Prefix::Error.reason("could not store the event")
            }
            Ok(_) => Prefix::Error.reason("could not store the event"),
        };
        for p in batch {
            match p {
                Pending::Notice(m) => self.notice(&m).await,
                Pending::Refused(reply) => self.send(reply).await,
                Pending::Store(ev) => {
                    let id = ev.id_hex();
                    let o = match &mut outcomes {
                        Ok(it) => it.next(),
                        Err(_) => None,
                    };
                    let Some(o) = o else {
                        self.ok(id, false, failed.clone()).await;
                        continue;
                    };
                    let (ok, msg) = o.ok_reply();
                    if matches!(
                        o,
                        SaveOutcome::Accepted | SaveOutcome::Replaced | SaveOutcome::Ephemeral
                    ) {
                        self.shared.publish(Arc::new(ev));
                    }
                    self.ok(id, ok, msg).await;
                }
            }
        }
    }
}
