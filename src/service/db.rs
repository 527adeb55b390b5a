//! `orlydb.v1.DatabaseService`: the fjall store served to the other processes. Every event that
//! comes in is verified again here: the store trusts no caller's claim of validity. ORLY's
//! subset of the service is answered through `db_orly.rs`; our own fast path is here.

use super::db_orly;
use super::db_session::Sessions;
use super::status::store_status;
use crate::event::{Event, Filter};
use crate::proto::orlydb::v1 as db;
use crate::proto::orlydb::v1::database_service_server::{DatabaseService, DatabaseServiceServer};
use crate::proto::orlysync::common::v1 as pb;
use crate::store::{Order, SaveOutcome, Store};
use futures_util::StreamExt;
use rayon::prelude::*;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Most events accepted in one `SaveEvents` call.
pub(super) const MAX_SAVE_BATCH: usize = 100_000;

/// The DatabaseService over a store.
pub struct DbService {
    store: Arc<dyn Store>,
    sessions: Sessions,
}

impl DbService {
    /// Serves `store`; open negentropy sessions end when `stop` turns true (shutdown).
    pub fn new(
        store: Arc<dyn Store>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> DatabaseServiceServer<Self> {
        DatabaseServiceServer::new(Self {
            store,
            sessions: Sessions::new(stop),
        })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
    }
}

pub(super) fn filter_of(f: Option<pb::Filter>) -> Result<Filter, Status> {
    match f {
        Some(f) => Filter::try_from(&f).map_err(Status::invalid_argument),
        None => Ok(Filter::default()),
    }
}

fn ids_of(ids: &[Vec<u8>]) -> Result<Vec<[u8; 32]>, Status> {
    ids.iter()
        .map(|b| {
            b.as_slice()
                .try_into()
                .map_err(|_| Status::invalid_argument("ids: expected 32 bytes each"))
        })
        .collect()
}

fn outcome(o: SaveOutcome) -> i32 {
    (match o {
        SaveOutcome::Accepted => db::SaveOutcome::Accepted,
        SaveOutcome::Replaced => db::SaveOutcome::Replaced,
        SaveOutcome::Duplicate => db::SaveOutcome::Duplicate,
        SaveOutcome::Superseded => db::SaveOutcome::Superseded,
        SaveOutcome::Deleted => db::SaveOutcome::Deleted,
        SaveOutcome::Ephemeral => db::SaveOutcome::Ephemeral,
    }) as i32
}

type BoxStream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl DatabaseService for DbService {
    async fn save_events(
        &self,
        req: Request<Streaming<pb::Event>>,
    ) -> Result<Response<db::SaveEventsResponse>, Status> {
        let mut stream = req.into_inner();
        let mut events = Vec::new();
        while let Some(e) = stream.next().await {
            if events.len() >= MAX_SAVE_BATCH {
                return Err(Status::resource_exhausted(format!(
                    "at most {MAX_SAVE_BATCH} events per call"
                )));
            }
            let e = Event::try_from(e?)
                .map_err(|m| Status::invalid_argument(format!("event {}: {m}", events.len())))?;
            events.push(e);
        }
        let checked = tokio::task::spawn_blocking(move || {
            let bad = events.par_iter().position_first(|e| e.verify().is_err());
            (events, bad)
        })
        .await
        .map_err(|e| super::status::task_failed(&e))?;
        let (events, bad) = checked;
        if let Some(i) = bad {
            let why = events[i]
                .verify()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(Status::invalid_argument(format!(
                "event {i} ({}): {why}",
                events[i].id_hex()
            )));
        }
        let outs = self.store.save(events).await.map_err(store_status)?;
        Ok(Response::new(db::SaveEventsResponse {
            outcomes: outs.into_iter().map(outcome).collect(),
        }))
    }

    type ScanEventsStream = BoxStream<pb::Event>;

    async fn scan_events(
        &self,
        req: Request<db::QueryRequest>,
    ) -> Result<Response<Self::ScanEventsStream>, Status> {
        let r = req.into_inner();
        let order = if r.ascending {
            Order::OldestFirst
        } else {
            Order::NewestFirst
        };
        let s = self.store.query(filter_of(r.filter)?, order);
        Ok(Response::new(Box::pin(
            s.map(|r| r.map(pb::Event::from).map_err(store_status)),
        )))
    }

    type NegentropyItemsStream = BoxStream<db::NegentropyItemBatch>;

    async fn negentropy_items(
        &self,
        req: Request<db::NegentropyItemsRequest>,
    ) -> Result<Response<Self::NegentropyItemsStream>, Status> {
        let items = self
            .store
            .neg_items(filter_of(req.into_inner().filter)?)
            .await
            .map_err(store_status)?;
        let batches: Vec<Result<db::NegentropyItemBatch, Status>> = items
            .chunks(50_000)
            .map(|c| {
                Ok(db::NegentropyItemBatch {
                    created_at: c.iter().map(|(t, _)| *t).collect(),
                    ids: c.iter().flat_map(|(_, id)| id.iter().copied()).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    type ReconcileStream = BoxStream<db::ReconcileResponse>;

    async fn reconcile(
        &self,
        req: Request<Streaming<db::ReconcileRequest>>,
    ) -> Result<Response<Self::ReconcileStream>, Status> {
        let rx = self.sessions.start(self.store.clone(), req.into_inner())?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type GetEventsByIdsStream = BoxStream<pb::Event>;

    async fn get_events_by_ids(
        &self,
        req: Request<db::GetEventsByIdsRequest>,
    ) -> Result<Response<Self::GetEventsByIdsStream>, Status> {
        let ids = ids_of(&req.into_inner().ids)?;
        let evs = self.store.get_by_ids(ids).await.map_err(store_status)?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            evs.into_iter().map(|e| Ok(pb::Event::from(e))),
        ))))
    }

    async fn known_ids(
        &self,
        req: Request<db::GetEventsByIdsRequest>,
    ) -> Result<Response<db::KnownIdsResponse>, Status> {
        let ids = ids_of(&req.into_inner().ids)?;
        let known = self.store.known(ids).await.map_err(store_status)?;
        Ok(Response::new(db::KnownIdsResponse { known }))
    }

    async fn count_matching(
        &self,
        req: Request<db::CountRequest>,
    ) -> Result<Response<db::CountResponse>, Status> {
        let count = self
            .store
            .count(filter_of(req.into_inner().filter)?)
            .await
            .map_err(store_status)?;
        Ok(Response::new(db::CountResponse { count }))
    }

    async fn ready(&self, _req: Request<db::Empty>) -> Result<Response<db::ReadyResponse>, Status> {
        Ok(Response::new(db::ReadyResponse {
            ready: self.store.ready().await.is_ok(),
        }))
    }

    async fn get_path(
        &self,
        _req: Request<db::Empty>,
    ) -> Result<Response<db::PathResponse>, Status> {
        Ok(Response::new(db::PathResponse {
            path: self.store.path().unwrap_or_default(),
        }))
    }

    async fn save_event(
        &self,
        req: Request<db::SaveEventRequest>,
    ) -> Result<Response<db::SaveEventResponse>, Status> {
        db_orly::save_event(self.store.as_ref(), req.into_inner())
            .await
            .map(Response::new)
    }

    type QueryEventsStream = BoxStream<db::EventBatch>;

    async fn query_events(
        &self,
        req: Request<db::QueryEventsRequest>,
    ) -> Result<Response<Self::QueryEventsStream>, Status> {
        let s = db_orly::query_events(self.store.as_ref(), req.into_inner())?;
        Ok(Response::new(Box::pin(s)))
    }

    async fn query_for_ids(
        &self,
        req: Request<db::QueryEventsRequest>,
    ) -> Result<Response<db::IdPkTsList>, Status> {
        db_orly::query_for_ids(self.store.as_ref(), req.into_inner())
            .await
            .map(Response::new)
    }

    async fn count_events(
        &self,
        req: Request<db::QueryEventsRequest>,
    ) -> Result<Response<db::CountEventsResponse>, Status> {
        db_orly::count_events(self.store.as_ref(), req.into_inner())
            .await
            .map(Response::new)
    }
}
