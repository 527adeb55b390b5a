//! The sync service's hook for public audit anchors (`crate::audit::anchor`): loads the anchoring
//! key, attaches the anchorer to the chain before anything is written, starts its task with the
//! server and stops it after the shutdown checkpoint, and mirrors its backlog into the gRPC
//! health service as [`ANCHOR_HEALTH_SERVICE`]. Anchoring is evidence, not a gate: the sync
//! service's own health name stays SERVING whatever the anchors do.

use super::config::AnchorConfig;
use crate::audit::AuditChain;
use crate::audit::anchor::{AnchorSettings, AnchorTask, Anchorer};
use crate::event::Keys;
use std::path::PathBuf;
use std::sync::Arc;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// gRPC health name that is SERVING while every anchor has been accepted by a relay, and
/// NOT_SERVING while some wait (the backlog; its size is the `orly.audit.anchor.backlog` gauge).
pub const ANCHOR_HEALTH_SERVICE: &str = "orly.audit.anchor";

/// Loads the key and attaches anchoring to `chain`.
pub(super) fn prepare(cfg: &AnchorConfig, chain: &AuditChain) -> anyhow::Result<Anchorer> {
    let text = std::fs::read_to_string(&cfg.key)
        .map_err(|e| anyhow::anyhow!("ORLY_AUDIT_ANCHOR_KEY {}: {e}", cfg.key.display()))?;
    let keys = Keys::from_hex(&text).map_err(|e| {
        anyhow::anyhow!(
            "ORLY_AUDIT_ANCHOR_KEY {}: not a 64-hex Nostr secret key: {e}",
            cfg.key.display()
        )
    })?;
    let settings = AnchorSettings {
        keys,
        relays: cfg.relays.iter().map(|r| r.0.clone()).collect(),
        interval: cfg.interval,
    };
    tracing::info!(?settings, "publishing audit anchors");
    Ok(Anchorer::attach(settings, chain)?)
}

/// The running anchorer and the task that mirrors its backlog into health.
pub(super) struct AnchorHook {
    task: AnchorTask,
    health: tokio::task::JoinHandle<()>,
}

/// Starts anchoring; `reporter` gets [`ANCHOR_HEALTH_SERVICE`].
pub(super) fn start(
    anchorer: Anchorer,
    chain: Arc<AuditChain>,
    peer_ca: Option<PathBuf>,
    reporter: HealthReporter,
) -> AnchorHook {
    let task = anchorer.start(chain, peer_ca);
    let mut backlog = task.backlog();
    let health = tokio::spawn(async move {
        loop {
            let status = if *backlog.borrow_and_update() == 0 {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter
                .set_service_status(ANCHOR_HEALTH_SERVICE, status)
                .await;
            if backlog.changed().await.is_err() {
                break;
            }
        }
    });
    AnchorHook { task, health }
}

impl AnchorHook {
    /// Stops anchoring after a last attempt (see [`AnchorTask::stop`]).
    pub(super) async fn stop(self) {
        self.task.stop().await;
        self.health.abort();
    }
}
