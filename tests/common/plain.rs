//! Plaintext gRPC clients of the unsecured services on loopback (`orly-db`, and
//! `orly-sync-negentropy` without TLS) for `#[test]` functions: one shared runtime, calls
//! bounded by [`CALL_LIMIT`](super::CALL_LIMIT), channels, the standard health check and the
//! reflection service list.

use super::CALL_LIMIT;
use std::sync::OnceLock;
use std::time::Duration;
use tonic::transport::Channel;

/// Health status numbers as the health service sends them.
pub const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
pub const NOT_SERVING: i32 =
    tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

/// The runtime every blocking call of a test binary shares (two workers).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Runs a future on the shared runtime, bounded by `CALL_LIMIT`.
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    rt().block_on(async {
        tokio::time::timeout(CALL_LIMIT, f)
            .await
            .expect("gRPC call timed out")
    })
}

/// A plaintext channel to `addr` (connect bounded to 5 s).
pub async fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// The services `grpc.reflection.v1` at `addr` lists, sorted.
pub fn reflection_services(addr: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    block(async {
        let mut rc = ServerReflectionClient::new(channel(addr).await);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut resp = rc
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .expect("reflection call")
            .into_inner();
        let m = resp
            .message()
            .await
            .expect("reflection reply")
            .expect("one reply");
        match m.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                let mut v: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
                v.sort();
                v
            }
            other => panic!("unexpected reflection reply {other:?}"),
        }
    })
}

/// The standard health check of `service` at `addr`: its status number, or the call's error.
pub fn health(addr: &str, service: &str) -> Result<i32, tonic::Status> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    block(async {
        let mut hc = HealthClient::new(channel(addr).await);
        hc.check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
    })
}

/// What a `grpc.reflection.v1alpha` call sends: one ListServices request.
pub type ReflectionV1alphaStream =
    tokio_stream::Iter<std::vec::IntoIter<tonic_reflection::pb::v1alpha::ServerReflectionRequest>>;

/// The services `grpc.reflection.v1alpha` over `ch` lists, sorted; `request` wraps the call
/// (`tonic::Request::new`, or one carrying a token and a trace id).
pub async fn reflection_v1alpha(
    ch: &Channel,
    request: impl FnOnce(ReflectionV1alphaStream) -> tonic::Request<ReflectionV1alphaStream>,
) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut rc = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = rc
        .server_reflection_info(request(tokio_stream::iter(vec![req])))
        .await?
        .into_inner();
    let m = resp
        .message()
        .await?
        .ok_or_else(|| tonic::Status::internal("no reflection reply"))?;
    match m.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            let mut v: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
            v.sort();
            Ok(v)
        }
        other => panic!("unexpected reflection reply {other:?}"),
    }
}
