//! A negentropy session run inside `orly-db` (`DatabaseService.Reconcile`): this side only
//! carries the peer's messages there and the answers back.

use super::session::{NegSession, NegStep};
use super::{RemoteStore, StoreError};
use crate::event::{EventId, Filter};
use crate::negentropy::NegError;
use crate::proto::orlydb::v1 as db;
use db::reconcile_request::Step;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

/// Longest wait for orly-db to answer one step (it reads the store and hashes; a 1M-item
/// round takes well under a second).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// One session inside orly-db. Dropping it closes the request stream, which ends the session
/// there.
pub(super) struct RemoteSession {
    tx: mpsc::Sender<db::ReconcileRequest>,
    // Only used through `&mut self` (`get_mut`, no locking); the mutex makes it `Sync`.
    rx: Mutex<tonic::Streaming<db::ReconcileResponse>>,
    size: usize,
    indexed: bool,
    addr: String,
}

/// The negentropy errors orly-db reports, as statuses (and back).
pub(crate) fn neg_status(e: NegError) -> tonic::Status {
    match e {
        NegError::Malformed(m) => tonic::Status::invalid_argument(m),
        NegError::Invalid(m) => tonic::Status::failed_precondition(m),
        NegError::Storage(m) => tonic::Status::internal(m),
    }
}

/// Ids as 32 bytes each, concatenated.
pub(crate) fn pack_ids(ids: &[EventId]) -> Vec<u8> {
    ids.concat()
}

fn unpack_ids(b: &[u8]) -> Result<Vec<EventId>, NegError> {
    let chunks = b.chunks_exact(32);
    if !chunks.remainder().is_empty() {
        return Err(NegError::Storage(
            "orly-db sent ids that are not 32 bytes each".into(),
        ));
    }
    Ok(chunks
        .map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            id
        })
        .collect())
}

impl RemoteSession {
    /// Opens a session over the set of `filter` in orly-db.
    pub(super) async fn open(
        store: &RemoteStore,
        filter: &Filter,
        frame_limit: u64,
        max_items: usize,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(2);
        let open = db::ReconcileRequest {
            step: Some(Step::Open(db::ReconcileOpen {
                filter: Some(filter.into()),
                frame_limit,
                max_items: (max_items != usize::MAX).then_some(max_items as u64),
            })),
        };
        tx.send(open)
            .await
            .map_err(|_| StoreError::Engine("reconcile request stream closed".into()))?;
        let mut stream = store
            .client()
            .reconcile(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| store.err(s))?
            .into_inner();
        let first = tokio::time::timeout(STEP_TIMEOUT, stream.message())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("orly-db at {}: no answer", store.addr()))
            })?
            .map_err(|s| store.err(s))?
            .ok_or_else(|| {
                StoreError::Unavailable(format!("orly-db at {} ended the session", store.addr()))
            })?;
        if first.too_many > 0 {
            return Err(StoreError::TooMany {
                max: usize::try_from(first.too_many).unwrap_or(usize::MAX),
            });
        }
        Ok(Self {
            tx,
            rx: Mutex::new(stream),
            size: usize::try_from(first.size).unwrap_or(usize::MAX),
            indexed: first.indexed,
            addr: store.addr().to_string(),
        })
    }

    async fn step(&mut self, step: Step) -> Result<db::ReconcileResponse, NegError> {
        let gone = || NegError::Storage(format!("orly-db at {} ended the session", self.addr));
        self.tx
            .send(db::ReconcileRequest { step: Some(step) })
            .await
            .map_err(|_| gone())?;
        let answer = tokio::time::timeout(STEP_TIMEOUT, self.rx.get_mut().message())
            .await
            .map_err(|_| NegError::Storage(format!("orly-db at {}: no answer", self.addr)))?;
        match answer {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(gone()),
            Err(s) => Err(match s.code() {
                tonic::Code::InvalidArgument => NegError::Malformed(s.message().to_string()),
                tonic::Code::FailedPrecondition => NegError::Invalid(s.message().to_string()),
                _ => NegError::Storage(format!("orly-db at {}: {}", self.addr, s.message())),
            }),
        }
    }
}

#[async_trait::async_trait]
impl NegSession for RemoteSession {
    fn size(&self) -> usize {
        self.size
    }

    fn is_indexed(&self) -> bool {
        self.indexed
    }

    async fn initiate(&mut self) -> Result<Vec<u8>, NegError> {
        Ok(self
            .step(Step::Initiate(db::ReconcileInitiate {}))
            .await?
            .message)
    }

    async fn respond(&mut self, msg: Vec<u8>) -> Result<Vec<u8>, NegError> {
        Ok(self.step(Step::Message(msg)).await?.message)
    }

    async fn next(&mut self, msg: Vec<u8>) -> Result<NegStep, NegError> {
        let r = self.step(Step::Message(msg)).await?;
        Ok(NegStep {
            reply: (!r.done).then_some(r.message),
            have: unpack_ids(&r.have)?,
            need: unpack_ids(&r.need)?,
        })
    }
}
