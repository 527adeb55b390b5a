//! The metric instruments (no-ops until a meter provider is installed by `telemetry::init`).

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};
use std::sync::OnceLock;

struct Instruments {
    syncs: Counter<u64>,
    events_moved: Counter<u64>,
    auth_failures: Counter<u64>,
    refusals: Counter<u64>,
    rate_limited: Counter<u64>,
    audit_latency: Histogram<f64>,
    anchor_backlog: Gauge<u64>,
    anchors: Counter<u64>,
}

fn instruments() -> &'static Instruments {
    static I: OnceLock<Instruments> = OnceLock::new();
    I.get_or_init(|| {
        let m = opentelemetry::global::meter("orly");
        Instruments {
            syncs: m
                .u64_counter("orly.syncs")
                .with_description("Syncs finished, by outcome")
                .build(),
            events_moved: m
                .u64_counter("orly.events_moved")
                .with_description("Events fetched or sent")
                .build(),
            auth_failures: m
                .u64_counter("orly.auth_failures")
                .with_description("Authentication failures, by reason")
                .build(),
            refusals: m
                .u64_counter("orly.refusals")
                .with_description("Refused calls, by gRPC code")
                .build(),
            rate_limited: m
                .u64_counter("orly.rate_limited")
                .with_description("Calls refused by rate or concurrency limits")
                .build(),
            audit_latency: m
                .f64_histogram("orly.audit.write_latency")
                .with_unit("ms")
                .with_description("Time to make one audit record durable")
                .build(),
            anchor_backlog: m
                .u64_gauge("orly.audit.anchor.backlog")
                .with_description("Audit anchors signed but accepted by no relay yet")
                .build(),
            anchors: m
                .u64_counter("orly.audit.anchors")
                .with_description("Audit anchors per publishing round, by outcome")
                .build(),
        }
    })
}

/// A finished sync, by outcome (`complete` or its error class).
pub(crate) fn count_sync(outcome: &str) {
    instruments()
        .syncs
        .add(1, &[KeyValue::new("outcome", outcome.to_string())]);
}

/// Events moved by a sync.
pub(crate) fn count_events_moved(direction: &'static str, n: u64) {
    if n > 0 {
        instruments()
            .events_moved
            .add(n, &[KeyValue::new("direction", direction)]);
    }
}

/// An authentication failure by reason class (`tls`, `token`).
pub(crate) fn count_auth_failure(reason: &'static str) {
    instruments()
        .auth_failures
        .add(1, &[KeyValue::new("reason", reason)]);
}

/// A refused call by gRPC code.
pub(crate) fn count_refusal(code: tonic::Code, _reason: &str) {
    let i = instruments();
    i.refusals
        .add(1, &[KeyValue::new("code", format!("{code:?}"))]);
    if code == tonic::Code::ResourceExhausted {
        i.rate_limited.add(1, &[]);
    }
}

/// One audit write's latency.
pub(crate) fn record_audit_latency(d: std::time::Duration) {
    instruments()
        .audit_latency
        .record(d.as_secs_f64() * 1000.0, &[]);
}

/// Audit anchors accepted by no relay yet.
pub(crate) fn set_anchor_backlog(n: u64) {
    instruments().anchor_backlog.record(n, &[]);
}

/// One anchor's fate in a publishing round (`published`, `not_accepted`).
pub(crate) fn count_anchor(outcome: &'static str) {
    instruments()
        .anchors
        .add(1, &[KeyValue::new("outcome", outcome)]);
}
