//! Audit of allowed calls: every call that passed the checks is recorded before the handler runs,
//! and refused if the record cannot be written. `SyncWithPeer` and `CancelSync` are recorded by
//! the gate instead, after the decision that needs the request body (the policy; whose sync it
//! is), so each gets one record with the full decision.

use super::audit::AuditLog;
use super::check::{Check, is_health};
use super::refusal::Refusal;
use crate::audit::AuditEntry;
use crate::service::CallInfo;
use std::future::Future;
use std::pin::Pin;

/// Path of the sync RPC (audited by the gate).
pub const SYNC_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/SyncWithPeer";

/// Path of the cancel RPC (audited by the gate).
pub const CANCEL_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/CancelSync";

/// Records allowed calls.
#[derive(Clone)]
pub struct AuditAllowed {
    /// Where records go.
    pub audit: AuditLog,
}

impl Check for AuditAllowed {
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(async move {
            let path = parts.uri.path();
            if is_health(path) || path == SYNC_PATH || path == CANCEL_PATH {
                return Ok(());
            }
            let call = parts
                .extensions
                .get::<CallInfo>()
                .cloned()
                .unwrap_or_default();
            self.audit
                .record(&call, path, AuditEntry::decision(true, "allowed"))
                .await
                .map_err(Refusal::audit_unavailable)
        })
    }
}
