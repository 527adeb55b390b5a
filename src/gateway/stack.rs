//! The security stack, in the order of DESIGN.md §7:
//! accept → per-IP limit → TLS 1.3 with client certificate → identity → token → per-admin rate
//! → the method's right (managed peers, NIP-77 for a relay, sessions) → the request message
//! read and decoded (refused with a record when it is too large or not protobuf) → (policy +
//! concurrency + audit of SyncWithPeer, AddPeer and CancelSync in the gate, where the body is
//! visible)
//! → audit of other calls → handler.
//!
//! The gateway provides the layers, the TLS accept stream and the gate; `crate::server` builds
//! the tonic server from them. Its background tasks belong to the caller's task set.

use super::admin_limit::AdminRateLimit;
use super::audit::AuditLog;
use super::audit_layer::AuditAllowed;
use super::body::RequestMessage;
use super::check::CheckLayer;
use super::config::SecurityConfig;
use super::door::{DoorLog, DoorWriter};
use super::gate::SecureGate;
use super::identity::IdentityCheck;
use super::ip_limit::IpLimiter;
use super::rights::RightsCheck;
use super::telemetry::TraceContext;
use super::tls::{ReloadableTls, TlsConn, TlsFiles, incoming};
use super::token::TokenCheck;
use crate::audit::{AuditChain, AuditOptions, load_signing_key};
use crate::policy::PolicyHandle;
use crate::tasks::Tasks;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::layer::util::{Identity, Stack};

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

    /// Starts the gateway on `listener`: its background work (file watchers, the per-IP
    /// limiter's upkeep, the deferred-audit flush) joins `tasks`, and the parts a server is
    /// built from come back. Call inside the runtime, before the port is announced (the
    /// watchers' SIGHUP handlers are installed here).
    pub fn start(self, listener: TcpListener, tasks: &mut Tasks) -> Secured {
        let Self {
            policy,
            audit,
            tls,
            tokens,
            anchor,
        } = self;
        let ip = IpLimiter::new(&policy);
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
            .layer(CheckLayer::new(
                RightsCheck {
                    policy: policy.clone(),
                },
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

        let stop = tasks.stop_signal();
        tasks.spawn(crate::policy::watcher(
            policy.clone(),
            RELOAD_POLL,
            stop.clone(),
        ));
        tasks.spawn(tls.watcher(RELOAD_POLL, stop.clone()));
        tasks.spawn(tokens.watcher(RELOAD_POLL, stop));
        tasks.spawn_until_stopped(ip.upkeep(&policy));
        tasks.spawn_until_stopped({
            let audit = audit.clone();
            async move {
                let mut tick = tokio::time::interval(AUDIT_SYNC);
                loop {
                    tick.tick().await;
                    audit.sync_deferred().await;
                }
            }
        });
        let (door, door_writer) = DoorLog::start(audit.clone());
        Secured {
            layers,
            incoming: Box::pin(incoming(listener, tls, ip, door)),
            gate: Arc::new(SecureGate::new(policy, audit.clone())),
            seal: Seal {
                audit,
                door_writer,
                anchor,
                anchor_hook: None,
            },
        }
    }
}

/// The security layers, outermost first, in the order of the module comment.
pub type Layers = Stack<
    CheckLayer<AuditAllowed>,
    Stack<
        RequestMessage,
        Stack<
            CheckLayer<RightsCheck>,
            Stack<
                CheckLayer<AdminRateLimit>,
                Stack<
                    CheckLayer<TokenCheck>,
                    Stack<
                        CheckLayer<IdentityCheck>,
                        Stack<CheckLayer<IpLimiter>, Stack<CheckLayer<TraceContext>, Identity>>,
                    >,
                >,
            >,
        >,
    >,
>;

/// Verified TLS connections, for `serve_with_incoming_shutdown`.
pub type Incoming = Pin<Box<dyn Stream<Item = Result<TlsConn, std::io::Error>> + Send>>;

/// What a server is built from: the layers, the accept stream, the gate the sync service
/// admits through, and what seals the audit log at the end.
pub struct Secured {
    /// The tower layers, for `Server::layer`.
    pub layers: Layers,
    /// The TLS accept stream (per-IP limit at accept, handshakes concurrent).
    pub incoming: Incoming,
    /// Policy, concurrency and audit of `SyncWithPeer` and `CancelSync`.
    pub gate: Arc<SecureGate>,
    /// Ends the audit log cleanly; call after every sync job has ended.
    pub seal: Seal,
}

/// The last writes of the audit log at shutdown.
pub struct Seal {
    audit: AuditLog,
    door_writer: DoorWriter,
    /// Public anchoring, attached to the chain at prepare; started by [`Seal::start_anchors`].
    anchor: Option<crate::audit::anchor::Anchorer>,
    anchor_hook: Option<super::anchor::AnchorHook>,
}

impl Seal {
    /// Starts publishing audit anchors, if configured: through `peer_ca`'s trust roots, with
    /// their backlog mirrored into `reporter` (see [`super::anchor`]). Stopped by [`Seal::seal`].
    pub fn start_anchors(
        &mut self,
        peer_ca: Option<std::path::PathBuf>,
        reporter: &tonic_health::server::HealthReporter,
    ) {
        if let Some(a) = self.anchor.take() {
            self.anchor_hook = Some(super::anchor::start(
                a,
                self.audit.chain(),
                peer_ca,
                reporter.clone(),
            ));
        }
    }

    /// Writes the refused connections still queued, then the final checkpoint — which is
    /// durable, so it also makes any deferred record durable. Call once the server has stopped
    /// and the sync jobs are drained (their finished records written), and after the
    /// gateway's tasks are joined.
    pub async fn seal(self) {
        self.door_writer.stop().await;
        self.audit.checkpoint().await;
        if let Some(anchors) = self.anchor_hook {
            anchors.stop().await; // after the shutdown checkpoint: its anchor goes out too
        }
    }
}
