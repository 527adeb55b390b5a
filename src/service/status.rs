//! The one place that turns store, negentropy, audit and service-state failures into gRPC
//! `Status` (the sync engine's `ErrorKind` has its own mapping beside it, in `sync`). A handler
//! or gate that fails for one of these reasons asks here, so a reason is worded once and always
//! carries the same code.

use crate::negentropy::NegError;
use crate::store::StoreError;
use tonic::Status;

/// A store failure: unavailable, a refused input, a limit, or an internal error.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(m) => Status::unavailable(m),
        StoreError::Refused(m) => Status::invalid_argument(m),
        e @ StoreError::TooMany { .. } => Status::resource_exhausted(e.to_string()),
        StoreError::Busy(m) => Status::resource_exhausted(m),
        other => Status::internal(other.to_string()),
    }
}

/// Negentropy errors of a reconcile step: only a broken peer message is `InvalidArgument` (the
/// client reads it as the peer's fault); misuse is `FailedPrecondition`.
pub fn neg_status(e: NegError) -> Status {
    match e {
        NegError::Malformed(m) => Status::invalid_argument(m),
        NegError::Invalid(m) => Status::failed_precondition(m),
        NegError::Storage(m) => Status::internal(m),
    }
}

/// The audit record of a decision could not be written (`why`): the request is refused (fail
/// closed).
pub fn audit_unavailable(why: impl std::fmt::Display) -> Status {
    Status::unavailable(crate::audit::refusal_reason(why))
}

/// The store is not ready, so the sync service takes no sync.
pub fn not_ready(e: &StoreError) -> Status {
    Status::unavailable(format!("sync service not ready: {e}"))
}

/// The service is stopping and takes no new sync.
pub fn stopping() -> Status {
    Status::unavailable("sync service is stopping")
}

/// A task the handler waited for (event verification on the blocking pool) panicked or was
/// cancelled: INTERNAL, logged with its cause, which the caller is not shown.
pub fn task_failed(e: &tokio::task::JoinError) -> Status {
    tracing::error!("a handler's task failed: {e}");
    Status::internal("internal error: a task of this call failed")
}

/// A lock was poisoned by a panic elsewhere: `what` (the registry, the gate) is unusable.
pub fn poisoned(what: &str) -> Status {
    Status::internal(format!("{what} poisoned"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_failure_has_its_code() {
        let cases = [
            (
                store_status(StoreError::Unavailable("down".into())),
                Code::Unavailable,
            ),
            (
                store_status(StoreError::Refused("bad".into())),
                Code::InvalidArgument,
            ),
            (
                store_status(StoreError::Busy("full".into())),
                Code::ResourceExhausted,
            ),
            (
                neg_status(NegError::Malformed("x".into())),
                Code::InvalidArgument,
            ),
            (
                neg_status(NegError::Invalid("x".into())),
                Code::FailedPrecondition,
            ),
            (neg_status(NegError::Storage("x".into())), Code::Internal),
            (stopping(), Code::Unavailable),
            (poisoned("registry"), Code::Internal),
        ];
        for (status, code) in cases {
            assert_eq!(status.code(), code, "{status:?}");
        }
    }

    #[test]
    fn an_unwritable_audit_log_refuses_with_one_wording() {
        let e = crate::audit::AuditError::Poisoned("disk full".into());
        let s = audit_unavailable(&e);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            s.message().starts_with("refused: audit log unavailable (")
                && s.message().contains("disk full"),
            "{s:?}"
        );
    }
}
