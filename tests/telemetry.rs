//! OpenTelemetry export: a small OTLP collector runs in the test process; one client-mode sync
//! through the real service must produce the RPC span (child of the caller's W3C context), the
//! sync job span under it, and round and transfer-batch spans under that, plus metrics.

mod common;
use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use orly::proto::orlysync::negentropy::v1 as pb;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut names = self.metrics.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                names.extend(sm.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

fn find<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_mode_sync_exports_linked_spans_and_metrics() {
    orly::init_crypto();
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = listener.local_addr().unwrap();
    let c = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(c.clone()))
            .add_service(MetricsServiceServer::new(c))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });

    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote");
    import(&remote, &notes("otel", 120, 1_700_000_000));
    let relay = relay(&remote, &[]);
    let endpoint = format!("http://{otlp_addr}");
    let svc_dir = tmp.path().join("svc");
    let svc = spawn_service(
        "orly-sync-negentropy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            svc_dir.to_str().unwrap(),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    );

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let mut client = pb::negentropy_service_client::NegentropyServiceClient::connect(format!(
        "http://{}",
        svc.addr
    ))
    .await
    .unwrap();
    let mut req = tonic::Request::new(pb::SyncPeerRequest {
        peer_url: format!("ws://{}", relay.addr),
        direction: pb::Direction::Down as i32,
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span}-01").parse().unwrap(),
    );
    let mut stream = client.sync_with_peer(req).await.unwrap().into_inner();
    let mut last = None;
    while let Some(m) = stream.message().await.unwrap() {
        last = Some(m);
    }
    let last = last.expect("progress");
    assert!(last.complete, "sync failed: {}", last.error);
    assert_eq!(last.fetched_count, 120);
    // Let the periodic metric reader run once, then stop the service: shutdown flushes spans.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = tokio::task::spawn_blocking(move || svc.terminate())
        .await
        .unwrap();
    assert!(status.success());

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done = !find(&collector.spans.lock().unwrap(), "sync_job").is_empty();
        if done || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = collector.spans.lock().unwrap().clone();
    let rpc = find(
        &spans,
        "/orlysync.negentropy.v1.NegentropyService/SyncWithPeer",
    );
    assert_eq!(
        rpc.len(),
        1,
        "one RPC span; got names {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let rpc = rpc[0];
    assert_eq!(
        hex::encode(&rpc.trace_id),
        trace_id,
        "RPC span continues the caller's trace"
    );
    assert_eq!(
        hex::encode(&rpc.parent_span_id),
        parent_span,
        "RPC span's parent is the caller's span"
    );
    let job = find(&spans, "sync_job");
    assert_eq!(job.len(), 1);
    assert_eq!(
        job[0].parent_span_id, rpc.span_id,
        "sync job is a child of the RPC span"
    );
    assert_eq!(job[0].trace_id, rpc.trace_id);
    let rounds = find(&spans, "neg_round");
    assert!(!rounds.is_empty(), "round spans exported");
    assert!(
        rounds.iter().all(|r| r.parent_span_id == job[0].span_id),
        "rounds are children of the job"
    );
    let batches = find(&spans, "fetch_batch");
    assert!(!batches.is_empty(), "transfer batch spans exported");
    assert!(batches.iter().all(|b| b.parent_span_id == job[0].span_id));

    let metrics = collector.metrics.lock().unwrap().clone();
    assert!(
        metrics.iter().any(|m| m == "orly.syncs"),
        "sync outcome metric exported: {metrics:?}"
    );
    assert!(
        metrics.iter().any(|m| m == "orly.events_moved"),
        "{metrics:?}"
    );
}
