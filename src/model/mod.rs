//! The `ModelBackend` port: what the engine needs from a language model, and the registry
//! that resolves a session's model name to a backend.
//!
//! A backend receives the assembled window ([`ModelRequest`]) and answers with a stream of
//! [`ModelEvent`]s. Dropping the stream must stop the work at once (that is how the engine
//! cancels a turn), so backends produce lazily rather than from a detached task.
//!
//! Adapters: [`echo`] (offline), [`openai`] (any OpenAI-compatible Chat Completions endpoint)
//! and [`anthropic`] (the Messages API), the last two over the shared HTTP plumbing in
//! [`http`] (timeouts, retries, error mapping, SSE).

pub mod anthropic;
pub mod echo;
pub mod http;
pub mod openai;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;

use crate::domain::session::{Context, SharedMessage, SharedTool, ToolCall};

/// What the model is shown for one step of a turn.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// The session's model name as registered (`echo`, or `backend/model`; backends strip
    /// their own prefix).
    pub model: String,
    /// The pinned system prompt.
    pub system_prompt: String,
    /// The session context, as JSON.
    pub context: Context,
    /// The context rendered as the text the model reads.
    pub context_text: String,
    /// The running summary of older turns that are no longer shown (summarize strategy).
    pub summary: Option<String>,
    /// History in the window followed by the current turn's messages, oldest first.
    pub messages: Vec<SharedMessage>,
    /// Tools the model may call (server-side and client-declared).
    pub tools: Vec<SharedTool>,
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

/// Why a model call failed. Messages name the backend, never a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The provider could not be reached, failed, timed out or cut the stream; retrying later
    /// may work. The message names no address and no OS error (those are logged).
    #[error("the model backend '{backend}' is unavailable: {message}")]
    Unavailable {
        /// Backend name.
        backend: String,
        /// What happened (never a credential).
        message: String,
    },
    /// The provider refused the request as malformed.
    #[error("the model backend '{backend}' rejected the request: {message}")]
    Rejected {
        /// Backend name.
        backend: String,
        /// A summary of the provider's answer (its own text is logged).
        message: String,
    },
    /// The provider refused contextd's credentials (HTTP 401). Where the key comes from is
    /// logged, not told to callers.
    #[error("the model backend '{backend}' rejected contextd's credentials (HTTP 401)")]
    Unauthenticated {
        /// Backend name.
        backend: String,
    },
    /// contextd's credentials may not use this model or endpoint (HTTP 403).
    #[error("the model backend '{backend}' rejected contextd's credentials (HTTP 403)")]
    PermissionDenied {
        /// Backend name.
        backend: String,
    },
    /// The provider kept rate-limiting the request after every retry (HTTP 429).
    #[error(
        "model backend '{backend}' is rate-limiting requests (HTTP 429) after {attempts} attempts; retry later"
    )]
    RateLimited {
        /// Backend name.
        backend: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider says the request is longer than the model's context window.
    #[error(
        "model backend '{backend}' says the request exceeds the model's context window: {message}"
    )]
    ContextTooLong {
        /// Backend name.
        backend: String,
        /// What the provider said.
        message: String,
    },
}

/// A model a backend serves.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelInfo {
    /// Full name sessions use (`echo`, or `backend/model`).
    pub name: String,
    /// Default window size in tokens.
    pub context_window: u32,
    /// The configured backend that serves it (`echo` for the built-in model).
    pub backend: String,
    /// The backend's kind: `echo`, `openai` or `anthropic`.
    pub kind: String,
    /// First guess of provider tokens per counted (o200k) token. 1.0 where the counter is the
    /// model's own tokenizer family; once the provider reports `input_tokens`, the session's
    /// measured ratio replaces it.
    pub initial_token_scale: f64,
}

/// A configured backend that serves any model named `<name>/<model>`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInfo {
    /// The prefix of its model names.
    pub name: String,
    /// `openai` or `anthropic`.
    pub kind: String,
    /// Window size of its models, in tokens.
    pub context_window: u32,
    /// Model used for `<name>` alone (empty: none).
    pub default_model: String,
    /// First guess of provider tokens per counted token (see [`ModelInfo`]).
    pub initial_token_scale: f64,
}

/// A source of model replies.
pub trait ModelBackend: Send + Sync {
    /// The models this backend lists by name.
    fn models(&self) -> Vec<ModelInfo>;
    /// For a configured provider backend: its prefix, so that every `<name>/<model>` resolves
    /// to it. `None` for backends that serve only the models they list.
    fn prefix(&self) -> Option<BackendInfo> {
        None
    }
    /// Starts one model step. Errors before the first event are returned here; later ones
    /// arrive in the stream.
    fn stream(&self, request: &ModelRequest) -> Result<ModelStream, ModelError>;
}

/// Resolves model names to backends. Each backend is asked for its models once, when it is
/// registered, so resolving a session's model during a turn builds nothing.
#[derive(Clone, Default)]
pub struct ModelRegistry {
    /// Sorted by model name; the first backend to register a name keeps it.
    entries: Vec<(ModelInfo, Arc<dyn ModelBackend>)>,
    /// Prefix backends, sorted by name; the first to register a name keeps it.
    prefixed: Vec<(BackendInfo, Arc<dyn ModelBackend>)>,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a backend.
    pub fn register(&mut self, backend: Arc<dyn ModelBackend>) {
        if let Some(info) = backend.prefix()
            && let Err(at) = self
                .prefixed
                .binary_search_by(|(known, _)| known.name.cmp(&info.name))
        {
            self.prefixed.insert(at, (info, backend.clone()));
        }
        for model in backend.models() {
            if let Err(at) = self
                .entries
                .binary_search_by(|(known, _)| known.name.cmp(&model.name))
            {
                self.entries.insert(at, (model, backend.clone()));
            }
        }
    }

    /// The backend and model info for a full model name: a listed model, or
    /// `<backend>/<model>` for a prefix backend.
    pub fn resolve(&self, name: &str) -> Option<(Arc<dyn ModelBackend>, ModelInfo)> {
        if let Ok(at) = self
            .entries
            .binary_search_by(|(known, _)| known.name.as_str().cmp(name))
        {
            let (model, backend) = &self.entries[at];
            return Some((backend.clone(), model.clone()));
        }
        let Some((prefix, model)) = name.split_once('/') else {
            // A backend's name alone stands for its default model.
            let at = self
                .prefixed
                .binary_search_by(|(known, _)| known.name.as_str().cmp(name))
                .ok()?;
            let default = &self.prefixed[at].0.default_model;
            if default.is_empty() {
                return None;
            }
            return self.resolve(&format!("{name}/{default}"));
        };
        if model.is_empty() || model.chars().any(char::is_whitespace) {
            return None;
        }
        let at = self
            .prefixed
            .binary_search_by(|(known, _)| known.name.as_str().cmp(prefix))
            .ok()?;
        let (info, backend) = &self.prefixed[at];
        Some((
            backend.clone(),
            ModelInfo {
                name: name.to_string(),
                context_window: info.context_window,
                backend: info.name.clone(),
                kind: info.kind.clone(),
                initial_token_scale: info.initial_token_scale,
            },
        ))
    }

    /// The prefix backends, sorted by name.
    pub fn backends(&self) -> Vec<BackendInfo> {
        self.prefixed.iter().map(|(info, _)| info.clone()).collect()
    }

    /// Every model served, sorted by name.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.entries
            .iter()
            .map(|(model, _)| model.clone())
            .collect()
    }

    /// The names served, comma separated (for error messages); prefix backends as
    /// `<name>/<model>`.
    pub fn known_names(&self) -> String {
        self.entries
            .iter()
            .map(|(model, _)| model.name.clone())
            .chain(
                self.prefixed
                    .iter()
                    .map(|(info, _)| format!("{}/<model>", info.name)),
            )
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
                    ..ModelInfo::default()
                })
                .collect()
        }

        fn stream(&self, _request: &ModelRequest) -> Result<ModelStream, ModelError> {
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

    struct Prefixed;

    impl ModelBackend for Prefixed {
        fn models(&self) -> Vec<ModelInfo> {
            Vec::new()
        }

        fn prefix(&self) -> Option<BackendInfo> {
            Some(BackendInfo {
                name: "local".into(),
                kind: "openai".into(),
                context_window: 4096,
                default_model: "llama3.2".into(),
                initial_token_scale: 1.0,
            })
        }

        fn stream(&self, _request: &ModelRequest) -> Result<ModelStream, ModelError> {
            Err(ModelError::Unavailable {
                backend: "local".into(),
                message: "not used".into(),
            })
        }
    }

    #[test]
    fn prefix_backends_serve_any_model_and_their_default() {
        let mut registry = ModelRegistry::new();
        registry.register(Arc::new(Fixed(vec![("echo", 2)])));
        registry.register(Arc::new(Prefixed));
        let (_, info) = registry.resolve("local/qwen2.5:7b").unwrap();
        assert_eq!(
            (info.name.as_str(), info.context_window),
            ("local/qwen2.5:7b", 4096)
        );
        assert_eq!(info.backend, "local");
        assert_eq!(registry.resolve("local").unwrap().1.name, "local/llama3.2");
        assert!(registry.resolve("local/").is_none());
        assert!(registry.resolve("local/a b").is_none());
        assert!(registry.resolve("other/x").is_none());
        assert_eq!(registry.known_names(), "echo, local/<model>");
    }
}
