//! One client connection: read frames (rate, size and time limits), parse each into a
//! `ClientMessage` and hand it to its handler — `events` (EVENT), `subs` (REQ, CLOSE), `nip42`
//! (AUTH), `nip77` (NEG-*). Every refusal is a protocol message (`OK false`, `CLOSED`,
//! `NEG-ERR`, `NOTICE`); nothing a client sends can end the relay.

mod events;
mod nip42;
mod nip77;
mod subs;

use super::limits::Meter;
use super::neg::NegSessions;
use super::server::Shared;
use crate::event::Filter;
use crate::event::wire::{ClientMessage, Prefix, RelayMessage};
use events::Arrived;
use futures_util::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Frames handled together at most (see `run`).
const EVENT_BATCH: usize = 256;

struct Conn {
    shared: Arc<Shared>,
    out: mpsc::Sender<Message>,
    /// Open subscriptions: the live sequence number at their start, and their filters.
    subs: HashMap<String, (u64, Vec<Filter>)>,
    negs: NegSessions,
    challenge: String,
    authed: Option<[u8; 32]>,
}

pub(super) async fn run<S>(
    ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    meter: Arc<Meter>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (out, out_rx) = mpsc::channel::<Message>(1024);
    let writer = tokio::spawn(crate::peer::write_frames(out_rx, sink, |_| ()));
    let mut live = shared.live.subscribe();
    let idle = shared.cfg.neg_idle_timeout;
    let (ping_every, idle_limit) = (shared.cfg.ping_interval, shared.cfg.idle_timeout);
    let message_limit = shared.cfg.message_timeout;
    let rate = std::num::NonZeroU32::new(shared.cfg.max_messages_per_second).map(|r| {
        let burst = r.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
        governor::RateLimiter::direct(governor::Quota::per_second(r).allow_burst(burst))
    });
    let mut last_heard = tokio::time::Instant::now();
    let mut pinged = false;
    let mut c = Conn {
        shared,
        out,
        subs: HashMap::new(),
        negs: NegSessions::default(),
        challenge: hex::encode(rand::random::<[u8; 16]>()),
        authed: None,
    };
    // A challenge only where AUTH can be asked for: clients that answer every challenge by
    // default (nostr-sdk) would otherwise sign in, or fail to and drop their subscriptions,
    // for nothing.
    let cfg = &c.shared.cfg;
    if cfg.auth_read || cfg.auth_write || cfg.auth_sync {
        c.send(RelayMessage::Auth {
            challenge: c.challenge.clone(),
        })
        .await;
    }
    let mut tick = tokio::time::interval(
        idle.min(ping_every)
            .min(message_limit / 2)
            .min(std::time::Duration::from_secs(5))
            .max(std::time::Duration::from_millis(50)),
    );
    let close_reason = loop {
        tokio::select! {
            frame = stream.next() => {
                // Any complete frame (pongs included) shows the client is there, and ends
                // what the meter counted as unfinished.
                meter.message_done();
                last_heard = tokio::time::Instant::now();
                pinged = false;
                if let Some(r) = &rate {
                    r.until_ready().await;
                }
                match frame {
                Some(Ok(Message::Text(t))) => {
                    // Frames that have arrived already are handled together, so a burst of
                    // EVENTs (a sync uploading) is stored in one batch.
                    let mut texts = vec![t];
                    let mut next = None;
                    // Each frame of the batch spends a token of the message rate too.
                    while texts.len() < EVENT_BATCH
                        && rate.as_ref().is_none_or(|r| r.check().is_ok())
                    {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(Message::Text(t)))) => texts.push(t),
                            Some(other) => {
                                next = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    meter.message_done();
                    c.handle_all(&texts).await;
                    match next {
                        Some(Some(Ok(Message::Binary(_)))) => c.notice("invalid: binary messages are not supported").await,
                        Some(Some(Ok(Message::Close(_)))) | Some(None) => break None,
                        Some(Some(Err(e))) => {
                            c.fail(addr, &e).await;
                            break None;
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Binary(_))) => c.notice("invalid: binary messages are not supported").await,
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    c.fail(addr, &e).await;
                    break None;
                }
                }
            },
            ev = live.recv() => match ev {
                Ok((seq, ev)) => c.push_live(seq, &ev).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    c.notice(&format!("error: {n} live events were dropped (client too slow)")).await;
                }
                Err(_) => break None,
            },
            _ = tick.tick() => {
                for sub in c.negs.expire(idle) {
                    c.neg_err(&sub, Prefix::Closed.reason("session idle for too long")).await;
                }
                if meter.pending_for().is_some_and(|t| t > message_limit) {
                    break Some((CloseCode::Policy, "a message took too long to arrive"));
                }
                let silent = last_heard.elapsed();
                if silent > idle_limit {
                    break Some((CloseCode::Away, "idle for too long"));
                }
                if silent > ping_every && !pinged {
                    pinged = true;
                    let _ = c.out.send(Message::Ping(Vec::new().into())).await;
                }
            }
        }
    };
    if let Some((code, reason)) = close_reason {
        tracing::debug!(%addr, "closing: {reason}");
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = c.out.send(Message::Close(Some(frame))).await;
    }
    drop(c);
    // A client that stopped reading must not hold the connection through the writer.
    let mut writer = writer;
    if tokio::time::timeout(std::time::Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

impl Conn {
    async fn send(&self, m: RelayMessage) {
        self.send_text(m.to_json()).await;
    }

    /// Queues a frame already written.
    async fn send_text(&self, frame: String) {
        let _ = self.out.send(Message::Text(frame.into())).await;
    }

    async fn notice(&self, msg: &str) {
        self.send(RelayMessage::Notice {
            message: msg.into(),
        })
        .await;
    }

    async fn ok(&self, id: String, accepted: bool, message: impl Into<String>) {
        let message = message.into();
        self.send(RelayMessage::Ok {
            id,
            accepted,
            message,
        })
        .await;
    }

    async fn closed(&self, sub: &str, message: impl Into<String>) {
        self.send(RelayMessage::Closed {
            sub: sub.into(),
            message: message.into(),
        })
        .await;
    }

    async fn neg_err(&self, sub: &str, reason: impl Into<String>) {
        self.send(RelayMessage::NegErr {
            sub: sub.into(),
            reason: reason.into(),
            max: None,
        })
        .await;
    }

    /// The connection ends on a read error. A frame or message over the size cap is closed with
    /// 1009 (message too big) and the cap in the reason, so the client learns why instead of
    /// seeing 1005 (no status); the rest of that frame is never read.
    async fn fail(&self, addr: SocketAddr, e: &WsError) {
        tracing::debug!(%addr, "connection error: {e}");
        if let WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) = e {
            let reason = format!("message too big: {size} bytes, the limit is {max_size}");
            let frame = CloseFrame {
                code: CloseCode::Size,
                reason: reason.into(),
            };
            let _ = self.out.send(Message::Close(Some(frame))).await;
        }
    }

    /// Handles frames in order; runs of `EVENT`s are checked together and stored in one
    /// batch, their `OK`s sent in order.
    async fn handle_all(&mut self, texts: &[tokio_tungstenite::tungstenite::Utf8Bytes]) {
        let mut run: Vec<Arrived> = Vec::new();
        for text in texts {
            match ClientMessage::parse(text.as_str()) {
                Ok(ClientMessage::Event(raw)) => run.push(Arrived::Event {
                    raw,
                    len: text.len(),
                }),
                Ok(msg) => {
                    self.store_run(std::mem::take(&mut run)).await;
                    self.handle(msg).await;
                }
                Err(e) => {
                    // An EVENT without its event is answered in order with the batch.
                    run.push(Arrived::Notice(e.to_string()));
                }
            }
        }
        self.store_run(run).await;
    }

    /// Checks a run of `EVENT`s, stores the accepted ones in one write and answers each.
    async fn store_run(&mut self, run: Vec<Arrived>) {
        if run.is_empty() {
            return;
        }
        let checked = self.check_events(run).await;
        self.save_events(checked).await;
    }

    /// One message other than `EVENT` (those are batched by `handle_all`).
    async fn handle(&mut self, msg: ClientMessage) {
        match msg {
            ClientMessage::Req { sub, filters } => self.on_req(&sub, &filters).await,
            ClientMessage::Close { sub } => self.on_close(&sub),
            ClientMessage::Auth(raw) => self.on_auth(&raw).await,
            ClientMessage::NegOpen { sub, filter, hex } => {
                self.on_neg_open(&sub, &filter, &hex).await
            }
            ClientMessage::NegMsg { sub, hex } => self.on_neg_msg(&sub, &hex).await,
            ClientMessage::NegClose { sub } => self.on_neg_close(&sub),
            ClientMessage::Event(raw) => self.on_event(raw).await,
        }
    }
}
