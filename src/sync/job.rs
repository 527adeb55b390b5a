//! The reconciliation and transfer loop. One WebSocket carries the negentropy session and the
//! transfers at once: ids learned in a round are fetched (`REQ`, several in flight) and uploaded
//! (`EVENT`, windowed by `OK`) while later rounds continue. The parts live beside it: the time
//! ranges (`ranges`), the transfers under the event cap (`transfers`), NIP-42 (`nip42`); this
//! file drives them and answers each relay message in one small function.

use super::nip42::{AuthOk, Nip42};
use super::progress::{Progress, SyncError};
use super::ranges::{self, Range, Ranges};
use super::request::SyncRequest;
use super::transfers::{Transfers, UploadOk};
use crate::event::Filter;
use crate::event::wire::Prefix;
use crate::negentropy::{FrameLimit, NegError};
use crate::peer::{PeerError, RelayConn, RelayMsg};
use crate::store::{NegSession as StoreSession, Store, StoreError};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::Instrument;

/// How long to wait for the relay's NIP-11 document when negotiating the frame size.
const NIP11_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A failed reconciliation step: a broken peer message leaves the sync incomplete, our own
/// set failing is a store error.
fn neg_failed(e: NegError) -> SyncError {
    match e {
        NegError::Malformed(_) => SyncError::Incomplete(e.to_string()),
        NegError::Invalid(m) => SyncError::Invalid(m),
        NegError::Storage(m) => SyncError::Store(StoreError::Engine(m)),
    }
}

fn disconnected(e: PeerError) -> SyncError {
    SyncError::Incomplete(e.to_string())
}

/// A sync job over a store.
pub struct SyncJob {
    store: Arc<dyn Store>,
    req: SyncRequest,
}

/// The open negentropy session (one at a time) and the range it covers.
struct NegSession {
    sub: String,
    neg: Box<dyn StoreSession>,
    range: Range,
}

struct State {
    conn: RelayConn,
    p: Progress,
    ranges: Ranges,
    session: Option<NegSession>,
    sessions_opened: u64,
    /// Sessions being dropped off this task (see [`crate::store::retire`]).
    retired: Vec<tokio::task::JoinHandle<()>>,
    transfers: Transfers,
    auth: Nip42,
}

impl State {
    /// Nothing left to reconcile, move or wait for.
    fn is_idle(&self) -> bool {
        self.session.is_none()
            && self.ranges.is_empty()
            && self.transfers.is_idle()
            && self.auth.is_idle()
    }

    /// Hands the counters, with the bytes moved so far, to the caller.
    fn report(&mut self, on_progress: &mut (impl FnMut(&Progress) + Send)) {
        self.p.bytes_sent = self.conn.bytes.sent.load(Ordering::Relaxed);
        self.p.bytes_received = self.conn.bytes.received.load(Ordering::Relaxed);
        on_progress(&self.p);
    }

    /// Answers the relay's demand for NIP-42 AUTH (`reason`), unless ours is on its way.
    async fn authenticate(&mut self, reason: &str) -> Result<(), SyncError> {
        if let Some((keys, challenge)) = self.auth.answer(reason)? {
            let id = self
                .conn
                .authenticate(&keys, &challenge)
                .await
                .map_err(disconnected)?;
            self.auth.sent(id, challenge);
        }
        Ok(())
    }
}

impl SyncJob {
    /// A job over `store`.
    pub fn new(store: Arc<dyn Store>, req: SyncRequest) -> Self {
        Self { store, req }
    }

    /// Runs to the end, calling `on_progress` after every round and transfer batch. The returned
    /// progress (or the error) is final; everything stored before a failure stays stored.
    pub async fn run(
        self,
        mut on_progress: impl FnMut(&Progress) + Send,
    ) -> Result<Progress, SyncError> {
        let frame_limit = self.frame_limit().await;
        let url = self.req.peer_url();
        let conn = match RelayConn::connect(url, self.req.peer_options()).await {
            Ok(c) => c,
            Err(e) => {
                let e = SyncError::Connect(e);
                on_progress(&Progress {
                    peer_url: url.to_string(),
                    error: Some(e.to_string()),
                    error_kind: Some(e.kind()),
                    ..Default::default()
                });
                return Err(e);
            }
        };
        let filter = self.req.effective_filter();
        let mut st = State {
            conn,
            p: Progress {
                peer_url: url.to_string(),
                ..Default::default()
            },
            ranges: Ranges::of(&filter),
            session: None,
            sessions_opened: 0,
            retired: Vec::new(),
            transfers: Transfers::new(self.req.direction(), self.req.max_events()),
            auth: Nip42::new(self.req.peer_options().auth_keys.clone()),
        };
        let res = self
            .drive(&mut st, &filter, frame_limit, &mut on_progress)
            .await;
        // The sessions' snapshots are released before the caller closes the store.
        for t in st.retired.drain(..) {
            let _ = t.await;
        }
        // Keep what arrived even when the job fails part way.
        let settled = st.transfers.settle(&*self.store, &mut st.p).await;
        let flushed = match settled {
            Ok(()) => st.transfers.flush(&*self.store, &mut st.p).await,
            Err(e) => Err(e),
        };
        let res = res.and(flushed);
        let res = match res {
            Ok(()) => st.transfers.recheck_refusals(&*self.store, &mut st.p).await,
            Err(e) => Err(e),
        };
        match &res {
            Ok(()) => st.p.mark_complete(),
            Err(e) => {
                st.p.error = Some(e.to_string());
                st.p.error_kind = Some(e.kind());
            }
        }
        st.report(&mut on_progress);
        st.conn.close().await;
        res.map(|()| st.p)
    }

    /// The request's frame limit, else one that fits the relay's NIP-11 `max_message_length`.
    async fn frame_limit(&self) -> FrameLimit {
        if let Some(l) = self.req.frame_limit() {
            return l;
        }
        let peer = self.req.peer_options();
        let advertised = crate::peer::max_message_length(
            self.req.peer_url(),
            peer,
            NIP11_TIMEOUT.min(peer.reply_timeout),
        )
        .await;
        let limit = advertised.map_or(super::DEFAULT_FRAME_SIZE_LIMIT, |m| {
            crate::peer::frame_limit_for(m, peer.max_message_bytes as u64)
        });
        tracing::debug!(?advertised, %limit, "negentropy frame size negotiated");
        limit
    }

    async fn drive(
        &self,
        st: &mut State,
        filter: &Filter,
        frame_limit: FrameLimit,
        on_progress: &mut (impl FnMut(&Progress) + Send),
    ) -> Result<(), SyncError> {
        let timeout = self.req.peer_options().reply_timeout;
        loop {
            if st.session.is_none()
                && !st.auth.is_pending()
                && let Some(range) = st.ranges.pop()
            {
                self.open_session(st, filter, frame_limit, range).await?;
            }
            if !st.auth.is_pending() {
                // Whatever we sent while our AUTH is pending would be refused again.
                st.transfers.pump(&st.conn, &*self.store, &mut st.p).await?;
            }
            if st.is_idle() {
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
        frame_limit: FrameLimit,
        range: Range,
    ) -> Result<(), SyncError> {
        let f = ranges::filter_for(filter, range);
        // Our own set is not capped: the operator asked for this sync.
        let mut neg = self
            .store
            .neg_session(f.clone(), frame_limit.get(), usize::MAX)
            .await?;
        let init = neg.initiate().await.map_err(neg_failed)?;
        st.sessions_opened += 1;
        let sub = format!("orly-neg-{}", st.sessions_opened);
        st.conn
            .neg_open(&sub, &f, &init)
            .await
            .map_err(disconnected)?;
        st.session = Some(NegSession { sub, neg, range });
        Ok(())
    }

    /// One relay message.
    async fn handle(
        &self,
        st: &mut State,
        msg: RelayMsg,
        on_progress: &mut (impl FnMut(&Progress) + Send),
    ) -> Result<(), SyncError> {
        match msg {
            RelayMsg::NegMsg { sub, hex } => self.on_neg_msg(st, sub, &hex, on_progress).await,
            RelayMsg::NegErr { sub, reason, max } => on_neg_err(st, &sub, &reason, max).await,
            RelayMsg::Closed { sub, message } => on_closed(st, &*self.store, &sub, message).await,
            RelayMsg::Notice { message } => {
                if st.session.is_some() {
                    return Err(SyncError::Refused(message));
                }
                tracing::info!(relay = %st.conn.url(), "NOTICE: {message}");
                Ok(())
            }
            RelayMsg::Auth { challenge } => {
                // Only the latest challenge counts (NIP-42); answer once, proactively.
                if st.auth.on_challenge(challenge) {
                    st.authenticate("auth").await?;
                }
                Ok(())
            }
            RelayMsg::Event { sub, event } => self.on_event(st, &sub, event).await,
            RelayMsg::Eose { sub } => self.on_eose(st, sub, on_progress).await,
            RelayMsg::Ok {
                id,
                accepted,
                message,
            } => on_ok(st, &id, accepted, message, on_progress).await,
        }
    }

    async fn on_neg_msg(
        &self,
        st: &mut State,
        sub: String,
        hex: &str,
        on_progress: &mut (impl FnMut(&Progress) + Send),
    ) -> Result<(), SyncError> {
        let Some(mut sess) = st.session.take_if(|s| s.sub == sub) else {
            return Ok(());
        };
        let bytes = crate::negentropy::from_hex(hex)
            .map_err(|e| SyncError::Incomplete(format!("bad NEG-MSG hex: {e}")))?;
        crate::negentropy::check_message(&bytes)
            .map_err(|e| SyncError::Incomplete(format!("bad negentropy message: {e}")))?;
        let round = tracing::info_span!("neg_round", round = st.p.round + 1, bytes = bytes.len());
        let step = sess
            .neg
            .next(bytes)
            .instrument(round)
            .await
            .map_err(neg_failed)?;
        st.session = Some(sess);
        st.p.round += 1;
        st.transfers
            .learn(&*self.store, &mut st.p, step.have, step.need)
            .await?;
        match step.reply {
            Some(m) => st.conn.neg_msg(&sub, &m).await.map_err(disconnected)?,
            None => {
                st.conn.neg_close(&sub).await.map_err(disconnected)?;
                if let Some(done) = st.session.take() {
                    st.retired.push(crate::store::retire(done));
                }
            }
        }
        st.report(on_progress);
        Ok(())
    }

    async fn on_event(
        &self,
        st: &mut State,
        sub: &str,
        event: serde_json::Value,
    ) -> Result<(), SyncError> {
        st.transfers.receive(sub.to_string(), event);
        Ok(())
    }

    async fn on_eose(
        &self,
        st: &mut State,
        sub: String,
        on_progress: &mut (impl FnMut(&Progress) + Send),
    ) -> Result<(), SyncError> {
        // Its events first: those not delivered are counted by what is left of the fetch.
        st.transfers.settle(&*self.store, &mut st.p).await?;
        if st.transfers.fetch_done(&sub, &mut st.p) {
            if st.transfers.fetching_done() {
                st.transfers.flush(&*self.store, &mut st.p).await?;
            }
            st.report(on_progress);
            let _ = st.conn.close_sub(&sub).await;
        }
        Ok(())
    }
}

/// `NEG-ERR`: a range too large is split, `auth-required` parks it until we authenticate,
/// anything else ends the job.
async fn on_neg_err(
    st: &mut State,
    sub: &str,
    reason: &str,
    max: Option<u64>,
) -> Result<(), SyncError> {
    let Some(sess) = st.session.take_if(|s| s.sub == sub) else {
        return Ok(());
    };
    if ranges::is_size_refusal(reason, max) {
        st.ranges.split(sess.range, reason, now())?;
        st.p.splits += 1;
    } else if Prefix::AuthRequired.starts(reason) {
        st.authenticate(reason).await?;
        st.auth.parked().ranges.push(sess.range);
    } else {
        return Err(SyncError::Refused(reason.to_string()));
    }
    Ok(())
}

/// `CLOSED` of our session or of a fetch: `auth-required` parks it, anything else ends the job.
async fn on_closed(
    st: &mut State,
    store: &dyn Store,
    sub: &str,
    message: String,
) -> Result<(), SyncError> {
    // What the fetch delivered before it was closed counts as delivered.
    st.transfers.settle(store, &mut st.p).await?;
    if let Some(sess) = st.session.take_if(|s| s.sub == sub) {
        if !Prefix::AuthRequired.starts(&message) {
            return Err(SyncError::Refused(message));
        }
        st.authenticate(&message).await?;
        st.auth.parked().ranges.push(sess.range);
    } else if let Some(ids) = st.transfers.fetch_closed(sub) {
        if !Prefix::AuthRequired.starts(&message) {
            return Err(SyncError::Refused(message));
        }
        st.authenticate(&message).await?;
        st.auth.parked().need.extend(ids);
    }
    Ok(())
}

/// `OK`: the answer to our AUTH, or to an upload.
async fn on_ok(
    st: &mut State,
    id: &str,
    accepted: bool,
    message: String,
    on_progress: &mut (impl FnMut(&Progress) + Send),
) -> Result<(), SyncError> {
    match st.auth.on_ok(id, accepted, &message)? {
        AuthOk::Accepted(parked) => {
            st.ranges.extend(parked.ranges);
            st.transfers.resume(parked.need, parked.have);
            return Ok(());
        }
        AuthOk::Retry => return st.authenticate(&message).await,
        AuthOk::NotOurs => {}
    }
    match st
        .transfers
        .upload_answered(&mut st.p, id, accepted, message)
    {
        UploadOk::NotOurs => {}
        UploadOk::NeedsAuth { id, reason } => {
            st.authenticate(&reason).await?;
            st.auth.parked().have.extend(id);
        }
        UploadOk::Counted { report } => {
            if report {
                st.report(on_progress);
            }
        }
    }
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
