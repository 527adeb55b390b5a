//! The remote store over a database server that offers only ORLY's subset of
//! `orlydb.v1.DatabaseService` (ORLY's own `orly-db`): detected once per client, when our own
//! method answers UNIMPLEMENTED. Item sets are loaded with `QueryForIds` and reconciled here
//! (capped per session and by the shared memory budget, as the embedded store does), events
//! are saved one by one with `SaveEvent`. Slower than our fast path, but correct.

use super::budget::{Budget, Budgeted, DEFAULT_LOADED_ITEMS, Share};
use super::remote::RemoteStore;
use super::session::{LocalSession, NegSession};
use super::{EventStream, NegItem, Order, SaveOutcome, StoreError};
use crate::event::{Event, EventId, Filter};
use crate::proto::orlydb::v1 as db;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;

/// What the server at the other end offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// Our `orly-db`: the whole service, fast path included.
    Ours,
    /// Only ORLY's database subset.
    OrlySubset,
}

/// The memory budget of the sets this client loads (one per client, shared by its clones).
pub(super) fn new_budget() -> Arc<Budget> {
    Budget::new(DEFAULT_LOADED_ITEMS)
}

impl RemoteStore {
    /// Which dialect the server speaks, asked once (a cheap count of nothing) and remembered.
    /// A server that cannot be reached is not remembered: the next call asks again.
    pub(super) async fn dialect(&self) -> Result<Dialect, StoreError> {
        self.dialect_cell()
            .get_or_try_init(|| async {
                let probe = db::CountRequest {
                    filter: Some(
                        (&Filter {
                            ids: Some([[0u8; 32]].into_iter().collect()),
                            ..Filter::default()
                        })
                            .into(),
                    ),
                };
                match self.client().count_matching(probe).await {
                    Ok(_) => Ok(Dialect::Ours),
                    Err(s) if s.code() == tonic::Code::Unimplemented => {
                        tracing::warn!(
                            addr = self.addr(),
                            "the database server offers only ORLY's database subset: item sets \
                             are loaded with QueryForIds and events saved one by one (slower)"
                        );
                        Ok(Dialect::OrlySubset)
                    }
                    Err(s) => Err(self.err(s)),
                }
            })
            .await
            .copied()
    }

    pub(super) async fn orly_save(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<SaveOutcome>, StoreError> {
        let mut outs = Vec::with_capacity(events.len());
        for ev in events {
            let req = db::SaveEventRequest {
                event: Some(db::Event::from(ev)),
            };
            let out = match self.client().save_event(req).await {
                Ok(r) if r.get_ref().exists => SaveOutcome::Duplicate,
                Ok(_) => SaveOutcome::Accepted,
                // ORLY (and our orly-db) refuse an older replaceable or a deleted event with
                // "blocked: ..."; the other events of the batch still go in.
                Err(s)
                    if s.code() == tonic::Code::FailedPrecondition
                        || s.message().starts_with("blocked") =>
                {
                    if s.message().contains("delete") {
                        SaveOutcome::Deleted
                    } else {
                        SaveOutcome::Superseded
                    }
                }
                Err(s) => return Err(self.err(s)),
            };
            outs.push(out);
        }
        Ok(outs)
    }

    /// Matching events, in `order` (ORLY's server answers newest first; the order is
    /// restored here when asked for oldest first).
    pub(super) fn orly_query(&self, filter: Filter, order: Order) -> EventStream {
        let this = self.clone();
        Box::pin(
            futures_util::stream::once(async move { this.orly_events(filter, order).await })
                .map(|r| match r {
                    Ok(evs) => futures_util::stream::iter(evs.into_iter().map(Ok)).boxed(),
                    Err(e) => futures_util::stream::once(std::future::ready(Err(e))).boxed(),
                })
                .flatten(),
        )
    }

    async fn orly_events(&self, filter: Filter, order: Order) -> Result<Vec<Event>, StoreError> {
        let req = db::QueryEventsRequest {
            filter: Some((&filter).into()),
        };
        let mut s = self
            .client()
            .query_events(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            for e in b.map_err(|s| self.err(s))?.events {
                let e = Event::try_from(e).map_err(StoreError::Corrupt)?;
                if filter.matches(&e) {
                    out.push(e);
                }
            }
        }
        out.sort_by(|a, b| (b.created_at, a.id).cmp(&(a.created_at, b.id)));
        if order == Order::OldestFirst {
            out.reverse();
        }
        Ok(out)
    }

    pub(super) async fn orly_get_by_ids(
        &self,
        ids: Vec<EventId>,
    ) -> Result<Vec<Event>, StoreError> {
        // An empty id list on the wire would read as "any id".
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = Filter {
            ids: Some(ids.into_iter().collect()),
            ..Filter::default()
        };
        self.orly_events(filter, Order::NewestFirst).await
    }

    /// (created_at, id) ascending, `limit` ignored; refused past `max_items` items, each taken
    /// from `share` when given.
    async fn orly_items(
        &self,
        mut filter: Filter,
        max_items: usize,
        mut share: Option<&mut Share>,
    ) -> Result<Vec<NegItem>, StoreError> {
        filter.limit = None;
        let req = db::QueryEventsRequest {
            filter: Some((&filter).into()),
        };
        let list = self
            .client()
            .query_for_ids(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        let mut items = Vec::with_capacity(list.items.len().min(max_items));
        for it in list.items {
            if items.len() >= max_items {
                return Err(StoreError::TooMany { max: max_items });
            }
            if let Some(share) = share.as_deref_mut()
                && !share.take_one()
            {
                return Err(StoreError::Busy(
                    "the negentropy sets open now fill the memory budget; try again later".into(),
                ));
            }
            let id: EventId =
                it.id.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt("QueryForIds: an id is not 32 bytes".into())
                })?;
            let t = u64::try_from(it.timestamp)
                .map_err(|_| StoreError::Corrupt("QueryForIds: a negative timestamp".into()))?;
            items.push((t, id));
        }
        items.sort_unstable();
        items.dedup();
        Ok(items)
    }

    pub(super) async fn orly_neg_items(&self, filter: Filter) -> Result<Vec<NegItem>, StoreError> {
        self.orly_items(filter, usize::MAX, None).await
    }

    pub(super) async fn orly_neg_session(
        &self,
        filter: Filter,
        frame_limit: u64,
        max_items: usize,
    ) -> Result<Box<dyn NegSession>, StoreError> {
        let mut share = Share::new(self.budget());
        let items = self.orly_items(filter, max_items, Some(&mut share)).await?;
        let set = crate::negentropy::VecStorage::from_pairs(items);
        let s = LocalSession::new(Box::new(Budgeted::new(set, share)), frame_limit)
            .map_err(|e| StoreError::Refused(e.to_string()))?;
        Ok(Box::new(s))
    }

    pub(super) async fn orly_count(&self, filter: Filter) -> Result<u64, StoreError> {
        let req = db::QueryEventsRequest {
            filter: Some((&filter).into()),
        };
        let r = self
            .client()
            .count_events(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        u64::try_from(r.count)
            .map_err(|_| StoreError::Corrupt(format!("CountEvents answered {}", r.count)))
    }

    /// Stored ones among `ids` (ORLY's subset cannot say superseded or deleted: those are
    /// fetched again and refused on save, which changes nothing).
    pub(super) async fn orly_known(&self, ids: Vec<EventId>) -> Result<Vec<bool>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = Filter {
            ids: Some(ids.iter().copied().collect()),
            ..Filter::default()
        };
        let stored: HashSet<EventId> = self
            .orly_items(filter, usize::MAX, None)
            .await?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        Ok(ids.iter().map(|i| stored.contains(i)).collect())
    }
}
