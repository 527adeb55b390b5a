//! gRPC clients of the secured service for tests: mTLS channels, requests with a bearer token
//! (and a W3C trace id, so a call's audit record can be found), the `NegentropyService` calls
//! read to their end (bounded), raw calls sending any bytes as messages, and a relay that never
//! answers (to hold a sync open). Part of the gateway harness (`gateway.rs`).

use super::CALL_LIMIT;
use futures_util::StreamExt;
use orly::auth::IssuedCert;
use orly::proto::orlysync::negentropy::v1 as npb;
use orly::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use prost::bytes::{Buf, BufMut};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub async fn connect(addr: &str, ca_pem: &str, cert: &IssuedCert) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem))
        .domain_name("localhost");
    let ep = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .expect("client TLS config")
        .connect_timeout(Duration::from_secs(5));
    tokio::time::timeout(CALL_LIMIT, ep.connect())
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

pub fn request<T>(body: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("token is ASCII"),
    );
    r
}

pub fn sync_req(peer: &str, direction: npb::Direction, timeout: u32) -> npb::SyncPeerRequest {
    npb::SyncPeerRequest {
        peer_url: peer.to_string(),
        direction: direction as i32,
        timeout_seconds: timeout,
        ..Default::default()
    }
}

pub fn client(ch: &Channel) -> NegentropyServiceClient<Channel> {
    NegentropyServiceClient::new(ch.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// One SyncWithPeer call, read to its end (bounded).
pub async fn sync_call(
    ch: &Channel,
    token: &str,
    body: npb::SyncPeerRequest,
) -> Result<Vec<npb::SyncProgress>, tonic::Status> {
    let mut c = client(ch);
    tokio::time::timeout(CALL_LIMIT, async move {
        let mut stream = c.sync_with_peer(request(body, token)).await?.into_inner();
        let mut all = Vec::new();
        while let Some(m) = stream.message().await? {
            all.push(m);
        }
        Ok(all)
    })
    .await
    .expect("SyncWithPeer call timed out")
}

/// A SyncWithPeer call that stays open: its first progress message (or its status), and the
/// stream, which the sync follows (dropping it cancels the sync).
pub async fn sync_open(
    ch: &Channel,
    token: &str,
    body: npb::SyncPeerRequest,
) -> Result<tonic::Streaming<npb::SyncProgress>, tonic::Status> {
    let mut c = client(ch);
    tokio::time::timeout(CALL_LIMIT, c.sync_with_peer(request(body, token)))
        .await
        .expect("SyncWithPeer call timed out")
        .map(tonic::Response::into_inner)
}

pub async fn list_syncs(ch: &Channel, token: &str) -> Result<Vec<npb::SyncStatus>, tonic::Status> {
    let mut c = client(ch);
    tokio::time::timeout(
        CALL_LIMIT,
        c.list_syncs(request(npb::ListSyncsRequest {}, token)),
    )
    .await
    .expect("ListSyncs timed out")
    .map(|r| r.into_inner().syncs)
}

pub async fn sync_status(
    ch: &Channel,
    token: &str,
    sync_id: &str,
) -> Result<npb::SyncStatus, tonic::Status> {
    let mut c = client(ch);
    let body = npb::GetSyncRequest {
        sync_id: sync_id.to_string(),
    };
    tokio::time::timeout(CALL_LIMIT, c.get_sync(request(body, token)))
        .await
        .expect("GetSync timed out")
        .map(tonic::Response::into_inner)
}

pub async fn cancel_sync(ch: &Channel, token: &str, sync_id: &str) -> Result<bool, tonic::Status> {
    let mut c = client(ch);
    let body = npb::CancelSyncRequest {
        sync_id: sync_id.to_string(),
    };
    tokio::time::timeout(CALL_LIMIT, c.cancel_sync(request(body, token)))
        .await
        .expect("CancelSync timed out")
        .map(|r| r.into_inner().cancelled)
}

/// Any bytes as gRPC messages: what a broken or hostile client can send.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A call of `path` sending `messages` as they are (none, one, several; any bytes), read to its
/// end: the number of response messages, or the status.
pub async fn raw_call(
    ch: &Channel,
    token: &str,
    path: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<usize, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    tokio::time::timeout(CALL_LIMIT, async move {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("not ready: {e}")))?;
        let req = request(tokio_stream::iter(messages), token);
        let path = http::uri::PathAndQuery::from_static(path);
        let mut stream = grpc.streaming(req, path, RawCodec).await?.into_inner();
        let mut n = 0;
        while stream.message().await?.is_some() {
            n += 1;
        }
        Ok(n)
    })
    .await
    .expect("raw call timed out")
}

/// A W3C trace id per call number, so each audit record can be matched to its call.
pub fn trace_id(n: u32) -> String {
    format!("5ec0{:028x}", n)
}

/// `body` with `authorization: Bearer <token>` (when given) and a `traceparent` of `trace`.
pub fn traced<T>(body: T, token: Option<&str>, trace: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("token is ASCII"),
        );
    }
    r.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01")
            .parse()
            .expect("trace id is ASCII"),
    );
    r
}

/// One SyncWithPeer call with an optional token and a trace id, read to its end (bounded).
pub async fn sync_call_traced(
    ch: &Channel,
    token: Option<&str>,
    trace: &str,
    body: npb::SyncPeerRequest,
) -> Result<Vec<npb::SyncProgress>, tonic::Status> {
    let mut c = client(ch);
    tokio::time::timeout(CALL_LIMIT, async move {
        let mut stream = c
            .sync_with_peer(traced(body, token, trace))
            .await?
            .into_inner();
        let mut all = Vec::new();
        while let Some(m) = stream.message().await? {
            all.push(m);
        }
        Ok(all)
    })
    .await
    .expect("SyncWithPeer call timed out")
}

/// ListSyncs with an optional token and a trace id: whether it was served.
pub async fn list_syncs_traced(
    ch: &Channel,
    token: Option<&str>,
    trace: &str,
) -> Result<(), tonic::Status> {
    let mut c = client(ch);
    tokio::time::timeout(
        CALL_LIMIT,
        c.list_syncs(traced(npb::ListSyncsRequest {}, token, trace)),
    )
    .await
    .expect("ListSyncs timed out")
    .map(|_| ())
}

/// A relay that completes the WebSocket handshake and then never answers: a sync against it
/// stays open until its reply timeout or until the caller goes away.
pub async fn stalling_relay() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            });
        }
    });
    (addr, h)
}

/// `msg` framed as one gRPC message (uncompressed).
pub fn framed(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}
