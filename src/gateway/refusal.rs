//! The one place a refusal becomes a gRPC status (and an HTTP response for the layers).

use std::time::Duration;
use tonic::Code;

/// A refused call: the status code, a reason safe to show and to audit, and when to retry.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// gRPC code.
    pub code: Code,
    /// Why (also the audit reason).
    pub reason: String,
    /// For RESOURCE_EXHAUSTED: when the caller may come back.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    /// A refusal without retry information.
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// UNAVAILABLE: the call's audit record could not be written (`why`), so it is refused.
    pub fn audit_unavailable(why: impl std::fmt::Display) -> Self {
        Self::new(Code::Unavailable, crate::audit::refusal_reason(why))
    }

    /// RESOURCE_EXHAUSTED with `google.rpc.RetryInfo`.
    pub fn exhausted(reason: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            code: Code::ResourceExhausted,
            reason: reason.into(),
            retry_after: Some(retry_after),
        }
    }

    /// The status sent to the caller: the reason as it may be shown (URL secrets redacted,
    /// at most [`crate::service::MAX_SHOWN_MESSAGE`] bytes), whatever a check put in it.
    pub fn to_status(&self) -> tonic::Status {
        let message = crate::service::shown(&self.reason, "");
        match self.retry_after {
            Some(d) => {
                use tonic_types::{ErrorDetails, StatusExt};
                tonic::Status::with_error_details(
                    self.code,
                    message,
                    ErrorDetails::with_retry_info(Some(d)),
                )
            }
            None => tonic::Status::new(self.code, message),
        }
    }

    /// The status as an HTTP response (for tower layers that answer before the handler).
    pub fn to_http(&self) -> http::Response<tonic::body::Body> {
        self.to_status().into_http()
    }
}
