//! Telemetry in the stack: the call's W3C trace id into [`CallInfo`] (for audit records), and
//! the gateway's metrics (refusals, auth failures, audit write latency) via `crate::telemetry`.

use super::check::Check;
use super::refusal::Refusal;
use crate::service::CallInfo;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub(crate) fn count_refusal(r: &Refusal) {
    crate::telemetry::count_refusal(r.code, &r.reason);
}

pub(crate) fn count_auth_failure(reason: &'static str) {
    crate::telemetry::count_auth_failure(reason);
}

pub(crate) fn record_audit_latency(d: Duration) {
    crate::telemetry::record_audit_latency(d);
}

/// Takes the trace id from `traceparent` (W3C) or makes one, into the [`CallInfo`].
#[derive(Clone, Default)]
pub struct TraceContext;

impl Check for TraceContext {
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(async move {
            let trace_id = crate::telemetry::trace_id_from_headers(&parts.headers)
                .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
            if let Some(call) = parts.extensions.get_mut::<CallInfo>() {
                call.trace_id = Some(trace_id);
            }
            Ok(())
        })
    }
}
