//! `orly sync`: the flags (with their variables) turned into a sync request, run in direct mode
//! on the local store or in client mode on a sync service.

use super::commands::open;
use super::sync::{self as s, Display, Mode, ServiceTarget};
use crate::config::{EnvSource, Problems, SyncArgs, sync_auth_key};
use crate::errln;
use std::process::ExitCode;

/// `orly sync`: builds the request from the flags and runs it in direct or client mode; the
/// exit code says how it ended (see `orly sync --help`).
pub(super) fn sync(a: SyncArgs, env: &dyn EnvSource) -> anyhow::Result<ExitCode> {
    let mut p = Problems::new("orly sync");
    let a = a.with_env(env, &mut p);
    let auth_keys = p.take(sync_auth_key(a.auth_key_file.as_deref(), env));
    let auth_keys = p.finish(|| auth_keys)?;
    let client_mode = a.service.server.is_some();
    let relay_ca = if client_mode {
        None
    } else {
        a.service.ca.clone()
    };
    let req = match s::build_request(
        &a.url,
        &a.filter,
        &a.dir,
        a.since,
        a.frame_size_limit,
        a.timeout,
        relay_ca,
        auth_keys,
    ) {
        Ok(r) => r,
        Err(e) => {
            errln!("error: {e}");
            return Ok(ExitCode::from(crate::sync::exit::USAGE));
        }
    };
    let rt = tokio::runtime::Runtime::new()?;
    let display = Display::new(a.json);
    let code = rt.block_on(async {
        let mode = match a.service.server.clone() {
            Some(addr) => Mode::Client(ServiceTarget::new(addr, a.service)),
            None => {
                let pg = crate::config::StoreConfig::postgres_from_env(env)
                    .map_err(anyhow::Error::msg)?;
                if let Some(cfg) = pg {
                    let store = crate::store::PgStore::open(&cfg).await?;
                    let mode = Mode::Direct(std::sync::Arc::new(store));
                    return anyhow::Ok(s::run(mode, req, &display).await);
                }
                let store = open(&a.data, env)?;
                let code = s::run(
                    Mode::Direct(std::sync::Arc::new(store.clone())),
                    req,
                    &display,
                )
                .await;
                // A clean close leaves no journal for the next open to replay.
                if let Err(e) = tokio::task::spawn_blocking(move || store.close(None)).await? {
                    errln!("warning: store flush failed: {e}");
                }
                return anyhow::Ok(code);
            }
        };
        anyhow::Ok(s::run(mode, req, &display).await)
    })?;
    Ok(ExitCode::from(code))
}
