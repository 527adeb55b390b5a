//! Refusals before authentication (connections closed by the per-IP limit at accept, failed or
//! timed-out TLS handshakes), recorded without ever making the accept loop wait for the disk: a
//! bounded queue drained by one writer task. When a flood fills the queue, further refusals are
//! counted per source address and written as one summary record, "N refusals from ADDR in T",
//! so the log still accounts for every refused connection, at a bounded cost, while the door
//! stays open for everyone else.

use super::audit::AuditLog;
use crate::audit::AuditEntry;
use crate::service::CallInfo;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Refusals waiting for the writer, at most.
pub(super) const DOOR_QUEUE: usize = 256;

/// Source addresses counted apart in summaries, at most; beyond, refusals are counted together
/// (a flood from many addresses must not grow this without bound).
const MAX_COUNTED_SOURCES: usize = 4096;

/// How often summaries of overflowed refusals are written.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// The `rpc` of every record written here.
const RPC: &str = "connect";

/// One refused connection.
struct Refused {
    source: SocketAddr,
    reason: String,
}

/// Refusals of one source that found the queue full.
struct Overflow {
    count: u64,
    since: Instant,
    last_reason: String,
}

/// Overflowed refusals by source; `None` for every source beyond [`MAX_COUNTED_SOURCES`].
type Overflows = Arc<Mutex<HashMap<Option<IpAddr>, Overflow>>>;

/// Where the accept path reports refusals. Cheap to clone; never waits.
#[derive(Clone)]
pub(super) struct DoorLog {
    tx: mpsc::Sender<Refused>,
    overflow: Overflows,
}

/// The writer task; [`DoorWriter::stop`] writes what is queued and the summaries, then ends it.
pub(super) struct DoorWriter {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl DoorLog {
    /// A door log writing to `audit`, and its writer task.
    pub(super) fn start(audit: AuditLog) -> (Self, DoorWriter) {
        let (tx, rx) = mpsc::channel(DOOR_QUEUE);
        let overflow = Overflows::default();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(write(audit, rx, overflow.clone(), stopped));
        (Self { tx, overflow }, DoorWriter { stop, task })
    }

    /// Records that a connection from `source` was refused, for `reason`: queued, or counted
    /// for a summary when the queue is full. Returns at once.
    pub(super) fn refused(&self, source: SocketAddr, reason: impl Into<String>) {
        let r = Refused {
            source,
            reason: reason.into(),
        };
        let r = match self.tx.try_send(r) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) => r,
        };
        let Ok(mut m) = self.overflow.lock() else {
            return;
        };
        let ip = source.ip();
        let key = if m.contains_key(&Some(ip)) || m.len() < MAX_COUNTED_SOURCES {
            Some(ip)
        } else {
            None
        };
        let o = m.entry(key).or_insert_with(|| Overflow {
            count: 0,
            since: Instant::now(),
            last_reason: String::new(),
        });
        o.count += 1;
        o.last_reason = r.reason;
    }
}

impl DoorWriter {
    /// Writes every refusal still queued and every summary, then ends the task.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn write(
    audit: AuditLog,
    mut rx: mpsc::Receiver<Refused>,
    overflow: Overflows,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(SUMMARY_EVERY);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            r = rx.recv() => match r {
                Some(r) => record(&audit, r).await,
                None => break,
            },
            _ = tick.tick() => summarize(&audit, &overflow).await,
        }
    }
    while let Ok(r) = rx.try_recv() {
        record(&audit, r).await;
    }
    summarize(&audit, &overflow).await;
}

async fn record(audit: &AuditLog, r: Refused) {
    let call = CallInfo {
        source: Some(r.source),
        ..Default::default()
    };
    // Nothing to refuse if this fails: the connection is gone already (the log says why).
    let _ = audit
        .record(&call, RPC, AuditEntry::decision(false, r.reason))
        .await;
}

async fn summarize(audit: &AuditLog, overflow: &Overflows) {
    let taken: Vec<(Option<IpAddr>, Overflow)> = match overflow.lock() {
        Ok(mut m) => m.drain().collect(),
        Err(_) => return,
    };
    for (ip, o) in taken {
        let (from, source) = match ip {
            Some(ip) => (ip.to_string(), Some(SocketAddr::new(ip, 0))),
            None => ("other addresses".to_string(), None),
        };
        let call = CallInfo {
            source,
            ..Default::default()
        };
        let reason = summary_reason(o.count, &from, o.since.elapsed(), &o.last_reason);
        let _ = audit
            .record(&call, RPC, AuditEntry::decision(false, reason))
            .await;
    }
}

/// "N refusals from ADDR in T" and the last one's reason.
fn summary_reason(count: u64, from: &str, took: Duration, last: &str) -> String {
    format!(
        "{count} refusals from {from} in {:.1} s, recorded together (the audit queue was full); \
         the last: {last}",
        took.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_says_how_many_from_where_in_how_long() {
        assert_eq!(
            summary_reason(
                975,
                "127.0.0.2",
                Duration::from_millis(1500),
                "rate limited"
            ),
            "975 refusals from 127.0.0.2 in 1.5 s, recorded together (the audit queue was \
             full); the last: rate limited"
        );
    }
}
