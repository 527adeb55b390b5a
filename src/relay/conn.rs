//! One client connection: parse each frame, check limits and auth, answer. Every refusal is a
//! protocol message (`OK false`, `CLOSED`, `NEG-ERR`, `NOTICE`); nothing a client sends can end
//! the relay.

use super::neg::{self, NegSessions};
use super::server::Shared;
use crate::event::{Event, Filter};
use crate::negentropy::NegError;
use crate::store::{Order, SaveOutcome, StoreError};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
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
    Refused(Value),
    Notice(&'static str),
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

pub(super) async fn run<S>(ws: WebSocketStream<S>, shared: Arc<Shared>, addr: SocketAddr)
where
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
    let mut c = Conn {
        shared,
        out,
        subs: HashMap::new(),
        negs: NegSessions::default(),
        challenge: hex::encode(rand::random::<[u8; 16]>()),
        authed: None,
    };
    c.send(json!(["AUTH", c.challenge])).await;
    let mut tick = tokio::time::interval(
        idle.min(std::time::Duration::from_secs(5))
            .max(std::time::Duration::from_millis(50)),
    );
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    // Frames that have arrived already are handled together, so a burst of
                    // EVENTs (a sync uploading) is stored in one batch.
                    let mut texts = vec![t];
                    let mut next = None;
                    while texts.len() < EVENT_BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(Message::Text(t)))) => texts.push(t),
                            Some(other) => {
                                next = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    c.handle_all(&texts).await;
                    match next {
                        Some(Some(Ok(Message::Binary(_)))) => c.notice("invalid: binary messages are not supported").await,
                        Some(Some(Ok(Message::Close(_)))) | Some(None) => break,
                        Some(Some(Err(e))) => {
                            c.fail(addr, &e).await;
                            break;
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Binary(_))) => c.notice("invalid: binary messages are not supported").await,
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    c.fail(addr, &e).await;
                    break;
                }
            },
            ev = live.recv() => match ev {
                Ok((seq, ev)) => c.push_live(seq, &ev).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    c.notice(&format!("error: {n} live events were dropped (client too slow)")).await;
                }
                Err(_) => break,
            },
            _ = tick.tick() => {
                for sub in c.negs.expire(idle) {
                    c.send(json!(["NEG-ERR", sub, "closed: session idle for too long"])).await;
                }
            }
        }
    }
    drop(c);
    let _ = writer.await;
}

impl Conn {
    async fn send(&self, v: Value) {
        let _ = self.out.send(Message::Text(v.to_string().into())).await;
    }

    async fn notice(&self, msg: &str) {
        self.send(json!(["NOTICE", msg])).await;
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
            let v: Value = match serde_json::from_str(text.as_str()) {
                Ok(v) => v,
                Err(e) => {
                    self.save_events(std::mem::take(&mut batch)).await;
                    self.notice(&format!("invalid: message is not JSON: {e}"))
                        .await;
                    continue;
                }
            };
            if v.get(0).and_then(Value::as_str) == Some("EVENT") {
                batch.push(self.check_event(v.get(1), text.len()));
            } else {
                self.save_events(std::mem::take(&mut batch)).await;
                self.handle(&v).await;
            }
        }
        self.save_events(batch).await;
    }

    async fn handle(&mut self, v: &Value) {
        let Some(arr) = v.as_array() else {
            return self.notice("invalid: message must be a JSON array").await;
        };
        let s = |i: usize| arr.get(i).and_then(Value::as_str);
        match s(0) {
            Some("REQ") => self.on_req(s(1), &arr[2.min(arr.len())..]).await,
            Some("CLOSE") => {
                if let Some(sub) = s(1) {
                    self.subs.remove(sub);
                }
            }
            Some("AUTH") => self.on_auth(arr.get(1)).await,
            Some("NEG-OPEN") => self.on_neg_open(s(1), arr.get(2), s(3)).await,
            Some("NEG-MSG") => self.on_neg_msg(s(1), s(2)).await,
            Some("NEG-CLOSE") => {
                if let Some(sub) = s(1) {
                    self.negs.close(sub);
                }
            }
            Some(other) => {
                self.notice(&format!("invalid: unknown message type {other:?}"))
                    .await
            }
            None => {
                self.notice("invalid: first element must be the message type")
                    .await
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

    fn auth_reason(&self) -> &'static str {
        if self.authed.is_some() {
            "restricted: this pubkey is not allowed"
        } else {
            "auth-required: authenticate with NIP-42 first"
        }
    }

    /// Everything about an `EVENT` short of storing it: size, parse, signature, auth.
    fn check_event(&self, raw: Option<&Value>, len: usize) -> Pending {
        let Some(raw) = raw else {
            return Pending::Notice("invalid: EVENT without an event");
        };
        let id = raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let refuse = |msg: String| Pending::Refused(json!(["OK", id, false, msg]));
        if len > self.shared.cfg.max_event_bytes + 64 {
            return refuse(format!(
                "invalid: event too large (max {} bytes)",
                self.shared.cfg.max_event_bytes
            ));
        }
        let ev = match Event::from_value(raw.clone()).and_then(|e| e.verify().map(|()| e)) {
            Ok(ev) => ev,
            Err(e) => return refuse(e.to_string()),
        };
        if ev.kind == 22242 {
            return refuse("invalid: AUTH events go in an AUTH message".into());
        }
        if !self.auth_ok(self.shared.cfg.auth_write) {
            return refuse(self.auth_reason().into());
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
        if let Err(e) = &outcomes {
            tracing::error!("store failed: {e}");
        }
        for p in batch {
            match p {
                Pending::Notice(m) => self.notice(m).await,
                Pending::Refused(reply) => self.send(reply).await,
                Pending::Store(ev) => {
                    let id = ev.id_hex();
                    let o = match &mut outcomes {
                        Ok(it) => it.next(),
                        Err(_) => None,
                    };
                    let Some(o) = o else {
                        let m = "error: could not store the event";
                        self.send(json!(["OK", id, false, m])).await;
                        continue;
                    };
                    let (ok, msg) = o.ok_reply();
                    if matches!(
                        o,
                        SaveOutcome::Accepted | SaveOutcome::Replaced | SaveOutcome::Ephemeral
                    ) {
                        self.shared.publish(Arc::new(ev));
                    }
                    self.send(json!(["OK", id, ok, msg])).await;
                }
            }
        }
    }

    async fn on_req(&mut self, sub: Option<&str>, raw_filters: &[Value]) {
        let Some(sub) = sub.filter(|s| !s.is_empty() && s.len() <= 64) else {
            return self
                .notice("invalid: REQ needs a subscription id of 1 to 64 characters")
                .await;
        };
        let cfg = &self.shared.cfg;
        if raw_filters.is_empty() || raw_filters.len() > cfg.max_filters {
            let m = format!("invalid: a REQ takes 1 to {} filters", cfg.max_filters);
            return self.send(json!(["CLOSED", sub, m])).await;
        }
        if !self.subs.contains_key(sub) && self.subs.len() >= cfg.max_subscriptions {
            let m = format!(
                "blocked: at most {} open subscriptions",
                cfg.max_subscriptions
            );
            return self.send(json!(["CLOSED", sub, m])).await;
        }
        if !self.auth_ok(cfg.auth_read) {
            return self.send(json!(["CLOSED", sub, self.auth_reason()])).await;
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
                    return self
                        .send(json!(["CLOSED", sub, format!("invalid: {}", e.0)]))
                        .await;
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
                            self.send(json!(["EVENT", sub, ev])).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!("query failed: {e}");
                        return self
                            .send(json!(["CLOSED", sub, "error: query failed"]))
                            .await;
                    }
                }
            }
        }
        self.send(json!(["EOSE", sub])).await;
        self.subs.insert(sub.to_string(), (start, filters));
    }

    async fn push_live(&self, seq: u64, ev: &Event) {
        for (sub, (start, filters)) in &self.subs {
            if seq > *start && filters.iter().any(|f| f.matches(ev)) {
                self.send(json!(["EVENT", sub, ev])).await;
            }
        }
    }

    async fn on_auth(&mut self, raw: Option<&Value>) {
        let Some(raw) = raw else {
            return self.notice("invalid: AUTH without an event").await;
        };
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
                self.send(json!(["OK", id, true, ""])).await;
            }
            Err(reason) => self.send(json!(["OK", id, false, reason])).await,
        }
    }

    fn check_auth_event(&self, ev: &Event) -> Result<(), String> {
        if ev.kind != 22242 {
            return Err("invalid: AUTH event must be kind 22242".into());
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

    async fn on_neg_open(&mut self, sub: Option<&str>, filter: Option<&Value>, msg: Option<&str>) {
        let (Some(sub), Some(filter), Some(msg)) = (sub, filter, msg) else {
            return self
                .notice("invalid: NEG-OPEN needs a subscription id, a filter and a message")
                .await;
        };
        let cfg = &self.shared.cfg;
        if sub.is_empty() || sub.len() > 64 {
            return self
                .notice("invalid: subscription id must be 1 to 64 characters")
                .await;
        }
        if !self.auth_ok(cfg.auth_sync) {
            return self.send(json!(["NEG-ERR", sub, self.auth_reason()])).await;
        }
        // Re-opening an id replaces its session (NIP-77).
        self.negs.close(sub);
        if self.negs.len() >= cfg.max_neg_sessions {
            let m = format!(
                "closed: at most {} open sessions per connection",
                cfg.max_neg_sessions
            );
            return self.send(json!(["NEG-ERR", sub, m])).await;
        }
        let mut filter = match Filter::from_value(filter) {
            Ok(f) => f,
            Err(e) => {
                return self
                    .send(json!(["NEG-ERR", sub, format!("invalid: {}", e.0)]))
                    .await;
            }
        };
        filter.limit = None;
        let Ok(bytes) = hex::decode(msg) else {
            return self
                .send(json!(["NEG-ERR", sub, "invalid: message is not hex"]))
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
                let m = format!("blocked: this query matches too many records (max {max})");
                self.send(json!(["NEG-ERR", sub, m, max])).await
            }
            Err(StoreError::Busy(_)) => {
                let m = "error: busy: too many negentropy sets open; try again later";
                self.send(json!(["NEG-ERR", sub, m])).await
            }
            Err(e) => {
                tracing::error!("negentropy set failed: {e}");
                self.send(json!(["NEG-ERR", sub, "error: store failed"]))
                    .await
            }
        }
    }

    async fn on_neg_msg(&mut self, sub: Option<&str>, msg: Option<&str>) {
        let (Some(sub), Some(msg)) = (sub, msg) else {
            return self
                .notice("invalid: NEG-MSG needs a subscription id and a message")
                .await;
        };
        let Some(session) = self.negs.take(sub) else {
            return self
                .send(json!([
                    "NEG-ERR",
                    sub,
                    "closed: no open session with this id"
                ]))
                .await;
        };
        let Ok(bytes) = hex::decode(msg) else {
            return self
                .send(json!(["NEG-ERR", sub, "invalid: message is not hex"]))
                .await;
        };
        self.reconcile(sub, session, bytes).await;
    }

    async fn reconcile(&mut self, sub: &str, session: neg::Session, bytes: Vec<u8>) {
        match neg::reconcile(session, bytes).await {
            Ok((session, out)) => {
                self.negs.put(sub.to_string(), session);
                self.send(json!(["NEG-MSG", sub, hex::encode(out)])).await;
            }
            Err(NegError::Storage(e)) => {
                tracing::error!("negentropy step failed: {e}");
                self.send(json!(["NEG-ERR", sub, "error: store failed"]))
                    .await;
            }
            Err(e) => {
                debug_assert!(!self.negs.contains(sub));
                self.send(json!(["NEG-ERR", sub, format!("invalid: {e}")]))
                    .await;
            }
        }
    }
}
