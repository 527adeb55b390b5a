//! The seam between the sync handler and the security stack: the handler sees the request
//! message, so body-level decisions (peer, filter, direction) and their audit happen here,
//! through a [`SyncGate`]. The gateway implements it with policy, limits and audit; a service
//! on loopback without security uses [`OpenGate`].

use crate::sync::{PeerUrl, Progress, SyncRequest};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Status;

/// Path of the sync RPC (recorded by the gate).
pub const SYNC_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/SyncWithPeer";

/// Path of the cancel RPC (recorded by the gate).
pub const CANCEL_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/CancelSync";

/// Path of the add-peer RPC (recorded by the gate).
pub const ADD_PEER_PATH: &str = "/orlysync.negentropy.v1.NegentropyService/AddPeer";

/// The path recorded for background syncs of managed peers: no call starts them, the peer loop
/// does (not a gRPC path, so no call can be mistaken for one).
pub const PEER_LOOP_PATH: &str = "orly:peer-loop";

/// The admin recorded for background syncs of the peers the operator configured
/// (`ORLY_SYNC_NEGENTROPY_PEERS`): not a valid admin name, so no admin of a policy has it.
pub const OPERATOR: &str = "(operator)";

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
    /// Set by the service itself for a background sync of a managed peer (never from a
    /// request): the gate records it under [`PEER_LOOP_PATH`], as its owner's sync (`admin`),
    /// or as the [`OPERATOR`]'s when the operator configured the peer (`admin` is `None`).
    pub peer_loop: bool,
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

/// Whose syncs a caller may see (`ListSyncs`, `GetSync`).
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
    /// Records a call of `path` (one the gate records) refused before its decision (invalid,
    /// or the service not ready); `raw_url` is the peer URL the caller sent, redacted wherever
    /// it is quoted. Returns the status to send, its message [`shown`] (INVALID_ARGUMENT is
    /// recorded as an "invalid request").
    async fn refuse(
        &self,
        call: &CallInfo,
        path: &'static str,
        raw_url: &str,
        status: Status,
    ) -> Status;
    /// Decides an `AddPeer` and records the decision: the caller's policy must allow syncing
    /// `req` (its peer URL, direction and filter), as for `SyncWithPeer`. Returns the URL as
    /// the policy authorized it (normalized), which is what the peer list keeps.
    async fn add_peer(&self, call: &CallInfo, req: &SyncRequest) -> Result<PeerUrl, Status>;
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
        let fallback = if call.peer_loop {
            OPERATOR
        } else {
            "anonymous"
        };
        Ok(Admission {
            admin: call.admin.clone().unwrap_or_else(|| fallback.into()),
            max_events: None,
            peer_url: None,
            call: call.clone(),
            hold: None,
        })
    }

    async fn refuse(
        &self,
        _call: &CallInfo,
        _path: &'static str,
        raw_url: &str,
        status: Status,
    ) -> Status {
        shown_status(&status, raw_url)
    }

    async fn add_peer(&self, _call: &CallInfo, req: &SyncRequest) -> Result<PeerUrl, Status> {
        Ok(req.peer_url().clone())
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
