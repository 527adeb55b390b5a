//! One service process: spawning it with its environment, forwarding its output line by line
//! with a `[name]` prefix, learning its address from its announce line, and stopping it
//! (SIGTERM, bounded wait, then SIGKILL).
//!
//! Owns: the OS process and its pipes. Must not decide when to start or restart (that is the
//! supervisor's) nor probe health (health.rs).

use super::health::Probe;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many of a child's last stderr lines are kept for error messages.
const KEPT_STDERR_LINES: usize = 3;
/// Bound on waiting for a dead child's pipes to be read to the end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on running the `kill` command itself.
const KILL_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The services the launcher runs, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceName {
    /// `orly-db`: owns the store.
    Db,
    /// `orly-relay`: the Nostr relay.
    Relay,
    /// `orly-sync-negentropy`: the gRPC sync service.
    Sync,
}

impl ServiceName {
    /// The binary's file name, also the prefix of its output lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Db => "orly-db",
            Self::Relay => "orly-relay",
            Self::Sync => "orly-sync-negentropy",
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to start one service.
#[derive(Debug, Clone)]
pub(super) struct ServiceSpec {
    /// Which service.
    pub name: ServiceName,
    /// Path of its binary.
    pub binary: PathBuf,
    /// The variable that carries its listen address.
    pub listen_var: &'static str,
    /// Its listen address; port 0 until the first start announces the real one.
    pub listen: SocketAddr,
    /// Variables set on top of the launcher's own environment.
    pub env: Vec<(&'static str, String)>,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<&'static str>,
    /// How readiness is checked.
    pub probe: Probe,
}

/// A started service process.
pub(super) struct RunningChild {
    name: ServiceName,
    pid: u32,
    child: tokio::process::Child,
    started: Instant,
    announced: watch::Receiver<Option<SocketAddr>>,
    recent_stderr: Arc<Mutex<VecDeque<String>>>,
    output: Vec<JoinHandle<()>>,
}

impl RunningChild {
    /// Starts `spec`'s binary in its own process group (so a terminal's Ctrl-C reaches only the
    /// launcher, which then stops the services in order), stdin closed, output piped.
    pub(super) fn spawn(spec: &ServiceSpec) -> std::io::Result<Self> {
        let mut cmd = tokio::process::Command::new(&spec.binary);
        for k in &spec.env_remove {
            cmd.env_remove(k);
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(spec.listen_var, spec.listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or_default();
        let (tx, announced) = watch::channel(None);
        let recent_stderr = Arc::new(Mutex::new(VecDeque::new()));
        let mut output = Vec::new();
        if let Some(out) = child.stdout.take() {
            let name = spec.name;
            output.push(tokio::spawn(forward(out, spec.name, false, move |line| {
                if tx.borrow().is_none()
                    && let Some(addr) = parse_announce(name, line)
                {
                    let _ = tx.send(Some(addr));
                }
            })));
        }
        if let Some(err) = child.stderr.take() {
            let recent = recent_stderr.clone();
            output.push(tokio::spawn(forward(err, spec.name, true, move |line| {
                let mut r = recent.lock().unwrap_or_else(|p| p.into_inner());
                if r.len() == KEPT_STDERR_LINES {
                    r.pop_front();
                }
                r.push_back(line.to_string());
            })));
        }
        Ok(Self {
            name: spec.name,
            pid,
            child,
            started: Instant::now(),
            announced,
            recent_stderr,
            output,
        })
    }

    /// Which service this is.
    pub(super) fn name(&self) -> ServiceName {
        self.name
    }

    /// The process id.
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Time since the process was started.
    pub(super) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The address from the child's "NAME listening on ADDR" line, once printed.
    pub(super) fn announced(&self) -> Option<SocketAddr> {
        *self.announced.borrow()
    }

    /// The exit status if the process has ended (reaping it), else `None`.
    pub(super) fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to end.
    pub(super) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The child's last stderr lines that are not routine log lines (its fatal error, a
    /// panic message), joined, for error messages.
    pub(super) async fn last_words(&mut self) -> String {
        self.drain_output().await;
        let r = self.recent_stderr.lock().unwrap_or_else(|p| p.into_inner());
        last_words(r.iter())
    }

    /// Lets the output forwarders finish (bounded), so a dead child's last lines are printed.
    pub(super) async fn drain_output(&mut self) {
        for h in self.output.drain(..) {
            let abort = h.abort_handle();
            if tokio::time::timeout(DRAIN_TIMEOUT, h).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Stops the process: SIGTERM, up to `timeout` to exit, then SIGKILL. Returns how it ended.
    pub(super) async fn stop(mut self, timeout: Duration) -> StopOutcome {
        if let Some(status) = self.try_exited() {
            self.drain_output().await;
            return StopOutcome::AlreadyExited(status);
        }
        // The child is not reaped yet, so its pid cannot have been reused.
        let term = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let sent = matches!(
            tokio::time::timeout(KILL_COMMAND_TIMEOUT, term).await,
            Ok(Ok(s)) if s.success()
        );
        let outcome = if sent {
            match tokio::time::timeout(timeout, self.child.wait()).await {
                Ok(Ok(status)) => StopOutcome::Exited(status),
                _ => StopOutcome::Killed(self.kill().await),
            }
        } else {
            tracing::warn!(service = %self.name, pid = self.pid, "kill -TERM failed; killing");
            StopOutcome::Killed(self.kill().await)
        };
        self.drain_output().await;
        outcome
    }

    async fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.start_kill();
        tokio::time::timeout(KILL_COMMAND_TIMEOUT, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// How [`RunningChild::stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopOutcome {
    /// It had already exited.
    AlreadyExited(ExitStatus),
    /// It exited after SIGTERM.
    Exited(ExitStatus),
    /// It did not exit in time and was killed (`None`: not even reaped after SIGKILL).
    Killed(Option<ExitStatus>),
}

impl fmt::Display for StopOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyExited(s) => write!(f, "had already exited ({s})"),
            Self::Exited(s) => write!(f, "stopped ({s})"),
            Self::Killed(Some(s)) => write!(f, "killed after the stop timeout ({s})"),
            Self::Killed(None) => write!(f, "killed after the stop timeout, not reaped"),
        }
    }
}

/// Picks what explains an exit from a child's last stderr lines: the ones that are not
/// INFO/DEBUG/TRACE log lines (else the very last line), colours removed.
fn last_words<'a>(lines: impl Iterator<Item = &'a String>) -> String {
    let plain: Vec<String> = lines.map(|l| strip_ansi(l)).collect();
    let routine = |l: &&String| {
        [
            " INFO ",
            " DEBUG ",
            " TRACE ",
            r#""level":"INFO""#,
            r#""level":"DEBUG""#,
            r#""level":"TRACE""#,
        ]
        .iter()
        .any(|m| l.contains(m))
    };
    let telling: Vec<&String> = plain.iter().filter(|l| !routine(l)).collect();
    match (telling.is_empty(), plain.last()) {
        (false, _) => telling
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        (true, Some(last)) => last.clone(),
        (true, None) => String::new(),
    }
}

/// Removes ANSI escape sequences (`ESC [ ... final`), which the services' logs use for colour.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses "NAME listening on ADDR", the first stdout line of every orly service.
pub fn parse_announce(name: ServiceName, line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix(name.as_str())?
        .strip_prefix(" listening on ")?
        .parse()
        .ok()
}

/// The launcher's stderr line for a service's stderr `line`: prefixed `[name] ` in text logs; in
/// JSON logs (`ORLY_LOG_FORMAT=json`, which the services inherit) the service's JSON object with
/// `"service":"name"` added, and any other line (a fatal error, a panic) wrapped as
/// `{"service":..,"fields":{"message":..}}`, so every line a log shipper reads is JSON.
fn stderr_line(name: ServiceName, line: &str) -> String {
    if crate::telemetry::log_format() != crate::telemetry::LogFormat::Json {
        return format!("[{name}] {line}");
    }
    let service = serde_json::Value::from(name.as_str());
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(mut obj)) => {
            obj.insert("service".into(), service);
            serde_json::Value::Object(obj).to_string()
        }
        _ => serde_json::json!({ "service": service, "fields": { "message": line } }).to_string(),
    }
}

/// Copies `pipe` line by line to the launcher's stdout (or stderr), prefixed `[name] ` (or, for
/// stderr in JSON logs, see [`stderr_line`]), showing each line to `inspect` first. Invalid
/// UTF-8 is replaced, not fatal.
async fn forward(
    pipe: impl AsyncRead + Unpin,
    name: ServiceName,
    to_stderr: bool,
    mut inspect: impl FnMut(&str),
) {
    use std::io::Write;
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        inspect(line);
        // Whole lines under the lock, so services' lines never interleave mid-line. A closed
        // launcher stdout must not stop the child: write errors are ignored.
        if to_stderr {
            let _ = writeln!(std::io::stderr().lock(), "{}", stderr_line(name, line));
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "[{name}] {line}");
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
#[path = "child_tests.rs"]
mod tests;
