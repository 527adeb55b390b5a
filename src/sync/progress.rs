//! What a sync reports: progress counters, directions and the ways it can fail (each with its
//! CLI exit code).

use crate::peer::PeerError;
use crate::store::StoreError;

/// Which way events move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
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
    /// Events fetched, verified and stored.
    pub fetched: u64,
    /// Events uploaded and accepted by the relay.
    pub sent: u64,
    /// Needed ids not fetched or not stored: superseded or deleted here, or stored meanwhile
    /// (by another sync).
    pub skipped: u64,
    /// Events received but dropped: not asked for, or failing verification.
    pub dropped: u64,
    /// Uploads the relay refused.
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
    /// With `error`: its class (see `SyncError::kind`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
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
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::Refused(_) => "refused",
            Self::Auth(_) => "auth",
            Self::Timeout(_) | Self::Connect(PeerError::ConnectTimeout(_)) => "timeout",
            Self::Connect(_) | Self::Incomplete(_) => "incomplete",
            Self::Store(_) => "store",
        }
    }

    /// The documented exit code of `orly sync` for this failure.
    pub fn exit_code(&self) -> u8 {
        exit::for_kind(self.kind())
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

    /// The exit code for an error class (see `SyncError::kind`).
    pub fn for_kind(kind: &str) -> u8 {
        match kind {
            "invalid" => USAGE,
            "refused" => REFUSED,
            "auth" => AUTH,
            "timeout" => TIMEOUT,
            "store" => FAILURE,
            _ => INCOMPLETE,
        }
    }
}
