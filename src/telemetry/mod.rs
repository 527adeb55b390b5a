//! OpenTelemetry: traces and metrics, exported over OTLP/gRPC only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard `OTEL_*` variables apply); nothing leaves
//! the process otherwise, and the instruments are no-ops.
//!
//! Spans: one per RPC (`grpc_span`, parent taken from the W3C `traceparent` metadata), one per
//! sync job, children per negentropy round and per transfer batch (in `sync`).
//!
//! Log lines go to stderr as text or JSON (`log`, `ORLY_LOG_FORMAT`).

mod log;
mod metrics;

pub use log::{LOG_FORMAT_ENV, LogFormat};

pub(crate) use metrics::{
    count_anchor, count_auth_failure, count_events_moved, count_refusal, count_sync,
    record_audit_latency, set_anchor_backlog,
};

use opentelemetry::trace::TracerProvider as _;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes and shuts the exporters down when dropped (end of `main`).
pub struct TelemetryGuard {
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    metrics: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(t) = self.traces.take() {
            let _ = t.shutdown();
        }
        if let Some(m) = self.metrics.take() {
            let _ = m.shutdown();
        }
    }
}

/// The format this process logs in, once [`init`] or [`init_logging`] has run.
pub(crate) fn log_format() -> LogFormat {
    log::installed()
}

/// Log filter when `RUST_LOG` is not set: info, with chatty dependencies at warn.
pub const DEFAULT_LOG_FILTER: &str =
    "info,fjall=warn,lsm_tree=warn,h2=warn,tower=warn,hyper=warn,opentelemetry_sdk=warn";

/// How a process logs and exports, as the config module reads it from the environment
/// (`ORLY_LOG_FORMAT`, `RUST_LOG`, `OTEL_EXPORTER_OTLP_ENDPOINT`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// Text or JSON lines on stderr.
    pub format: LogFormat,
    /// The `RUST_LOG` directives; `None` (or directives that do not parse) gives
    /// [`DEFAULT_LOG_FILTER`].
    pub filter: Option<String>,
    /// Where OTLP traces and metrics go; `None`: nothing leaves the process. The exporters read
    /// the other standard `OTEL_*` variables themselves.
    pub otlp_endpoint: Option<String>,
}

fn log_filter(directives: Option<&str>) -> tracing_subscriber::EnvFilter {
    directives
        .and_then(|d| tracing_subscriber::EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER))
}

/// Installs logging only (stderr), for processes that export nothing (the launcher).
pub fn init_logging(settings: &TelemetrySettings) -> LogFormat {
    let _ = tracing_subscriber::registry()
        .with(log_filter(settings.filter.as_deref()))
        .with(log::layer(settings.format))
        .try_init();
    settings.format
}

/// Installs logging (stderr) and, when an OTLP endpoint is set, the OTLP trace and metric
/// exporters. Call once at the start of a service's `main`, inside the tokio runtime.
pub fn init(service: &'static str, settings: &TelemetrySettings) -> TelemetryGuard {
    let filter = log_filter(settings.filter.as_deref());
    let fmt = log::layer(settings.format);
    let endpoint = settings
        .otlp_endpoint
        .clone()
        .filter(|e| !e.trim().is_empty());
    let Some(endpoint) = endpoint else {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init();
        return TelemetryGuard {
            traces: None,
            metrics: None,
        };
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let traces = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map(|exp| {
            opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exp)
                .with_resource(resource.clone())
                .build()
        });
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .build()
        .map(|exp| {
            opentelemetry_sdk::metrics::SdkMeterProvider::builder()
                .with_periodic_exporter(exp)
                .with_resource(resource)
                .build()
        });
    let traces = match traces {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("{service}: OTLP trace exporter disabled: {e}");
            None
        }
    };
    let metrics = match metrics {
        Ok(m) => {
            opentelemetry::global::set_meter_provider(m.clone());
            Some(m)
        }
        Err(e) => {
            eprintln!("{service}: OTLP metric exporter disabled: {e}");
            None
        }
    };
    let otel_layer = traces
        .as_ref()
        .map(|t| tracing_opentelemetry::layer().with_tracer(t.tracer(service)));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel_layer)
        .try_init();
    tracing::info!(%endpoint, "OpenTelemetry export enabled");
    TelemetryGuard { traces, metrics }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one gRPC call, child of the caller's W3C trace context when it sent one. Use
/// with `tonic::transport::Server::trace_fn`.
pub(crate) fn grpc_span(req: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("grpc", otel.name = %req.uri().path(), rpc.system = "grpc");
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// Extracts the trace id (32 hex) from a W3C `traceparent` header, if valid.
pub(crate) fn trace_id_from_headers(h: &http::HeaderMap) -> Option<String> {
    let v = h.get("traceparent")?.to_str().ok()?;
    let mut parts = v.split('-');
    let (_version, trace, _span) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace != "0".repeat(32);
    ok.then(|| trace.to_ascii_lowercase())
}
