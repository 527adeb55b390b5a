//! Assembling the plain (loopback) gRPC servers on an already bound listener. The secured
//! variant of the sync service lives in `gateway::stack`, over the same handlers.

use super::{DB_SERVICE_NAME, DbService, SYNC_SERVICE_NAME, SyncDefaults, SyncGate, SyncService};
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves `DatabaseService` (+ health, reflection) over `store` until `shutdown` resolves.
pub async fn serve_db(
    listener: TcpListener,
    store: Arc<dyn Store>,
    token: Option<crate::store::db_auth::DbToken>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let watcher = super::watch_store_health(reporter, store.clone(), &[DB_SERVICE_NAME]);
    // Open negentropy sessions are long-lived streams: they are told to end at shutdown, so
    // none can hold the graceful shutdown open.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let reflection = super::reflection(&[DB_SERVICE_NAME])?;
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
    let watcher = super::watch_store_health(reporter, store.clone(), &[SYNC_SERVICE_NAME]);
    let reflection = super::reflection(&[SYNC_SERVICE_NAME])?;
    let res = tonic::transport::Server::builder()
        .trace_fn(crate::telemetry::grpc_span)
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection.v1)
        .add_service(reflection.v1alpha)
        .add_service(SyncService::new(store, gate, defaults).into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    watcher.abort();
    Ok(res?)
}
