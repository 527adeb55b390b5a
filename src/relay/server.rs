//! Accepting connections: HTTP/1.1 via hyper, NIP-11 for `Accept: application/nostr+json`,
//! WebSocket upgrade for everything Nostr.

use super::limits::{Admission, Admitted, Meter, Metered, PendingBudget, Refusal};
use super::{RelayConfig, conn, nip11};
use crate::event::Event;
use crate::store::Store;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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
    /// Open connections, in total and per address.
    admission: Arc<Admission>,
    /// Bytes of unfinished messages over all connections.
    pub(super) pending: Arc<PendingBudget>,
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
    let admission = Admission::new(cfg.effective_max_connections(), cfg.max_connections_per_ip);
    let pending = PendingBudget::new(cfg.max_pending_bytes);
    let shared = Arc::new(Shared {
        store,
        cfg,
        live,
        live_seq: std::sync::atomic::AtomicU64::new(0),
        admission,
        pending,
    });
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                acc = listener.accept() => match acc {
                    Ok((tcp, addr)) => {
                        let admitted = match shared.admission.admit(addr.ip()) {
                            Ok(a) => a,
                            Err(why) => {
                                refuse(&tcp, addr, why);
                                continue;
                            }
                        };
                        let _ = tcp.set_nodelay(true);
                        tokio::spawn(handshake(tcp, addr, admitted, shared.clone()));
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

/// Answers a connection over the caps with a 503 (best effort, never waiting) and closes it.
fn refuse(tcp: &tokio::net::TcpStream, addr: SocketAddr, why: Refusal) {
    let reason = match why {
        Refusal::Full => "the relay holds its maximum of connections",
        Refusal::PerAddress => "too many connections from this address",
    };
    tracing::debug!(%addr, "connection refused: {reason}");
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{reason}",
        reason.len()
    );
    let _ = tcp.try_write(resp.as_bytes());
}

/// HTTP up to the WebSocket upgrade (or the end of a plain HTTP exchange), within the
/// handshake timeout: a client that sends its request slowly, or keeps an HTTP connection
/// open without upgrading, is closed then. The connection's place is held until it ends.
async fn handshake(
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    admitted: Admitted,
    shared: Arc<Shared>,
) {
    let admitted = Arc::new(Mutex::new(Some(admitted)));
    let place = admitted.clone();
    let limit = shared.cfg.handshake_timeout;
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let place = place.clone();
        async move { Ok::<_, std::convert::Infallible>(route(req, shared, addr, place)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    if tokio::time::timeout(limit, conn).await.is_err() {
        tracing::debug!(%addr, "closed: no WebSocket upgrade within {limit:?}");
    }
}

fn route(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    place: Arc<Mutex<Option<Admitted>>>,
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
        // The WebSocket keeps the connection's place for as long as it lives.
        let admitted = place.lock().unwrap_or_else(|p| p.into_inner()).take();
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut cfg = WebSocketConfig::default();
            cfg.max_message_size = Some(shared.cfg.max_message_bytes);
            cfg.max_frame_size = Some(shared.cfg.max_message_bytes);
            let meter = Meter::new(shared.pending.clone());
            let io = Metered::new(TokioIo::new(upgraded), meter.clone());
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await;
            conn::run(ws, shared, addr, meter).await;
            drop(admitted);
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
