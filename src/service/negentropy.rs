//! `orlysync.negentropy.v1.NegentropyService`, every method: ORLY's fifteen (readiness, managed
//! peers and their background sync, NIP-77 answered for relays, sessions) and ours (per-sync
//! status, list, cancel). This file only translates between the wire and the parts that do the
//! work: [`SyncService`] (every sync, in one registry), [`PeerManager`] (the peer list and its
//! loop) and [`DelegatedSessions`] (sessions held for relays). Who may call what is decided
//! before a handler runs (the gateway's rights check) or by the gate where the decision needs
//! the request (`SyncWithPeer`, `AddPeer`, `CancelSync`).

use super::delegated::{DelegatedError, DelegatedSessions, Reply, SessionKey};
use super::gate::{ADD_PEER_PATH, CallInfo, shown};
use super::peers::{Peer, PeerManager, PeerState};
use super::sync::{MAX_REQUEST_BYTES, ProgressStream, SyncService};
use crate::event::Filter;
use crate::policy::redact_url;
use crate::proto::orlysync::common::v1 as common;
use crate::proto::orlysync::negentropy::v1 as pb;
use crate::proto::orlysync::negentropy::v1::negentropy_service_server::{
    NegentropyService, NegentropyServiceServer,
};
use crate::store::Store;
use crate::sync::Direction;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service: its parts, each shared with the tasks that run them.
pub struct NegentropyHandler {
    store: Arc<dyn Store>,
    syncs: SyncService,
    peers: Arc<PeerManager>,
    sessions: Arc<DelegatedSessions>,
}

impl NegentropyHandler {
    /// The service over these parts.
    pub fn new(
        store: Arc<dyn Store>,
        syncs: SyncService,
        peers: Arc<PeerManager>,
        sessions: Arc<DelegatedSessions>,
    ) -> Self {
        Self {
            store,
            syncs,
            peers,
            sessions,
        }
    }

    /// Wraps it as a tonic service.
    pub fn into_server(self) -> NegentropyServiceServer<Self> {
        NegentropyServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

/// `filter` as the NIP-01 JSON a peer keeps, checked; `None` when absent.
fn peer_filter(filter: Option<&common::Filter>) -> Result<Option<String>, Status> {
    filter
        .map(|f| {
            Filter::try_from(f)
                .map(|f| f.to_value().to_string())
                .map_err(Status::invalid_argument)
        })
        .transpose()
}

/// A managed peer's state as ORLY's `PeerSyncState` says it, with our additions; the URL and
/// texts as any admin with the right may be shown them.
fn state_to_pb(peer: &Peer, st: &PeerState) -> pb::PeerSyncState {
    pb::PeerSyncState {
        peer_url: redact_url(&peer.url),
        last_sync: st.last_sync,
        events_synced: st.events_synced,
        status: st.status.clone(),
        last_error: shown(&st.last_error, &peer.url),
        consecutive_failures: st.consecutive_failures,
        next_attempt: st.next_attempt,
        direction: peer.direction().as_str().into(),
        filter: peer.filter.clone().unwrap_or_default(),
        owner: peer.owner.clone().unwrap_or_default(),
    }
}

/// A session key from a relay's ids; INVALID_ARGUMENT names what is wrong.
fn session_key(connection: &str, subscription: &str) -> Result<SessionKey, Status> {
    SessionKey::new(connection, subscription).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A step's outcome as ORLY's `NegOpenResponse`: the reply, or the `NEG-ERR` reason in `error`
/// (the call itself succeeds: the relay passes the reason on to its client).
fn neg_response(r: Result<Reply, DelegatedError>) -> pb::NegOpenResponse {
    match r {
        Ok(reply) => pb::NegOpenResponse {
            message: reply.message,
            complete: reply.complete,
            ..Default::default()
        },
        Err(e) => pb::NegOpenResponse {
            error: e.reason(),
            ..Default::default()
        },
    }
}

#[tonic::async_trait]
impl NegentropyService for NegentropyHandler {
    async fn ready(
        &self,
        _request: Request<common::Empty>,
    ) -> Result<Response<common::ReadyResponse>, Status> {
        let ready = self.store.ready().await.is_ok();
        Ok(Response::new(common::ReadyResponse { ready }))
    }

    async fn start(
        &self,
        _request: Request<common::Empty>,
    ) -> Result<Response<common::Empty>, Status> {
        self.peers.start();
        tracing::info!("background peer sync started");
        Ok(Response::new(common::Empty {}))
    }

    async fn stop(
        &self,
        _request: Request<common::Empty>,
    ) -> Result<Response<common::Empty>, Status> {
        self.peers.stop();
        tracing::info!("background peer sync stopped");
        Ok(Response::new(common::Empty {}))
    }

    async fn handle_neg_open(
        &self,
        request: Request<pb::NegOpenRequest>,
    ) -> Result<Response<pb::NegOpenResponse>, Status> {
        let r = request.into_inner();
        let key = session_key(&r.connection_id, &r.subscription_id)?;
        let filter = match &r.filter {
            Some(f) => Filter::try_from(f).map_err(Status::invalid_argument)?,
            None => Filter::default(),
        };
        let reply = self.sessions.open(key, filter, r.initial_message).await;
        Ok(Response::new(neg_response(reply)))
    }

    async fn handle_neg_msg(
        &self,
        request: Request<pb::NegMsgRequest>,
    ) -> Result<Response<pb::NegMsgResponse>, Status> {
        let r = request.into_inner();
        let key = session_key(&r.connection_id, &r.subscription_id)?;
        let o = neg_response(self.sessions.message(&key, r.message).await);
        Ok(Response::new(pb::NegMsgResponse {
            message: o.message,
            have_ids: o.have_ids,
            need_ids: o.need_ids,
            complete: o.complete,
            error: o.error,
        }))
    }

    async fn handle_neg_close(
        &self,
        request: Request<pb::NegCloseRequest>,
    ) -> Result<Response<common::Empty>, Status> {
        let r = request.into_inner();
        let key = session_key(&r.connection_id, &r.subscription_id)?;
        // Closing what is not open is not an error (NIP-77: the client may race an expiry).
        self.sessions.close(&key);
        Ok(Response::new(common::Empty {}))
    }

    type SyncWithPeerStream = ProgressStream;

    async fn sync_with_peer(
        &self,
        request: Request<pb::SyncPeerRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        self.syncs.sync_with_peer(request).await
    }

    async fn get_sync_status(
        &self,
        _request: Request<common::Empty>,
    ) -> Result<Response<pb::SyncStatusResponse>, Status> {
        let states = self.peers.states();
        Ok(Response::new(pb::SyncStatusResponse {
            active: self.peers.is_running(),
            last_sync: self.peers.last_sync(),
            peer_count: i32::try_from(states.len()).unwrap_or(i32::MAX),
            peer_states: states.iter().map(|(p, st)| state_to_pb(p, st)).collect(),
        }))
    }

    async fn get_peers(
        &self,
        _request: Request<common::Empty>,
    ) -> Result<Response<pb::PeersResponse>, Status> {
        let peers = self.peers.urls().iter().map(|u| redact_url(u)).collect();
        Ok(Response::new(pb::PeersResponse { peers }))
    }

    async fn add_peer(
        &self,
        request: Request<pb::AddPeerRequest>,
    ) -> Result<Response<common::Empty>, Status> {
        let call = CallInfo::from_request(&request);
        let r = request.into_inner();
        let gate = self.syncs.gate();
        let refuse = |s| gate.refuse(&call, ADD_PEER_PATH, &r.peer_url, s);
        // The same checks as a sync of this peer: its URL, filter and direction.
        let checked = self.syncs.validate(&pb::SyncPeerRequest {
            peer_url: r.peer_url.clone(),
            filter: r.filter.clone(),
            direction: r.direction,
            ..Default::default()
        });
        let req = match checked {
            Ok(req) => req,
            Err(s) => return Err(refuse(s).await),
        };
        // The peer keeps the filter it was given (checked above), or none for the default.
        let filter = r
            .filter
            .is_some()
            .then(|| req.filter().to_value().to_string());
        // Unspecified is both, as ORLY's service syncs (a request's unspecified is down).
        let direction = match r.direction {
            0 => Direction::Both,
            _ => req.direction(),
        };
        let req = req.with_direction(direction);
        let url = gate.add_peer(&call, &req).await?;
        let peer = Peer {
            url: url.as_str().to_string(),
            filter,
            direction: Some(direction.as_str().into()),
            // Behind the gateway, the admin; on a loopback service without security, the
            // caller as the sync registry names it. Never `None`: that is the operator's.
            owner: Some(call.admin.clone().unwrap_or_else(|| "anonymous".into())),
        };
        match self.peers.add(peer) {
            Ok(_) => Ok(Response::new(common::Empty {})),
            Err(e) => {
                tracing::error!("peer list not saved: {e}");
                Err(Status::unavailable("the peer list could not be saved"))
            }
        }
    }

    async fn remove_peer(
        &self,
        request: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<common::Empty>, Status> {
        let given = request.into_inner().peer_url;
        let Some(url) = self.peers.find(&given) else {
            return Err(Status::not_found("peer_url: not a managed peer"));
        };
        match self.peers.remove(&url) {
            Ok(_) => Ok(Response::new(common::Empty {})),
            Err(e) => {
                tracing::error!("peer list not saved: {e}");
                Err(Status::unavailable("the peer list could not be saved"))
            }
        }
    }

    async fn trigger_sync(
        &self,
        request: Request<pb::TriggerSyncRequest>,
    ) -> Result<Response<common::Empty>, Status> {
        let r = request.into_inner();
        let filter = peer_filter(r.filter.as_ref())?;
        if r.peer_url.is_empty() {
            self.peers.trigger(None, filter);
            return Ok(Response::new(common::Empty {}));
        }
        let Some(url) = self.peers.find(&r.peer_url) else {
            return Err(Status::not_found("peer_url: not a managed peer"));
        };
        self.peers.trigger(Some(&url), filter);
        Ok(Response::new(common::Empty {}))
    }

    async fn get_peer_sync_state(
        &self,
        request: Request<pb::PeerSyncStateRequest>,
    ) -> Result<Response<pb::PeerSyncStateResponse>, Status> {
        let given = request.into_inner().peer_url;
        let found = self.peers.find(&given).and_then(|u| self.peers.state(&u));
        Ok(Response::new(match found {
            Some((p, st)) => pb::PeerSyncStateResponse {
                state: Some(state_to_pb(&p, &st)),
                found: true,
            },
            None => pb::PeerSyncStateResponse {
                state: None,
                found: false,
            },
        }))
    }

    async fn list_sessions(
        &self,
        _request: Request<common::Empty>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let sessions = self
            .sessions
            .list()
            .into_iter()
            .map(|s| pb::ClientSession {
                subscription_id: s.key.subscription,
                connection_id: s.key.connection,
                created_at: s.created_at,
                last_activity: s.last_activity,
                round_count: i32::try_from(s.rounds).unwrap_or(i32::MAX),
            })
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<common::Empty>, Status> {
        let r = request.into_inner();
        if r.subscription_id.is_empty() {
            return Err(Status::invalid_argument("subscription_id: required"));
        }
        let closed = self
            .sessions
            .close_subscription(&r.connection_id, &r.subscription_id);
        tracing::info!(closed, "delegated sessions closed by CloseSession");
        Ok(Response::new(common::Empty {}))
    }

    async fn get_sync(
        &self,
        request: Request<pb::GetSyncRequest>,
    ) -> Result<Response<pb::SyncStatus>, Status> {
        self.syncs.get_sync(request).await
    }

    async fn list_syncs(
        &self,
        request: Request<pb::ListSyncsRequest>,
    ) -> Result<Response<pb::ListSyncsResponse>, Status> {
        self.syncs.list_syncs(request).await
    }

    async fn cancel_sync(
        &self,
        request: Request<pb::CancelSyncRequest>,
    ) -> Result<Response<pb::CancelSyncResponse>, Status> {
        self.syncs.cancel_sync(request).await
    }
}
