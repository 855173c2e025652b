//! The `ModelBackend` port: what the engine needs from a language model, and the registry
//! that resolves a session's model name to a backend.
//!
//! A backend receives the assembled window ([`ModelRequest`]) and answers with a stream of
//! [`ModelEvent`]s. Dropping the stream must stop the work at once (that is how the engine
//! cancels a turn), so backends produce lazily rather than from a detached task.

pub mod echo;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;

use crate::engine::session::{Context, SharedMessage, ToolCall, ToolSpec};

/// What the model is shown for one step of a turn.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// The model name as the backend knows it (without a backend prefix).
    pub model: String,
    /// The pinned system prompt.
    pub system_prompt: String,
    /// The session context, as JSON.
    pub context: Context,
    /// The context rendered as the text the model reads.
    pub context_text: String,
    /// History in the window followed by the current turn's messages, oldest first.
    pub messages: Vec<SharedMessage>,
    /// Tools the model may call (server-side and client-declared).
    pub tools: Vec<ToolSpec>,
    /// Tokens the reply may use.
    pub max_output_tokens: u32,
}

/// How a model step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFinish {
    /// The reply is complete.
    Stop,
    /// The output limit cut the reply.
    Length,
    /// The model asked for tools.
    ToolCalls,
}

/// One event of a model step, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// A piece of reply text.
    Delta(String),
    /// A complete tool call.
    ToolCall(ToolCall),
    /// Usage as the provider reports it (overrides the engine's own count).
    Usage {
        /// Prompt tokens.
        input_tokens: u64,
        /// Generated tokens.
        output_tokens: u64,
    },
    /// The step ended.
    Finish(ModelFinish),
}

/// A model's event stream; dropping it cancels the step.
pub type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelEvent, ModelError>> + Send>>;

/// Why a model call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The provider could not be reached or failed; retrying later may work.
    #[error("model backend '{backend}' is unavailable: {message}")]
    Unavailable {
        /// Backend name.
        backend: String,
        /// What happened (never a credential).
        message: String,
    },
    /// The provider refused the request as malformed.
    #[error("model backend '{backend}' rejected the request: {message}")]
    Rejected {
        /// Backend name.
        backend: String,
        /// What the provider said.
        message: String,
    },
}

/// A model a backend serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Full name sessions use (`echo`, or `backend/model`).
    pub name: String,
    /// Default window size in tokens.
    pub context_window: u32,
}

/// A source of model replies.
pub trait ModelBackend: Send + Sync {
    /// The models this backend serves.
    fn models(&self) -> Vec<ModelInfo>;
    /// Starts one model step. Errors before the first event are returned here; later ones
    /// arrive in the stream.
    fn stream(&self, request: ModelRequest) -> Result<ModelStream, ModelError>;
}

/// Resolves model names to backends. Each backend is asked for its models once, when it is
/// registered, so resolving a session's model during a turn builds nothing.
#[derive(Clone, Default)]
pub struct ModelRegistry {
    /// Sorted by model name; the first backend to register a name keeps it.
    entries: Vec<(ModelInfo, Arc<dyn ModelBackend>)>,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a backend.
    pub fn register(&mut self, backend: Arc<dyn ModelBackend>) {
        for model in backend.models() {
            if let Err(at) = self
                .entries
                .binary_search_by(|(known, _)| known.name.cmp(&model.name))
            {
                self.entries.insert(at, (model, backend.clone()));
            }
        }
    }

    /// The backend and model info for a full model name.
    pub fn resolve(&self, name: &str) -> Option<(Arc<dyn ModelBackend>, ModelInfo)> {
        let at = self
            .entries
            .binary_search_by(|(known, _)| known.name.as_str().cmp(name))
            .ok()?;
        let (model, backend) = &self.entries[at];
        Some((backend.clone(), model.clone()))
    }

    /// Every model served, sorted by name.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.entries
            .iter()
            .map(|(model, _)| model.clone())
            .collect()
    }

    /// The names served, comma separated (for error messages).
    pub fn known_names(&self) -> String {
        self.entries
            .iter()
            .map(|(model, _)| model.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<(&'static str, u32)>);

    impl ModelBackend for Fixed {
        fn models(&self) -> Vec<ModelInfo> {
            self.0
                .iter()
                .map(|(name, window)| ModelInfo {
                    name: name.to_string(),
                    context_window: *window,
                })
                .collect()
        }

        fn stream(&self, _request: ModelRequest) -> Result<ModelStream, ModelError> {
            Err(ModelError::Unavailable {
                backend: "fixed".into(),
                message: "not used".into(),
            })
        }
    }

    #[test]
    fn resolves_by_name_sorted_and_first_registration_wins() {
        let mut registry = ModelRegistry::new();
        registry.register(Arc::new(Fixed(vec![("zeta", 1), ("echo", 2)])));
        registry.register(Arc::new(Fixed(vec![("echo", 99), ("alpha", 3)])));
        assert_eq!(registry.known_names(), "alpha, echo, zeta");
        assert_eq!(
            registry.resolve("echo").map(|(_, m)| m.context_window),
            Some(2)
        );
        assert_eq!(
            registry.resolve("alpha").map(|(_, m)| m.context_window),
            Some(3)
        );
        assert!(registry.resolve("missing").is_none());
    }
}
