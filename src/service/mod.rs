//! gRPC handlers: `NegentropyService` ([`NegentropyHandler`]: sync jobs run in the
//! [`SyncJobs`] registry, managed [`peers`] with their background loop, NIP-77 sessions held
//! for relays in [`delegated`]; [`METHODS`] lists every method with the right it needs) and
//! `DatabaseService` (the store), plus the standard health and reflection services, and
//! [`status`], where store, negentropy, audit and service-state failures become gRPC statuses.
//! Security is not here: the gateway wraps these; `crate::server` builds the servers.

mod db;
mod db_orly;
mod db_session;
pub mod delegated;
pub mod gate;
mod jobs;
mod methods;
mod negentropy;
mod peer_sync;
pub mod peers;
pub mod status;
mod sync;

pub use db::DbService;
pub use gate::{
    Admission, CallInfo, MAX_SHOWN_MESSAGE, OpenGate, SyncGate, Visibility, shown, shown_status,
};
pub use jobs::SyncJobs;
pub use methods::{METHODS, Method, Recorded, SERVICE_PREFIX, method};
pub use negentropy::NegentropyHandler;
pub use peer_sync::{PeerLease, peer_sync_fn};
pub use status::store_status;
pub use sync::{MAX_REQUEST_BYTES, ProgressStream, SyncDefaults, SyncService};

use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// gRPC health service name of the sync service.
pub const SYNC_SERVICE_NAME: &str = "orlysync.negentropy.v1.NegentropyService";
/// gRPC health service name of the store service.
pub const DB_SERVICE_NAME: &str = "orlydb.v1.DatabaseService";

/// Server reflection in both protocol versions: `grpc.reflection.v1` (grpcurl 1.8.8 and later)
/// and `grpc.reflection.v1alpha` (older grpcurl, `grpc_cli`, grpcio), each listing exactly the
/// services this process serves (`served`, plus health and both reflections) over every proto
/// of this crate. Add both to the server.
pub struct Reflection<V1, V1Alpha> {
    /// `grpc.reflection.v1.ServerReflection`.
    pub v1: tonic_reflection::server::v1::ServerReflectionServer<V1>,
    /// `grpc.reflection.v1alpha.ServerReflection`.
    pub v1alpha: tonic_reflection::server::v1alpha::ServerReflectionServer<V1Alpha>,
}

/// Builds [`Reflection`] for a process serving `served`.
pub fn reflection(
    served: &[&'static str],
) -> Result<
    Reflection<
        impl tonic_reflection::server::v1::ServerReflection,
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Each version describes the other too, so both list the same services.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for s in served {
            b = b.with_service_name(*s);
        }
        b
    };
    Ok(Reflection {
        v1: builder().build_v1()?,
        v1alpha: builder().build_v1alpha()?,
    })
}

/// Keeps the health status of `service` in step with the store's readiness: SERVING when the
/// store answers, NOT_SERVING otherwise. Runs until the process ends.
pub fn watch_store_health(
    reporter: tonic_health::server::HealthReporter,
    store: Arc<dyn Store>,
    services: &'static [&'static str],
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let ok = store.ready().await.is_ok();
            if last != Some(ok) {
                for s in services {
                    let status = if ok {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    reporter.set_service_status(*s, status).await;
                }
                reporter
                    .set_service_status(
                        "",
                        if ok {
                            tonic_health::ServingStatus::Serving
                        } else {
                            tonic_health::ServingStatus::NotServing
                        },
                    )
                    .await;
                if !ok {
                    tracing::warn!("store not ready: health is NOT_SERVING");
                }
                last = Some(ok);
            }
            tokio::time::sleep(Duration::from_secs(if ok { 5 } else { 1 })).await;
        }
    })
}

/// Now, in Unix seconds (0 before 1970, saturating far ahead): the wall-clock times the service
/// shows (delegated sessions, peer states).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
