//! The [`Store`] trait over the `orly-db` gRPC service, so several processes share one fjall
//! store (fjall allows one process per directory). A server that offers only ORLY's database
//! subset is detected on first use and served by `remote_orly.rs` instead of our fast path.

use super::budget::Budget;
use super::db_auth::{DbToken, SendToken};
use super::remote_orly::Dialect;
use super::remote_session::RemoteSession;
use super::{EventStream, NegItem, NegSession, Order, SaveOutcome, Store, StoreError};
use crate::event::{Event, EventId, Filter};
use crate::proto::orlydb::v1 as db;
use crate::proto::orlydb::v1::database_service_client::DatabaseServiceClient;
use crate::proto::orlysync::common::v1 as pb;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::OnceCell;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A store reached over gRPC.
#[derive(Clone)]
pub struct RemoteStore {
    client: DatabaseServiceClient<InterceptedService<Channel, SendToken>>,
    addr: String,
    dialect: Arc<OnceCell<Dialect>>,
    /// Sets loaded here (only against ORLY's subset) share this budget.
    budget: Arc<Budget>,
}

fn status(addr: &str, s: tonic::Status) -> StoreError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            StoreError::Unavailable(format!("orly-db at {addr}: {}", s.message()))
        }
        tonic::Code::InvalidArgument => StoreError::Refused(s.message().to_string()),
        tonic::Code::ResourceExhausted => StoreError::Busy(s.message().to_string()),
        _ => StoreError::Engine(format!("orly-db at {addr}: {}: {}", s.code(), s.message())),
    }
}

fn outcome(o: i32) -> Result<SaveOutcome, StoreError> {
    Ok(match db::SaveOutcome::try_from(o) {
        Ok(db::SaveOutcome::Accepted) => SaveOutcome::Accepted,
        Ok(db::SaveOutcome::Replaced) => SaveOutcome::Replaced,
        Ok(db::SaveOutcome::Duplicate) => SaveOutcome::Duplicate,
        Ok(db::SaveOutcome::Superseded) => SaveOutcome::Superseded,
        Ok(db::SaveOutcome::Deleted) => SaveOutcome::Deleted,
        Ok(db::SaveOutcome::Ephemeral) => SaveOutcome::Ephemeral,
        _ => return Err(StoreError::Corrupt(format!("unknown save outcome {o}"))),
    })
}

impl RemoteStore {
    /// A client for `orly-db` at `addr` (HOST:PORT), sending `token` (orly-db's
    /// `ORLY_DB_TOKEN`) on every call when given. Connects lazily: a store that is down makes
    /// calls fail with [`StoreError::Unavailable`] until it is back.
    pub async fn connect(addr: &str, token: Option<&DbToken>) -> Result<Self, StoreError> {
        let auth = SendToken::new(token).map_err(StoreError::Refused)?;
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let ch = Channel::from_shared(uri)
            .map_err(|e| StoreError::Unavailable(format!("bad orly-db address {addr:?}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_lazy();
        let client = DatabaseServiceClient::with_interceptor(ch, auth)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        Ok(Self {
            client,
            addr: addr.to_string(),
            dialect: Arc::new(OnceCell::new()),
            budget: super::remote_orly::new_budget(),
        })
    }

    pub(super) fn err(&self, s: tonic::Status) -> StoreError {
        status(&self.addr, s)
    }

    pub(super) fn client(&self) -> DatabaseServiceClient<InterceptedService<Channel, SendToken>> {
        self.client.clone()
    }

    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    pub(super) fn dialect_cell(&self) -> &OnceCell<Dialect> {
        &self.dialect
    }

    pub(super) fn budget(&self) -> Arc<Budget> {
        self.budget.clone()
    }

    async fn orly_only(&self) -> Result<bool, StoreError> {
        Ok(self.dialect().await? == Dialect::OrlySubset)
    }
}

#[async_trait::async_trait]
impl Store for RemoteStore {
    async fn save(&self, events: Vec<Event>) -> Result<Vec<SaveOutcome>, StoreError> {
        if self.orly_only().await? {
            return self.orly_save(events).await;
        }
        let n = events.len();
        let stream = tokio_stream::iter(events.into_iter().map(pb::Event::from));
        let resp = self
            .client
            .clone()
            .save_events(stream)
            .await
            .map_err(|s| self.err(s))?;
        let outs = resp.into_inner().outcomes;
        if outs.len() != n {
            return Err(StoreError::Corrupt(format!(
                "orly-db answered {} outcomes for {n} events",
                outs.len()
            )));
        }
        outs.into_iter().map(outcome).collect()
    }

    fn query(&self, filter: Filter, order: Order) -> EventStream {
        // The wire cannot carry an empty list (it reads as "any"), so a filter that matches
        // nothing is answered here (also in neg_items and count).
        if filter.matches_nothing() {
            return Box::pin(futures_util::stream::empty());
        }
        let this = self.clone();
        let addr = self.addr.clone();
        Box::pin(
            futures_util::stream::once(async move {
                match this.orly_only().await {
                    Ok(true) => return Err(this.orly_query(filter, order)),
                    Err(e) => {
                        return Err(futures_util::stream::once(std::future::ready(Err(e))).boxed());
                    }
                    Ok(false) => {}
                }
                let req = db::QueryRequest {
                    filter: Some((&filter).into()),
                    ascending: order == Order::OldestFirst,
                };
                Ok(this.client.clone().scan_events(req).await)
            })
            .map(move |r| match r {
                Err(fallback) => fallback,
                Ok(r) => match r {
                    Ok(resp) => {
                        let addr = addr.clone();
                        resp.into_inner()
                            .map(move |item| match item {
                                Ok(e) => Event::try_from(e).map_err(StoreError::Corrupt),
                                Err(s) => Err(status(&addr, s)),
                            })
                            .boxed()
                    }
                    Err(s) => futures_util::stream::once(std::future::ready(Err(status(&addr, s))))
                        .boxed(),
                },
            })
            .flatten(),
        )
    }

    async fn get_by_ids(&self, ids: Vec<EventId>) -> Result<Vec<Event>, StoreError> {
        if self.orly_only().await? {
            return self.orly_get_by_ids(ids).await;
        }
        let req = db::GetEventsByIdsRequest {
            ids: ids.iter().map(|i| i.to_vec()).collect(),
        };
        let mut s = self
            .client
            .clone()
            .get_events_by_ids(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(e) = s.next().await {
            out.push(Event::try_from(e.map_err(|s| self.err(s))?).map_err(StoreError::Corrupt)?);
        }
        Ok(out)
    }

    async fn neg_items(&self, filter: Filter) -> Result<Vec<NegItem>, StoreError> {
        if filter.matches_nothing() {
            return Ok(Vec::new());
        }
        if self.orly_only().await? {
            return self.orly_neg_items(filter).await;
        }
        let req = db::NegentropyItemsRequest {
            filter: Some((&filter).into()),
        };
        let mut s = self
            .client
            .clone()
            .negentropy_items(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            let b = b.map_err(|s| self.err(s))?;
            if b.ids.len() != b.created_at.len() * 32 {
                return Err(StoreError::Corrupt(
                    "negentropy item batch: ids and times differ in length".into(),
                ));
            }
            for (t, id) in b.created_at.iter().zip(b.ids.chunks_exact(32)) {
                let mut a = [0u8; 32];
                a.copy_from_slice(id);
                out.push((*t, a));
            }
        }
        Ok(out)
    }

    async fn neg_session(
        &self,
        filter: Filter,
        frame_limit: u64,
        max_items: usize,
    ) -> Result<Box<dyn NegSession>, StoreError> {
        if self.orly_only().await? {
            return self.orly_neg_session(filter, frame_limit, max_items).await;
        }
        RemoteSession::open(self, &filter, frame_limit, max_items).await
    }

    async fn count(&self, filter: Filter) -> Result<u64, StoreError> {
        if filter.matches_nothing() {
            return Ok(0);
        }
        if self.orly_only().await? {
            return self.orly_count(filter).await;
        }
        let req = db::CountRequest {
            filter: Some((&filter).into()),
        };
        Ok(self
            .client
            .clone()
            .count_matching(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner()
            .count)
    }

    async fn known(&self, ids: Vec<EventId>) -> Result<Vec<bool>, StoreError> {
        if self.orly_only().await? {
            return self.orly_known(ids).await;
        }
        let n = ids.len();
        let req = db::GetEventsByIdsRequest {
            ids: ids.iter().map(|i| i.to_vec()).collect(),
        };
        let known = self
            .client
            .clone()
            .known_ids(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner()
            .known;
        if known.len() != n {
            return Err(StoreError::Corrupt(
                "orly-db answered the wrong number of ids".into(),
            ));
        }
        Ok(known)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let r = self
            .client
            .clone()
            .ready(db::Empty {})
            .await
            .map_err(|s| self.err(s))?;
        if r.into_inner().ready {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "orly-db at {} is not ready",
                self.addr
            )))
        }
    }
}
