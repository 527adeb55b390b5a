//! The NIP-11 relay information document.

use super::RelayConfig;
use serde_json::{Value, json};

pub(super) fn document(cfg: &RelayConfig) -> Value {
    json!({
        "name": "orly",
        "description": "orly relay: NIP-01 store with NIP-77 negentropy sync",
        "software": "https://github.com/orly/orly",
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": [1, 9, 11, 42, 77],
        "limitation": {
            "max_message_length": cfg.max_message_bytes,
            "max_subscriptions": cfg.max_subscriptions,
            "max_filters": cfg.max_filters,
            "max_limit": cfg.max_limit,
            "max_event_length": cfg.max_event_bytes,
            "max_subid_length": 64,
            "default_limit": cfg.max_limit,
            "auth_required": cfg.auth_read,
            "restricted_writes": cfg.auth_write,
            // Not in NIP-11's list: the connection limits a client may run into.
            "max_connections": cfg.effective_max_connections(),
            "max_connections_per_ip": cfg.max_connections_per_ip,
            "max_messages_per_second": cfg.max_messages_per_second,
            "max_pending_bytes": cfg.max_pending_bytes,
            "handshake_timeout_seconds": cfg.handshake_timeout.as_secs_f64(),
            "idle_timeout_seconds": cfg.idle_timeout.as_secs_f64(),
            "ping_interval_seconds": cfg.ping_interval.as_secs_f64(),
            "message_timeout_seconds": cfg.message_timeout.as_secs_f64(),
            "max_neg_sessions": cfg.max_neg_sessions,
        },
        "negentropy": {
            "version": 1,
            "max_records": cfg.max_neg_records,
            "frame_size_limit": cfg.effective_neg_frame_limit(),
        }
    })
}
