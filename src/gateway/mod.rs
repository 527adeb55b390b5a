//! The security stack in front of the sync service (DESIGN.md §7): thin tower layers over the
//! domain modules `auth`, `policy` and `audit`, composed in `stack.rs`.

mod config;

pub use config::{SecurityArgs, SecurityConfig};

use crate::service::SyncDefaults;
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves the sync service behind the full security stack.
pub async fn serve(
    _listener: TcpListener,
    _store: Arc<dyn Store>,
    _sec: SecurityConfig,
    _defaults: SyncDefaults,
    _shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    anyhow::bail!("the secured service is not built yet")
}
