//! The audit object of the gateway: appends to the [`AuditChain`] off the async threads and
//! fails closed. Every layer and the sync gate record through it, so this is also the one place
//! that keeps URL secrets (user information, query values) out of every record.

use crate::audit::{AuditChain, AuditEntry};
use crate::policy::{redact_url, redact_urls_in};
use crate::service::CallInfo;
use std::sync::Arc;
use std::time::Instant;

/// Shared handle to the audit chain.
#[derive(Clone)]
pub struct AuditLog {
    chain: Arc<AuditChain>,
}

impl AuditLog {
    /// Wraps an open chain.
    pub fn new(chain: AuditChain) -> Self {
        Self {
            chain: Arc::new(chain),
        }
    }

    /// The chain itself, for tests that arm a write failure on it.
    #[cfg(test)]
    pub(crate) fn chain_for_tests(&self) -> Arc<AuditChain> {
        self.chain()
    }

    /// The chain itself (the anchoring task forces checkpoints through it).
    pub(crate) fn chain(&self) -> Arc<AuditChain> {
        self.chain.clone()
    }

    /// Appends `entry`, filled with the call's context. `Err` means the record is not durable:
    /// the caller must refuse the request (fail closed).
    pub async fn record(
        &self,
        call: &CallInfo,
        rpc: &str,
        entry: AuditEntry,
    ) -> Result<(), String> {
        self.append(call, rpc, entry, true).await.map(|_| ())
    }

    /// Like [`Self::record`], returning the record's seq (what a later record refers to).
    pub async fn record_seq(
        &self,
        call: &CallInfo,
        rpc: &str,
        entry: AuditEntry,
    ) -> Result<u64, String> {
        self.append(call, rpc, entry, true).await
    }

    /// Appends the record of something already done (a finished sync) without waiting for its
    /// fsync, which the next record or the once-a-second [`Self::sync_deferred`] does.
    pub async fn record_done(
        &self,
        call: &CallInfo,
        rpc: &str,
        entry: AuditEntry,
    ) -> Result<(), String> {
        self.append(call, rpc, entry, false).await.map(|_| ())
    }

    /// Makes deferred records durable; an fsync failure poisons the chain, so every later
    /// request is refused.
    pub async fn sync_deferred(&self) {
        let chain = self.chain.clone();
        match tokio::task::spawn_blocking(move || chain.sync_deferred()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("audit records could not be made durable: {e}"),
            Err(e) => tracing::error!("audit sync task failed: {e}"),
        }
    }

    async fn append(
        &self,
        call: &CallInfo,
        rpc: &str,
        entry: AuditEntry,
        durable: bool,
    ) -> Result<u64, String> {
        // Before anything else touches the values: the chain cuts long fields and hashes
        // the whole, and a hash of a short password is no secret.
        let mut e = entry.rpc(rpc).redact(redact_url, redact_urls_in);
        if let Some(a) = &call.admin {
            e = e.admin(a.clone());
        }
        if let Some(f) = &call.cert_fingerprint {
            e = e.cert_fingerprint(f.clone());
        }
        if let Some(j) = &call.token_jti {
            e = e.token_jti(j.clone());
        }
        if let Some(s) = call.source {
            e = e.source(s.to_string());
        }
        if let Some(t) = &call.trace_id {
            e = e.trace_id(t.clone());
        }
        let chain = self.chain.clone();
        let started = Instant::now();
        let res = tokio::task::spawn_blocking(move || {
            if durable {
                chain.append(e)
            } else {
                chain.append_deferred(e)
            }
        })
        .await
        .map_err(|e| format!("audit writer failed: {e}"))?
        .map(|r| r.seq)
        .map_err(|e| e.to_string());
        super::telemetry::record_audit_latency(started.elapsed());
        if let Err(e) = &res {
            tracing::error!("audit record not written, refusing: {e}");
        }
        res
    }

    /// Writes a checkpoint (clean shutdown).
    pub async fn checkpoint(&self) {
        let chain = self.chain.clone();
        match tokio::task::spawn_blocking(move || chain.checkpoint()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("audit checkpoint failed: {e}"),
            Err(e) => tracing::error!("audit checkpoint task failed: {e}"),
        }
    }
}
