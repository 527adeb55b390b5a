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
            "auth_required": cfg.auth_read,
            "restricted_writes": cfg.auth_write,
        },
        "negentropy": {
            "version": 1,
            "max_records": cfg.max_neg_records,
            "frame_size_limit": cfg.effective_neg_frame_limit(),
        }
    })
}
