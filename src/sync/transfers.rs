//! Transfers: the ids learned by reconciliation, fetched (`REQ` by ids, several in flight) and
//! uploaded (`EVENT`, windowed by `OK`), under the job's event cap. The cap is one
//! [`EventCap`]: a place is taken when an event is asked for or sent, and given back when the
//! relay does not deliver it or refuses it until we authenticate.

use super::progress::{Direction, Progress, SyncError};
use super::{FETCH_BATCH, FETCH_IN_FLIGHT, UPLOAD_REFILL, UPLOAD_WINDOW};
use crate::event::Event;
use crate::event::wire::Prefix;
use crate::peer::{PeerError, RelayConn};
use crate::store::{SaveOutcome, Store};
use std::collections::{HashMap, HashSet, VecDeque};
use tracing::Instrument;

/// Refused uploads remembered to be checked against the store at the end of a sync.
const REFUSALS_RECHECKED: usize = 100_000;
/// Fetched events kept before they are saved in one batch (the rest are saved when no fetch
/// is left in flight, or at the end).
const SAVE_BATCH: usize = 500;
/// Received events verified together, on the blocking pool, while the sync goes on.
const VERIFY_BATCH: usize = 25;

/// Events as received on a subscription, waiting for their signature check.
type Unverified = Vec<(String, serde_json::Value)>;
/// Events checked: each valid one, or `None`, by subscription.
type Verified = Vec<(String, Option<Event>)>;

/// Most events a job may move (fetched + sent), and how many it has moved or has in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EventCap {
    limit: u64,
    moved: u64,
}

impl EventCap {
    /// At most `limit` events; `None`: no cap.
    pub(super) fn new(limit: Option<u64>) -> Self {
        Self {
            limit: limit.unwrap_or(u64::MAX),
            moved: 0,
        }
    }

    /// Events that may still move.
    pub(super) fn room(&self) -> usize {
        usize::try_from(self.limit - self.moved).unwrap_or(usize::MAX)
    }

    /// No more may move.
    pub(super) fn reached(&self) -> bool {
        self.moved >= self.limit
    }

    /// `n` events move (at most [`EventCap::room`]).
    fn take(&mut self, n: usize) {
        debug_assert!(n <= self.room());
        self.moved += n as u64;
    }

    /// `n` events taken did not move after all.
    fn give_back(&mut self, n: usize) {
        self.moved = self.moved.saturating_sub(n as u64);
    }

    /// The cap, as reported when it stops a job.
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }
}

/// One outstanding `REQ`: the ids asked for and not yet delivered, and the batch's span
/// (closed at `EOSE`).
struct Fetch {
    ids: HashSet<[u8; 32]>,
    span: tracing::Span,
}

/// What an `OK` meant for our uploads.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum UploadOk {
    /// Not the answer to one of our uploads.
    NotOurs,
    /// Refused until we authenticate, for `reason`: the event's id, to upload again after
    /// AUTH (its place under the cap is given back).
    NeedsAuth {
        /// The event (`None` if the relay's id is not one).
        id: Option<[u8; 32]>,
        /// The relay's reason.
        reason: String,
    },
    /// Counted; `report` when the window's worth of answers (or the last) came in.
    Counted {
        /// Time to report progress.
        report: bool,
    },
}

/// The transfer state of one sync.
pub(super) struct Transfers {
    direction: Direction,
    /// Every id learned, so each is queued once.
    seen: HashSet<[u8; 32]>,
    need: VecDeque<[u8; 32]>,
    have: VecDeque<[u8; 32]>,
    fetches: HashMap<String, Fetch>,
    fetch_seq: u64,
    uploads: HashSet<String>,
    /// `OK`s received for uploads (progress is reported every window's worth).
    upload_answers: u64,
    to_save: Vec<Event>,
    /// Received events not sent to be verified yet, and the batches being verified (in the
    /// order received).
    unverified: Unverified,
    verifying: VecDeque<tokio::task::JoinHandle<Verified>>,
    /// Ids of refused uploads (up to [`REFUSALS_RECHECKED`]), checked at the end.
    refused: Vec<[u8; 32]>,
    cap: EventCap,
}

fn disconnected(e: PeerError) -> SyncError {
    SyncError::Incomplete(e.to_string())
}

impl Transfers {
    /// Transfers moving events `direction`, at most `max_events` of them.
    pub(super) fn new(direction: Direction, max_events: Option<u64>) -> Self {
        Self {
            direction,
            seen: HashSet::new(),
            need: VecDeque::new(),
            have: VecDeque::new(),
            fetches: HashMap::new(),
            fetch_seq: 0,
            uploads: HashSet::new(),
            upload_answers: 0,
            to_save: Vec::new(),
            unverified: Vec::new(),
            verifying: VecDeque::new(),
            refused: Vec::new(),
            cap: EventCap::new(max_events),
        }
    }

    /// Nothing queued or in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.unverified.is_empty()
            && self.verifying.is_empty()
            && self.need.is_empty()
            && self.have.is_empty()
            && self.fetches.is_empty()
            && self.uploads.is_empty()
    }

    /// Queues newly learned differences (each id once), skipping ids the store already knows
    /// as superseded or deleted so repeated syncs converge to zero work.
    pub(super) async fn learn(
        &mut self,
        store: &dyn Store,
        p: &mut Progress,
        have: Vec<[u8; 32]>,
        need: Vec<[u8; 32]>,
    ) -> Result<(), SyncError> {
        for id in have {
            if self.seen.insert(id) {
                p.have += 1;
                if self.direction.uploads() {
                    self.have.push_back(id);
                }
            }
        }
        let fresh: Vec<[u8; 32]> = need
            .into_iter()
            .filter(|id| self.seen.insert(*id))
            .collect();
        p.need += fresh.len() as u64;
        if self.direction.fetches() && !fresh.is_empty() {
            let known = store.known(fresh.clone()).await?;
            for (id, k) in fresh.into_iter().zip(known) {
                if k {
                    p.skipped += 1;
                } else {
                    self.need.push_back(id);
                }
            }
        }
        Ok(())
    }

    /// Work parked until our AUTH was accepted, queued again.
    pub(super) fn resume(&mut self, need: Vec<[u8; 32]>, have: Vec<[u8; 32]>) {
        self.need.extend(need);
        self.have.extend(have);
    }

    /// Sends what the windows allow: `REQ`s of [`FETCH_BATCH`] ids, [`FETCH_IN_FLIGHT`] at
    /// once, and uploads up to [`UPLOAD_WINDOW`] unanswered. Fails with
    /// [`SyncError::Capped`] once the cap is reached with differences left to move.
    pub(super) async fn pump(
        &mut self,
        conn: &RelayConn,
        store: &dyn Store,
        p: &mut Progress,
    ) -> Result<(), SyncError> {
        while self.fetches.len() < FETCH_IN_FLIGHT && !self.need.is_empty() && !self.cap.reached() {
            let n = FETCH_BATCH.min(self.need.len()).min(self.cap.room());
            let ids: HashSet<[u8; 32]> = self.need.drain(..n).collect();
            self.cap.take(ids.len());
            self.fetch_seq += 1;
            let sub = format!("orly-req-{}", self.fetch_seq);
            let span = tracing::info_span!("fetch_batch", sub = %sub, ids = ids.len(), missing = tracing::field::Empty);
            conn.req_ids(&sub, &ids).await.map_err(disconnected)?;
            self.fetches.insert(sub, Fetch { ids, span });
        }
        while self.uploads.len() < UPLOAD_WINDOW && !self.have.is_empty() && !self.cap.reached() {
            let left = self.have.len().min(self.cap.room());
            let n = (UPLOAD_WINDOW - self.uploads.len()).min(left);
            // Refill in batches, not one event per OK: each refill is one store read, a
            // round trip when the store is orly-db.
            if n < UPLOAD_REFILL && n < left {
                break;
            }
            let ids: Vec<[u8; 32]> = self.have.drain(..n).collect();
            let asked = ids.len() as u64;
            let span = tracing::info_span!("upload_batch", events = ids.len());
            let found = store.get_by_ids(ids).instrument(span).await?;
            // Gone from the store since the reconciliation: replaced or deleted here by another
            // sync or writer. Nothing to upload; the sides agree on them as on a refused upload
            // of a replaced event (see `recheck_refusals`).
            p.already_had += asked.saturating_sub(found.len() as u64);
            for ev in found {
                self.cap.take(1);
                self.uploads.insert(ev.id_hex());
                conn.publish(&ev).await.map_err(disconnected)?;
            }
        }
        if self.cap.reached()
            && (!self.need.is_empty() || !self.have.is_empty())
            && self.is_idle_in_flight()
        {
            return Err(SyncError::Capped(self.cap.limit()));
        }
        Ok(())
    }

    fn is_idle_in_flight(&self) -> bool {
        self.fetches.is_empty() && self.uploads.is_empty()
    }

    /// An `EVENT` received on subscription `sub`. Its id and signature are checked with
    /// others on the blocking pool (a BIP-340 check costs ~45 µs, the largest part of
    /// receiving an event) while the sync goes on; [`Transfers::settle`] takes the results.
    pub(super) fn receive(&mut self, sub: String, event: serde_json::Value) {
        self.unverified.push((sub, event));
        if self.unverified.len() >= VERIFY_BATCH {
            self.verify_queued();
        }
    }

    fn verify_queued(&mut self) {
        if self.unverified.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.unverified);
        self.verifying
            .push_back(tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|(sub, v)| {
                        let ev = Event::from_value(v).and_then(|e| e.verify().map(|()| e));
                        (sub, ev.ok())
                    })
                    .collect()
            }));
    }

    /// Waits for every event received so far to be checked, keeping those our fetches asked
    /// for and counting the rest as dropped (invalid, or not asked for); then saves them if a
    /// batch is due. Called before a fetch ends (`EOSE`, `CLOSED`) and at the end.
    pub(super) async fn settle(
        &mut self,
        store: &dyn Store,
        p: &mut Progress,
    ) -> Result<(), SyncError> {
        self.verify_queued();
        while let Some(batch) = self.verifying.pop_front() {
            let checked = batch
                .await
                .map_err(|e| SyncError::Incomplete(format!("event check failed: {e}")))?;
            for (sub, ev) in checked {
                if !ev.is_some_and(|ev| self.take_event(&sub, ev)) {
                    p.dropped += 1;
                }
            }
        }
        if self.save_due() {
            self.flush(store, p).await?;
        }
        Ok(())
    }

    /// No fetch is in flight or queued.
    pub(super) fn fetching_done(&self) -> bool {
        self.fetches.is_empty() && self.need.is_empty()
    }

    /// An `EVENT` on subscription `sub`, verified: kept when one of our fetches asked for it
    /// (and had not got it yet), else dropped (`false`).
    pub(super) fn take_event(&mut self, sub: &str, ev: Event) -> bool {
        let asked = self
            .fetches
            .get_mut(sub)
            .is_some_and(|f| f.ids.remove(&ev.id));
        if asked {
            self.to_save.push(ev);
        }
        asked
    }

    /// Enough fetched events wait to be saved in one batch.
    fn save_due(&self) -> bool {
        self.to_save.len() >= SAVE_BATCH
    }

    /// `EOSE` on `sub`: whether it was one of our fetches, now done. The ids it did not
    /// deliver give their places under the cap back.
    pub(super) fn fetch_done(&mut self, sub: &str, p: &mut Progress) -> bool {
        let Some(f) = self.fetches.remove(sub) else {
            return false;
        };
        f.span.record("missing", f.ids.len());
        p.undelivered += f.ids.len() as u64;
        self.cap.give_back(f.ids.len());
        true
    }

    /// `CLOSED` on `sub`: the ids of our fetch it ended (their places under the cap given
    /// back), or `None` when it was not one of ours.
    pub(super) fn fetch_closed(&mut self, sub: &str) -> Option<Vec<[u8; 32]>> {
        let f = self.fetches.remove(sub)?;
        self.cap.give_back(f.ids.len());
        Some(f.ids.into_iter().collect())
    }

    /// An `OK` for event `id`, counted into `p` when it answers one of our uploads.
    pub(super) fn upload_answered(
        &mut self,
        p: &mut Progress,
        id: &str,
        accepted: bool,
        message: String,
    ) -> UploadOk {
        if !self.uploads.remove(id) {
            return UploadOk::NotOurs;
        }
        if Prefix::AuthRequired.starts(&message) && !accepted {
            let raw = crate::event::decode_hex32(id).ok();
            if raw.is_some() {
                self.cap.give_back(1);
            }
            return UploadOk::NeedsAuth {
                id: raw,
                reason: message,
            };
        }
        self.upload_answers += 1;
        if Prefix::Duplicate.starts(&message) {
            // Another sync sent it first, or the relay holds a newer version: not new there,
            // and not a difference either.
            p.already_had += 1;
        } else if accepted {
            p.sent += 1;
        } else {
            p.rejected += 1;
            if self.refused.len() < REFUSALS_RECHECKED
                && let Ok(raw) = crate::event::decode_hex32(id)
            {
                self.refused.push(raw);
            }
            p.last_refusal = Some(message);
        }
        UploadOk::Counted {
            report: self.uploads.is_empty()
                || self.upload_answers.is_multiple_of(UPLOAD_WINDOW as u64),
        }
    }

    /// Saves the fetched events waiting, counting each by what the save did.
    pub(super) async fn flush(
        &mut self,
        store: &dyn Store,
        p: &mut Progress,
    ) -> Result<(), SyncError> {
        if self.to_save.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.to_save);
        let outcomes = store.save(batch).await?;
        for o in outcomes {
            // Only what this save added counts as fetched, so syncs running at once into one
            // store add up to what it gained; an event another sync stored first was moved
            // for nothing.
            match o {
                SaveOutcome::Accepted | SaveOutcome::Replaced => p.fetched += 1,
                SaveOutcome::Duplicate => p.already_had += 1,
                SaveOutcome::Superseded | SaveOutcome::Deleted | SaveOutcome::Ephemeral => {
                    p.skipped += 1
                }
            }
        }
        Ok(())
    }

    /// A refused upload whose event is gone from our store by the end of the sync was
    /// replaced by a newer version or deleted by its author — typically by what this sync
    /// fetched (the relay refused the old version because it holds the new one). The sides
    /// agree on it, so it counts as `already_had`, not as a difference. Past
    /// [`REFUSALS_RECHECKED`] refusals the rest stay counted as differences.
    pub(super) async fn recheck_refusals(
        &mut self,
        store: &dyn Store,
        p: &mut Progress,
    ) -> Result<(), SyncError> {
        if self.refused.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut self.refused);
        let asked = ids.len() as u64;
        let held = store.get_by_ids(ids).await?.len() as u64;
        let gone = asked.saturating_sub(held);
        p.rejected -= gone;
        p.already_had += gone;
        if p.rejected == 0 {
            p.last_refusal = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_what_moves_and_takes_back_what_did_not() {
        let mut cap = EventCap::new(Some(10));
        assert_eq!((cap.room(), cap.reached(), cap.limit()), (10, false, 10));
        cap.take(10);
        assert!(cap.reached());
        cap.give_back(3);
        assert_eq!((cap.room(), cap.reached()), (3, false));
        let none = EventCap::new(None);
        assert_eq!((none.limit(), none.reached()), (u64::MAX, false));
        assert!(none.room() >= usize::MAX >> 1);
    }

    fn fetching(t: &mut Transfers, sub: &str, ids: &[[u8; 32]]) {
        t.cap.take(ids.len());
        let f = Fetch {
            ids: ids.iter().copied().collect(),
            span: tracing::Span::none(),
        };
        t.fetches.insert(sub.into(), f);
    }

    #[test]
    fn undelivered_and_refused_fetches_free_their_places() {
        let mut t = Transfers::new(Direction::Down, Some(3));
        fetching(&mut t, "a", &[[1; 32], [2; 32]]);
        fetching(&mut t, "b", &[[3; 32]]);
        assert!(t.cap.reached());
        let mut p = Progress::default();
        assert!(!t.fetch_done("unknown", &mut p));
        assert!(t.fetch_done("a", &mut p), "EOSE: both ids undelivered");
        assert_eq!(t.cap.room(), 2);
        assert_eq!(p.undelivered, 2, "counted");
        assert!(
            p.differences().is_empty(),
            "not a difference: mostly replaced or deleted at the relay meanwhile"
        );
        assert_eq!(t.fetch_closed("b"), Some(vec![[3; 32]]));
        assert_eq!(t.cap.room(), 3);
        assert_eq!(t.fetch_closed("b"), None);
        assert!(t.is_idle());
    }

    #[test]
    fn upload_answers_are_counted_by_their_prefix() {
        let mut t = Transfers::new(Direction::Up, Some(4));
        let ids: Vec<String> = (1..=4u8).map(|b| hex::encode([b; 32])).collect();
        t.cap.take(4);
        t.uploads.extend(ids.iter().cloned());
        let mut p = Progress::default();
        assert_eq!(
            t.upload_answered(&mut p, "nope", true, String::new()),
            UploadOk::NotOurs
        );
        let r = t.upload_answered(&mut p, &ids[0], true, String::new());
        assert_eq!(r, UploadOk::Counted { report: false });
        t.upload_answered(&mut p, &ids[1], false, "duplicate: have it".into());
        t.upload_answered(&mut p, &ids[2], false, "blocked: no".into());
        assert_eq!((p.sent, p.already_had, p.rejected), (1, 1, 1));
        assert_eq!(p.last_refusal.as_deref(), Some("blocked: no"));
        assert_eq!(t.refused, vec![[3; 32]]);
        assert_eq!(t.cap.room(), 0);
        let r = t.upload_answered(&mut p, &ids[3], false, "auth-required: who?".into());
        let reason = "auth-required: who?".to_string();
        assert_eq!(
            r,
            UploadOk::NeedsAuth {
                id: Some([4; 32]),
                reason
            }
        );
        assert_eq!(t.cap.room(), 1, "parked upload freed its place");
        assert_eq!(t.upload_answers, 3, "an auth refusal is not an answer");
    }

    #[test]
    fn only_asked_events_are_kept() {
        let mut t = Transfers::new(Direction::Down, None);
        let ev =
            crate::event::sign_event(&crate::event::Keys::from_seed(b"t", 0), 1, 1, vec![], "x");
        fetching(&mut t, "a", &[ev.id]);
        assert!(!t.take_event("b", ev.clone()), "other subscription");
        assert!(t.take_event("a", ev.clone()));
        assert!(!t.take_event("a", ev), "delivered twice");
        assert_eq!(t.to_save.len(), 1);
        assert!(!t.save_due());
    }
}
