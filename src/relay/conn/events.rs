//! `EVENT`: each event checked (size, shape, signature, kind, NIP-42 write rule), then the
//! accepted ones of a burst stored in one write, and every one answered `OK`, in order.

use super::Conn;
use crate::event::Event;
use crate::event::wire::{Prefix, RelayMessage, kind};
use crate::store::{SaveOutcome, StoreError};
use serde_json::Value;
use std::sync::Arc;

/// An `EVENT` after its checks: to store, or answered already.
pub(super) enum Pending {
    Store(Event),
    Refused(RelayMessage),
    Notice(String),
}

/// An `EVENT` as it arrived, or a malformed one's notice, in the order of the frames.
pub(super) enum Arrived {
    Event { raw: Value, len: usize },
    Notice(String),
}

/// Runs of at least this many events have their signatures checked on the blocking pool, in
/// pieces of at least this many checked side by side; shorter runs are checked on the
/// connection's task. A check costs ~45 µs: a sync's burst of 256 uploads would hold a runtime
/// worker for ~12 ms, and use one core where the machine may have more.
const CHECKED_APART_FROM: usize = 16;

/// An `EVENT` answered without being stored.
enum Answer {
    Refused { id: String, message: String },
    Notice(String),
}

/// An event parsed, its signature not checked yet; or its answer.
type Parsed = Result<Event, Answer>;

impl Conn {
    /// One `EVENT` outside a batch.
    pub(super) async fn on_event(&mut self, raw: Value) {
        let checked = self
            .check_events(vec![Arrived::Event { raw, len: 0 }])
            .await;
        self.save_events(checked).await;
    }

    /// Everything about a run of `EVENT`s short of storing them: size, parse, signature, kind,
    /// auth; in order.
    pub(super) async fn check_events(&self, run: Vec<Arrived>) -> Vec<Pending> {
        let parsed: Vec<Parsed> = run
            .into_iter()
            .map(|a| match a {
                Arrived::Event { raw, len } => self.parse_event(raw, len),
                Arrived::Notice(m) => Err(Answer::Notice(m)),
            })
            .collect();
        let to_check = parsed.iter().filter(|p| p.is_ok()).count();
        let verified = if to_check < CHECKED_APART_FROM {
            parsed.into_iter().map(verify).collect()
        } else {
            verify_apart(parsed, to_check).await
        };
        verified.into_iter().map(|p| self.admit(p)).collect()
    }

    /// Size and shape: the event, or its refusal.
    fn parse_event(&self, raw: Value, len: usize) -> Parsed {
        if len > self.shared.cfg.max_event_bytes + 64 {
            return Err(refused(
                raw.get("id"),
                Prefix::Invalid.reason(format_args!(
                    "event too large (max {} bytes)",
                    self.shared.cfg.max_event_bytes
                )),
            ));
        }
        let id = raw.get("id").cloned();
        Event::from_value(raw).map_err(|e| refused(id.as_ref(), e.to_string()))
    }

    /// The checks after the signature's: kind and the NIP-42 write rule.
    fn admit(&self, p: Parsed) -> Pending {
        let ev = match p {
            Ok(ev) => ev,
            Err(a) => return a.into(),
        };
        if ev.kind == kind::CLIENT_AUTH {
            return refused_event(
                &ev,
                Prefix::Invalid.reason("AUTH events go in an AUTH message"),
            )
            .into();
        }
        if !self.auth_ok(self.shared.cfg.auth_write) {
            return refused_event(&ev, self.auth_reason()).into();
        }
        Pending::Store(ev)
    }

    /// Stores the accepted events of `batch` in one write and answers every one, in order.
    pub(super) async fn save_events(&mut self, batch: Vec<Pending>) {
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
}

/// Checks the id and signature of a parsed event.
fn verify(p: Parsed) -> Parsed {
    let ev = p?;
    match ev.verify() {
        Ok(()) => Ok(ev),
        Err(e) => Err(refused_event(&ev, e.to_string())),
    }
}

/// [`verify`] on the blocking pool, in up to as many pieces as the machine has cores, side by
/// side; the order is kept. A piece whose thread fails is refused as a relay error.
async fn verify_apart(parsed: Vec<Parsed>, to_check: usize) -> Vec<Parsed> {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pieces = cores.min(to_check / CHECKED_APART_FROM).max(1);
    let per = parsed.len().div_ceil(pieces);
    let mut parsed = parsed.into_iter();
    let mut tasks = Vec::with_capacity(pieces);
    loop {
        let piece: Vec<Parsed> = parsed.by_ref().take(per).collect();
        if piece.is_empty() {
            break;
        }
        let ids: Vec<Option<[u8; 32]>> = piece
            .iter()
            .map(|p| p.as_ref().ok().map(|e| e.id))
            .collect();
        let task = tokio::task::spawn_blocking(move || piece.into_iter().map(verify).collect());
        tasks.push((task, ids));
    }
    let mut out = Vec::with_capacity(tasks.iter().map(|(_, ids)| ids.len()).sum());
    for (task, ids) in tasks {
        match task.await {
            Ok(checked) => out.extend::<Vec<Parsed>>(checked),
            Err(e) => {
                tracing::error!("event check failed: {e}");
                out.extend(ids.into_iter().map(|id| {
                    Err(Answer::Refused {
                        id: id.map(hex::encode).unwrap_or_default(),
                        message: Prefix::Error.reason("could not check the event"),
                    })
                }));
            }
        }
    }
    out
}

/// `OK false` for an event that did not parse, under its `id` as sent (or "").
fn refused(id: Option<&Value>, message: String) -> Answer {
    let id = id.and_then(Value::as_str).unwrap_or("").to_string();
    Answer::Refused { id, message }
}

/// `OK false` for a parsed event.
fn refused_event(ev: &Event, message: String) -> Answer {
    Answer::Refused {
        id: ev.id_hex(),
        message,
    }
}

impl From<Answer> for Pending {
    fn from(a: Answer) -> Self {
        match a {
            Answer::Notice(m) => Pending::Notice(m),
            Answer::Refused { id, message } => Pending::Refused(RelayMessage::Ok {
                id,
                accepted: false,
                message,
            }),
        }
    }
}
