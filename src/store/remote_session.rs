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
/// Longest wait for a session to open: a set that is loaded (a tag filter reads every
/// candidate event) may take a while. The relay waits for it in the connection's own task.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// One session inside orly-db. Dropping it closes the request stream, which ends the session
/// there.
pub(super) struct RemoteSession {
    tx: mpsc::Sender<db::ReconcileRequest>,
    // Only used through `&mut self` (`get_mut`, no locking); the mutex makes it `Sync`.
    rx: Mutex<tonic::Streaming<db::ReconcileResponse>>,
    size: usize,
    indexed: bool,
    addr: String,
    /// A step failed or timed out: a late answer may still be queued, so nothing more may be
    /// read from this session.
    failed: bool,
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
    ) -> Result<Box<dyn NegSession>, StoreError> {
        // The wire cannot carry an empty list (it reads as "any"): a filter that matches
        // nothing has the empty set, here.
        if filter.matches_nothing() {
            let empty = Box::new(crate::negentropy::VecStorage::new(Vec::new()));
            let s = super::LocalSession::new(empty, frame_limit)
                .map_err(|e| StoreError::Refused(e.to_string()))?;
            return Ok(Box::new(s));
        }
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
        let first = tokio::time::timeout(OPEN_TIMEOUT, stream.message())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("orly-db at {}: no answer", store.addr()))
            })?
            .map_err(|s| store.err(s))?
            .ok_or_else(|| {
                StoreError::Unavailable(format!("orly-db at {} ended the session", store.addr()))
            })?;
        if let Some(max) = first.too_many {
            return Err(StoreError::TooMany {
                max: usize::try_from(max).unwrap_or(usize::MAX),
            });
        }
        Ok(Box::new(Self {
            tx,
            rx: Mutex::new(stream),
            size: usize::try_from(first.size).unwrap_or(usize::MAX),
            indexed: first.indexed,
            addr: store.addr().to_string(),
            failed: false,
        }))
    }

    /// Sends one request and reads its answer: the last response, with the ids of every
    /// response before it (marked `more`) gathered in.
    async fn step(&mut self, step: Step) -> Result<(db::ReconcileResponse, NegStep), NegError> {
        if self.failed {
            return Err(NegError::Invalid(
                "session lost by an earlier failure".into(),
            ));
        }
        self.failed = true;
        let addr = self.addr.clone();
        let gone = || NegError::Storage(format!("orly-db at {addr} ended the session"));
        self.tx
            .send(db::ReconcileRequest { step: Some(step) })
            .await
            .map_err(|_| gone())?;
        let mut ids = NegStep::default();
        loop {
            let answer = tokio::time::timeout(STEP_TIMEOUT, self.rx.get_mut().message())
                .await
                .map_err(|_| NegError::Storage(format!("orly-db at {addr}: no answer")))?;
            let r = match answer {
                Ok(Some(r)) => r,
                Ok(None) => return Err(gone()),
                // Only a broken peer message is the peer's fault; anything else is ours.
                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                    return Err(NegError::Malformed(s.message().to_string()));
                }
                Err(s) => {
                    return Err(NegError::Storage(format!(
                        "orly-db at {addr}: {}",
                        s.message()
                    )));
                }
            };
            ids.have.extend(unpack_ids(&r.have)?);
            ids.need.extend(unpack_ids(&r.need)?);
            if !r.more {
                self.failed = false;
                return Ok((r, ids));
            }
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
        let (r, _) = self.step(Step::Initiate(db::ReconcileInitiate {})).await?;
        Ok(r.message)
    }

    async fn respond(&mut self, msg: Vec<u8>) -> Result<Vec<u8>, NegError> {
        Ok(self.step(Step::Message(msg)).await?.0.message)
    }

    async fn next(&mut self, msg: Vec<u8>) -> Result<NegStep, NegError> {
        let (r, mut step) = self.step(Step::Message(msg)).await?;
        step.reply = (!r.done).then_some(r.message);
        Ok(step)
    }
}
