//! Assembling the gRPC servers of the binaries on an already bound listener: the store service,
//! the sync service in plain (loopback) form, and the sync service behind the gateway (its
//! layers, TLS accept stream and gate). Owns the shutdown order: stop accepting, cancel and
//! drain the running syncs (their finished records written), join the background tasks, then
//! seal the audit log.

use crate::gateway::Gateway;
use crate::service::{
    DB_SERVICE_NAME, DbService, SYNC_SERVICE_NAME, SyncDefaults, SyncGate, SyncService, reflection,
    watch_store_health,
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

/// Serves `NegentropyService` (+ health, reflection) without transport security, for
/// loopback use, until `shutdown` resolves.
pub async fn serve_sync_plain(
    listener: TcpListener,
    store: Arc<dyn Store>,
    gate: Arc<dyn SyncGate>,
    defaults: SyncDefaults,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let watcher = watch_store_health(reporter, store.clone(), &[SYNC_SERVICE_NAME]);
    let reflection = reflection(&[SYNC_SERVICE_NAME])?;
    let service = SyncService::new(store, gate, defaults);
    let jobs = service.jobs();
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
    jobs.drain(JOB_GRACE).await;
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
    defaults: SyncDefaults,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut tasks = Tasks::new();
    let mut secured = gateway.start(listener, &mut tasks);
    let (reporter, health) = tonic_health::server::health_reporter();
    secured
        .seal
        .start_anchors(defaults.peer.ca_file.clone(), &reporter);
    tasks.spawn_until_stopped({
        let health = watch_store_health(reporter, store.clone(), &[SYNC_SERVICE_NAME]);
        async move {
            let _ = health.await;
        }
    });
    let reflection = reflection(&[SYNC_SERVICE_NAME])?;
    let service = SyncService::new(store, secured.gate, defaults);
    let jobs = service.jobs();
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
