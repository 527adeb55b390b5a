//! Assembling the gRPC servers of the binaries on an already bound listener: the store service,
//! the sync service in plain (loopback) form, and the sync service behind the gateway (its
//! layers, TLS accept stream and gate). Owns the shutdown order: stop accepting, cancel and
//! drain the running syncs (their finished records written), join the background tasks, then
//! seal the audit log.

use crate::config::ManagedPeersConfig;
use crate::gateway::Gateway;
use crate::service::delegated::{DelegatedLimits, DelegatedSessions};
use crate::service::peers::{Backoff, Peer, PeerBook, PeerLoopConfig, PeerManager};
use crate::service::{
    DB_SERVICE_NAME, DbService, NegentropyHandler, PeerLease, SYNC_SERVICE_NAME, SyncDefaults,
    SyncGate, SyncJobs, SyncService, peer_sync_fn, reflection, watch_store_health,
};
use crate::store::Store;
use crate::tasks::Tasks;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long running syncs get to end (cancelled) at shutdown before they are aborted.
const JOB_GRACE: Duration = Duration::from_secs(10);

/// How long background tasks get to end at shutdown before they are aborted.
const TASK_GRACE: Duration = Duration::from_secs(5);

/// Serves `DatabaseService` (+ health, reflection) over `store` until `shutdown` resolves.
pub async fn serve_db(
    listener: TcpListener,
    store: Arc<dyn Store>,
    token: Option<crate::store::db_auth::DbToken>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let watcher = watch_store_health(reporter, store.clone(), &[DB_SERVICE_NAME]);
    // Open negentropy sessions are long-lived streams: they are told to end at shutdown, so
    // none can hold the graceful shutdown open.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let reflection = reflection(&[DB_SERVICE_NAME])?;
    let res = tonic::transport::Server::builder()
        .trace_fn(crate::telemetry::grpc_span)
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection.v1)
        .add_service(reflection.v1alpha)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            DbService::new(store, stop),
            crate::store::db_auth::RequireToken::new(token),
        ))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    watcher.abort();
    let _ = watcher.await;
    Ok(res?)
}

/// What a sync service is made of: the settings of its syncs, its managed peers and the
/// sessions it holds for relays.
pub struct SyncSettings {
    /// Defaults of every sync (relay CA, NIP-42 key, timeouts).
    pub defaults: SyncDefaults,
    /// Managed peers and delegated sessions.
    pub peers: ManagedPeersConfig,
}

/// Builds the service's parts over `store`, admitting through `gate`: the peer list opened from
/// its state directory, the background loop and the session expiry started in `tasks`. The
/// loop ends when the sync registry stops (at shutdown, before the registry is drained), so no
/// background sync starts while the service stops.
fn build_sync_service(
    store: Arc<dyn Store>,
    gate: Arc<dyn SyncGate>,
    settings: SyncSettings,
    tasks: &mut Tasks,
) -> anyhow::Result<(NegentropyHandler, SyncJobs)> {
    let SyncSettings { defaults, peers } = settings;
    let syncs = SyncService::new(store.clone(), gate, defaults);
    let jobs = syncs.jobs();
    let initial: Vec<Peer> = peers.initial.iter().map(Peer::new).collect();
    let book = PeerBook::open(&peers.state_dir, initial)
        .map_err(|e| anyhow::anyhow!("{e} ({})", crate::config::STATE_DIR_ENV))?;
    // Running from start-up when there are peers, as ORLY's service does.
    let start = !book.is_empty();
    let interval_secs = i64::try_from(peers.interval.as_secs().max(1)).unwrap_or(i64::MAX);
    let loop_cfg = PeerLoopConfig {
        interval: peers.interval,
        max_concurrent: peers.max_concurrent,
        // A failing peer first waits the interval or 10 s, whichever is shorter.
        backoff: Backoff {
            base_secs: interval_secs.min(10),
            ..Backoff::default()
        },
    };
    let manager = PeerManager::new(
        book,
        loop_cfg,
        peer_sync_fn(
            syncs.clone(),
            store.clone(),
            peers.default_filter.clone(),
            PeerLease::for_interval(peers.interval),
        ),
        start,
    );
    let stopping = jobs.stopping();
    tasks.spawn(manager.clone().run(async move { stopping.stopped().await }));
    let sessions = Arc::new(DelegatedSessions::new(
        store.clone(),
        DelegatedLimits {
            idle: peers.session_timeout,
            ..DelegatedLimits::default()
        },
    ));
    let stop = tasks.stop_signal();
    tasks.spawn({
        let sessions = sessions.clone();
        async move { sessions.run_expiry(stop.stopped()).await }
    });
    if start {
        tracing::info!(peers = manager.urls().len(), "background peer sync running");
    }
    Ok((
        NegentropyHandler::new(store, syncs, manager, sessions),
        jobs,
    ))
}

/// Serves `NegentropyService` (+ health, reflection) without transport security, for
/// loopback use, until `shutdown` resolves.
pub async fn serve_sync_plain(
    listener: TcpListener,
    store: Arc<dyn Store>,
    gate: Arc<dyn SyncGate>,
    settings: SyncSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut tasks = Tasks::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    let watcher = watch_store_health(reporter, store.clone(), &[SYNC_SERVICE_NAME]);
    let reflection = reflection(&[SYNC_SERVICE_NAME])?;
    let (service, jobs) = build_sync_service(store, gate, settings, &mut tasks)?;
    let res = tonic::transport::Server::builder()
        .trace_fn(crate::telemetry::grpc_span)
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection.v1)
        .add_service(reflection.v1alpha)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stopping(shutdown, jobs.clone()),
        )
        .await;
    jobs.stop();
    jobs.drain(JOB_GRACE).await;
    tasks.shutdown(TASK_GRACE).await;
    watcher.abort();
    let _ = watcher.await;
    Ok(res?)
}

/// Serves `NegentropyService` (+ health, reflection) behind the full security stack of
/// `gateway` until `shutdown` resolves; then the running syncs are cancelled and drained, the
/// gateway's tasks joined, and the audit log sealed with its final checkpoint.
pub async fn serve_sync_secured(
    gateway: Gateway,
    listener: TcpListener,
    store: Arc<dyn Store>,
    settings: SyncSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut tasks = Tasks::new();
    let mut secured = gateway.start(listener, &mut tasks);
    let (reporter, health) = tonic_health::server::health_reporter();
    secured
        .seal
        .start_anchors(settings.defaults.peer.ca_file.clone(), &reporter);
    tasks.spawn_until_stopped({
        let health = watch_store_health(reporter, store.clone(), &[SYNC_SERVICE_NAME]);
        async move {
            let _ = health.await;
        }
    });
    let reflection = reflection(&[SYNC_SERVICE_NAME])?;
    let (service, jobs) = build_sync_service(store, secured.gate, settings, &mut tasks)?;
    let res = tonic::transport::Server::builder()
        .trace_fn(crate::telemetry::grpc_span)
        .layer(secured.layers)
        .add_service(health)
        .add_service(reflection.v1)
        .add_service(reflection.v1alpha)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(secured.incoming, stopping(shutdown, jobs.clone()))
        .await;
    // Every finished-sync record is written before the final checkpoint.
    jobs.stop();
    jobs.drain(JOB_GRACE).await;
    tasks.shutdown(TASK_GRACE).await;
    secured.seal.seal().await;
    Ok(res?)
}

/// `shutdown`, then the running syncs told to stop: their streams end, so the server's
/// graceful stop does not wait on syncs that could run for hours.
async fn stopping(shutdown: impl Future<Output = ()>, jobs: crate::service::SyncJobs) {
    shutdown.await;
    tracing::info!("stopping: cancelling running syncs");
    jobs.stop();
}
