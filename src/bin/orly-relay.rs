//! `orly-relay`: a Nostr relay (NIP-01, NIP-11, NIP-42, NIP-77) over the orly store. Flags and
//! variables are read in `orly::config`.

use clap::Parser;
use orly::config::{self, ProcessEnv, RelayArgs, RelayServiceConfig};
use orly::relay;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    orly::init_crypto();
    let _telemetry = match orly::config::telemetry_settings(&orly::config::ProcessEnv) {
        Ok(settings) => orly::telemetry::init("orly-relay", &settings),
        Err(e) => {
            eprintln!("orly-relay: {e}");
            return ExitCode::from(1);
        }
    };
    let run = async {
        let cfg = RelayServiceConfig::new(RelayArgs::parse(), &ProcessEnv)?;
        run(cfg).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orly-relay: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cfg: RelayServiceConfig) -> anyhow::Result<()> {
    let listen = cfg.listen;
    tracing::info!(store = %cfg.store, cfg = ?cfg.relay, "starting orly-relay");
    let store = cfg.store.open().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let handle = relay::serve(listener, store, cfg.relay)?;
    config::keep_alive_on_sighup();
    config::announce("orly-relay", handle.local_addr);
    config::shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
