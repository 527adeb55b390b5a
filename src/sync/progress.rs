//! What a sync reports: progress counters, directions and the ways it can fail (each with its
//! CLI exit code).

use crate::peer::PeerError;
use crate::store::StoreError;

/// Which way events move: on the command line, in requests and in the admin policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Fetch what the relay has and we lack.
    #[default]
    Down,
    /// Upload what we have and the relay lacks.
    Up,
    /// Both.
    Both,
    /// Only report the differences.
    None,
}

impl Direction {
    /// Every direction, in policy order.
    pub const ALL: [Direction; 4] = [Self::Down, Self::Up, Self::Both, Self::None];

    /// Parses a name (`down`, `up`, `both`, `none`), exactly as written.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::parse(name)
    }

    /// Parses `down|up|both|none`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "down" => Self::Down,
            "up" => Self::Up,
            "both" => Self::Both,
            "none" => Self::None,
            _ => return None,
        })
    }

    /// The name used on the command line and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
            Self::Both => "both",
            Self::None => "none",
        }
    }

    pub(crate) fn fetches(self) -> bool {
        matches!(self, Self::Down | Self::Both)
    }

    pub(crate) fn uploads(self) -> bool {
        matches!(self, Self::Up | Self::Both)
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters after a round or a transfer batch; the last one has `complete` or `error` set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// The relay.
    pub peer_url: String,
    /// Negentropy rounds so far (all sessions).
    pub round: u64,
    /// Ids we have and the relay lacks (distinct).
    pub have: u64,
    /// Ids the relay has and we lack (distinct).
    pub need: u64,
    /// Events fetched, verified and newly stored by this sync (a newer version replacing an
    /// older one counts). Over syncs running at once into one store, these add up to what the
    /// store gained.
    pub fetched: u64,
    /// Events uploaded that the relay accepted as new (not those it answered `duplicate:`).
    pub sent: u64,
    /// Events moved that the receiving side already had when they arrived: fetched events
    /// another sync stored first, uploads the relay answered `duplicate:` (another sync sent
    /// them first, or it holds a newer version), and refused uploads of events replaced or
    /// deleted here by the end of the sync. Moved, not new; the sides agree on them.
    pub already_had: u64,
    /// Needed ids not fetched, or fetched and not stored: known here as stored, superseded or
    /// deleted before the fetch, or superseded, deleted or ephemeral when saved.
    pub skipped: u64,
    /// Events received but dropped: not asked for, or failing verification.
    pub dropped: u64,
    /// Needed ids the relay did not send when asked: it named them in the reconciliation, then
    /// ended the fetch without them. Mostly replaced or deleted there meanwhile (another sync
    /// uploading a newer version, a client's deletion), after which the sides agree, so these
    /// are counted, not a difference; a relay that withholds events shows up here.
    pub undelivered: u64,
    /// Uploads the relay refused, of events still held here at the end of the sync: the
    /// sides differ by these.
    pub rejected: u64,
    /// Time ranges split after a size refusal.
    pub splits: u64,
    /// Bytes sent to the relay.
    pub bytes_sent: u64,
    /// Bytes received from the relay.
    pub bytes_received: u64,
    /// Set on the final message of a successful sync.
    pub complete: bool,
    /// Set on the final message of a failed sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The relay's reason for the last refused upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
    /// On a completed sync: why the two sides still differ, by counter name (`"dropped"`,
    /// `"rejected"`); empty when they agree. See [`Progress::differences`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differs: Vec<&'static str>,
    /// With `error`: its class (see `SyncError::kind`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
}

impl Progress {
    /// Why a completed sync left the two sides different, by counter name: `"dropped"` (events
    /// received that failed verification or were not asked for) and `"rejected"` (uploads the
    /// relay refused). Empty when nothing was lost that way.
    pub fn differences(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.dropped > 0 {
            v.push("dropped");
        }
        if self.rejected > 0 {
            v.push("rejected");
        }
        v
    }

    /// Marks the final message of a sync that completed, naming what still differs.
    pub fn mark_complete(&mut self) {
        self.complete = true;
        self.error = None;
        self.error_kind = None;
        self.differs = self.differences();
    }

    /// The exit code of `orly sync` for this final progress: the error's class, else
    /// [`exit::DIFFER`] when the sides still differ, else [`exit::SUCCESS`] (a progress that
    /// is neither complete nor failed never ended: [`exit::INCOMPLETE`]).
    pub fn exit_code(&self) -> u8 {
        match &self.error {
            Some(_) => self.error_kind.unwrap_or(ErrorKind::Incomplete).exit_code(),
            None if !self.complete => exit::INCOMPLETE,
            None if !self.differences().is_empty() => exit::DIFFER,
            None => exit::SUCCESS,
        }
    }

    /// Every counter in words, for a summary line: `2 rounds, have 1, need 3, fetched 3, …,
    /// 700 B up / 9000 B down`.
    pub fn counts_text(&self) -> String {
        format!(
            "{} rounds, have {}, need {}, fetched {}, sent {}, already had {}, skipped {}, \
             dropped {}, undelivered {}, refused uploads {}, {} B up / {} B down",
            self.round,
            self.have,
            self.need,
            self.fetched,
            self.sent,
            self.already_had,
            self.skipped,
            self.dropped,
            self.undelivered,
            self.rejected,
            self.bytes_sent,
            self.bytes_received
        )
    }

    /// What still differs after a completed sync, in words for the summary line
    /// (`"2 events dropped (failed verification or not asked for) and 3 uploads refused by
    /// the relay"`); `None` when the sides agree.
    pub fn difference_text(&self) -> Option<String> {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = Vec::new();
        if self.dropped > 0 {
            parts.push(format!(
                "{} dropped (failed verification or not asked for)",
                plural(self.dropped, "event", "events")
            ));
        }
        if self.rejected > 0 {
            parts.push(format!(
                "{} refused by the relay",
                plural(self.rejected, "upload", "uploads")
            ));
        }
        (!parts.is_empty()).then(|| parts.join(" and "))
    }
}

/// Why a sync ended without completing.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Could not reach the relay.
    #[error(transparent)]
    Connect(PeerError),
    /// The relay refused (NOTICE, CLOSED or NEG-ERR), with its text.
    #[error("refused by relay: {0}")]
    Refused(String),
    /// The job's own event cap ([`super::SyncRequest::max_events`], set only by the sync
    /// service from the admin's policy) stopped it with differences left to move.
    #[error("stopped by the service's policy: at most {0} events per sync")]
    Capped(u64),
    /// The relay requires NIP-42 AUTH and we have no key, or it refused ours.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The relay stopped answering.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The relay broke the protocol or disconnected; what was stored stays stored.
    #[error("incomplete: {0}")]
    Incomplete(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Invalid request (bad filter, URL, frame limit).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl SyncError {
    /// The class of failure, as carried in `SyncProgress.error_kind` so client mode exits with
    /// the same code as direct mode.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::Refused(_) | Self::Capped(_) => ErrorKind::Refused,
            Self::Auth(_) => ErrorKind::Auth,
            Self::Timeout(_) | Self::Connect(PeerError::ConnectTimeout(_)) => ErrorKind::Timeout,
            Self::Connect(_) | Self::Incomplete(_) => ErrorKind::Incomplete,
            Self::Store(_) => ErrorKind::Store,
        }
    }

    /// The documented exit code of `orly sync` for this failure.
    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }
}

/// The class of a sync's failure: what `orly sync` exits with, and what crosses the wire as
/// `SyncProgress.error_kind` (the lowercase name) so client mode exits as direct mode does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Bad request: flags, filter, URL.
    Invalid,
    /// Refused by the relay, or by the sync service's policy or limits.
    Refused,
    /// NIP-42, or the service's certificate or token checks.
    Auth,
    /// Connect, first reply or idle timeout.
    Timeout,
    /// Stopped part way: disconnected, protocol error, unreachable.
    Incomplete,
    /// Cancelled (CancelSync, or the caller went away).
    Cancelled,
    /// The local store failed.
    Store,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Invalid,
        ErrorKind::Refused,
        ErrorKind::Auth,
        ErrorKind::Timeout,
        ErrorKind::Incomplete,
        ErrorKind::Cancelled,
        ErrorKind::Store,
    ];

    /// The name on the wire and in `--json` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::Refused => "refused",
            ErrorKind::Auth => "auth",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Incomplete => "incomplete",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Store => "store",
        }
    }

    /// Reads a name from the wire; a name this version does not know is `Incomplete` (the
    /// sync did not complete, whatever the reason).
    pub fn parse(name: &str) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .unwrap_or(ErrorKind::Incomplete)
    }

    /// The documented exit code of `orly sync`: the one place kinds become exit codes.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Invalid => exit::USAGE,
            ErrorKind::Refused => exit::REFUSED,
            ErrorKind::Auth => exit::AUTH,
            ErrorKind::Timeout => exit::TIMEOUT,
            ErrorKind::Store => exit::FAILURE,
            ErrorKind::Incomplete | ErrorKind::Cancelled => exit::INCOMPLETE,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Exit codes of `orly sync` (both modes), as documented in `--help` and the README.
pub mod exit {
    /// The sync completed.
    pub const SUCCESS: u8 = 0;
    /// Local failure (store, I/O).
    pub const FAILURE: u8 = 1;
    /// Bad flags, filter or URL.
    pub const USAGE: u8 = 2;
    /// The relay (or the sync service's policy) refused.
    pub const REFUSED: u8 = 3;
    /// NIP-42 AUTH (or service authentication) failed.
    pub const AUTH: u8 = 4;
    /// Connect, reply or idle timeout.
    pub const TIMEOUT: u8 = 5;
    /// Stopped part way: disconnect, protocol error, unreachable peer or service, cancelled.
    pub const INCOMPLETE: u8 = 6;
    /// The sync completed, but the two sides still differ: events were dropped (failed
    /// verification, not asked for) or the relay refused uploads.
    pub const DIFFER: u8 = 7;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_final_progress() {
        let mut p = Progress::default();
        assert_eq!(p.exit_code(), exit::INCOMPLETE, "never ended");
        p.mark_complete();
        assert_eq!((p.exit_code(), p.difference_text()), (exit::SUCCESS, None));
        p.dropped = 1;
        p.rejected = 3;
        p.mark_complete();
        assert_eq!(p.exit_code(), exit::DIFFER);
        assert_eq!(
            p.difference_text().as_deref(),
            Some(
                "1 event dropped (failed verification or not asked for) and 3 uploads refused \
                 by the relay"
            )
        );
        p.complete = false;
        p.error = Some("refused by relay: blocked: no".into());
        p.error_kind = Some(ErrorKind::Refused);
        assert_eq!(
            p.exit_code(),
            exit::REFUSED,
            "an error wins over differences"
        );
        assert_eq!(SyncError::Capped(5).exit_code(), exit::REFUSED);
    }

    #[test]
    fn error_kinds_cross_the_wire_by_name() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(
            ErrorKind::parse("from-a-newer-version"),
            ErrorKind::Incomplete
        );
        assert_eq!(ErrorKind::Cancelled.exit_code(), exit::INCOMPLETE);
    }
}
