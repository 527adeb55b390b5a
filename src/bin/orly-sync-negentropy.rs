//! `orly-sync-negentropy`: the gRPC sync service (`orlysync.negentropy.v1.NegentropyService`).
//! Without security settings it serves plaintext and only on loopback; see SECURITY.md.

use clap::Parser;
use orly::config::{self, StoreConfig};
use orly::service::{OpenGate, SyncDefaults};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "orly-sync-negentropy",
    version,
    about = "gRPC service running NIP-77 syncs on the orly store"
)]
struct Args {
    /// Listen address [default: 127.0.0.1:50064; ORLY's ORLY_SYNC_NEGENTROPY_LISTEN is an alias]
    #[arg(long, env = "ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN")]
    listen: Option<String>,
    /// Store directory when ORLY_DB_TYPE=fjall (default) [env: ORLY_DATA_DIR]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Extra CA (PEM) trusted for wss:// relays.
    #[arg(long)]
    peer_ca: Option<PathBuf>,
    /// Serve without TLS and client authentication on a non-loopback address (dangerous).
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    security: orly::gateway::SecurityArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    orly::init_crypto();
    let _telemetry = match orly::telemetry::init("orly-sync-negentropy") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("orly-sync-negentropy: {e}");
            return ExitCode::from(1);
        }
    };
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orly-sync-negentropy: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(a: Args) -> anyhow::Result<()> {
    // ORLY's name for the setting, when neither the flag nor ours is given.
    let listen = (a.listen)
        .or_else(|| std::env::var("ORLY_SYNC_NEGENTROPY_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:50064".into());
    let listen = config::parse_listen("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN/--listen", &listen)
        .map_err(anyhow::Error::msg)?;
    let store_cfg = StoreConfig::from_env(a.data_dir).map_err(anyhow::Error::msg)?;
    let auth_keys = match std::env::var("ORLY_SYNC_AUTH_KEY") {
        Ok(hex) if !hex.trim().is_empty() => Some(
            orly::event::Keys::from_hex(&hex)
                .map_err(|e| anyhow::anyhow!("ORLY_SYNC_AUTH_KEY: {e}"))?,
        ),
        _ => None,
    };
    let defaults = SyncDefaults {
        peer: orly::peer::PeerOptions {
            ca_file: a.peer_ca,
            auth_keys,
            ..Default::default()
        },
    };
    let secured = a
        .security
        .validate(&listen, a.insecure)
        .map_err(anyhow::Error::msg)?;
    // Policy, keys, certificates and the audit log are checked before the port is bound: a
    // service that could not enforce its policy never listens.
    let gateway = secured
        .as_ref()
        .map(orly::gateway::Gateway::prepare)
        .transpose()?;
    tracing::info!(%listen, store = %store_cfg, security = ?a.security, "starting orly-sync-negentropy");
    let store = store_cfg.open().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    config::keep_alive_on_sighup();
    config::announce("orly-sync-negentropy", listener.local_addr()?);
    match gateway {
        Some(gateway) => {
            gateway
                .serve(listener, store, defaults, config::shutdown_signal())
                .await?
        }
        None => {
            orly::service::serve_sync_plain(
                listener,
                store,
                Arc::new(OpenGate),
                defaults,
                config::shutdown_signal(),
            )
            .await?
        }
    }
    tracing::info!("stopped");
    Ok(())
}
