//! The client side of a relay connection: WebSocket (ws:// or wss:// with rustls), the message
//! codec, NIP-42 AUTH and timeouts. It moves messages; deciding what to do with them is `sync`'s.

mod conn;
mod frames;
mod nip11;
mod peer_url;
mod redact;

pub use crate::event::wire::{MalformedMsg, RelayMessage as RelayMsg};
pub use conn::RelayConn;
pub use frames::write_frames;
pub use nip11::{frame_limit_for, max_message_length};
pub use peer_url::PeerUrl;
pub(crate) use redact::{redact_quoting, redact_url, redact_urls_in};

use crate::event::Keys;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite;

/// How to reach and talk to a relay.
#[derive(Clone)]
pub struct PeerOptions {
    /// Limit on TCP + TLS + WebSocket handshake.
    pub connect_timeout: Duration,
    /// Limit on waiting for any expected reply.
    pub reply_timeout: Duration,
    /// Extra CA certificates (PEM) trusted besides the webpki roots, for private relays.
    pub ca_file: Option<PathBuf>,
    /// NIP-42 key, used when the relay asks.
    pub auth_keys: Option<Keys>,
    /// Largest message accepted from the relay.
    pub max_message_bytes: usize,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(30),
            ca_file: None,
            auth_keys: None,
            max_message_bytes: 32 << 20,
        }
    }
}

impl std::fmt::Debug for PeerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("reply_timeout", &self.reply_timeout)
            .field("ca_file", &self.ca_file)
            .field("auth_keys", &self.auth_keys.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// Connection-level failures.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The URL is not ws:// or wss://, or does not parse.
    #[error("invalid relay URL {0:?}: {1}")]
    BadUrl(String, String),
    /// TCP, TLS or WebSocket handshake failed.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The handshake took too long.
    #[error("timed out connecting to {0}")]
    ConnectTimeout(String),
    /// The TLS configuration (e.g. `--ca` file) is unusable.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The connection dropped.
    #[error("connection to relay lost: {0}")]
    Disconnected(String),
}

/// Incoming items: a parsed message, or a frame that did not parse.
pub type Incoming = Result<RelayMsg, MalformedMsg>;

/// Traffic counters of a connection.
#[derive(Debug, Default)]
pub struct ByteCounters {
    /// Bytes sent.
    pub sent: std::sync::atomic::AtomicU64,
    /// Bytes received.
    pub received: std::sync::atomic::AtomicU64,
}

fn tls_config(ca_file: Option<&PathBuf>) -> Result<Arc<rustls::ClientConfig>, PeerError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| PeerError::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
        let mut n = 0;
        for c in certs {
            let c = c.map_err(|e| {
                PeerError::Tls(format!("bad certificate in {}: {e}", path.display()))
            })?;
            roots
                .add(c)
                .map_err(|e| PeerError::Tls(format!("unusable CA in {}: {e}", path.display())))?;
            n += 1;
        }
        if n == 0 {
            return Err(PeerError::Tls(format!(
                "no certificate in {}",
                path.display()
            )));
        }
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

impl From<tungstenite::Error> for PeerError {
    fn from(e: tungstenite::Error) -> Self {
        PeerError::Disconnected(e.to_string())
    }
}
