//! The request message, judged before anything is recorded as allowed. tonic decodes a message
//! in its codec, after every tower layer, so a body too large or not protobuf would be refused
//! there (OUT_OF_RANGE, INTERNAL) with no audit record — or after the record of an allowed call
//! said the opposite. This layer reads the one message of each `NegentropyService` call (bounded
//! in size and time), decodes it as its method's request type, and refuses with exactly one
//! record: OUT_OF_RANGE above [`MAX_REQUEST_BYTES`] (read no further than its length prefix),
//! INVALID_ARGUMENT when it is not one whole, uncompressed, decodable message. A method no
//! service here serves is refused UNIMPLEMENTED, with its record. Health and reflection (a
//! stream of messages) pass untouched; everything after this layer sees a body already read.

use super::audit::AuditLog;
use super::check::{is_health, refuse};
use super::refusal::Refusal;
use crate::service::MAX_REQUEST_BYTES;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::Code;
use tonic::body::Body;

/// How long a caller may take to send its request message.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The gRPC message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

const REFLECTION: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What the layer does with a path.
enum Route {
    /// Not ours to judge (health, reflection).
    Pass,
    /// A method of ours: its request message type, for messages.
    Decode(&'static str, fn(&[u8]) -> Result<(), prost::DecodeError>),
    /// No such method.
    Unknown,
}

fn route(path: &str) -> Route {
    if is_health(path) || REFLECTION.iter().any(|p| path.starts_with(p)) {
        return Route::Pass;
    }
    match crate::service::method(path) {
        Some(m) => Route::Decode(m.request, m.decode),
        None => Route::Unknown,
    }
}

/// Reads the body to its end (as tonic does for a call of one request message): the message with
/// its prefix, or the refusal. Never holds more than [`MAX_REQUEST_BYTES`] plus one frame.
async fn read_message(mut body: Body, type_name: &str) -> Result<Bytes, Refusal> {
    let invalid = |why: String| Refusal::new(Code::InvalidArgument, format!("request: {why}"));
    let mut buf: Vec<u8> = Vec::new();
    let mut want: Option<usize> = None;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                return Err(Refusal::new(
                    Code::Cancelled,
                    format!("request: the {type_name} message did not arrive: {e}"),
                ));
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers: nothing to judge
                };
                buf.extend_from_slice(&data);
            }
        }
        if want.is_none() && buf.len() >= PREFIX {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_REQUEST_BYTES {
                return Err(Refusal::new(
                    Code::OutOfRange,
                    format!(
                        "request: {type_name} message of {len} bytes, more than the \
                         {MAX_REQUEST_BYTES} allowed"
                    ),
                ));
            }
            want = Some(PREFIX + len);
        }
        if let Some(w) = want
            && buf.len() > w
        {
            return Err(invalid(format!("more than one {type_name} message")));
        }
    }
    match want {
        None if buf.is_empty() => Err(invalid(format!("no {type_name} message"))),
        None => Err(invalid(format!(
            "not a gRPC message ({} bytes, no length prefix)",
            buf.len()
        ))),
        Some(w) if buf.len() < w => Err(invalid(format!(
            "{type_name} message cut short ({} of {} bytes)",
            buf.len() - PREFIX,
            w - PREFIX
        ))),
        Some(_) if buf[0] != 0 => Err(Refusal::new(
            Code::Unimplemented,
            "request: compressed messages are not accepted (send them uncompressed)",
        )),
        Some(_) => Ok(Bytes::from(buf)),
    }
}

/// Layer reading and judging request messages, auditing its refusals to `audit`.
#[derive(Clone)]
pub struct RequestMessage {
    audit: AuditLog,
}

impl RequestMessage {
    /// Refusals are recorded to `audit`.
    pub fn new(audit: AuditLog) -> Self {
        Self { audit }
    }
}

impl<S> tower::Layer<S> for RequestMessage {
    type Service = RequestMessageService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestMessageService {
            inner,
            audit: self.audit.clone(),
        }
    }
}

/// Service of [`RequestMessage`].
#[derive(Clone)]
pub struct RequestMessageService<S> {
    inner: S,
    audit: AuditLog,
}

type BoxFut<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for RequestMessageService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFut<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let audit = self.audit.clone();
        Box::pin(async move {
            let (type_name, decode) = match route(req.uri().path()) {
                Route::Pass => return inner.call(req).await,
                Route::Decode(t, d) => (t, d),
                Route::Unknown => {
                    let (parts, _) = req.into_parts();
                    let r = Refusal::new(Code::Unimplemented, "unknown method");
                    return Ok(refuse(&audit, &parts, r).await);
                }
            };
            let (parts, body) = req.into_parts();
            let read = tokio::time::timeout(BODY_TIMEOUT, read_message(body, type_name))
                .await
                .unwrap_or_else(|_| {
                    Err(Refusal::new(
                        Code::DeadlineExceeded,
                        format!(
                            "request: the {type_name} message did not arrive within {} s",
                            BODY_TIMEOUT.as_secs()
                        ),
                    ))
                })
                .and_then(|msg| match decode(&msg[PREFIX..]) {
                    Ok(()) => Ok(msg),
                    Err(e) => Err(Refusal::new(
                        Code::InvalidArgument,
                        format!("request: not a valid {type_name} message ({e})"),
                    )),
                });
            match read {
                Ok(msg) => {
                    let body = Body::new(Full::new(msg));
                    inner.call(http::Request::from_parts(parts, body)).await
                }
                Err(r) => Ok(refuse(&audit, &parts, r).await),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&[u8]]) -> Body {
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Body::new(http_body_util::StreamBody::new(tokio_stream::iter(chunks)))
    }

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[tokio::test]
    async fn one_whole_message_passes_and_everything_else_is_refused_with_its_reason() {
        let ok = framed(b"\x0a\x03abc");
        let huge_prefix = [0u8, 0xff, 0xff, 0xff, 0xff];
        let mut two = framed(b"");
        two.extend(framed(b""));
        let mut compressed = framed(b"x");
        compressed[0] = 1;
        // Split across frames: the prefix in one, the message in two more.
        let split: Vec<&[u8]> = vec![&ok[..3], &ok[3..6], &ok[6..]];
        assert_eq!(read_message(body(&split), "T").await.unwrap(), &ok[..]);
        let cases: Vec<(Vec<&[u8]>, Code, &str)> = vec![
            (vec![], Code::InvalidArgument, "no T message"),
            (vec![&[0, 0]], Code::InvalidArgument, "no length prefix"),
            (
                vec![&ok[..7]],
                Code::InvalidArgument,
                "cut short (2 of 5 bytes)",
            ),
            (vec![&two], Code::InvalidArgument, "more than one T message"),
            (vec![&compressed], Code::Unimplemented, "compressed"),
            (
                vec![&huge_prefix],
                Code::OutOfRange,
                "message of 4294967295 bytes, more than the 4194304 allowed",
            ),
        ];
        for (chunks, code, reason) in cases {
            let r = read_message(body(&chunks), "T").await.unwrap_err();
            assert_eq!(r.code, code, "{chunks:?}: {r:?}");
            assert!(r.reason.contains(reason), "{chunks:?}: {r:?}");
        }
    }

    #[test]
    fn every_method_decodes_its_own_type_and_nothing_else_is_served() {
        use crate::proto::orlysync::negentropy::v1 as pb;
        use crate::service::{METHODS, SERVICE_PREFIX};
        use prost::Message;
        let Route::Decode(name, decode) = route(&format!("{SERVICE_PREFIX}SyncWithPeer")) else {
            panic!("SyncWithPeer not decoded");
        };
        assert_eq!(name, "SyncPeerRequest");
        assert!(decode(&pb::SyncPeerRequest::default().encode_to_vec()).is_ok());
        assert!(decode(&[0xff; 8]).is_err());
        for m in METHODS {
            assert!(matches!(route(&m.path()), Route::Decode(..)), "{}", m.name);
        }
        for p in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(matches!(route(p), Route::Pass), "{p}");
        }
        for p in [
            &format!("{SERVICE_PREFIX}Nope") as &str,
            "/orlydb.v1.DatabaseService/Get",
            "/",
        ] {
            assert!(matches!(route(p), Route::Unknown), "{p}");
        }
    }
}
