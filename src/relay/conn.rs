//! One client connection: parse each frame, check limits and auth, answer. Every refusal is a
//! protocol message (`OK false`, `CLOSED`, `NEG-ERR`, `NOTICE`); nothing a client sends can end
//! the relay.

use super::limits::Meter;
use super::neg::{self, NegSessions};
use super::server::Shared;
use crate::event::wire::{ClientMessage, Prefix, RelayMessage, kind};
use crate::event::{Event, Filter};
use crate::negentropy::NegError;
use crate::store::{Order, SaveOutcome, StoreError};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
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

/// An `EVENT` after its checks: to store, or answered already.
enum Pending {
    Store(Event),
    Refused(RelayMessage),
    Notice(String),
}

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
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(1024);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
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
    c.send(RelayMessage::Auth {
        challenge: c.challenge.clone(),
    })
    .await;
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
        let _ = self.out.send(Message::Text(m.to_json().into())).await;
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

    /// Handles frames in order; runs of `EVENT`s are checked one by one and stored in one
    /// batch, their `OK`s sent in order.
    async fn handle_all(&mut self, texts: &[tokio_tungstenite::tungstenite::Utf8Bytes]) {
        let mut batch: Vec<Pending> = Vec::new();
        for text in texts {
            match ClientMessage::parse(text.as_str()) {
                Ok(ClientMessage::Event(raw)) => batch.push(self.check_event(&raw, text.len())),
                Ok(msg) => {
                    self.save_events(std::mem::take(&mut batch)).await;
                    self.handle(msg).await;
                }
                Err(e) => {
                    // An EVENT without its event is answered in order with the batch.
                    batch.push(Pending::Notice(e.to_string()));
                }
            }
        }
        self.save_events(batch).await;
    }

    /// One message other than `EVENT` (those are batched by `handle_all`).
    async fn handle(&mut self, msg: ClientMessage) {
        match msg {
            ClientMessage::Req { sub, filters } => self.on_req(&sub, &filters).await,
            ClientMessage::Close { sub } => {
                self.subs.remove(&sub);
            }
            ClientMessage::Auth(raw) => self.on_auth(&raw).await,
            ClientMessage::NegOpen { sub, filter, hex } => {
                self.on_neg_open(&sub, &filter, &hex).await
            }
            ClientMessage::NegMsg { sub, hex } => self.on_neg_msg(&sub, &hex).await,
            ClientMessage::NegClose { sub } => {
                self.negs.close(&sub);
            }
            ClientMessage::Event(raw) => {
                let p = self.check_event(&raw, 0);
                self.save_events(vec![p]).await;
            }
        }
    }

    fn auth_ok(&self, required: bool) -> bool {
        if !required {
            return true;
        }
        match &self.authed {
            Some(pk) => {
                self.shared.cfg.auth_pubkeys.is_empty() || self.shared.cfg.auth_pubkeys.contains(pk)
            }
            None => false,
        }
    }

    fn auth_reason(&self) -> String {
        if self.authed.is_some() {
            Prefix::Restricted.reason("this pubkey is not allowed")
        } else {
            Prefix::AuthRequired.reason("authenticate with NIP-42 first")
        }
    }

    /// Everything about an `EVENT` short of storing it: size, parse, signature, auth.
    fn check_event(&self, raw: &Value, len: usize) -> Pending {
        let id = raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let refuse = |message: String| {
            Pending::Refused(RelayMessage::Ok {
                id,
                accepted: false,
                message,
            })
        };
        if len > self.shared.cfg.max_event_bytes + 64 {
            return refuse(Prefix::Invalid.reason(format_args!(
                "event too large (max {} bytes)",
                self.shared.cfg.max_event_bytes
            )));
        }
        let ev = match Event::from_value(raw.clone()).and_then(|e| e.verify().map(|()| e)) {
            Ok(ev) => ev,
            Err(e) => return refuse(e.to_string()),
        };
        if ev.kind == kind::CLIENT_AUTH {
            return refuse(Prefix::Invalid.reason("AUTH events go in an AUTH message"));
        }
        if !self.auth_ok(self.shared.cfg.auth_write) {
            return refuse(self.auth_reason());
        }
        Pending::Store(ev)
    }

    /// Stores the accepted events of `batch` in one write and answers every one, in order.
    async fn save_events(&mut self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let events: Vec<Event> = batch
            .iter()
            .filter_map(|p| match p {
                Pending::Store(ev) => Some(ev.clone()),
                _ => None,
            })
            .collect();
        let mut outcomes = if events.is_empty() {
            Ok(Vec::new())
        } else {
            self.shared.store.save(events).await
        }
        .map(Vec::into_iter);
        // A store that refuses writes (a read-only standby) says why; other failures stay
        // generic for the client and are logged here.
        let failed = match &outcomes {
            Err(StoreError::Refused(why)) => Prefix::Blocked.reason(why),
            Err(e) => {
                tracing::error!("store failed: {e}");
                Prefix::Error.reason("could not store the event")
            }
            Ok(_) => Prefix::Error.reason("could not store the event"),
        };
        for p in batch {
            match p {
                Pending::Notice(m) => self.notice(&m).await,
                Pending::Refused(reply) => self.send(reply).await,
                Pending::Store(ev) => {
                    let id = ev.id_hex();
                    let o = match &mut outcomes {
                        Ok(it) => it.next(),
                        Err(_) => None,
                    };
                    let Some(o) = o else {
                        self.ok(id, false, failed.clone()).await;
                        continue;
                    };
                    let (ok, msg) = o.ok_reply();
                    if matches!(
                        o,
                        SaveOutcome::Accepted | SaveOutcome::Replaced | SaveOutcome::Ephemeral
                    ) {
                        self.shared.publish(Arc::new(ev));
                    }
                    self.ok(id, ok, msg).await;
                }
            }
        }
    }

    async fn on_req(&mut self, sub: &str, raw_filters: &[Value]) {
        if sub.is_empty() || sub.len() > 64 {
            return self
                .notice("invalid: REQ needs a subscription id of 1 to 64 characters")
                .await;
        }
        let cfg = &self.shared.cfg;
        if raw_filters.is_empty() || raw_filters.len() > cfg.max_filters {
            let m = Prefix::Invalid
                .reason(format_args!("a REQ takes 1 to {} filters", cfg.max_filters));
            return self.closed(sub, m).await;
        }
        if !self.subs.contains_key(sub) && self.subs.len() >= cfg.max_subscriptions {
            let m = Prefix::Blocked.reason(format_args!(
                "at most {} open subscriptions",
                cfg.max_subscriptions
            ));
            return self.closed(sub, m).await;
        }
        if !self.auth_ok(cfg.auth_read) {
            return self.closed(sub, self.auth_reason()).await;
        }
        // Events published from here on reach the subscription live; earlier ones are stored.
        let start = self
            .shared
            .live_seq
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut filters = Vec::with_capacity(raw_filters.len());
        for f in raw_filters {
            match Filter::from_value(f) {
                Ok(f) => filters.push(f),
                Err(e) => {
                    return self.closed(sub, Prefix::Invalid.reason(e.0)).await;
                }
            }
        }
        let max_limit = cfg.max_limit;
        let mut sent = HashSet::new();
        for f in &filters {
            let mut q = f.clone();
            q.limit = Some(f.limit.unwrap_or(max_limit).min(max_limit));
            let mut stream = self.shared.store.query(q, Order::NewestFirst);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => {
                        if sent.insert(ev.id) {
                            self.send_event(sub, &ev).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!("query failed: {e}");
                        return self.closed(sub, Prefix::Error.reason("query failed")).await;
                    }
                }
            }
        }
        self.send(RelayMessage::Eose { sub: sub.into() }).await;
        self.subs.insert(sub.to_string(), (start, filters));
    }

    async fn send_event(&self, sub: &str, ev: &Event) {
        // Serializing our own struct of strings and integers cannot fail.
        let event = serde_json::to_value(ev).unwrap_or_default();
        self.send(RelayMessage::Event {
            sub: sub.into(),
            event,
        })
        .await;
    }

    async fn push_live(&self, seq: u64, ev: &Event) {
        for (sub, (start, filters)) in &self.subs {
            if seq > *start && filters.iter().any(|f| f.matches(ev)) {
                self.send_event(sub, ev).await;
            }
        }
    }

    async fn on_auth(&mut self, raw: &Value) {
        let id = raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let res = Event::from_value(raw.clone())
            .and_then(|e| e.verify().map(|()| e))
            .map_err(|e| e.to_string())
            .and_then(|ev| self.check_auth_event(&ev).map(|()| ev));
        match res {
            Ok(ev) => {
                self.authed = Some(ev.pubkey);
                self.ok(id, true, "").await;
            }
            Err(reason) => self.ok(id, false, reason).await,
        }
    }

    fn check_auth_event(&self, ev: &Event) -> Result<(), String> {
        if ev.kind != kind::CLIENT_AUTH {
            return Err(Prefix::Invalid.reason(format_args!(
                "AUTH event must be kind {}",
                kind::CLIENT_AUTH
            )));
        }
        if ev.tag_values("challenge").next() != Some(self.challenge.as_str()) {
            return Err("invalid: wrong AUTH challenge".into());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if ev.created_at.abs_diff(now) > 600 {
            return Err("invalid: AUTH event created_at is more than 10 minutes off".into());
        }
        if let Some(url) = &self.shared.cfg.public_url {
            let host = |u: &str| {
                url::Url::parse(u)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            };
            let tag = ev.tag_values("relay").next().unwrap_or("");
            if host(tag).is_none() || host(tag) != host(url) {
                return Err("invalid: AUTH relay tag does not name this relay".into());
            }
        }
        Ok(())
    }

    async fn on_neg_open(&mut self, sub: &str, filter: &Value, msg: &str) {
        let cfg = &self.shared.cfg;
        if sub.is_empty() || sub.len() > 64 {
            return self
                .notice("invalid: subscription id must be 1 to 64 characters")
                .await;
        }
        if !self.auth_ok(cfg.auth_sync) {
            return self.neg_err(sub, self.auth_reason()).await;
        }
        // Re-opening an id replaces its session (NIP-77).
        self.negs.close(sub);
        if self.negs.len() >= cfg.max_neg_sessions {
            let m = Prefix::Closed.reason(format_args!(
                "at most {} open sessions per connection",
                cfg.max_neg_sessions
            ));
            return self.neg_err(sub, m).await;
        }
        let mut filter = match Filter::from_value(filter) {
            Ok(f) => f,
            Err(e) => {
                return self.neg_err(sub, Prefix::Invalid.reason(e.0)).await;
            }
        };
        filter.limit = None;
        let Ok(bytes) = hex::decode(msg) else {
            return self
                .neg_err(sub, Prefix::Invalid.reason("message is not hex"))
                .await;
        };
        // The cap is the operator's (like strfry's maxSyncEvents) and bounds the sets loaded
        // into memory; time ranges are answered by the persistent index at no memory per item.
        let max = cfg.max_neg_records;
        let frame_limit = cfg.effective_neg_frame_limit();
        match self
            .shared
            .store
            .neg_session(filter, frame_limit, max)
            .await
        {
            Ok(s) => self.reconcile(sub, s, bytes).await,
            Err(StoreError::TooMany { max }) => {
                let reason = Prefix::Blocked.reason(format_args!(
                    "this query matches too many records (max {max})"
                ));
                self.send(RelayMessage::NegErr {
                    sub: sub.into(),
                    reason,
                    max: Some(max as u64),
                })
                .await
            }
            Err(StoreError::Busy(_)) => {
                let m =
                    Prefix::Error.reason("busy: too many negentropy sets open; try again later");
                self.neg_err(sub, m).await
            }
            Err(e) => {
                tracing::error!("negentropy set failed: {e}");
                self.neg_err(sub, Prefix::Error.reason("store failed"))
                    .await
            }
        }
    }

    async fn on_neg_msg(&mut self, sub: &str, msg: &str) {
        let Some(session) = self.negs.take(sub) else {
            return self
                .neg_err(sub, Prefix::Closed.reason("no open session with this id"))
                .await;
        };
        let Ok(bytes) = hex::decode(msg) else {
            return self
                .neg_err(sub, Prefix::Invalid.reason("message is not hex"))
                .await;
        };
        self.reconcile(sub, session, bytes).await;
    }

    async fn reconcile(&mut self, sub: &str, session: neg::Session, bytes: Vec<u8>) {
        match neg::reconcile(session, bytes).await {
            Ok((session, out)) => {
                self.negs.put(sub.to_string(), session);
                self.send(RelayMessage::NegMsg {
                    sub: sub.into(),
                    hex: hex::encode(out),
                })
                .await;
            }
            Err(NegError::Storage(e)) => {
                tracing::error!("negentropy step failed: {e}");
                self.neg_err(sub, Prefix::Error.reason("store failed"))
                    .await;
            }
            Err(e) => {
                debug_assert!(!self.negs.contains(sub));
                self.neg_err(sub, Prefix::Invalid.reason(e)).await;
            }
        }
    }
}
