//! One generic tower layer: run a [`Check`] on the request head before the inner service, and on
//! refusal answer with the status and write exactly one audit record with the reason. Each
//! security concern is a `Check` in its own file; `stack.rs` composes them.

use super::audit::AuditLog;
use super::refusal::Refusal;
use crate::service::CallInfo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Paths exempt from identity, token, limits and audit (mTLS still applies): health checks.
pub(super) fn is_health(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// A check on the request head. It may enrich the [`CallInfo`] extension.
pub trait Check: Clone + Send + Sync + 'static {
    /// Decides; `Err` refuses the call.
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;
}

/// Layer applying a [`Check`].
#[derive(Clone)]
pub struct CheckLayer<C> {
    check: C,
    audit: AuditLog,
}

impl<C> CheckLayer<C> {
    /// `check`, auditing refusals to `audit`.
    pub fn new(check: C, audit: AuditLog) -> Self {
        Self { check, audit }
    }
}

impl<S, C: Clone> tower::Layer<S> for CheckLayer<C> {
    type Service = CheckService<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        CheckService {
            inner,
            check: self.check.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// Service applying a [`Check`].
#[derive(Clone)]
pub struct CheckService<S, C> {
    inner: S,
    check: C,
    audit: AuditLog,
}

type BoxFut<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, C, B> tower::Service<http::Request<B>> for CheckService<S, C>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    C: Check,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFut<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone that was polled ready does the call (the usual tower pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let check = self.check.clone();
        let audit = self.audit.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            if parts.extensions.get::<CallInfo>().is_none() {
                parts.extensions.insert(CallInfo::default());
            }
            if let Err(refusal) = check.check(&mut parts).await {
                return Ok(refuse(&audit, &parts, refusal).await);
            }
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// Answers a call refused before its handler: exactly one audit record with the reason, then the
/// refusal's status — or UNAVAILABLE when the record cannot be written (fail closed).
pub(super) async fn refuse(
    audit: &AuditLog,
    parts: &http::request::Parts,
    refusal: Refusal,
) -> http::Response<tonic::body::Body> {
    let call = parts
        .extensions
        .get::<CallInfo>()
        .cloned()
        .unwrap_or_default();
    super::telemetry::count_refusal(&refusal);
    let entry = crate::audit::AuditEntry::decision(false, refusal.reason.clone());
    if let Err(e) = audit.record(&call, parts.uri.path(), entry).await {
        return Refusal::audit_unavailable(e).to_http();
    }
    refusal.to_http()
}
