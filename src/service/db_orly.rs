//! ORLY's database subset of `orlydb.v1.DatabaseService` (`GetPath`, `SaveEvent`,
//! `QueryEvents`, `QueryForIds`, `CountEvents`; `Ready` is shared) over the same store and the
//! same checks as our own methods: every event verified again, NIP-01 semantics from the store.
//! ORLY's messages carry tag values and content as bytes; a value that is not UTF-8 is
//! INVALID_ARGUMENT naming the field. The handlers live in `db.rs`, which calls these.

use super::status::store_status;
use crate::event::{Event, Filter};
use crate::proto::orlydb::v1 as db;
use crate::store::{Order, SaveOutcome, Store};
use futures_util::{Stream, StreamExt};
use tonic::Status;

/// Events per `EventBatch` of `QueryEvents`.
const BATCH: usize = 500;
/// Most items in one `QueryForIds` answer: about 90 bytes each on the wire, under the 64 MiB
/// message limit. A larger set is RESOURCE_EXHAUSTED (narrow the filter).
pub(super) const MAX_ID_ITEMS: usize = 600_000;

/// The filter of an ORLY request (absent: everything).
pub(super) fn filter(f: Option<db::Filter>) -> Result<Filter, Status> {
    match f {
        Some(f) => Filter::try_from(&f).map_err(Status::invalid_argument),
        None => Ok(Filter::default()),
    }
}

/// `SaveEvent`: one event, verified, stored as our `SaveEvents` stores it.
pub(super) async fn save_event(
    store: &dyn Store,
    req: db::SaveEventRequest,
) -> Result<db::SaveEventResponse, Status> {
    let ev = req
        .event
        .ok_or_else(|| Status::invalid_argument("event: missing"))?;
    let ev = Event::try_from(ev).map_err(Status::invalid_argument)?;
    let ev = tokio::task::spawn_blocking(move || ev.verify().map(|()| ev))
        .await
        .map_err(|e| super::status::task_failed(&e))?
        .map_err(|e| Status::invalid_argument(format!("event: {e}")))?;
    let out = store.save(vec![ev]).await.map_err(store_status)?;
    match out.first() {
        Some(SaveOutcome::Duplicate) => Ok(db::SaveEventResponse { exists: true }),
        Some(SaveOutcome::Accepted | SaveOutcome::Replaced | SaveOutcome::Ephemeral) => {
            Ok(db::SaveEventResponse { exists: false })
        }
        Some(SaveOutcome::Superseded) => Err(Status::failed_precondition(
            "blocked: a newer version of this event is stored",
        )),
        Some(SaveOutcome::Deleted) => Err(Status::failed_precondition(
            "blocked: this event was deleted by its author",
        )),
        None => Err(Status::internal("the store answered no outcome")),
    }
}

/// `QueryEvents`: matching events newest first, in batches.
pub(super) fn query_events(
    store: &dyn Store,
    req: db::QueryEventsRequest,
) -> Result<impl Stream<Item = Result<db::EventBatch, Status>> + Send + 'static, Status> {
    let s = store.query(filter(req.filter)?, Order::NewestFirst);
    Ok(s.chunks(BATCH).map(|chunk| {
        let events = chunk
            .into_iter()
            .map(|r| r.map(db::Event::from).map_err(store_status))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(db::EventBatch { events })
    }))
}

/// `QueryForIds`: (id, pubkey, created_at) of every matching event, oldest first.
pub(super) async fn query_for_ids(
    store: &dyn Store,
    req: db::QueryEventsRequest,
) -> Result<db::IdPkTsList, Status> {
    let mut s = store.query(filter(req.filter)?, Order::OldestFirst);
    let mut items = Vec::new();
    while let Some(e) = s.next().await {
        let e = e.map_err(store_status)?;
        if items.len() >= MAX_ID_ITEMS {
            return Err(Status::resource_exhausted(format!(
                "more than {MAX_ID_ITEMS} events match: narrow the filter"
            )));
        }
        items.push(db::IdPkTs {
            id: e.id.to_vec(),
            pubkey: e.pubkey.to_vec(),
            timestamp: e.created_at.min(i64::MAX as u64) as i64,
            serial: items.len() as u64,
        });
    }
    Ok(db::IdPkTsList { items })
}

/// `CountEvents`: exact up to the int32 maximum, then that maximum marked approximate.
pub(super) async fn count_events(
    store: &dyn Store,
    req: db::QueryEventsRequest,
) -> Result<db::CountEventsResponse, Status> {
    let n = store
        .count(filter(req.filter)?)
        .await
        .map_err(store_status)?;
    Ok(db::CountEventsResponse {
        count: i32::try_from(n).unwrap_or(i32::MAX),
        approximate: n > i32::MAX as u64,
    })
}
