//! One open relay connection: the WebSocket tasks, and the typed calls a sync makes on it
//! (NIP-77 `NEG-*`, `REQ` by ids, `EVENT`, NIP-42 `AUTH`). Callers never build a message.

use super::write_frames;
use super::{ByteCounters, Incoming, PeerError, PeerOptions, PeerUrl, RelayMsg, tls_config};
use crate::event::wire::{ClientMessage, kind};
use crate::event::{Event, Filter, Keys, sign_event};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

/// An open relay connection: send with the methods, receive from [`RelayConn::recv`].
pub struct RelayConn {
    url: String,
    out: mpsc::Sender<Message>,
    incoming: mpsc::Receiver<Incoming>,
    /// Bytes of text sent and received, for benchmarks and reports.
    pub bytes: Arc<ByteCounters>,
}

impl RelayConn {
    /// Connects within `opts.connect_timeout`.
    pub async fn connect(url: &PeerUrl, opts: &PeerOptions) -> Result<Self, PeerError> {
        let url = url.as_str();
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
        let (sink, mut stream) = ws.split();
        let (out_tx, out_rx) = mpsc::channel::<Message>(1024);
        let (in_tx, in_rx) = mpsc::channel::<Incoming>(4096);
        let bytes = Arc::new(ByteCounters::default());
        let sent = bytes.clone();
        tokio::spawn(write_frames(out_rx, sink, move |m| {
            sent.sent
                .fetch_add(m.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }));
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

    async fn send(&self, msg: ClientMessage) -> Result<(), PeerError> {
        self.send_text(msg.to_json()).await
    }

    async fn send_text(&self, frame: String) -> Result<(), PeerError> {
        self.out
            .send(Message::Text(frame.into()))
            .await
            .map_err(|_| PeerError::Disconnected("send failed".into()))
    }

    /// `NEG-OPEN`: starts negentropy session `sub` over `filter` with our first message.
    pub async fn neg_open(
        &self,
        sub: &str,
        filter: &Filter,
        first: &[u8],
    ) -> Result<(), PeerError> {
        self.send(ClientMessage::NegOpen {
            sub: sub.into(),
            filter: filter.to_value(),
            hex: crate::negentropy::to_hex(first),
        })
        .await
    }

    /// `NEG-MSG`: our next negentropy message in session `sub`.
    pub async fn neg_msg(&self, sub: &str, msg: &[u8]) -> Result<(), PeerError> {
        self.send_text(ClientMessage::neg_msg_frame(sub, msg)).await
    }

    /// `NEG-CLOSE`: ends negentropy session `sub`.
    pub async fn neg_close(&self, sub: &str) -> Result<(), PeerError> {
        self.send(ClientMessage::NegClose { sub: sub.into() }).await
    }

    /// `REQ` for exactly these events, by id, as subscription `sub`.
    pub async fn req_ids<'a>(
        &self,
        sub: &str,
        ids: impl IntoIterator<Item = &'a [u8; 32]>,
    ) -> Result<(), PeerError> {
        let hexes: Vec<String> = ids.into_iter().map(hex::encode).collect();
        self.send(ClientMessage::Req {
            sub: sub.into(),
            filters: vec![json!({ "ids": hexes })],
        })
        .await
    }

    /// `REQ` for the events matching `filters` (NIP-01 filter objects), as subscription `sub`.
    pub async fn req(&self, sub: &str, filters: Vec<serde_json::Value>) -> Result<(), PeerError> {
        self.send(ClientMessage::Req {
            sub: sub.into(),
            filters,
        })
        .await
    }

    /// `CLOSE`: ends subscription `sub`.
    pub async fn close_sub(&self, sub: &str) -> Result<(), PeerError> {
        self.send(ClientMessage::Close { sub: sub.into() }).await
    }

    /// `EVENT`: offers `ev` to the relay, which answers `OK` with its id.
    pub async fn publish(&self, ev: &Event) -> Result<(), PeerError> {
        self.send_text(ClientMessage::event_frame(ev)).await
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
        self.send(ClientMessage::Auth(v)).await?;
        Ok(id)
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.out.send(Message::Close(None)).await;
    }
}
