//! The seam between the sync handler and the security stack: the handler sees the request
//! message, so body-level decisions (peer, filter, direction) and their audit happen here,
//! through a [`SyncGate`]. The gateway implements it with policy, limits and audit; a service
//! on loopback without security uses [`OpenGate`].

use crate::proto::orlysync::negentropy::v1 as pb;
use crate::sync::{Progress, SyncRequest};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Status;

/// What the transport and the gateway layers learned about a call (request extensions).
#[derive(Debug, Clone, Default)]
pub struct CallInfo {
    /// The caller's address.
    pub source: Option<SocketAddr>,
    /// The authenticated admin (set by the gateway), if any.
    pub admin: Option<String>,
    /// Hex SHA-256 of the client certificate, if any.
    pub cert_fingerprint: Option<String>,
    /// The token's `jti`, if any.
    pub token_jti: Option<String>,
    /// W3C trace id of the call, if any.
    pub trace_id: Option<String>,
}

impl CallInfo {
    /// Collects what the gateway put in the request's extensions, plus the remote address.
    pub fn from_request<T>(req: &tonic::Request<T>) -> Self {
        let mut info = req
            .extensions()
            .get::<CallInfo>()
            .cloned()
            .unwrap_or_default();
        if info.source.is_none() {
            info.source = req.remote_addr();
        }
        info
    }
}

/// An admitted call: who it is, its limits, and anything the gate must hold until it ends
/// (a concurrency permit, released on drop).
pub struct Admission {
    /// Admin name for status and audit.
    pub admin: String,
    /// Cap on events moved by this sync.
    pub max_events: Option<u64>,
    /// The peer URL as checked (normalized) by the gate; the sync uses exactly this.
    pub peer_url: Option<String>,
    /// The call's context, for the completion record.
    pub call: CallInfo,
    /// Held for the sync's lifetime.
    pub hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// Decides on sync requests and records their outcome.
#[tonic::async_trait]
pub trait SyncGate: Send + Sync + 'static {
    /// Admits or refuses a validated request. A refusal is already audited when this returns.
    async fn admit(&self, call: &CallInfo, req: &SyncRequest) -> Result<Admission, Status>;
    /// Records a request refused before admission (invalid, or the service not ready); returns
    /// the status to send (INVALID_ARGUMENT is recorded as an "invalid request").
    async fn refuse(&self, call: &CallInfo, req: &pb::SyncPeerRequest, status: Status) -> Status;
    /// Records the handler's decision on a `CancelSync` (an admin may cancel only the syncs it
    /// started): `Ok(reason)` when allowed. `Err` when refused, or when the record cannot be
    /// written (fail closed).
    async fn cancel_decision(
        &self,
        call: &CallInfo,
        decision: Result<String, Status>,
    ) -> Result<(), Status>;
    /// Records the end of an admitted sync.
    async fn finished(
        &self,
        admission: &Admission,
        req: &SyncRequest,
        last: &Progress,
        took: Duration,
    );
}

/// Admits everything: for a service bound to loopback with no security configured.
pub struct OpenGate;

#[tonic::async_trait]
impl SyncGate for OpenGate {
    async fn admit(&self, call: &CallInfo, _req: &SyncRequest) -> Result<Admission, Status> {
        Ok(Admission {
            admin: call.admin.clone().unwrap_or_else(|| "anonymous".into()),
            max_events: None,
            peer_url: None,
            call: call.clone(),
            hold: None,
        })
    }

    async fn refuse(&self, _call: &CallInfo, _req: &pb::SyncPeerRequest, status: Status) -> Status {
        status
    }

    async fn cancel_decision(
        &self,
        _call: &CallInfo,
        decision: Result<String, Status>,
    ) -> Result<(), Status> {
        decision.map(|_| ())
    }

    async fn finished(
        &self,
        admission: &Admission,
        req: &SyncRequest,
        last: &Progress,
        took: Duration,
    ) {
        tracing::info!(
            admin = %admission.admin, peer = %req.peer_url, direction = req.direction.as_str(),
            fetched = last.fetched, sent = last.sent, error = ?last.error, ms = took.as_millis() as u64,
            "sync finished"
        );
    }
}
