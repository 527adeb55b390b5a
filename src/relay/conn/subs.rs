//! `REQ` and `CLOSE`: subscriptions answered from the store, then kept open for live events.

use super::Conn;
use crate::event::wire::{Prefix, RelayMessage};
use crate::event::{Event, Filter};
use crate::store::Order;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashSet;

impl Conn {
    pub(super) async fn on_req(&mut self, sub: &str, raw_filters: &[Value]) {
        if sub.is_empty() || sub.len() > 64 {
            return self
                .notice("invalid: REQ needs a subscription id of 1 to 64 characters")
                .await;
        }
        let cfg = &self.shared.cfg;
        if raw_filters.is_empty() || raw_filters.len() > cfg.max_filters {
            let m = Prefix::Invalid
                .reason(format_args!("a REQ takes 1 to {} filters", cfg.max_filters));
            return self.closed(sub, m).await;
        }
        if !self.subs.contains_key(sub) && self.subs.len() >= cfg.max_subscriptions {
            let m = Prefix::Blocked.reason(format_args!(
                "at most {} open subscriptions",
                cfg.max_subscriptions
            ));
            return self.closed(sub, m).await;
        }
        if !self.auth_ok(cfg.auth_read) {
            return self.closed(sub, self.auth_reason()).await;
        }
        // Events published from here on reach the subscription live; earlier ones are stored.
        let start = self
            .shared
            .live_seq
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut filters = Vec::with_capacity(raw_filters.len());
        for f in raw_filters {
            match Filter::from_value(f) {
                Ok(f) => filters.push(f),
                Err(e) => {
                    return self.closed(sub, Prefix::Invalid.reason(e.0)).await;
                }
            }
        }
        let max_limit = cfg.max_limit;
        let mut sent = HashSet::new();
        for f in &filters {
            let mut q = f.clone();
            q.limit = Some(f.limit.unwrap_or(max_limit).min(max_limit));
            let mut stream = self.shared.store.query(q, Order::NewestFirst);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => {
                        if sent.insert(ev.id) {
                            self.send_event(sub, &ev).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!("query failed: {e}");
                        return self.closed(sub, Prefix::Error.reason("query failed")).await;
                    }
                }
            }
        }
        self.send(RelayMessage::Eose { sub: sub.into() }).await;
        self.subs.insert(sub.to_string(), (start, filters));
    }

    /// `CLOSE`: the subscription ends (an unknown one is no error).
    pub(super) fn on_close(&mut self, sub: &str) {
        self.subs.remove(sub);
    }

    pub(super) async fn send_event(&self, sub: &str, ev: &Event) {
        self.send_text(RelayMessage::event_frame(sub, ev)).await;
    }

    pub(super) async fn push_live(&self, seq: u64, ev: &Event) {
        for (sub, (start, filters)) in &self.subs {
            if seq > *start && filters.iter().any(|f| f.matches(ev)) {
                self.send_event(sub, ev).await;
            }
        }
    }
}
