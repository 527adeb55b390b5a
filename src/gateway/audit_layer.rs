//! Audit of allowed calls: every call that passed the checks is recorded before the handler runs,
//! and refused if the record cannot be written. The methods the method table marks as recorded
//! by their handler (`SyncWithPeer`, `AddPeer`, `CancelSync`) are recorded by the gate instead,
//! after the decision that needs the request body (the policy; whose sync it is), so each gets
//! one record with the full decision.

use super::audit::AuditLog;
use super::check::{Check, is_health};
use super::refusal::Refusal;
use crate::audit::AuditEntry;
use crate::service::CallInfo;
use std::future::Future;
use std::pin::Pin;

pub(super) use crate::service::gate::{ADD_PEER_PATH, CANCEL_PATH, PEER_LOOP_PATH, SYNC_PATH};

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
            let by_handler = crate::service::method(path)
                .is_some_and(|m| m.recorded == crate::service::Recorded::ByHandler);
            if is_health(path) || by_handler {
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
