//! What keeps hostile clients from exhausting the relay, apart from the protocol limits:
//! connection caps (in total and per address), and a meter on the bytes of messages that have
//! started to arrive but not finished, per connection and summed over all of them, with the
//! time the oldest unfinished one has been arriving.
//!
//! The WebSocket codec buffers a message until its last byte arrives, up to the message cap
//! (16 MiB by default, which orly ↔ orly negentropy needs). Without the meter, a client that
//! sends most of a large message and stops pins that memory for as long as it stays connected.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts open connections, in total and per address.
pub(super) struct Admission {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The relay holds its maximum of connections.
    Full,
    /// This address holds its maximum of connections.
    PerAddress,
}

/// One admitted connection; gives its place back when dropped.
pub(super) struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub(super) fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for a connection from `ip`, if there is one.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        // The map's lock also orders the total's updates (no place is taken twice).
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refusal::Full);
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refusal::PerAddress);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let a = &self.admission;
        let mut per_ip = a.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        a.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes of unfinished messages over all connections, and their cap.
pub(super) struct PendingBudget {
    cap: usize,
    used: AtomicUsize,
}

impl PendingBudget {
    pub(super) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes of unfinished messages held now.
    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes read on one connection since its last complete message.
pub(super) struct Meter {
    budget: Arc<PendingBudget>,
    started: Instant,
    partial: AtomicUsize,
    /// When the first byte after the last complete message arrived (ms since `started`, +1;
    /// 0 = nothing pending).
    since_ms: AtomicU64,
}

impl Meter {
    pub(super) fn new(budget: Arc<PendingBudget>) -> Arc<Self> {
        Arc::new(Self {
            budget,
            started: Instant::now(),
            partial: AtomicUsize::new(0),
            since_ms: AtomicU64::new(0),
        })
    }

    /// Counts `n` bytes read; refuses them when all connections together would hold more
    /// unfinished bytes than the budget allows.
    fn read(&self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        if self.partial.fetch_add(n, Ordering::Relaxed) == 0 {
            let now = self.started.elapsed().as_millis() as u64 + 1;
            self.since_ms.store(now, Ordering::Relaxed);
        }
        let used = self.budget.used.fetch_add(n, Ordering::Relaxed) + n;
        if used > self.budget.cap {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "the relay holds too many unfinished messages",
            ));
        }
        Ok(())
    }

    /// A message completed: what was read so far is no longer pending.
    pub(super) fn message_done(&self) {
        let n = self.partial.swap(0, Ordering::Relaxed);
        self.budget.used.fetch_sub(n, Ordering::Relaxed);
        self.since_ms.store(0, Ordering::Relaxed);
    }

    /// How long the unfinished message has been arriving, if there is one.
    pub(super) fn pending_for(&self) -> Option<Duration> {
        match self.since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let now = self.started.elapsed().as_millis() as u64 + 1;
                Some(Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.message_done();
    }
}

/// A connection's byte stream, read through its [`Meter`].
pub(super) struct Metered<T> {
    inner: T,
    meter: Arc<Meter>,
}

impl<T> Metered<T> {
    pub(super) fn new(inner: T, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let n = buf.filled().len() - before;
            self.meter.read(n)?;
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The soft limit on open file descriptors, when it can be read (Linux `/proc`).
pub(super) fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_total_and_per_address() {
        let a = Admission::new(3, 2);
        let (x, y): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let x1 = a.admit(x).unwrap();
        let _x2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).err(), Some(Refusal::PerAddress));
        let _y1 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).err(), Some(Refusal::Full));
        drop(x1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(x).is_ok(), "a place given back is taken again");
    }

    #[test]
    fn the_meter_counts_unfinished_bytes_and_refuses_past_the_budget() {
        let budget = PendingBudget::new(100);
        let (m1, m2) = (Meter::new(budget.clone()), Meter::new(budget.clone()));
        assert!(m1.pending_for().is_none());
        m1.read(60).unwrap();
        assert!(m1.pending_for().is_some());
        assert!(m2.read(50).is_err(), "110 bytes pending > 100");
        m1.message_done();
        assert!(m1.pending_for().is_none());
        assert_eq!(budget.used(), 50);
        drop(m2);
        assert_eq!(budget.used(), 0, "a closed connection gives its bytes back");
    }
}
