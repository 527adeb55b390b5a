//! Telemetry: W3C trace context taken from the call's metadata (or a fresh trace id), a span per
//! RPC, and the gateway's counters (refusals by reason, auth failures, audit write latency).

use super::check::Check;
use super::refusal::Refusal;
use crate::service::CallInfo;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of the gateway (also exported as OpenTelemetry metrics when configured).
#[derive(Debug, Default)]
pub struct GatewayCounters {
    /// Calls refused with RESOURCE_EXHAUSTED.
    pub rate_limited: AtomicU64,
    /// Refusals of any kind.
    pub refused: AtomicU64,
    /// Authentication failures (TLS or token).
    pub auth_failures: AtomicU64,
    /// Sum of audit write latencies, microseconds.
    pub audit_write_us: AtomicU64,
    /// Audit writes.
    pub audit_writes: AtomicU64,
}

/// The process-wide counters.
pub static COUNTERS: GatewayCounters = GatewayCounters {
    rate_limited: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    auth_failures: AtomicU64::new(0),
    audit_write_us: AtomicU64::new(0),
    audit_writes: AtomicU64::new(0),
};

pub(crate) fn count_refusal(r: &Refusal) {
    COUNTERS.refused.fetch_add(1, Ordering::Relaxed);
    if r.code == tonic::Code::ResourceExhausted {
        COUNTERS.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
    crate::telemetry::count_refusal(r.code, &r.reason);
}

pub(crate) fn count_auth_failure(reason: &'static str) {
    COUNTERS.auth_failures.fetch_add(1, Ordering::Relaxed);
    crate::telemetry::count_auth_failure(reason);
}

pub(crate) fn record_audit_latency(d: Duration) {
    COUNTERS.audit_writes.fetch_add(1, Ordering::Relaxed);
    COUNTERS
        .audit_write_us
        .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
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
