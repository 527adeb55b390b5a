//! The sync engine's types on the wire (`orlysync.negentropy.v1`): progress both ways, the
//! direction, and the one place gRPC status codes become a sync's [`ErrorKind`]. Texts cross
//! as they are: what a caller may be shown (redaction) is the service's decision.

use super::orlysync::negentropy::v1 as pb;
use crate::sync::{Direction, ErrorKind, Progress};
use tonic::Code;

impl From<Direction> for pb::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Down => pb::Direction::Down,
            Direction::Up => pb::Direction::Up,
            Direction::Both => pb::Direction::Both,
            Direction::None => pb::Direction::None,
        }
    }
}

/// The direction a request's `direction` field names (unspecified: down); `None` for a value
/// this version does not know.
pub fn direction_from_pb(value: i32) -> Option<Direction> {
    Some(match pb::Direction::try_from(value).ok()? {
        pb::Direction::Unspecified | pb::Direction::Down => Direction::Down,
        pb::Direction::Up => Direction::Up,
        pb::Direction::Both => Direction::Both,
        pb::Direction::None => Direction::None,
    })
}

/// The class of a refused or failed call to the sync service: the one place gRPC status codes
/// become kinds (so client mode exits as direct mode would). A refused client certificate is
/// told apart before this: a closed or reset connection is never "auth".
impl From<Code> for ErrorKind {
    fn from(code: Code) -> Self {
        match code {
            Code::InvalidArgument => ErrorKind::Invalid,
            Code::PermissionDenied | Code::ResourceExhausted => ErrorKind::Refused,
            Code::Unauthenticated => ErrorKind::Auth,
            Code::DeadlineExceeded => ErrorKind::Timeout,
            _ => ErrorKind::Incomplete,
        }
    }
}

/// `p` as a `SyncProgress` of sync `sync_id`, every counter and text as it is.
pub fn progress_to_pb(p: &Progress, sync_id: &str) -> pb::SyncProgress {
    let n = |v: u64| v.min(i64::MAX as u64) as i64;
    pb::SyncProgress {
        peer_url: p.peer_url.clone(),
        round: i32::try_from(p.round).unwrap_or(i32::MAX),
        have_count: n(p.have),
        need_count: n(p.need),
        fetched_count: n(p.fetched),
        sent_count: n(p.sent),
        complete: p.complete,
        error: p.error.clone().unwrap_or_default(),
        sync_id: sync_id.to_string(),
        skipped_count: n(p.skipped),
        dropped_count: n(p.dropped),
        rejected_count: n(p.rejected),
        bytes_sent: n(p.bytes_sent),
        bytes_received: n(p.bytes_received),
        error_kind: p.error_kind.map(|k| k.as_str().into()).unwrap_or_default(),
        last_refusal: p.last_refusal.clone().unwrap_or_default(),
        already_had_count: n(p.already_had),
        split_count: n(p.splits),
        undelivered_count: n(p.undelivered),
    }
}

/// The progress a `SyncProgress` message carries (client mode shows it like direct mode).
pub fn progress_from_pb(p: &pb::SyncProgress) -> Progress {
    let n = |v: i64| v.max(0) as u64;
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut progress = Progress {
        peer_url: p.peer_url.clone(),
        round: u64::try_from(p.round).unwrap_or(0),
        have: n(p.have_count),
        need: n(p.need_count),
        fetched: n(p.fetched_count),
        sent: n(p.sent_count),
        already_had: n(p.already_had_count),
        skipped: n(p.skipped_count),
        dropped: n(p.dropped_count),
        rejected: n(p.rejected_count),
        undelivered: n(p.undelivered_count),
        splits: n(p.split_count),
        bytes_sent: n(p.bytes_sent),
        bytes_received: n(p.bytes_received),
        complete: p.complete,
        error: text(&p.error),
        error_kind: text(&p.error_kind)
            .map(|k| ErrorKind::parse(&k))
            .or_else(|| text(&p.error).map(|_| ErrorKind::Incomplete)),
        last_refusal: text(&p.last_refusal),
        differs: Vec::new(),
    };
    if progress.complete && progress.error.is_none() {
        progress.mark_complete();
    }
    progress
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter crosses the wire: client mode shows what direct mode shows.
    #[test]
    fn progress_crosses_the_wire_whole() {
        let p = Progress {
            peer_url: "ws://u:secret@127.0.0.1:7777/?t=1".into(),
            round: 1,
            have: 2,
            need: 3,
            fetched: 4,
            sent: 5,
            already_had: 6,
            skipped: 7,
            dropped: 8,
            undelivered: 13,
            rejected: 9,
            splits: 10,
            bytes_sent: 11,
            bytes_received: 12,
            complete: false,
            error: Some("timed out: no reply".into()),
            error_kind: Some(ErrorKind::Timeout),
            last_refusal: Some("blocked: no".into()),
            differs: Vec::new(),
        };
        let m = progress_to_pb(&p, "0123");
        assert_eq!((m.sync_id.as_str(), m.split_count), ("0123", 10));
        assert_eq!(progress_from_pb(&m), p);
        let mut done = p.clone();
        done.mark_complete();
        assert_eq!(done.differs, vec!["dropped", "rejected"]);
        assert_eq!(progress_from_pb(&progress_to_pb(&done, "0123")), done);
        // An error without a kind (an older service) still fails the sync.
        let old = pb::SyncProgress {
            error: "boom".into(),
            ..Default::default()
        };
        assert_eq!(
            progress_from_pb(&old).error_kind,
            Some(ErrorKind::Incomplete)
        );
    }

    #[test]
    fn directions_and_status_codes() {
        for d in Direction::ALL {
            assert_eq!(direction_from_pb(pb::Direction::from(d) as i32), Some(d));
        }
        assert_eq!(direction_from_pb(0), Some(Direction::Down), "unspecified");
        assert_eq!(direction_from_pb(99), None);
        let kinds = [
            (Code::InvalidArgument, ErrorKind::Invalid),
            (Code::PermissionDenied, ErrorKind::Refused),
            (Code::ResourceExhausted, ErrorKind::Refused),
            (Code::Unauthenticated, ErrorKind::Auth),
            (Code::DeadlineExceeded, ErrorKind::Timeout),
            (Code::Unavailable, ErrorKind::Incomplete),
            (Code::Internal, ErrorKind::Incomplete),
        ];
        for (code, kind) in kinds {
            assert_eq!(ErrorKind::from(code), kind, "{code:?}");
        }
    }
}
