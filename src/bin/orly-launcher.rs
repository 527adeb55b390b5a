//! `orly-launcher`: runs orly-db, orly-relay and (when enabled) orly-sync-negentropy, restarts
//! them when they exit, and stops them in order on SIGTERM/SIGINT. Configured only by the
//! environment variables listed by `orly-launcher --help`.

use orly::launcher::{self, ENV_VARS, LauncherConfig, ProcessEnv};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    orly::init_crypto();
    let _ = clap::Command::new("orly-launcher")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Starts, health-checks, restarts and stops the orly services")
        .after_help(env_help())
        .get_matches();
    match orly::config::telemetry_settings(&orly::config::ProcessEnv) {
        Ok(settings) => {
            orly::telemetry::init_logging(&settings);
        }
        Err(e) => {
            eprintln!("orly-launcher: {e}");
            return ExitCode::from(2);
        }
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf));
    let cfg = match LauncherConfig::from_env(&ProcessEnv, exe_dir.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("orly-launcher: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(config = %cfg, "starting orly-launcher");
    match launcher::run(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orly-launcher: {e}");
            ExitCode::from(1)
        }
    }
}

fn env_help() -> String {
    let mut text = String::from("Environment (read by the launcher; the rest is passed on):\n");
    for (name, what) in ENV_VARS {
        text.push_str(&format!("  {name}\n      {what}\n"));
    }
    text.push_str("\nExit status: 0 after a stop signal, 1 when a service fails to start, 2 on bad configuration.");
    text
}
