//! The client side of a relay connection: WebSocket (ws:// or wss:// with rustls), the message
//! codec, NIP-42 AUTH and timeouts. It moves messages; deciding what to do with them is `sync`'s.

mod nip11;

pub use crate::event::wire::{MalformedMsg, RelayMessage as RelayMsg};
pub use nip11::{frame_limit_for, max_message_length};

use crate::event::wire::{ClientMessage, kind};
use crate::event::{Keys, sign_event};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message, protocol::WebSocketConfig};

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

/// An open relay connection: send with the methods, receive from [`RelayConn::recv`].
pub struct RelayConn {
    url: String,
    out: mpsc::Sender<Message>,
    incoming: mpsc::Receiver<Incoming>,
    /// Bytes of text sent and received, for benchmarks and reports.
    pub bytes: Arc<ByteCounters>,
}

/// Traffic counters of a connection.
#[derive(Debug, Default)]
pub struct ByteCounters {
    /// Bytes sent.
    pub sent: std::sync::atomic::AtomicU64,
    /// Bytes received.
    pub received: std::sync::atomic::AtomicU64,
}

/// Checks that `url` is a ws:// or wss:// URL with a host.
pub fn validate_url(url: &str) -> Result<url::Url, PeerError> {
    let u = url::Url::parse(url).map_err(|e| PeerError::BadUrl(url.into(), e.to_string()))?;
    if !matches!(u.scheme(), "ws" | "wss") {
        return Err(PeerError::BadUrl(
            url.into(),
            "scheme must be ws or wss".into(),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(PeerError::BadUrl(url.into(), "no host".into()));
    }
    Ok(u)
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

impl RelayConn {
    /// Connects within `opts.connect_timeout`.
    pub async fn connect(url: &str, opts: &PeerOptions) -> Result<Self, PeerError> {
        validate_url(url)?;
        let connector = tokio_tungstenite::Connector::Rustls(tls_config(opts.ca_file.as_ref())?);
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(opts.max_message_bytes);
        cfg.max_frame_size = Some(opts.max_message_bytes);
        let fut =
            tokio_tungstenite::connect_async_tls_with_config(url, Some(cfg), true, Some(connector));
        let (ws, _resp) = tokio::time::timeout(opts.connect_timeout, fut)
            .await
            .map_err(|_| PeerError::ConnectTimeout(url.into()))?
            .map_err(|e| PeerError::Connect(url.into(), e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::channel::<Message>(1024);
        let (in_tx, in_rx) = mpsc::channel::<Incoming>(4096);
        let bytes = Arc::new(ByteCounters::default());
        let sent = bytes.clone();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                sent.sent
                    .fetch_add(m.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let recv = bytes.clone();
        let pong = out_tx.clone();
        tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                let text = match frame {
                    Ok(Message::Text(t)) => t,
                    Ok(Message::Ping(p)) => {
                        let _ = pong.send(Message::Pong(p)).await;
                        continue;
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                };
                recv.received
                    .fetch_add(text.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if in_tx.send(RelayMsg::parse(text.as_str())).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            url: url.to_string(),
            out: out_tx,
            incoming: in_rx,
            bytes,
        })
    }

    /// The relay URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one client message.
    pub async fn send_msg(&self, msg: &ClientMessage) -> Result<(), PeerError> {
        self.send(msg.to_value()).await
    }

    /// Sends one client message already in JSON form.
    pub async fn send(&self, msg: Value) -> Result<(), PeerError> {
        self.out
            .send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|_| PeerError::Disconnected("send failed".into()))
    }

    /// The next message, `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// Answers a NIP-42 challenge; returns the auth event id to wait for in `OK`.
    pub async fn authenticate(&self, keys: &Keys, challenge: &str) -> Result<String, PeerError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let ev = sign_event(
            keys,
            now,
            kind::CLIENT_AUTH,
            vec![
                vec!["relay".into(), self.url.clone()],
                vec!["challenge".into(), challenge.into()],
            ],
            "",
        );
        let id = ev.id_hex();
        let v: Value =
            serde_json::to_value(&ev).map_err(|e| PeerError::Disconnected(e.to_string()))?;
        self.send_msg(&ClientMessage::Auth(v)).await?;
        Ok(id)
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.out.send(Message::Close(None)).await;
    }
}

impl From<tungstenite::Error> for PeerError {
    fn from(e: tungstenite::Error) -> Self {
        PeerError::Disconnected(e.to_string())
    }
}
