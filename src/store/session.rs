//! Negentropy sessions, run where the item set lives: in this process over the embedded store,
//! inside `orly-db` for the remote one (so its persistent index serves the relay and the sync
//! service too, and no item set crosses the wire).

use crate::event::EventId;
use crate::negentropy::{NegError, NegStorage, Reconciler};

/// The initiator's view of one round.
#[derive(Debug, Default)]
pub struct NegStep {
    /// The next message for the peer; `None` when the sets are reconciled.
    pub reply: Option<Vec<u8>>,
    /// Ids only we have.
    pub have: Vec<EventId>,
    /// Ids only the peer has.
    pub need: Vec<EventId>,
}

/// One side of a NIP-77 reconciliation over a store's item set.
#[async_trait::async_trait]
pub trait NegSession: Send + Sync {
    /// Items in the set.
    fn size(&self) -> usize;
    /// True when fingerprints come from the persistent index, not a loaded item set.
    fn is_indexed(&self) -> bool;
    /// The first message (this side initiates).
    async fn initiate(&mut self) -> Result<Vec<u8>, NegError>;
    /// The responder's answer to the peer's `msg`.
    async fn respond(&mut self, msg: Vec<u8>) -> Result<Vec<u8>, NegError>;
    /// The initiator's next step after the peer's `msg`.
    async fn next(&mut self, msg: Vec<u8>) -> Result<NegStep, NegError>;
}

/// Drops `session` on the blocking pool, returning the task. A session's set may hold tens of
/// thousands of items read into memory, in as many allocations, and its background reads stop
/// only after their current piece: a drop takes milliseconds that the connection or sync job
/// ending the session need not spend before its next message.
pub fn retire<T: Send + 'static>(session: T) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || drop(session))
}

/// A session over a storage in this process. Steps read the store and hash, so they run on
/// the blocking pool; a step that fails to come back leaves the session unusable.
pub struct LocalSession {
    neg: Option<Reconciler<Box<dyn NegStorage>>>,
    size: usize,
    indexed: bool,
}

impl LocalSession {
    /// A session over `storage`; `frame_limit` is 0 (none) or at least 4096 bytes.
    pub fn new(storage: Box<dyn NegStorage>, frame_limit: u64) -> Result<Self, NegError> {
        let (size, indexed) = (storage.size(), storage.is_indexed());
        Ok(Self {
            neg: Some(Reconciler::new(storage, frame_limit)?),
            size,
            indexed,
        })
    }

    async fn run<T: Send + 'static>(
        &mut self,
        step: impl FnOnce(&mut Reconciler<Box<dyn NegStorage>>) -> Result<T, NegError> + Send + 'static,
    ) -> Result<T, NegError> {
        let mut neg = self
            .neg
            .take()
            .ok_or_else(|| NegError::Invalid("session lost by an earlier failure".into()))?;
        let span = tracing::Span::current();
        let (neg, out) = tokio::task::spawn_blocking(move || {
            let out = span.in_scope(|| step(&mut neg));
            (neg, out)
        })
        .await
        .map_err(|e| NegError::Storage(format!("reconciliation step failed: {e}")))?;
        self.neg = Some(neg);
        out
    }
}

#[async_trait::async_trait]
impl NegSession for LocalSession {
    fn size(&self) -> usize {
        self.size
    }

    fn is_indexed(&self) -> bool {
        self.indexed
    }

    async fn initiate(&mut self) -> Result<Vec<u8>, NegError> {
        self.run(|n| n.initiate()).await
    }

    async fn respond(&mut self, msg: Vec<u8>) -> Result<Vec<u8>, NegError> {
        self.run(move |n| n.respond(&msg)).await
    }

    async fn next(&mut self, msg: Vec<u8>) -> Result<NegStep, NegError> {
        self.run(move |n| {
            let mut step = NegStep::default();
            step.reply = n.next(&msg, &mut step.have, &mut step.need)?;
            Ok(step)
        })
        .await
    }
}
