//! The one mapping from engine errors to gRPC statuses.

use tonic::{Code, Status};

use crate::api::convert::WireError;
use crate::engine::EngineError;
use crate::model::ModelError;
use crate::store::StoreError;

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Self {
        let code = match &error {
            EngineError::InvalidArgument(_)
            | EngineError::UnknownModel { .. }
            | EngineError::MessageTooLarge { .. } => Code::InvalidArgument,
            EngineError::SessionNotFound(_) | EngineError::UnknownTool { .. } => Code::NotFound,
            EngineError::SessionExists(_) => Code::AlreadyExists,
            EngineError::MissingToolResults { .. } | EngineError::FailedPrecondition(_) => {
                Code::FailedPrecondition
            }
            EngineError::Conflict(_) => Code::Aborted,
            EngineError::Cancelled => Code::Cancelled,
            EngineError::ShuttingDown => Code::Unavailable,
            EngineError::Model(model) => match model {
                ModelError::Unavailable { .. } => Code::Unavailable,
                ModelError::Rejected { .. } | ModelError::ContextTooLong { .. } => {
                    Code::InvalidArgument
                }
                ModelError::Unauthenticated { .. } => Code::Unauthenticated,
                ModelError::PermissionDenied { .. } => Code::PermissionDenied,
                ModelError::RateLimited { .. } => Code::ResourceExhausted,
            },
            EngineError::Store(store) => match store {
                StoreError::NotFound(_) => Code::NotFound,
                StoreError::AlreadyExists(_) => Code::AlreadyExists,
                StoreError::Conflict(_) => Code::Aborted,
                StoreError::Unavailable(_) => Code::Unavailable,
            },
        };
        Status::new(code, error.to_string())
    }
}

impl From<WireError> for Status {
    fn from(error: WireError) -> Self {
        Status::invalid_argument(error.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Status::from(EngineError::Store(StoreError::Unavailable("down".into()))).code(),
            Code::Unavailable
        );
    }
}
