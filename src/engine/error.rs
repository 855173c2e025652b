//! The engine's typed errors. The edge maps each to one gRPC status (see
//! `server::status`); the engine itself never names tonic.

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
    /// Another writer changed the session between read and write.
    #[error("session '{0}' was changed concurrently; retry the request")]
    Conflict(String),
    /// The turn was cancelled (by the client, or because the client went away).
    #[error("the turn was cancelled; nothing of it was stored")]
    Cancelled,
    /// The server is shutting down and takes no new turns.
    #[error(
        "contextd is shutting down and takes no new turns; retry against another replica or after the restart"
    )]
    ShuttingDown,
    /// The model backend failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
