//! `AUTH` (NIP-42): the client proves a key by signing our challenge; the auth rules of reads,
//! writes and syncs ask here whether the connection passes.

use super::Conn;
use crate::event::Event;
use crate::event::wire::{Prefix, kind};
use serde_json::Value;

impl Conn {
    pub(super) fn auth_ok(&self, required: bool) -> bool {
        if !required {
            return true;
        }
        match &self.authed {
            Some(pk) => {
                self.shared.cfg.auth_pubkeys.is_empty() || self.shared.cfg.auth_pubkeys.contains(pk)
            }
            None => false,
        }
    }

    pub(super) fn auth_reason(&self) -> String {
        if self.authed.is_some() {
            Prefix::Restricted.reason("this pubkey is not allowed")
        } else {
            Prefix::AuthRequired.reason("authenticate with NIP-42 first")
        }
    }

    pub(super) async fn on_auth(&mut self, raw: &Value) {
        let id = raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let res = Event::from_value(raw.clone())
            .and_then(|e| e.verify().map(|()| e))
            .map_err(|e| e.to_string())
            .and_then(|ev| self.check_auth_event(&ev).map(|()| ev));
        match res {
            Ok(ev) => {
                self.authed = Some(ev.pubkey);
                self.ok(id, true, "").await;
            }
            Err(reason) => self.ok(id, false, reason).await,
        }
    }

    pub(super) fn check_auth_event(&self, ev: &Event) -> Result<(), String> {
        if ev.kind != kind::CLIENT_AUTH {
            return Err(Prefix::Invalid.reason(format_args!(
                "AUTH event must be kind {}",
                kind::CLIENT_AUTH
            )));
        }
        if ev.tag_values("challenge").next() != Some(self.challenge.as_str()) {
            return Err("invalid: wrong AUTH challenge".into());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if ev.created_at.abs_diff(now) > 600 {
            return Err("invalid: AUTH event created_at is more than 10 minutes off".into());
        }
        if let Some(url) = &self.shared.cfg.public_url {
            let host = |u: &str| {
                url::Url::parse(u)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            };
            let tag = ev.tag_values("relay").next().unwrap_or("");
            if host(tag).is_none() || host(tag) != host(url) {
                return Err("invalid: AUTH relay tag does not name this relay".into());
            }
        }
        Ok(())
    }
}
