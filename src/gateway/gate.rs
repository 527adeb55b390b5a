//! The body-level decision for `SyncWithPeer`, where the request message is visible: the admin's
//! policy (peer URL, direction, filter scope, event cap), concurrency caps, and the audit records
//! of the decision and of the finished sync — through the same policy and audit objects as the
//! layers. Also whose syncs a caller may see (its own; all with the policy's `auditor` role).

use super::audit::AuditLog;
use super::audit_layer::{ADD_PEER_PATH, CANCEL_PATH, PEER_LOOP_PATH, SYNC_PATH};
use super::refusal::Refusal;
use crate::audit::{AuditEntry, SyncCounts};
use crate::policy::{PolicyHandle, SyncRequestView, redact_quoting};
use crate::service::gate::OPERATOR;
use crate::service::{Admission, CallInfo, SyncGate, Visibility, shown_status, status};
use crate::sync::{PeerUrl, Progress, SyncRequest};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Status};

/// Policy, concurrency and audit for syncs.
pub struct SecureGate {
    policy: PolicyHandle,
    audit: AuditLog,
    total: Arc<AtomicUsize>,
    per_admin: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// One running sync counted against a cap; uncounted when dropped (when the sync ends).
struct Running(Arc<AtomicUsize>);

/// What the gate holds for an admitted sync until it ends (its [`Admission::hold`]).
struct Admitted {
    /// The service-wide and the admin's slot.
    _slots: (Running, Running),
    /// Seq of the allow record, named by the finished record.
    decision_seq: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one more running sync unless `cap` are running already. Caps are read from the
/// current policy at each call, so a reload that lowers them applies at once.
fn try_run(counter: &Arc<AtomicUsize>, cap: usize) -> Option<Running> {
    let mut cur = counter.load(Ordering::Acquire);
    loop {
        if cur >= cap {
            return None;
        }
        match counter.compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(Running(counter.clone())),
            Err(now) => cur = now,
        }
    }
}

impl SecureGate {
    /// A gate over `policy`, recording to `audit`.
    pub fn new(policy: PolicyHandle, audit: AuditLog) -> Self {
        Self {
            policy,
            audit,
            total: Arc::default(),
            per_admin: Mutex::default(),
        }
    }

    fn admin_counter(&self, admin: &str) -> Result<Arc<AtomicUsize>, Status> {
        let mut m = self
            .per_admin
            .lock()
            .map_err(|_| status::poisoned("gate"))?;
        Ok(m.entry(admin.to_string()).or_default().clone())
    }

    async fn deny(&self, call: &CallInfo, req: Option<&SyncRequest>, r: Refusal) -> Status {
        self.deny_at(sync_path(call), call, req, r).await
    }

    async fn deny_at(
        &self,
        path: &str,
        call: &CallInfo,
        req: Option<&SyncRequest>,
        r: Refusal,
    ) -> Status {
        super::telemetry::count_refusal(&r);
        let mut e = AuditEntry::decision(false, r.reason.clone());
        if let Some(req) = req {
            e = with_request(e, req);
        }
        match self.audit.record(call, path, e).await {
            Ok(()) => r.to_status(),
            Err(err) => status::audit_unavailable(err),
        }
    }

    /// The caller's policy on syncing `req`: the authorized (normalized) URL and the grant,
    /// or the refusal (not yet recorded).
    fn authorize(
        &self,
        admin: &str,
        req: &SyncRequest,
    ) -> Result<(PeerUrl, crate::policy::SyncGrant), Refusal> {
        let policy = self.policy.current();
        let a = policy
            .admin_by_name(admin)
            .into_result()
            .map_err(|d| Refusal::new(Code::PermissionDenied, d.message))?;
        let kinds: Option<Vec<u16>> = req
            .filter()
            .kinds
            .as_ref()
            .map(|k| k.iter().copied().collect());
        let authors: Option<Vec<[u8; 32]>> = req
            .filter()
            .authors
            .as_ref()
            .map(|a| a.iter().copied().collect());
        let view = SyncRequestView {
            peer_url: req.peer_url().as_str(),
            direction: req.direction(),
            kinds: kinds.as_deref(),
            authors: authors.as_deref(),
            requested_max_events: None,
        };
        let grant = policy
            .authorize_sync(a, &view)
            .map_err(|d| Refusal::new(Code::PermissionDenied, format!("policy: {d}")))?;
        // The form the policy authorized is what the sync connects to.
        let peer_url = PeerUrl::parse(grant.peer_url.as_str()).map_err(|e| {
            let why = match e {
                crate::peer::PeerError::BadUrl(_, why) => why,
                e => e.to_string(),
            };
            Refusal::new(Code::InvalidArgument, format!("peer_url: {why}"))
        })?;
        Ok((peer_url, grant))
    }
}

/// Where a sync's records go: the call's path, or the peer loop's for a background sync.
fn sync_path(call: &CallInfo) -> &'static str {
    if call.peer_loop {
        PEER_LOOP_PATH
    } else {
        SYNC_PATH
    }
}

fn with_request(e: AuditEntry, req: &SyncRequest) -> AuditEntry {
    e.peer(req.peer_url().to_string())
        .direction(req.direction().as_str())
        .filter(req.filter().to_value())
}

#[tonic::async_trait]
impl SyncGate for SecureGate {
    async fn admit(&self, call: &CallInfo, req: &SyncRequest) -> Result<Admission, Status> {
        let policy = self.policy.current();
        // A peer the operator configured runs with no admin's policy, under the service-wide
        // cap only; every other sync is its admin's, checked by the admin's current policy.
        let operator = call.peer_loop && call.admin.is_none();
        let (admin, peer_url, max_events, admin_cap) = if operator {
            (OPERATOR.to_string(), req.peer_url().clone(), None, None)
        } else {
            let Some(admin) = call.admin.clone() else {
                let r = Refusal::new(Code::Unauthenticated, "no authenticated admin");
                return Err(self.deny(call, Some(req), r).await);
            };
            let (peer_url, grant) = match self.authorize(&admin, req) {
                Ok(g) => g,
                Err(r) => return Err(self.deny(call, Some(req), r).await),
            };
            let cap = policy
                .admin_by_name(&admin)
                .into_result()
                .map(|a| a.limits().max_concurrent.get() as usize)
                .unwrap_or(0);
            (admin, peer_url, Some(grant.max_events), Some(cap))
        };
        let busy = |what: &str| {
            Refusal::exhausted(
                format!("too many concurrent syncs ({what})"),
                Duration::from_secs(5),
            )
        };
        let total_cap = policy.service().max_concurrent_total.get() as usize;
        let Some(total) = try_run(&self.total, total_cap) else {
            return Err(self.deny(call, Some(req), busy("service limit")).await);
        };
        let counter = self.admin_counter(&admin)?;
        let Some(mine) = try_run(&counter, admin_cap.unwrap_or(usize::MAX)) else {
            return Err(self
                .deny(call, Some(req), busy(&format!("limit of admin {admin}")))
                .await);
        };
        let reason = if operator {
            "allowed: a peer the operator configured (ORLY_SYNC_NEGENTROPY_PEERS)"
        } else {
            "allowed by policy"
        };
        let allow = with_request(AuditEntry::decision(true, reason), req).starts_sync();
        let mut record_call = call.clone();
        record_call.admin = Some(admin.clone());
        let decision_seq = match self
            .audit
            .record_seq(&record_call, sync_path(call), allow)
            .await
        {
            Ok(seq) => seq,
            Err(e) => return Err(status::audit_unavailable(e)),
        };
        Ok(Admission {
            admin,
            max_events,
            peer_url: Some(peer_url),
            call: record_call,
            hold: Some(Box::new(Admitted {
                _slots: (total, mine),
                decision_seq,
            })),
        })
    }

    async fn refuse(
        &self,
        call: &CallInfo,
        path: &'static str,
        raw: &str,
        status: Status,
    ) -> Status {
        // The message may quote the URL in a form the URL redaction cannot spot (no scheme).
        let message = redact_quoting(status.message(), raw);
        let reason = match status.code() {
            Code::InvalidArgument => format!("invalid request: {message}"),
            _ => message,
        };
        let e = AuditEntry::decision(false, reason).peer(raw);
        match self.audit.record(call, path, e).await {
            Ok(()) => shown_status(&status, raw),
            Err(err) => status::audit_unavailable(err),
        }
    }

    async fn add_peer(&self, call: &CallInfo, req: &SyncRequest) -> Result<PeerUrl, Status> {
        let Some(admin) = call.admin.clone() else {
            let r = Refusal::new(Code::Unauthenticated, "no authenticated admin");
            return Err(self.deny_at(ADD_PEER_PATH, call, Some(req), r).await);
        };
        let (peer_url, _) = match self.authorize(&admin, req) {
            Ok(g) => g,
            Err(r) => return Err(self.deny_at(ADD_PEER_PATH, call, Some(req), r).await),
        };
        let allow = with_request(AuditEntry::decision(true, "allowed by policy"), req);
        match self.audit.record(call, ADD_PEER_PATH, allow).await {
            Ok(()) => Ok(peer_url),
            Err(e) => Err(status::audit_unavailable(e)),
        }
    }

    fn visibility(&self, call: &CallInfo) -> Visibility {
        let Some(admin) = &call.admin else {
            return Visibility::Nothing;
        };
        let policy = self.policy.current();
        match policy.admin_by_name(admin).into_result() {
            Ok(a) if a.role().sees_all_syncs() => Visibility::All,
            _ => Visibility::Own(admin.clone()),
        }
    }

    async fn cancel_decision(
        &self,
        call: &CallInfo,
        decision: Result<String, Status>,
    ) -> Result<(), Status> {
        let e = match &decision {
            Ok(reason) => AuditEntry::decision(true, reason.clone()),
            Err(status) => {
                crate::telemetry::count_refusal(status.code(), status.message());
                AuditEntry::decision(false, status.message())
            }
        };
        if let Err(err) = self.audit.record(call, CANCEL_PATH, e).await {
            return Err(status::audit_unavailable(err));
        }
        decision.map(|_| ())
    }

    async fn finished(&self, adm: &Admission, req: &SyncRequest, last: &Progress, took: Duration) {
        let counts = SyncCounts {
            have: last.have,
            need: last.need,
            fetched: last.fetched,
            sent: last.sent,
            already_had: last.already_had,
            dropped: last.dropped,
            rejected: last.rejected,
        };
        let mut e = with_request(AuditEntry::sync_finished(), req)
            .counts(counts)
            .duration_ms(took.as_millis() as u64);
        if let Some(err) = &last.error {
            e = e.error(err.clone());
        }
        let admitted = adm.hold.as_ref().and_then(|h| h.downcast_ref::<Admitted>());
        if let Some(a) = admitted {
            e = e.decision_seq(a.decision_seq);
        }
        if let Err(err) = self
            .audit
            .record_done(&adm.call, sync_path(&adm.call), e)
            .await
        {
            tracing::error!("sync finished but its audit record could not be written: {err}");
        }
    }
}
