//! The seam between the sync handler and the security stack: the handler sees the request
//! message, so body-level decisions (peer, filter, direction) and their audit happen here,
//! through a [`SyncGate`]. The gateway implements it with policy, limits and audit; a service
//! on loopback without security uses [`OpenGate`].

use crate::proto::orlysync::negentropy::v1 as pb;
use crate::sync::{PeerUrl, Progress, SyncRequest};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Status;

/// Most bytes of a message shown to a caller (a status's `grpc-message`, a progress error).
pub const MAX_SHOWN_MESSAGE: usize = 1024;

/// `text` as it may be shown to a caller, another admin or a log: URL user information and
/// query values redacted (also of `raw_url`, the URL the client sent, wherever it is quoted),
/// then cut to [`MAX_SHOWN_MESSAGE`] bytes with the SHA-256 of the whole.
pub fn shown(text: &str, raw_url: &str) -> String {
    crate::audit::bound_text(
        crate::policy::redact_quoting(text, raw_url),
        MAX_SHOWN_MESSAGE,
    )
}

/// `status` with its message [`shown`].
pub fn shown_status(status: &Status, raw_url: &str) -> Status {
    Status::new(status.code(), shown(status.message(), raw_url))
}

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
    pub peer_url: Option<PeerUrl>,
    /// The call's context, for the completion record.
    pub call: CallInfo,
    /// Held for the sync's lifetime.
    pub hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// Whose syncs a caller may see (`ListSyncs`, `GetSyncStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Every sync (an auditor; a service without tenants).
    All,
    /// The syncs this admin started.
    Own(String),
    /// None (a caller with no identity).
    Nothing,
}

impl Visibility {
    /// Whether a sync started by `owner` is visible.
    pub fn sees(&self, owner: &str) -> bool {
        match self {
            Self::All => true,
            Self::Own(admin) => admin == owner,
            Self::Nothing => false,
        }
    }
}

/// Decides on sync requests and records their outcome.
#[tonic::async_trait]
pub trait SyncGate: Send + Sync + 'static {
    /// Admits or refuses a validated request. A refusal is already audited when this returns.
    async fn admit(&self, call: &CallInfo, req: &SyncRequest) -> Result<Admission, Status>;
    /// Records a request refused before admission (invalid, or the service not ready); returns
    /// the status to send, its message [`shown`] (INVALID_ARGUMENT is recorded as an "invalid
    /// request").
    async fn refuse(&self, call: &CallInfo, req: &pb::SyncPeerRequest, status: Status) -> Status;
    /// Whose syncs the caller may see; cancelling is decided apart (owner only).
    fn visibility(&self, call: &CallInfo) -> Visibility;
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

/// Admits everything and shows every sync: for a service bound to loopback with no security
/// configured (no tenants).
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

    async fn refuse(&self, _call: &CallInfo, req: &pb::SyncPeerRequest, status: Status) -> Status {
        shown_status(&status, &req.peer_url)
    }

    fn visibility(&self, _call: &CallInfo) -> Visibility {
        Visibility::All
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
            admin = %admission.admin, peer = %crate::policy::redact_url(req.peer_url().as_str()), direction = req.direction().as_str(),
            fetched = last.fetched, sent = last.sent, error = ?last.error, ms = took.as_millis() as u64,
            "sync finished"
        );
    }
}
