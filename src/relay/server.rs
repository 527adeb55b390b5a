//! Accepting connections: HTTP/1.1 via hyper, NIP-11 for `Accept: application/nostr+json`,
//! WebSocket upgrade for everything Nostr.

use super::{RelayConfig, conn, nip11};
use crate::event::Event;
use crate::store::Store;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Shared by every connection of one relay.
pub(super) struct Shared {
    pub(super) store: Arc<dyn Store>,
    pub(super) cfg: RelayConfig,
    /// New events, for live subscriptions, each with its place in `live_seq`.
    pub(super) live: tokio::sync::broadcast::Sender<(u64, Arc<Event>)>,
    /// Events published so far: a subscription gets live only the events after its start (a
    /// busy connection may read older ones from the channel after its REQ was answered).
    pub(super) live_seq: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Publishes a newly stored event to live subscriptions.
    pub(super) fn publish(&self, ev: Arc<Event>) {
        let seq = self
            .live_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let _ = self.live.send((seq, ev));
    }
}

/// A running relay: its address, and a way to stop it.
pub struct RelayHandle {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Stops accepting and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the accept loop ends (it only ends on shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Serves the relay on an already bound listener (bind first, then hand it over: no port races).
pub fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    cfg: RelayConfig,
) -> std::io::Result<RelayHandle> {
    let local_addr = listener.local_addr()?;
    let (live, _) = tokio::sync::broadcast::channel(4096);
    let shared = Arc::new(Shared {
        store,
        cfg,
        live,
        live_seq: std::sync::atomic::AtomicU64::new(0),
    });
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                acc = listener.accept() => match acc {
                    Ok((tcp, addr)) => {
                        let _ = tcp.set_nodelay(true);
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let shared = shared.clone();
                                async move { Ok::<_, std::convert::Infallible>(route(req, shared, addr)) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), svc)
                                .with_upgrades()
                                .await;
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }
    });
    Ok(RelayHandle {
        local_addr,
        stop: Some(stop_tx),
        task,
    })
}

fn route(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    addr: SocketAddr,
) -> Response<Full<Bytes>> {
    let wants_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_ws {
        let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        let accept = derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut cfg = WebSocketConfig::default();
            cfg.max_message_size = Some(shared.cfg.max_message_bytes);
            cfg.max_frame_size = Some(shared.cfg.max_message_bytes);
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(cfg))
                    .await;
            conn::run(ws, shared, addr).await;
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        return resp;
    }
    let wants_nip11 = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/nostr+json"));
    if wants_nip11 {
        let mut resp = Response::new(Full::new(Bytes::from(
            nip11::document(&shared.cfg).to_string(),
        )));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/nostr+json"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        return resp;
    }
    plain(
        StatusCode::OK,
        "orly relay: connect with a Nostr client (WebSocket)\n",
    )
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp
}
