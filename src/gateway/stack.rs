//! The security stack, in the order of DESIGN.md §7:
//! accept → per-IP limit → TLS 1.3 with client certificate → identity → token → per-admin rate
//! → the request message read and decoded (refused with a record when it is too large or not
//! protobuf) → (policy + concurrency + audit of SyncWithPeer in the gate, where the body is
//! visible)
//! → audit of other calls → handler.

use super::admin_limit::AdminRateLimit;
use super::audit::AuditLog;
use super::audit_layer::AuditAllowed;
use super::body::RequestMessage;
use super::check::CheckLayer;
use super::config::SecurityConfig;
use super::door::DoorLog;
use super::gate::SecureGate;
use super::identity::IdentityCheck;
use super::ip_limit::IpLimiter;
use super::telemetry::TraceContext;
use super::tls::{ReloadableTls, TlsFiles, incoming};
use super::token::TokenCheck;
use crate::audit::{AuditChain, AuditOptions, load_signing_key};
use crate::policy::{PolicyHandle, spawn_watcher};
use crate::service::{SYNC_SERVICE_NAME, SyncDefaults, SyncService};
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The longest a deferred audit record (a finished sync) waits for its fsync.
const AUDIT_SYNC: Duration = Duration::from_secs(1);

/// How often certificate, key, policy and token-key files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// The secured service, loaded: every file it depends on (policy, audit key and log, TLS
/// certificates, token keys) read and checked. Built before the port is bound, so a service that
/// could not enforce its policy never listens.
pub struct Gateway {
    policy: PolicyHandle,
    audit: AuditLog,
    tls: ReloadableTls,
    tokens: TokenCheck,
    anchor: Option<crate::audit::anchor::Anchorer>,
}

impl Gateway {
    /// Loads and checks everything in `sec`; any error (a policy that does not parse or
    /// validate, an unreadable key or certificate, an audit log that cannot be resumed) is
    /// returned, with nothing listening yet.
    pub fn prepare(sec: &SecurityConfig) -> anyhow::Result<Self> {
        let policy = PolicyHandle::load(sec.policy.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let tls = ReloadableTls::new(TlsFiles {
            cert: sec.tls_cert.clone(),
            key: sec.tls_key.clone(),
            client_ca: sec.tls_client_ca.clone(),
            crl: sec.tls_crl.clone(),
        })
        .map_err(anyhow::Error::msg)?;
        let tokens =
            TokenCheck::new(sec.token_keys.clone(), policy.clone()).map_err(anyhow::Error::msg)?;
        let key = match &sec.audit_key {
            Some(p) => {
                Some(load_signing_key(p).map_err(|e| anyhow::anyhow!("ORLY_AUDIT_KEY: {e}"))?)
            }
            None => {
                tracing::warn!(
                    "ORLY_AUDIT_KEY not set: audit records are not authenticated (unsigned)"
                );
                None
            }
        };
        // Last: an error above leaves the audit directory untouched.
        let chain = AuditChain::open(&sec.audit_dir, key, AuditOptions::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Attached before anything is written, so no checkpoint goes unanchored.
        let anchor = sec
            .anchor
            .as_ref()
            .map(|a| super::anchor::prepare(a, &chain))
            .transpose()?;
        Ok(Self {
            policy,
            audit: AuditLog::new(chain),
            tls,
            tokens,
            anchor,
        })
    }

    /// Serves the sync service behind the full security stack until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        store: Arc<dyn Store>,
        defaults: SyncDefaults,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Self {
            policy,
            audit,
            tls,
            tokens,
            anchor,
        } = self;
        let ip = IpLimiter::new(policy.clone());
        let layers = tower::ServiceBuilder::new()
            .layer(CheckLayer::new(TraceContext, audit.clone()))
            .layer(CheckLayer::new(ip.clone(), audit.clone()))
            .layer(CheckLayer::new(
                IdentityCheck {
                    policy: policy.clone(),
                },
                audit.clone(),
            ))
            .layer(CheckLayer::new(tokens.clone(), audit.clone()))
            .layer(CheckLayer::new(
                AdminRateLimit::new(policy.clone()),
                audit.clone(),
            ))
            .layer(RequestMessage::new(audit.clone()))
            .layer(CheckLayer::new(
                AuditAllowed {
                    audit: audit.clone(),
                },
                audit.clone(),
            ))
            .into_inner();

        let gate = Arc::new(SecureGate::new(policy.clone(), audit.clone()));
        let (reporter, health) = tonic_health::server::health_reporter();
        let reflection = crate::service::reflection(&[SYNC_SERVICE_NAME])?;
        let watchers = [
            spawn_watcher(policy.clone(), RELOAD_POLL),
            tls.spawn_watcher(RELOAD_POLL),
            tokens.spawn_watcher(RELOAD_POLL),
            crate::service::watch_store_health(
                reporter.clone(),
                store.clone(),
                &[SYNC_SERVICE_NAME],
            ),
        ];
        let anchors = anchor.map(|a| {
            let ca = defaults.peer.ca_file.clone();
            super::anchor::start(a, audit.chain(), ca, reporter.clone())
        });
        let (door, door_writer) = DoorLog::start(audit.clone());
        let audit_sync = {
            let audit = audit.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(AUDIT_SYNC);
                loop {
                    tick.tick().await;
                    audit.sync_deferred().await;
                }
            })
        };
        let res = tonic::transport::Server::builder()
            .trace_fn(crate::telemetry::grpc_span)
            .layer(layers)
            .add_service(health)
            .add_service(reflection.v1)
            .add_service(reflection.v1alpha)
            .add_service(SyncService::new(store, gate, defaults).into_server())
            .serve_with_incoming_shutdown(incoming(listener, tls, ip, door), shutdown)
            .await;
        door_writer.stop().await;
        audit_sync.abort();
        // The checkpoint is durable, so it also makes any deferred record durable.
        audit.checkpoint().await;
        if let Some(anchors) = anchors {
            anchors.stop().await; // after the shutdown checkpoint: its anchor goes out too
        }
        for t in watchers {
            t.abort();
        }
        Ok(res?)
    }
}
