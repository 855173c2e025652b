//! The one mapping from engine errors to gRPC statuses: [`ErrorKind`] → [`Code`] in one
//! table ([`code_of`]), the error's own text as the message (it says what to fix). A refusal
//! that may succeed later carries `google.rpc.RetryInfo` in `grpc-status-details-bin`.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::api::convert::WireError;
use crate::engine::{EngineError, ErrorKind};

/// The gRPC code of each kind (`google.rpc.Code` names the kinds, so the table is 1:1).
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Unimplemented => Code::Unimplemented,
    }
}

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Self {
        let code = code_of(error.kind());
        let mut message = error.to_string();
        // What went wrong inside is in the log under the call's request id; the caller gets
        // the id to quote.
        if matches!(code, Code::Unavailable | Code::Internal)
            && let Some(id) = crate::telemetry::request_id::current()
        {
            message.push_str(&format!(" (request id {id})"));
        }
        match error.retry_after() {
            Some(delay) => retry_status(code, message, delay),
            None => Status::new(code, message),
        }
    }
}

/// A status with `message` that asks the caller to retry after `delay` (`google.rpc.RetryInfo`).
pub fn retry_status(code: Code, message: impl Into<String>, delay: Duration) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay)))
}

impl From<WireError> for Status {
    fn from(error: WireError) -> Self {
        Status::invalid_argument(error.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn codes() {
        let status = Status::from(EngineError::SessionNotFound("a".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "session 'a' does not exist");
        let status = Status::from(EngineError::MissingToolResults {
            session_id: "a".into(),
            missing: "call_1".into(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("call_1"));
        assert_eq!(
            Status::from(EngineError::from(StoreError::Unavailable("down".into()))).code(),
            Code::Unavailable
        );
        let status = Status::from(EngineError::EtagMismatch {
            session_id: "a".into(),
            given: "\"1-0\"".into(),
            current: "\"2-0\"".into(),
        });
        assert_eq!(status.code(), Code::Aborted);
        assert!(status.message().contains("read it again"), "{status:?}");
        let status = Status::from(EngineError::Overloaded {
            message: "too many".into(),
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_details_retry_info().expect("retry info");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(1500)));
    }
}
