//! `orly-sync-negentropy`: the gRPC sync service (`orlysync.negentropy.v1.NegentropyService`).
//! Without security settings it serves plaintext and only on loopback; see SECURITY.md.
//! Flags and variables are read in `orly::config`; the server is built in `orly::server`.

use clap::Parser;
use orly::config::{self, ProcessEnv, SyncServiceArgs, SyncServiceConfig};
use orly::service::OpenGate;
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main]
async fn main() -> ExitCode {
    orly::init_crypto();
    let _telemetry = match orly::config::telemetry_settings(&orly::config::ProcessEnv) {
        Ok(settings) => orly::telemetry::init("orly-sync-negentropy", &settings),
        Err(e) => {
            eprintln!("orly-sync-negentropy: {e}");
            return ExitCode::from(1);
        }
    };
    let run = async {
        let cfg = SyncServiceConfig::new(SyncServiceArgs::parse(), &ProcessEnv)?;
        run(cfg).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orly-sync-negentropy: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cfg: SyncServiceConfig) -> anyhow::Result<()> {
    // Policy, keys, certificates and the audit log are checked before the port is bound: a
    // service that could not enforce its policy never listens.
    let gateway = cfg
        .security
        .as_ref()
        .map(orly::gateway::Gateway::prepare)
        .transpose()?;
    let listen = cfg.listen;
    tracing::info!(%listen, store = %cfg.store, security = ?cfg.security_args, "starting orly-sync-negentropy");
    let store = cfg.store.open().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    config::keep_alive_on_sighup();
    config::announce("orly-sync-negentropy", listener.local_addr()?);
    let shutdown = config::shutdown_signal();
    let settings = orly::server::SyncSettings {
        defaults: cfg.defaults,
        peers: cfg.peers,
    };
    match gateway {
        Some(gateway) => {
            orly::server::serve_sync_secured(gateway, listener, store, settings, shutdown).await?
        }
        None => {
            let gate = Arc::new(OpenGate);
            orly::server::serve_sync_plain(listener, store, gate, settings, shutdown).await?
        }
    }
    tracing::info!("stopped");
    Ok(())
}
