//! `orly sync`: direct mode (open the store, run the [`SyncJob`] here) and client mode (ask an
//! `orly-sync-negentropy` service to run it and stream its progress). Same flags, same progress
//! display, same `--json` lines, same exit codes.

use crate::event::Filter;
use crate::peer::PeerOptions;
use crate::proto::orlysync::negentropy::v1 as pb;
use crate::store::Store;
use crate::sync::{Direction, ErrorKind, FrameLimit, PeerUrl, Progress, SyncJob, SyncRequest};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod conn;

pub use conn::{ServiceConn, ServiceFailure};

/// Where the sync runs.
pub enum Mode {
    /// This process opens the store.
    Direct(Arc<dyn Store>),
    /// A sync service runs it.
    Client(ServiceTarget),
}

/// How to reach the sync service.
#[derive(Clone, Default, Debug)]
pub struct ServiceTarget {
    /// HOST:PORT.
    pub addr: String,
    /// CA bundle that signed the service's certificate (enables TLS).
    pub ca: Option<PathBuf>,
    /// Our client certificate and key (mTLS).
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    pub key: Option<PathBuf>,
    /// File holding the admin token (sent as `authorization: Bearer`).
    pub token_file: Option<PathBuf>,
}

impl ServiceTarget {
    /// The service at `addr`, with the files of `args` (their variables already applied).
    pub fn new(addr: String, args: crate::config::ServiceArgs) -> Self {
        Self {
            addr,
            ca: args.ca,
            cert: args.cert,
            key: args.key,
            token_file: args.token_file,
        }
    }
}

/// How progress is shown.
pub struct Display {
    json: bool,
    bar: indicatif::ProgressBar,
}

impl Display {
    /// `--json` lines on stdout, else a progress line on a terminal (nothing when piped).
    pub fn new(json: bool) -> Self {
        let bar = if json {
            indicatif::ProgressBar::hidden()
        } else {
            super::progress_bar(None, "{spinner} {msg} [{elapsed}]")
        };
        Self { json, bar }
    }

    /// Shows one update.
    pub fn show(&self, p: &Progress) {
        if self.json {
            super::output::stdout_line(format_args!(
                "{}",
                serde_json::to_string(p).unwrap_or_default()
            ));
        } else {
            self.bar.set_message(format!(
                "round {} · have {} · need {} · fetched {} · sent {}",
                p.round, p.have, p.need, p.fetched, p.sent
            ));
            self.bar.tick();
        }
    }

    /// Shows the result and returns the exit code (see [`Progress::exit_code`]).
    pub fn finish(&self, p: &Progress) -> u8 {
        self.bar.finish_and_clear();
        let code = p.exit_code();
        if !self.json {
            let head = match (p.complete, p.difference_text()) {
                (true, Some(differs)) => format!("sync complete, but {differs}"),
                (true, None) => "sync complete".to_string(),
                (false, _) => "sync failed".to_string(),
            };
            crate::errln!("{head}: {}", p.counts_text());
            if p.rejected > 0 {
                let why = p.last_refusal.as_deref().unwrap_or("no reason given");
                crate::errln!(
                    "the relay refused {} uploads; last reason: {why}",
                    p.rejected
                );
            }
            if let Some(e) = &p.error {
                crate::errln!("error: {e}");
            }
        }
        code
    }
}

/// Runs a sync in `mode`; returns the exit code.
pub async fn run(mode: Mode, req: SyncRequest, display: &Display) -> u8 {
    match mode {
        Mode::Direct(store) => direct(store, req, display).await,
        Mode::Client(target) => client(&target, req, display).await,
    }
}

async fn direct(store: Arc<dyn Store>, req: SyncRequest, display: &Display) -> u8 {
    let mut last = Progress {
        peer_url: req.peer_url().to_string(),
        ..Default::default()
    };
    let res = SyncJob::new(store, req)
        .run(|p| {
            if !p.complete && p.error.is_none() {
                display.show(p);
            }
            last = p.clone();
        })
        .await;
    if display.json {
        display.show(&last);
    }
    let code = display.finish(&last);
    if let Err(e) = res {
        e.exit_code()
    } else {
        code
    }
}

fn fail(display: &Display, peer: &str, kind: ErrorKind, msg: String) -> u8 {
    let p = Progress {
        peer_url: peer.to_string(),
        error: Some(msg),
        error_kind: Some(kind),
        ..Default::default()
    };
    if display.json {
        display.show(&p);
    }
    display.finish(&p)
}

/// Connects to the sync service (TLS when `--ca` is given).
pub async fn connect_service(t: &ServiceTarget) -> Result<tonic::transport::Channel, String> {
    conn::connect(t)
        .await
        .map(|(channel, _)| channel)
        .map_err(|f| f.message)
}

/// The request message for a sync.
pub fn request_message(req: &SyncRequest) -> pb::SyncPeerRequest {
    pb::SyncPeerRequest {
        peer_url: req.peer_url().to_string(),
        filter: Some(req.filter().into()),
        since: req.since().map_or(0, |s| s.min(i64::MAX as u64) as i64),
        direction: pb::Direction::from(req.direction()) as i32,
        dry_run: false,
        frame_size_limit: req.frame_limit().map(FrameLimit::get),
        timeout_seconds: req
            .peer_options()
            .reply_timeout
            .as_secs()
            .min(u32::MAX as u64) as u32,
    }
}

async fn client(t: &ServiceTarget, req: SyncRequest, display: &Display) -> u8 {
    let peer = req.peer_url().to_string();
    let conn = match ServiceConn::open(t).await {
        Ok(c) => c,
        Err(f) => return fail(display, &peer, f.kind, f.message),
    };
    let msg = conn.request(request_message(&req));
    let mut stream = match conn.client().sync_with_peer(msg).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let f = conn.refusal(&s);
            return fail(display, &peer, f.kind, f.message);
        }
    };
    let mut last = Progress {
        peer_url: peer.clone(),
        ..Default::default()
    };
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                last = crate::proto::progress_from_pb(&m);
                if !m.complete && m.error.is_empty() {
                    display.show(&last);
                }
            }
            Ok(None) => break,
            Err(s) => {
                last.error = Some(status_message(t, &s, Phase::Answered));
                last.error_kind = Some(status_kind(&s));
                break;
            }
        }
    }
    if !last.complete && last.error.is_none() {
        last.error = Some(format!(
            "sync service at {} ended the stream without a result",
            t.addr
        ));
        last.error_kind = Some(ErrorKind::Incomplete);
    }
    if display.json {
        display.show(&last);
    }
    display.finish(&last)
}

/// Where a call to the service failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the service answered (its response headers): the connection and the security
    /// stack's refusals land here.
    BeforeAnswer,
    /// After it answered: the call had started, so a broken stream is a sync cut short.
    Answered,
}

/// The error class (see `SyncError::kind`) of a failed call (mapped beside the proto types).
/// A refused client certificate is told apart before this (see `conn`).
fn status_kind(s: &tonic::Status) -> ErrorKind {
    ErrorKind::from(s.code())
}

fn status_message(t: &ServiceTarget, s: &tonic::Status, phase: Phase) -> String {
    use tonic::Code;
    let broken = matches!(
        s.code(),
        Code::Unknown | Code::Cancelled | Code::Unavailable | Code::Internal
    );
    let mut m = match (phase, s.code()) {
        (Phase::Answered, _) if broken => format!(
            "sync service at {} broke off the call after it started ({}): the sync stopped part \
             way; what was stored stays stored",
            t.addr,
            s.message()
        ),
        (_, Code::Unavailable) if s.message().contains("not ready") => {
            format!("sync service not ready at {}: {}", t.addr, s.message())
        }
        (_, Code::Unavailable) => format!(
            "Failed to connect to sync service at {}: {}",
            t.addr,
            s.message()
        ),
        (_, Code::Unknown | Code::Cancelled) => format!(
            "sync service at {} closed the connection before answering ({})",
            t.addr,
            s.message()
        ),
        (_, code) => format!("sync service at {}: {code:?}: {}", t.addr, s.message()),
    };
    if let Some(wait) = retry_after(s) {
        m.push_str(&format!(" (retry after {:.1}s)", wait.as_secs_f64()));
    }
    m
}

/// `google.rpc.RetryInfo` from the status details, if the service sent one.
pub fn retry_after(s: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    s.get_details_retry_info().and_then(|r| r.retry_delay)
}

/// Builds the request from CLI values.
#[allow(clippy::too_many_arguments)]
pub fn build_request(
    url: &str,
    filter: &str,
    dir: &str,
    since: Option<u64>,
    frame_size_limit: Option<u64>,
    timeout_secs: u64,
    ca: Option<PathBuf>,
    auth_keys: Option<crate::event::Keys>,
) -> Result<SyncRequest, String> {
    let filter = Filter::from_json(filter).map_err(|e| format!("--filter: {e}"))?;
    let direction = Direction::parse(dir)
        .ok_or_else(|| format!("--dir: {dir:?} is not down, up, both or none"))?;
    let url = PeerUrl::parse(url).map_err(|e| e.to_string())?;
    let frame_limit = frame_size_limit
        .map(FrameLimit::new)
        .transpose()
        .map_err(|e| format!("--frame-size-limit: {e}"))?;
    let peer = PeerOptions {
        reply_timeout: Duration::from_secs(timeout_secs.max(1)),
        connect_timeout: Duration::from_secs(timeout_secs.clamp(1, 30)),
        ca_file: ca,
        auth_keys,
        ..PeerOptions::default()
    };
    Ok(SyncRequest::new(url, filter, direction)
        .with_since(since)
        .with_frame_limit(frame_limit)
        .with_peer_options(peer))
}
