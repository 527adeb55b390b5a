//! OpenTelemetry: traces and metrics, exported over OTLP/gRPC only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; nothing leaves the process otherwise.

/// Extracts the trace id (32 hex) from a W3C `traceparent` header, if valid.
pub fn trace_id_from_headers(h: &http::HeaderMap) -> Option<String> {
    let v = h.get("traceparent")?.to_str().ok()?;
    let mut parts = v.split('-');
    let (_version, trace, _span) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace != "0".repeat(32);
    ok.then(|| trace.to_ascii_lowercase())
}

/// Counts a refusal by gRPC code.
pub fn count_refusal(code: tonic::Code, _reason: &str) {
    tracing::debug!(?code, "refused");
}

/// Counts an authentication failure by reason class.
pub fn count_auth_failure(reason: &'static str) {
    tracing::debug!(reason, "auth failure");
}

/// Records one audit write's latency.
pub fn record_audit_latency(d: std::time::Duration) {
    tracing::trace!(us = d.as_micros() as u64, "audit write");
}
