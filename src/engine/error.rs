//! The engine's typed errors, and the protocol-neutral [`ErrorKind`] every door maps to its
//! own status (gRPC in `server::status`; HTTP and other doors the same way). The engine
//! itself never names a protocol.
//!
//! Store failures arrive through one conversion ([`From<StoreError>`]): a missing session is
//! [`EngineError::SessionNotFound`], a taken id [`EngineError::SessionExists`], a stale write
//! [`EngineError::Conflict`], and only a store that cannot work stays a store error.

use std::time::Duration;

use crate::model::ModelError;
use crate::store::StoreError;

/// Why an engine operation failed. Every message says what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed; the text says what to fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// The session does not exist.
    #[error("session '{0}' does not exist")]
    SessionNotFound(String),
    /// The session id is taken.
    #[error("session '{0}' already exists; choose another session_id or leave it empty")]
    SessionExists(String),
    /// The model is not served here.
    #[error("unknown model '{model}'; known models: {known}")]
    UnknownModel {
        /// The name asked for.
        model: String,
        /// The names served, comma separated.
        known: String,
    },
    /// The tool is not served here.
    #[error("unknown tool '{name}'; server-side tools: {known}")]
    UnknownTool {
        /// The name asked for.
        name: String,
        /// The names served, comma separated.
        known: String,
    },
    /// The session waits for tool results the request did not carry.
    #[error(
        "session '{session_id}' is waiting for tool results; send a tool result for each pending call (missing: {missing})"
    )]
    MissingToolResults {
        /// The session.
        session_id: String,
        /// The pending call ids without a result, comma separated.
        missing: String,
    },
    /// The operation is not possible in the session's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's role does not allow the operation.
    #[error("{0}")]
    PermissionDenied(String),
    /// An API key id names no key.
    #[error("no API key has id '{0}'; `contextd keys list` shows the ids")]
    KeyNotFound(String),
    /// The new message (with its turn) does not fit the context window.
    #[error(
        "the message does not fit the context window: it needs {needed} tokens but {available} are left (max_context_tokens {max_context_tokens} - reserved output {reserved_output_tokens} - system prompt, context and summary {pinned}); shorten it by {over} tokens or raise max_context_tokens"
    )]
    MessageTooLarge {
        /// Tokens the message and its turn need.
        needed: u32,
        /// Tokens left for them.
        available: u32,
        /// `needed - available`.
        over: u32,
        /// The window size.
        max_context_tokens: u32,
        /// The reserved output budget.
        reserved_output_tokens: u32,
        /// Tokens of the system prompt, context and summary.
        pinned: u32,
    },
    /// The turn's tool results (with its message) do not fit the context window.
    #[error(
        "the turn's tool results do not fit the context window: they take {tool_tokens} tokens and the window is {over} tokens short; ask the tool for less, or lower limits.max_tool_result_tokens or raise max_context_tokens"
    )]
    ToolResultsTooLarge {
        /// Tokens of the turn's tool results.
        tool_tokens: u32,
        /// Tokens over the window.
        over: u32,
    },
    /// Another writer changed the session between read and write.
    #[error("session '{0}' was changed concurrently; retry the request")]
    Conflict(String),
    /// A conditional change named an etag the session no longer has (AIP-154).
    #[error(
        "session '{session_id}' has changed since it was read (its etag is now {current}, the request named {given}); read it again with GetSession and retry with its current etag"
    )]
    EtagMismatch {
        /// The session.
        session_id: String,
        /// The etag the request named.
        given: String,
        /// The session's etag now.
        current: String,
    },
    /// The turn was cancelled (by the client, or because the client went away).
    #[error("the turn was cancelled; nothing of it was stored")]
    Cancelled,
    /// A bound was reached (a queue, a quota); the text names the limit and what to do.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Too much at once (a rate or concurrency limit): the same request may succeed after
    /// `retry_after`. The text names the limit.
    #[error("{message}")]
    Overloaded {
        /// What was refused and which limit refused it.
        message: String,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The server is shutting down and takes no new turns.
    #[error(
        "contextd is shutting down and takes no new turns; retry against another replica or after the restart"
    )]
    ShuttingDown,
    /// The model backend failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The store cannot do its work now (unreachable, failing); retrying later may work.
    #[error("the session store is unavailable: {0}")]
    StoreUnavailable(String),
}

/// What kind of failure an [`EngineError`] is, named after `google.rpc.Code`: the one thing a
/// door needs to choose its status (a gRPC code, an HTTP status, an MCP error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed; fixing it may succeed.
    InvalidArgument,
    /// The session (or tool) does not exist for this caller.
    NotFound,
    /// What the request would create exists already.
    AlreadyExists,
    /// The request lost a race with another writer, or its etag is stale: read again, retry.
    Aborted,
    /// The session's state does not allow the operation now.
    FailedPrecondition,
    /// A dependency (model, store) or the server itself is unavailable; retrying may work.
    Unavailable,
    /// A quota or rate limit was hit.
    ResourceExhausted,
    /// The operation took longer than the caller allowed.
    DeadlineExceeded,
    /// The operation was cancelled.
    Cancelled,
    /// A credential (ours, at a provider) is missing or wrong.
    Unauthenticated,
    /// A credential is valid but not allowed to do this.
    PermissionDenied,
    /// A bug or an unreadable stored state: not the caller's fault.
    Internal,
    /// The operation is not implemented here.
    Unimplemented,
}

impl EngineError {
    /// The protocol-neutral kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::InvalidArgument(_)
            | EngineError::UnknownModel { .. }
            | EngineError::MessageTooLarge { .. }
            | EngineError::ToolResultsTooLarge { .. } => ErrorKind::InvalidArgument,
            EngineError::SessionNotFound(_) | EngineError::UnknownTool { .. } => {
                ErrorKind::NotFound
            }
            EngineError::SessionExists(_) => ErrorKind::AlreadyExists,
            EngineError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            EngineError::KeyNotFound(_) => ErrorKind::NotFound,
            EngineError::MissingToolResults { .. } | EngineError::FailedPrecondition(_) => {
                ErrorKind::FailedPrecondition
            }
            EngineError::Conflict(_) | EngineError::EtagMismatch { .. } => ErrorKind::Aborted,
            EngineError::Cancelled => ErrorKind::Cancelled,
            EngineError::ResourceExhausted(_) | EngineError::Overloaded { .. } => {
                ErrorKind::ResourceExhausted
            }
            EngineError::ShuttingDown | EngineError::StoreUnavailable(_) => ErrorKind::Unavailable,
            EngineError::Model(model) => match model {
                ModelError::Unavailable { .. } => ErrorKind::Unavailable,
                ModelError::Rejected { .. } | ModelError::ContextTooLong { .. } => {
                    ErrorKind::InvalidArgument
                }
                // The provider refused contextd's own key: the caller's credentials are not
                // in question, and the caller cannot fix it.
                ModelError::Unauthenticated { .. } | ModelError::PermissionDenied { .. } => {
                    ErrorKind::Unavailable
                }
                ModelError::RateLimited { .. } => ErrorKind::ResourceExhausted,
            },
        }
    }
}

impl EngineError {
    /// How long the caller should wait before retrying, when the error says so (rate and
    /// concurrency limits).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EngineError::Overloaded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The one conversion from store failures: what the store says about a session becomes what
/// the engine says about it, so every operation reports a missing session, a taken id or a
/// lost race the same way.
impl From<StoreError> for EngineError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => EngineError::SessionNotFound(id),
            StoreError::AlreadyExists(id) => EngineError::SessionExists(id),
            StoreError::Conflict(id) => EngineError::Conflict(id),
            StoreError::Unavailable(reason) => EngineError::StoreUnavailable(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_convert_once() {
        let cases = [
            (StoreError::NotFound("a".into()), ErrorKind::NotFound),
            (
                StoreError::AlreadyExists("a".into()),
                ErrorKind::AlreadyExists,
            ),
            (StoreError::Conflict("a".into()), ErrorKind::Aborted),
            (
                StoreError::Unavailable("down".into()),
                ErrorKind::Unavailable,
            ),
        ];
        for (store, kind) in cases {
            assert_eq!(EngineError::from(store).kind(), kind);
        }
        assert_eq!(
            EngineError::from(StoreError::NotFound("a".into())).to_string(),
            "session 'a' does not exist"
        );
    }
}
