//! The reconciliation and transfer loop. One WebSocket carries the negentropy session and the
//! transfers at once: ids learned in a round are fetched (`REQ`, several in flight) and uploaded
//! (`EVENT`, windowed by `OK`) while later rounds continue.

use super::progress::{Direction, Progress, SyncError};
use super::{FETCH_BATCH, FETCH_IN_FLIGHT, UPLOAD_REFILL, UPLOAD_WINDOW};
use crate::event::wire::{ClientMessage, Prefix};
use crate::event::{Event, Filter};
use crate::negentropy::NegError;
use crate::peer::{PeerError, PeerOptions, RelayConn, RelayMsg};
use crate::store::{NegSession as StoreSession, StoreError};
use crate::store::{SaveOutcome, Store};
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::Instrument;

/// A failed reconciliation step: a broken peer message leaves the sync incomplete, our own
/// set failing is a store error.
fn neg_failed(e: NegError) -> SyncError {
    match e {
        NegError::Malformed(_) => SyncError::Incomplete(e.to_string()),
        NegError::Invalid(m) => SyncError::Invalid(m),
        NegError::Storage(m) => SyncError::Store(StoreError::Engine(m)),
    }
}

/// What to sync.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// ws:// or wss:// relay URL.
    pub peer_url: String,
    /// Which events (NIP-01 filter; `limit` is ignored).
    pub filter: Filter,
    /// Only events at or after this time (combined with the filter's own `since`).
    pub since: Option<u64>,
    /// Which way events move.
    pub direction: Direction,
    /// Negentropy frame size limit in bytes (0 = none, else ≥ 4096); `None` = negotiate from
    /// the relay's NIP-11 `max_message_length` (60 000 when it says nothing).
    pub frame_size_limit: Option<u64>,
    /// Most events to move (fetched + sent): the sync service's policy for the admin (reported
    /// as such, [`SyncError::Capped`]); None = no cap.
    pub max_events: Option<u64>,
    /// Connection options.
    pub peer: PeerOptions,
}

/// A sync job over a store.
pub struct SyncJob {
    store: Arc<dyn Store>,
    req: SyncRequest,
}

struct NegSession {
    sub: String,
    neg: Box<dyn StoreSession>,
    range: (u64, u64),
}

struct State {
    conn: RelayConn,
    p: Progress,
    ranges: Vec<(u64, u64)>,
    session: Option<NegSession>,
    sessions_opened: u64,
    need_q: VecDeque<[u8; 32]>,
    have_q: VecDeque<[u8; 32]>,
    seen: HashSet<[u8; 32]>,
    /// Outstanding `REQ`s: the ids asked for, and the batch's span (closed at `EOSE`).
    fetches: HashMap<String, (HashSet<[u8; 32]>, tracing::Span)>,
    fetch_seq: u64,
    uploads: HashSet<String>,
    /// `OK`s received for uploads (progress is reported every window's worth).
    upload_answers: u64,
    to_save: Vec<Event>,
    challenge: Option<String>,
    /// Id of our AUTH event awaiting its `OK`; nothing new is sent meanwhile.
    auth_pending: Option<String>,
    authed: bool,
    /// The challenge our pending AUTH answered, and how many AUTHs we sent.
    auth_challenge: Option<String>,
    auth_attempts: u32,
    /// Work refused with `auth-required`, resumed once our AUTH is accepted.
    parked: Parked,
    moved: u64,
    /// Ids of refused uploads (up to [`REFUSALS_RECHECKED`]), checked at the end.
    refused: Vec<[u8; 32]>,
}

#[derive(Default)]
struct Parked {
    ranges: Vec<(u64, u64)>,
    need: Vec<[u8; 32]>,
    have: Vec<[u8; 32]>,
}

impl Parked {
    fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.need.is_empty() && self.have.is_empty()
    }
}

const NOW_SLACK: u64 = 366 * 86_400;
/// Refused uploads remembered to be checked against the store at the end of a sync.
const REFUSALS_RECHECKED: usize = 100_000;
/// AUTH events sent before giving up (a relay may rotate its challenge under load).
const MAX_AUTH_ATTEMPTS: u32 = 3;
/// How long to wait for the relay's NIP-11 document when negotiating the frame size.
const NIP11_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl SyncJob {
    /// A job over `store`.
    pub fn new(store: Arc<dyn Store>, req: SyncRequest) -> Result<Self, SyncError> {
        crate::peer::validate_url(&req.peer_url).map_err(|e| SyncError::Invalid(e.to_string()))?;
        if req.frame_size_limit.is_some_and(|l| l != 0 && l < 4096) {
            return Err(SyncError::Invalid(
                "frame size limit must be 0 (none) or at least 4096".into(),
            ));
        }
        Ok(Self { store, req })
    }

    /// Runs to the end, calling `on_progress` after every round and transfer batch. The returned
    /// progress (or the error) is final; everything stored before a failure stays stored.
    pub async fn run(
        mut self,
        mut on_progress: impl FnMut(&Progress) + Send,
    ) -> Result<Progress, SyncError> {
        if self.req.frame_size_limit.is_none() {
            let advertised = crate::peer::max_message_length(
                &self.req.peer_url,
                &self.req.peer,
                NIP11_TIMEOUT.min(self.req.peer.reply_timeout),
            )
            .await;
            let limit = advertised.map_or(super::DEFAULT_FRAME_SIZE_LIMIT, |m| {
                crate::peer::frame_limit_for(m, self.req.peer.max_message_bytes as u64)
            });
            tracing::debug!(?advertised, limit, "negentropy frame size negotiated");
            self.req.frame_size_limit = Some(limit);
        }
        let conn = match RelayConn::connect(&self.req.peer_url, &self.req.peer).await {
            Ok(c) => c,
            Err(e) => {
                let e = SyncError::Connect(e);
                on_progress(&Progress {
                    peer_url: self.req.peer_url.clone(),
                    error: Some(e.to_string()),
                    error_kind: Some(e.kind()),
                    ..Default::default()
                });
                return Err(e);
            }
        };
        let mut filter = self.req.filter.clone();
        filter.limit = None;
        if let Some(s) = self.req.since {
            filter.since = Some(filter.since.map_or(s, |f| f.max(s)));
        }
        let lo = filter.since.unwrap_or(0);
        let hi = filter.until.unwrap_or(u64::MAX);
        let mut st = State {
            conn,
            p: Progress {
                peer_url: self.req.peer_url.clone(),
                ..Default::default()
            },
            ranges: vec![(lo, hi)],
            session: None,
            sessions_opened: 0,
            need_q: VecDeque::new(),
            have_q: VecDeque::new(),
            seen: HashSet::new(),
            fetches: HashMap::new(),
            fetch_seq: 0,
            uploads: HashSet::new(),
            upload_answers: 0,
            to_save: Vec::new(),
            challenge: None,
            auth_pending: None,
            authed: false,
            auth_challenge: None,
            auth_attempts: 0,
            parked: Parked::default(),
            moved: 0,
            refused: Vec::new(),
        };
        let res = self.drive(&mut st, &filter, &mut on_progress).await;
        // Keep what arrived even when the job fails part way.
        let flushed = self.flush(&mut st).await;
        let res = res.and(flushed);
        let res = match res {
            Ok(()) => self.recheck_refusals(&mut st).await,
            Err(e) => Err(e),
        };
        match &res {
            Ok(()) => st.p.mark_complete(),
            Err(e) => {
                st.p.error = Some(e.to_string());
                st.p.error_kind = Some(e.kind());
            }
        }
        report(&mut st, &mut on_progress);
        st.conn.close().await;
        res.map(|()| st.p)
    }

    async fn drive(
        &self,
        st: &mut State,
        filter: &Filter,
        on_progress: &mut (impl FnMut(&Progress) + Send),
    ) -> Result<(), SyncError> {
        let timeout = self.req.peer.reply_timeout;
        loop {
            if st.session.is_none()
                && st.auth_pending.is_none()
                && let Some(range) = st.ranges.pop()
            {
                self.open_session(st, filter, range).await?;
            }
            self.pump(st).await?;
            let idle = st.session.is_none()
                && st.ranges.is_empty()
                && st.need_q.is_empty()
                && st.have_q.is_empty()
                && st.fetches.is_empty()
                && st.uploads.is_empty()
                && st.parked.is_empty()
                && st.auth_pending.is_none();
            if idle {
                return Ok(());
            }
            let msg = match tokio::time::timeout(timeout, st.conn.recv()).await {
                Err(_) => {
                    let what = if st.session.is_some() {
                        "no NEG-MSG reply"
                    } else {
                        "no reply to transfers"
                    };
                    return Err(SyncError::Timeout(format!(
                        "{what} within {}s",
                        timeout.as_secs()
                    )));
                }
                Ok(None) => {
                    return Err(SyncError::Incomplete("relay closed the connection".into()));
                }
                Ok(Some(Err(m))) => return Err(SyncError::Incomplete(m.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            self.handle(st, msg, on_progress).await?;
        }
    }

    async fn open_session(
        &self,
        st: &mut State,
        filter: &Filter,
        range: (u64, u64),
    ) -> Result<(), SyncError> {
        let mut f = filter.clone();
        if range.0 > 0 {
            f.since = Some(range.0);
        }
        if range.1 < u64::MAX {
            f.until = Some(range.1);
        }
        let limit = self
            .req
            .frame_size_limit
            .unwrap_or(super::DEFAULT_FRAME_SIZE_LIMIT);
        // Our own set is not capped: the operator asked for this sync.
        let mut neg = self.store.neg_session(f.clone(), limit, usize::MAX).await?;
        let init = neg.initiate().await.map_err(neg_failed)?;
        st.sessions_opened += 1;
        let sub = format!("orly-neg-{}", st.sessions_opened);
        let open = ClientMessage::NegOpen {
            sub: sub.clone(),
            filter: f.to_value(),
            hex: hex::encode(init),
        };
        send(st, open).await?;
        st.session = Some(NegSession { sub, neg, range });
        Ok(())
    }

    async fn pump(&self, st: &mut State) -> Result<(), SyncError> {
        if st.auth_pending.is_some() {
            // Whatever we send now would be refused again before our AUTH is accepted.
            return Ok(());
        }
        let cap = self.req.max_events.unwrap_or(u64::MAX);
        while st.fetches.len() < FETCH_IN_FLIGHT && !st.need_q.is_empty() && st.moved < cap {
            let n = FETCH_BATCH
                .min(st.need_q.len())
                .min((cap - st.moved) as usize);
            let ids: HashSet<[u8; 32]> = st.need_q.drain(..n).collect();
            st.moved += ids.len() as u64;
            st.fetch_seq += 1;
            let sub = format!("orly-req-{}", st.fetch_seq);
            let hexes: Vec<String> = ids.iter().map(hex::encode).collect();
            let span = tracing::info_span!("fetch_batch", sub = %sub, ids = ids.len(), missing = tracing::field::Empty);
            let req = ClientMessage::Req {
                sub: sub.clone(),
                filters: vec![json!({ "ids": hexes })],
            };
            send(st, req).await?;
            st.fetches.insert(sub, (ids, span));
        }
        while st.uploads.len() < UPLOAD_WINDOW && !st.have_q.is_empty() && st.moved < cap {
            let left = st.have_q.len().min((cap - st.moved) as usize);
            let n = (UPLOAD_WINDOW - st.uploads.len()).min(left);
            // Refill in batches, not one event per OK: each refill is one store read, a
            // round trip when the store is orly-db.
            if n < UPLOAD_REFILL && n < left {
                break;
            }
            let ids: Vec<[u8; 32]> = st.have_q.drain(..n).collect();
            let span = tracing::info_span!("upload_batch", events = ids.len());
            for ev in self.store.get_by_ids(ids).instrument(span).await? {
                st.moved += 1;
                st.uploads.insert(ev.id_hex());
                let v =
                    serde_json::to_value(&ev).map_err(|e| SyncError::Incomplete(e.to_string()))?;
                send(st, ClientMessage::Event(v)).await?;
            }
        }
        if st.moved >= cap
            && (!st.need_q.is_empty() || !st.have_q.is_empty())
            && st.fetches.is_empty()
            && st.uploads.is_empty()
        {
            return Err(SyncError::Capped(cap));
        }
        Ok(())
    }

    async fn handle(
        &self,
        st: &mut State,
        msg: RelayMsg,
        on_progress: &mut (impl FnMut(&Progress) + Send),
    ) -> Result<(), SyncError> {
        match msg {
            RelayMsg::NegMsg { sub, hex } => {
                let Some(mut sess) = st.session.take_if(|s| s.sub == sub) else {
                    return Ok(());
                };
                let bytes = hex::decode(&hex)
                    .map_err(|e| SyncError::Incomplete(format!("bad NEG-MSG hex: {e}")))?;
                crate::negentropy::check_message(&bytes)
                    .map_err(|e| SyncError::Incomplete(format!("bad negentropy message: {e}")))?;
                let round =
                    tracing::info_span!("neg_round", round = st.p.round + 1, bytes = bytes.len());
                let step = sess
                    .neg
                    .next(bytes)
                    .instrument(round)
                    .await
                    .map_err(neg_failed)?;
                st.session = Some(sess);
                st.p.round += 1;
                self.learn(st, step.have, step.need).await?;
                match step.reply {
                    Some(m) => {
                        let hex = hex::encode(m);
                        send(st, ClientMessage::NegMsg { sub, hex }).await?
                    }
                    None => {
                        send(st, ClientMessage::NegClose { sub }).await?;
                        st.session = None;
                    }
                }
                report(st, on_progress);
            }
            RelayMsg::NegErr { sub, reason, max } => {
                let Some(sess) = st.session.take_if(|s| s.sub == sub) else {
                    return Ok(());
                };
                if is_size_refusal(&reason, max) {
                    let (lo, hi) = sess.range;
                    let hi_eff = hi.min(now() + NOW_SLACK).max(lo);
                    if lo >= hi_eff {
                        return Err(SyncError::Refused(format!(
                            "{reason} (cannot split a one-second range)"
                        )));
                    }
                    let mid = lo + (hi_eff - lo) / 2;
                    // Newer half first, older half popped last.
                    st.ranges.push((lo, mid));
                    st.ranges.push((mid + 1, hi));
                    st.p.splits += 1;
                } else if Prefix::AuthRequired.starts(&reason) {
                    self.authenticate(st, &reason).await?;
                    st.parked.ranges.push(sess.range);
                } else {
                    return Err(SyncError::Refused(reason));
                }
            }
            RelayMsg::Closed { sub, message } => {
                if let Some(sess) = st.session.take_if(|s| s.sub == sub) {
                    if Prefix::AuthRequired.starts(&message) {
                        self.authenticate(st, &message).await?;
                        st.parked.ranges.push(sess.range);
                    } else {
                        return Err(SyncError::Refused(message));
                    }
                } else if let Some((ids, _span)) = st.fetches.remove(&sub) {
                    if Prefix::AuthRequired.starts(&message) {
                        self.authenticate(st, &message).await?;
                        st.moved -= ids.len() as u64;
                        st.parked.need.extend(ids);
                    } else {
                        return Err(SyncError::Refused(message));
                    }
                }
            }
            RelayMsg::Notice { message } => {
                if st.session.is_some() {
                    return Err(SyncError::Refused(message));
                }
                tracing::info!(relay = %st.conn.url(), "NOTICE: {message}");
            }
            RelayMsg::Auth { challenge } => {
                // Only the latest challenge counts (NIP-42); answer once, proactively.
                st.challenge = Some(challenge);
                if self.req.peer.auth_keys.is_some() && !st.authed && st.auth_pending.is_none() {
                    self.authenticate(st, "auth").await?;
                }
            }
            RelayMsg::Event { sub, event } => {
                let ev = Event::from_value(event).and_then(|e| e.verify().map(|()| e));
                match ev {
                    Ok(ev)
                        if st
                            .fetches
                            .get_mut(&sub)
                            .is_some_and(|(ids, _)| ids.remove(&ev.id)) =>
                    {
                        st.to_save.push(ev)
                    }
                    _ => st.p.dropped += 1,
                }
                if st.to_save.len() >= 500 {
                    self.flush(st).await?;
                }
            }
            RelayMsg::Eose { sub } => {
                if let Some((missing, span)) = st.fetches.remove(&sub) {
                    span.record("missing", missing.len());
                    // Ids the relay did not deliver free their place under the cap.
                    st.moved -= missing.len() as u64;
                    self.flush(st).await?;
                    report(st, on_progress);
                    let _ = st.conn.send_msg(&ClientMessage::Close { sub }).await;
                }
            }
            RelayMsg::Ok {
                id,
                accepted,
                message,
            } => {
                if st.auth_pending.as_deref() == Some(id.as_str()) {
                    st.auth_pending = None;
                    if !accepted {
                        // A busy relay may have replaced the challenge we answered (NIP-42: only
                        // the latest is valid); answer the latest, a bounded number of times.
                        let newer = st.challenge.is_some() && st.challenge != st.auth_challenge;
                        if newer && st.auth_attempts < MAX_AUTH_ATTEMPTS {
                            self.authenticate(st, &message).await?;
                            return Ok(());
                        }
                        return Err(SyncError::Auth(format!(
                            "relay refused our AUTH: {message}"
                        )));
                    }
                    st.authed = true;
                    let parked = std::mem::take(&mut st.parked);
                    st.ranges.extend(parked.ranges);
                    st.need_q.extend(parked.need);
                    st.have_q.extend(parked.have);
                } else if st.uploads.remove(&id) {
                    if Prefix::AuthRequired.starts(&message) && !accepted {
                        self.authenticate(st, &message).await?;
                        if let Ok(raw) = crate::event::decode_hex32(&id) {
                            st.moved -= 1;
                            st.parked.have.push(raw);
                        }
                        return Ok(());
                    }
                    st.upload_answers += 1;
                    if Prefix::Duplicate.starts(&message) {
                        // Another sync sent it first, or the relay holds a newer version:
                        // not new there, and not a difference either.
                        st.p.already_had += 1;
                    } else if accepted {
                        st.p.sent += 1;
                    } else {
                        st.p.rejected += 1;
                        if st.refused.len() < REFUSALS_RECHECKED
                            && let Ok(raw) = crate::event::decode_hex32(&id)
                        {
                            st.refused.push(raw);
                        }
                        st.p.last_refusal = Some(message);
                    }
                    if st.uploads.is_empty()
                        || st.upload_answers.is_multiple_of(UPLOAD_WINDOW as u64)
                    {
                        report(st, on_progress);
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues newly learned differences (each id once), skipping ids the store already knows
    /// as superseded or deleted so repeated syncs converge to zero work.
    async fn learn(
        &self,
        st: &mut State,
        have: Vec<[u8; 32]>,
        need: Vec<[u8; 32]>,
    ) -> Result<(), SyncError> {
        let dir = self.req.direction;
        for id in have {
            if st.seen.insert(id) {
                st.p.have += 1;
                if dir.uploads() {
                    st.have_q.push_back(id);
                }
            }
        }
        let fresh: Vec<[u8; 32]> = need.into_iter().filter(|id| st.seen.insert(*id)).collect();
        st.p.need += fresh.len() as u64;
        if dir.fetches() && !fresh.is_empty() {
            let known = self.store.known(fresh.clone()).await?;
            for (id, k) in fresh.into_iter().zip(known) {
                if k {
                    st.p.skipped += 1;
                } else {
                    st.need_q.push_back(id);
                }
            }
        }
        Ok(())
    }

    async fn authenticate(&self, st: &mut State, reason: &str) -> Result<(), SyncError> {
        let Some(keys) = &self.req.peer.auth_keys else {
            return Err(SyncError::Auth(format!(
                "{reason} (no key: use --auth-key-file or ORLY_SYNC_AUTH_KEY)"
            )));
        };
        if st.auth_pending.is_some() {
            return Ok(());
        }
        if st.authed {
            return Err(SyncError::Auth(format!(
                "{reason} (after a successful AUTH)"
            )));
        }
        let Some(challenge) = st.challenge.clone() else {
            return Err(SyncError::Auth(format!(
                "{reason} (relay sent no AUTH challenge)"
            )));
        };
        st.auth_attempts += 1;
        st.auth_pending = Some(
            st.conn
                .authenticate(keys, &challenge)
                .await
                .map_err(disconnected)?,
        );
        st.auth_challenge = Some(challenge);
        Ok(())
    }

    /// A refused upload whose event is gone from our store by the end of the sync was
    /// replaced by a newer version or deleted by its author — typically by what this sync
    /// fetched (the relay refused the old version because it holds the new one). The sides
    /// agree on it, so it counts as `already_had`, not as a difference. Past
    /// [`REFUSALS_RECHECKED`] refusals the rest stay counted as differences.
    async fn recheck_refusals(&self, st: &mut State) -> Result<(), SyncError> {
        if st.refused.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut st.refused);
        let asked = ids.len() as u64;
        let held = self.store.get_by_ids(ids).await?.len() as u64;
        let gone = asked.saturating_sub(held);
        st.p.rejected -= gone;
        st.p.already_had += gone;
        if st.p.rejected == 0 {
            st.p.last_refusal = None;
        }
        Ok(())
    }

    async fn flush(&self, st: &mut State) -> Result<(), SyncError> {
        if st.to_save.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut st.to_save);
        let outcomes = self.store.save(batch).await?;
        for o in outcomes {
            // Only what this save added counts as fetched, so syncs running at once into one
            // store add up to what it gained; an event another sync stored first was moved
            // for nothing.
            match o {
                SaveOutcome::Accepted | SaveOutcome::Replaced => st.p.fetched += 1,
                SaveOutcome::Duplicate => st.p.already_had += 1,
                SaveOutcome::Superseded | SaveOutcome::Deleted | SaveOutcome::Ephemeral => {
                    st.p.skipped += 1
                }
            }
        }
        Ok(())
    }
}

/// Hands the counters, with the bytes moved so far, to the caller.
fn report(st: &mut State, on_progress: &mut (impl FnMut(&Progress) + Send)) {
    st.p.bytes_sent = st.conn.bytes.sent.load(Ordering::Relaxed);
    st.p.bytes_received = st.conn.bytes.received.load(Ordering::Relaxed);
    on_progress(&st.p);
}

async fn send(st: &State, m: ClientMessage) -> Result<(), SyncError> {
    st.conn.send_msg(&m).await.map_err(disconnected)
}

fn disconnected(e: PeerError) -> SyncError {
    SyncError::Incomplete(e.to_string())
}

/// `blocked:` refusals about size (a 4th element with the maximum, or words saying so) are split;
/// other refusals end the job.
fn is_size_refusal(reason: &str, max: Option<u64>) -> bool {
    let r = reason.to_ascii_lowercase();
    Prefix::Blocked.starts(&r)
        && (max.is_some()
            || [
                "too many",
                "too big",
                "too large",
                "maximum",
                "max ",
                "limit",
                "size",
            ]
            .iter()
            .any(|w| r.contains(w)))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn size_refusals() {
        assert!(super::is_size_refusal("blocked: too many records", None));
        assert!(super::is_size_refusal("blocked: query", Some(1000)));
        assert!(!super::is_size_refusal("blocked: you are banned", None));
        assert!(!super::is_size_refusal("error: too many", None));
    }
}
