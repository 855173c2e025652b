//! The engine: sessions, context windows, the turn loop and tool dispatch.
//!
//! It works on domain types only and reaches the outside through three ports: a
//! [`SessionStore`], a [`ModelRegistry`] of `ModelBackend`s, and a [`ToolRegistry`] of
//! `ToolProvider`s. It never names tonic.

pub mod error;
pub mod locks;
pub mod summary;
pub mod turn;
pub mod validate;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use error::{EngineError, ErrorKind};
pub use turn::{NoSink, SinkClosed, TurnEvent, TurnOutcome, TurnRequest, TurnSink};

use crate::config::{EngineConfig, Limits};
use crate::domain::patch::merge_context;
use crate::domain::session::{
    self, Context, Role, Session, SharedMessage, ToolSpec, WindowState, WindowStrategy,
    generate_session_id, validate_session_id, validate_tools,
};
use crate::domain::tokens::TokenCounter;
use crate::domain::{Scope, TenantId};
use crate::model::{ModelBackend, ModelInfo, ModelRegistry};
use crate::store::{SessionLease, SessionStore};
use crate::tools::{ServerTool, ToolOutput, ToolRegistry, ToolScope};
use locks::TurnLocks;
use validate::check_context;
use window::{PinnedHead, WindowBudget, select_history};

/// Smallest window a session may have, in tokens.
pub const MIN_CONTEXT_TOKENS: u32 = 16;
/// Largest window a session may have, in tokens.
pub const MAX_CONTEXT_TOKENS: u32 = 10_000_000;
/// Messages read from the store per page while assembling a window.
const HISTORY_PAGE: usize = 64;

/// What a new session starts with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewSession {
    /// Its id; empty to generate one.
    pub session_id: String,
    /// System prompt.
    pub system_prompt: String,
    /// Initial context.
    pub context: Context,
    /// Model; empty for the default.
    pub model: String,
    /// Client-declared tools.
    pub tools: Vec<ToolSpec>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Window size; 0 for the model's default.
    pub max_context_tokens: u32,
    /// A fixed expiry; `None` for the server's idle time-to-live (if any).
    pub expire_time: Option<SystemTime>,
    /// How the window is managed.
    pub window: WindowSettings,
}

/// How a session's window is managed (the settable part of [`WindowState`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowSettings {
    /// The strategy.
    pub strategy: WindowStrategy,
    /// `summarize`: threshold in percent of the input budget; 0 for the default (90).
    pub summarize_threshold_percent: u32,
    /// `summarize`: the summarizer model; empty for the default.
    pub summarizer_model: String,
}

/// A change to a session; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionUpdate {
    /// RFC 7386 merge patch for the context.
    pub context_patch: Option<Context>,
    /// New system prompt.
    pub system_prompt: Option<String>,
    /// New client-declared tools.
    pub tools: Option<Vec<ToolSpec>>,
    /// New model.
    pub model: Option<String>,
    /// New window size (0: the model's default).
    pub max_context_tokens: Option<u32>,
    /// New window settings (the summary and measured token scale are kept).
    pub window: Option<WindowSettings>,
    /// Labels to add or replace.
    pub set_labels: BTreeMap<String, String>,
    /// Labels to remove.
    pub remove_labels: Vec<String>,
    /// A new fixed expiry (replaces the idle time-to-live).
    pub expire_time: Option<SystemTime>,
}

/// What a window holds at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The system prompt.
    SystemPrompt,
    /// The rendered context.
    Context,
    /// A stored message.
    History,
    /// The new user message.
    UserMessage,
    /// The running summary of older turns (`summarize` strategy).
    Summary,
}

/// One entry of a previewed window.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewEntry {
    /// What it holds.
    pub kind: EntryKind,
    /// The role the model sees (`None` for the system prompt).
    pub role: Option<Role>,
    /// Its text.
    pub content: String,
    /// Its tokens.
    pub token_count: u32,
    /// The stored message's index, for history.
    pub message_index: Option<u64>,
    /// Tool calls of an assistant message.
    pub tool_calls: Vec<session::ToolCall>,
    /// The call a tool message answers.
    pub tool_call_id: String,
    /// For the summary: the stored messages it stands for (`first..end`).
    pub summarized: Option<(u64, u64)>,
}

/// Exactly what the model would see.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// Entries in order.
    pub entries: Vec<PreviewEntry>,
    /// Sum of the entries' tokens.
    pub total_tokens: u32,
    /// History messages left out.
    pub omitted_messages: u64,
    /// The budget used.
    pub budget: WindowBudget,
    /// The session's model.
    pub model: String,
    /// Tools the model would be offered.
    pub tools: Vec<ToolSpec>,
}

/// One page of a listing, and where the next one starts (`None` on the last page). Doors
/// turn the cursor into their own opaque page token.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
    /// The items, in listing order.
    pub items: Vec<T>,
    /// Where the next page continues: the last session id, or the next message index.
    pub next: Option<C>,
}

/// The context engine. Cheap to share behind an `Arc`; all state lives in the store, except
/// the per-session turn locks.
pub struct Engine {
    store: Arc<dyn SessionStore>,
    models: ModelRegistry,
    tools: ToolRegistry,
    locks: TurnLocks,
    config: EngineConfig,
    limits: Limits,
    session_ttl: Option<Duration>,
}

/// Held while a turn or change runs on a session: the in-process lock (arrival order within
/// this process) and the store's lease (one holder across processes sharing the store).
pub(crate) struct SessionGuard {
    _lease: SessionLease,
    _local: locks::TurnGuard,
}

impl Engine {
    /// An engine over these ports.
    pub fn new(
        store: Arc<dyn SessionStore>,
        models: ModelRegistry,
        tools: ToolRegistry,
        config: EngineConfig,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            models,
            tools,
            locks: TurnLocks::default(),
            config,
            limits,
            session_ttl: None,
        }
    }

    /// Gives sessions without an expiry of their own this idle time-to-live.
    pub fn with_session_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Waits for the session's turn: first in this process, then across processes.
    pub(crate) async fn lock_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<SessionGuard, EngineError> {
        let local = self.locks.lock(tenant, session_id).await;
        let lease = self.store.lease_session(tenant, session_id).await?;
        Ok(SessionGuard {
            _lease: lease,
            _local: local,
        })
    }

    /// Reads a session that has not expired. An expired one still in the store (the sweep
    /// has not reached it yet) is deleted here and reported as absent.
    pub(crate) async fn load_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<Session>, EngineError> {
        match self.store.get_session(tenant, session_id).await? {
            Some(session) if session.is_expired(session::now()) => {
                self.store.delete_session(tenant, session_id).await?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Deletes up to `limit` expired sessions; returns how many went.
    pub async fn sweep_expired(&self, limit: usize) -> Result<u64, EngineError> {
        Ok(self.store.delete_expired(session::now(), limit).await?)
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The models listed by name.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.models.models()
    }

    /// The configured provider backends (each serves any `<name>/<model>`).
    pub fn backends(&self) -> Vec<crate::model::BackendInfo> {
        self.models.backends()
    }

    /// The model of sessions that name none.
    pub fn default_model(&self) -> &str {
        &self.config.default_model
    }

    /// Creates a session.
    pub async fn create_session(
        &self,
        scope: &Scope,
        new: NewSession,
    ) -> Result<Session, EngineError> {
        let session = self.build_session(new)?;
        self.store
            .commit(&scope.tenant, &session, None, &[])
            .await?;
        Ok(session)
    }

    /// The session `new` names, created with its settings when it does not exist yet; also
    /// says whether it was created. A session created by someone else between the look-up
    /// and the creation is returned as found, so two callers opening one id both attach.
    pub async fn open_session(
        &self,
        scope: &Scope,
        new: NewSession,
    ) -> Result<(Session, bool), EngineError> {
        let session_id = new.session_id.clone();
        match self.get_session(scope, &session_id).await {
            Ok(session) => return Ok((session, false)),
            Err(EngineError::SessionNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        match self.create_session(scope, new).await {
            Ok(session) => Ok((session, true)),
            Err(EngineError::SessionExists(_)) => {
                Ok((self.get_session(scope, &session_id).await?, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Checks a new session's settings and builds it (not stored yet).
    fn build_session(&self, new: NewSession) -> Result<Session, EngineError> {
        let id = if new.session_id.is_empty() {
            generate_session_id()
        } else {
            validate_session_id(&new.session_id).map_err(EngineError::InvalidArgument)?;
            new.session_id
        };
        let model = if new.model.is_empty() {
            self.config.default_model.clone()
        } else {
            new.model
        };
        let (_, info) = self.resolve_model(&model)?;
        // `backend` alone names its default model: store the full name.
        let model = info.name.clone();
        check_context("context", &new.context, &self.limits)?;
        self.check_tools(&new.tools)?;
        let max_context_tokens = self.window_size(new.max_context_tokens, &info)?;
        let now = session::now();
        let (expire_time, idle_ttl) = match new.expire_time {
            Some(at) => (Some(check_expiry(at, now)?), None),
            None => (self.session_ttl.map(|ttl| now + ttl), self.session_ttl),
        };
        let mut window = WindowState::default();
        self.apply_window_settings(&mut window, new.window)?;
        Ok(Session {
            id,
            system_prompt: new.system_prompt,
            context: new.context,
            model,
            tools: new.tools,
            labels: new.labels,
            create_time: now,
            update_time: now,
            message_count: 0,
            pending: None,
            usage: Default::default(),
            max_context_tokens,
            version: 1,
            expire_time,
            idle_ttl,
            window,
        })
    }

    /// Checks window settings and applies them (the summary and token scale stay).
    fn apply_window_settings(
        &self,
        window: &mut WindowState,
        settings: WindowSettings,
    ) -> Result<(), EngineError> {
        let threshold = settings.summarize_threshold_percent;
        if threshold != 0 && !(10..=100).contains(&threshold) {
            return Err(EngineError::InvalidArgument(format!(
                "summarize_threshold_percent {threshold} is out of range: use 0 (the default, {}) or 10 to 100",
                session::DEFAULT_SUMMARIZE_THRESHOLD_PERCENT
            )));
        }
        let summarizer = if settings.summarizer_model.is_empty() {
            String::new()
        } else {
            self.resolve_model(&settings.summarizer_model)
                .map_err(|e| match e {
                    EngineError::UnknownModel { model, known } => EngineError::InvalidArgument(
                        format!("unknown summarizer_model '{model}'; known models: {known}"),
                    ),
                    other => other,
                })?
                .1
                .name
        };
        window.strategy = settings.strategy;
        window.summarize_threshold_percent = threshold;
        window.summarizer_model = summarizer;
        Ok(())
    }
    fn window_size(&self, requested: u32, model: &ModelInfo) -> Result<u32, EngineError> {
        match requested {
            0 => Ok(model.context_window),
            n if (MIN_CONTEXT_TOKENS..=MAX_CONTEXT_TOKENS).contains(&n) => Ok(n),
            n => Err(EngineError::InvalidArgument(format!(
                "max_context_tokens {n} is out of range: use 0 (the model's default, {}) or {MIN_CONTEXT_TOKENS} to {MAX_CONTEXT_TOKENS}",
                model.context_window
            ))),
        }
    }

    fn check_tools(&self, tools: &[ToolSpec]) -> Result<(), EngineError> {
        if tools.len() > self.limits.max_tools {
            return Err(EngineError::InvalidArgument(format!(
                "{} tools declared; at most {} are allowed (limits.max_tools)",
                tools.len(),
                self.limits.max_tools
            )));
        }
        validate_tools(tools).map_err(EngineError::InvalidArgument)?;
        for tool in tools {
            if self.tools.find(&tool.name).is_some() {
                return Err(EngineError::InvalidArgument(format!(
                    "tool {:?} is a server-side tool; give the client-declared tool another name",
                    tool.name
                )));
            }
            check_context(
                &format!("input_schema of tool {:?}", tool.name),
                &tool.input_schema,
                &self.limits,
            )?;
        }
        Ok(())
    }

    fn resolve_model(&self, name: &str) -> Result<(Arc<dyn ModelBackend>, ModelInfo), EngineError> {
        self.models
            .resolve(name)
            .ok_or_else(|| EngineError::UnknownModel {
                model: name.to_string(),
                known: self.models.known_names(),
            })
    }

    /// Returns a session.
    pub async fn get_session(
        &self,
        scope: &Scope,
        session_id: &str,
    ) -> Result<Session, EngineError> {
        validate_session_id(session_id).map_err(EngineError::InvalidArgument)?;
        self.load_session(&scope.tenant, session_id)
            .await?
            .ok_or_else(|| EngineError::SessionNotFound(session_id.to_string()))
    }

    /// Lists sessions with ids after `after`, at most `limit`; also returns the id to continue
    /// after when there may be more.
    pub async fn list_sessions(
        &self,
        scope: &Scope,
        after: Option<&str>,
        page_size: u32,
    ) -> Result<Page<Session, String>, EngineError> {
        let limit = self.page_size(page_size);
        // One extra row tells whether another page exists, so the last page has no token.
        let mut sessions = self
            .store
            .list_sessions(&scope.tenant, after, limit + 1)
            .await?;
        // Expired sessions the sweep has not removed yet are already gone to clients.
        let now = session::now();
        sessions.retain(|s| !s.is_expired(now));
        let next = if sessions.len() > limit {
            sessions.truncate(limit);
            sessions.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(Page {
            items: sessions,
            next,
        })
    }

    /// How many items a page holds when the caller asks for `requested` (0: the default),
    /// bounded by `limits.max_page_size`.
    fn page_size(&self, requested: u32) -> usize {
        let size = match requested {
            0 => self.limits.default_page_size,
            n => n.min(self.limits.max_page_size),
        };
        size as usize
    }

    /// Changes a session. Waits for a running turn on it first. With `etag`, the change
    /// applies only while the session's etag is still that one ([`EngineError::EtagMismatch`]
    /// otherwise, and nothing changes).
    pub async fn update_session(
        &self,
        scope: &Scope,
        session_id: &str,
        update: SessionUpdate,
        etag: Option<&str>,
    ) -> Result<Session, EngineError> {
        validate_session_id(session_id).map_err(EngineError::InvalidArgument)?;
        if let Some(patch) = &update.context_patch {
            check_context("context", patch, &self.limits)?;
        }
        let expiry = update
            .expire_time
            .map(|at| check_expiry(at, session::now()))
            .transpose()?;
        let _turn = self.lock_session(&scope.tenant, session_id).await?;
        let mut session = self.get_session(scope, session_id).await?;
        check_etag(&session, etag)?;
        let version = session.version;
        if let Some(at) = expiry {
            session.expire_time = Some(at);
            session.idle_ttl = None;
        }
        if let Some(patch) = &update.context_patch {
            merge_context(&mut session.context, patch);
            check_context("the merged context", &session.context, &self.limits)?;
        }
        if let Some(prompt) = update.system_prompt {
            session.system_prompt = prompt;
        }
        if let Some(tools) = update.tools {
            if session.pending.is_some() {
                return Err(EngineError::FailedPrecondition(format!(
                    "session '{session_id}' is waiting for tool results; send them before replacing its tools"
                )));
            }
            self.check_tools(&tools)?;
            session.tools = tools;
        }
        if let Some(model) = update.model {
            let (_, info) = self.resolve_model(&model)?;
            if info.name != session.model {
                // Another tokenizer: the measured scale no longer applies.
                session.window.token_scale = 0.0;
            }
            session.model = info.name;
        }
        if let Some(settings) = update.window {
            self.apply_window_settings(&mut session.window, settings)?;
        }
        if let Some(size) = update.max_context_tokens {
            let (_, info) = self.resolve_model(&session.model)?;
            session.max_context_tokens = self.window_size(size, &info)?;
        }
        session.labels.extend(update.set_labels);
        for key in &update.remove_labels {
            session.labels.remove(key);
        }
        self.save_change(&scope.tenant, &mut session, version)
            .await?;
        Ok(session)
    }

    /// Stores a change to a session's settings or context (no new messages), refusing it if
    /// the session moved past `version` meanwhile.
    async fn save_change(
        &self,
        tenant: &TenantId,
        session: &mut Session,
        version: u64,
    ) -> Result<(), EngineError> {
        session.touch(session::now());
        session.version = version + 1;
        Ok(self
            .store
            .commit(tenant, session, Some(version), &[])
            .await?)
    }

    /// Deletes a session; returns how many messages it had. With `etag`, only while the
    /// session's etag is still that one ([`EngineError::EtagMismatch`] otherwise).
    pub async fn delete_session(
        &self,
        scope: &Scope,
        session_id: &str,
        etag: Option<&str>,
    ) -> Result<u64, EngineError> {
        validate_session_id(session_id).map_err(EngineError::InvalidArgument)?;
        let tenant = &scope.tenant;
        let _turn = self.lock_session(tenant, session_id).await?;
        let stored = self.store.get_session(tenant, session_id).await?;
        // An expired session is already gone to clients; deleting it again finds nothing.
        let expired = stored
            .as_ref()
            .is_some_and(|s| s.is_expired(session::now()));
        if let Some(session) = stored.as_ref().filter(|_| !expired) {
            check_etag(session, etag)?;
        }
        let deleted = self.store.delete_session(tenant, session_id).await?;
        match deleted {
            Some(count) if !expired => Ok(count),
            _ => Err(EngineError::SessionNotFound(session_id.to_string())),
        }
    }

    /// Lists stored messages from index `from`, at most `limit`; also returns the index to
    /// continue from when there are more.
    pub async fn list_messages(
        &self,
        scope: &Scope,
        session_id: &str,
        from: u64,
        page_size: u32,
    ) -> Result<Page<SharedMessage, u64>, EngineError> {
        let limit = self.page_size(page_size);
        let session = self.get_session(scope, session_id).await?;
        let messages = self
            .store
            .list_messages(&scope.tenant, session_id, from, limit)
            .await?;
        let next = messages
            .last()
            .map(|m| m.index + 1)
            .filter(|next| *next < session.message_count);
        Ok(Page {
            items: messages,
            next,
        })
    }

    /// Server-side tools.
    pub fn server_tools(&self) -> Vec<ServerTool> {
        self.tools.tools().cloned().collect()
    }

    /// Tools a session's model is offered: server-side ones, then the client's.
    fn offered_tools(&self, session: &Session) -> Vec<ToolSpec> {
        let mut tools: Vec<ToolSpec> = self.tools.tools().map(|t| t.spec.clone()).collect();
        tools.extend(session.tools.iter().cloned());
        tools
    }

    /// Runs a server-side tool directly (not in a turn).
    pub async fn call_tool(
        &self,
        scope: &Scope,
        name: &str,
        arguments: &Context,
        session_id: Option<&str>,
    ) -> Result<ToolOutput, EngineError> {
        check_context("arguments", arguments, &self.limits)?;
        let (tool, provider) = self
            .tools
            .find(name)
            .ok_or_else(|| EngineError::UnknownTool {
                name: name.to_string(),
                known: self.tools.known_names(),
            })?;
        let Some(session_id) = session_id else {
            if tool.needs_session {
                return Err(EngineError::InvalidArgument(format!(
                    "tool '{name}' works on a session: set session_id"
                )));
            }
            let mut scratch = Context::new();
            let tool_scope = ToolScope {
                tenant: &scope.tenant,
                session_id: "",
                context: &mut scratch,
                store: self.store.as_ref(),
            };
            return Ok(provider.call(name, arguments, tool_scope).await);
        };
        validate_session_id(session_id).map_err(EngineError::InvalidArgument)?;
        // Same lock as a turn: a tool that changes the context must not race a turn.
        let _turn = self.lock_session(&scope.tenant, session_id).await?;
        let mut session = self.get_session(scope, session_id).await?;
        let mut context = session.context.clone();
        let output = provider
            .call(
                name,
                arguments,
                ToolScope {
                    tenant: &scope.tenant,
                    session_id,
                    context: &mut context,
                    store: self.store.as_ref(),
                },
            )
            .await;
        if context != session.context {
            let version = session.version;
            session.context = context;
            self.save_change(&scope.tenant, &mut session, version)
                .await?;
        }
        Ok(output)
    }

    /// What the model would see if `message` (with `context_patch`) were sent now.
    pub async fn preview_context(
        &self,
        scope: &Scope,
        session_id: &str,
        message: &str,
        context_patch: Option<&Context>,
    ) -> Result<Preview, EngineError> {
        validate::check_message(message, &self.limits)?;
        if let Some(patch) = context_patch {
            check_context("context", patch, &self.limits)?;
        }
        let mut session = self.get_session(scope, session_id).await?;
        if let Some(patch) = context_patch {
            merge_context(&mut session.context, patch);
        }
        let pending_turn = session.pending.as_ref().map(|p| p.turn_id.as_str());
        let WindowSource {
            budget,
            stored_tail,
            history,
        } = self
            .load_window(&scope.tenant, &session, pending_turn)
            .await?;
        let counter = TokenCounter::for_model(&session.model);
        let head = PinnedHead::new(&counter, &session.system_prompt, &session.context)
            .with_summary(session.window.active_summary());
        let user_tokens = if message.is_empty() {
            0
        } else {
            counter.count_message(Role::User, message, &[], "")
        };
        let tail_tokens: u32 = stored_tail.iter().map(|m| m.token_count).sum::<u32>() + user_tokens;
        let before = session.message_count - stored_tail.len() as u64;
        let selection = select_history(budget, &head, tail_tokens, &history)
            .map_err(|e| too_large(e, budget, &head))?;
        check_nothing_dropped(&session, before, selection.taken)?;

        let mut entries = Vec::new();
        if head.system_tokens > 0 {
            entries.push(PreviewEntry {
                kind: EntryKind::SystemPrompt,
                role: None,
                content: head.system_prompt.clone(),
                token_count: head.system_tokens,
                message_index: None,
                tool_calls: vec![],
                tool_call_id: String::new(),
                summarized: None,
            });
        }
        if head.context_tokens > 0 {
            entries.push(PreviewEntry {
                kind: EntryKind::Context,
                role: None,
                content: head.context_text.clone(),
                token_count: head.context_tokens,
                message_index: None,
                tool_calls: vec![],
                tool_call_id: String::new(),
                summarized: None,
            });
        }
        if let Some(summary) = &head.summary {
            entries.push(PreviewEntry {
                kind: EntryKind::Summary,
                role: None,
                content: summary.text.clone(),
                token_count: summary.token_count,
                message_index: None,
                tool_calls: vec![],
                tool_call_id: String::new(),
                summarized: Some((summary.first_index, summary.end_index)),
            });
        }
        let shown = history[..selection.taken]
            .iter()
            .rev()
            .chain(stored_tail.iter());
        entries.extend(shown.map(|m| PreviewEntry {
            kind: EntryKind::History,
            role: Some(m.role),
            content: m.content.clone(),
            token_count: m.token_count,
            message_index: Some(m.index),
            tool_calls: m.tool_calls.clone(),
            tool_call_id: m.tool_call_id.clone(),
            summarized: None,
        }));
        if !message.is_empty() {
            entries.push(PreviewEntry {
                kind: EntryKind::UserMessage,
                role: Some(Role::User),
                content: message.to_string(),
                token_count: user_tokens,
                message_index: None,
                tool_calls: vec![],
                tool_call_id: String::new(),
                summarized: None,
            });
        }
        Ok(Preview {
            entries,
            total_tokens: selection.total_tokens,
            omitted_messages: before - selection.taken as u64,
            budget,
            model: session.model.clone(),
            tools: self.offered_tools(&session),
        })
    }

    /// Provider tokens per counted token for `session`: measured, or the model's first guess.
    fn token_scale(&self, session: &Session) -> f64 {
        if session.window.token_scale > 0.0 {
            return session.window.token_scale;
        }
        self.models
            .resolve(&session.model)
            .map(|(_, info)| info.initial_token_scale)
            .filter(|scale| *scale > 0.0)
            .unwrap_or(1.0)
    }

    /// Reads what a window for `session` is chosen from: the paused turn's stored messages
    /// (when `pending_turn` names one) and enough history before them to fill the budget.
    async fn load_window(
        &self,
        tenant: &TenantId,
        session: &Session,
        pending_turn: Option<&str>,
    ) -> Result<WindowSource, EngineError> {
        let budget = WindowBudget::new(
            session.max_context_tokens,
            self.config.reserved_output_tokens,
        )
        .with_scale(self.token_scale(session));
        let stored_tail = match pending_turn {
            Some(turn_id) => self.load_turn_tail(tenant, session, turn_id).await?,
            None => Vec::new(),
        };
        let before = session.message_count - stored_tail.len() as u64;
        let mut history = self
            .load_history(tenant, &session.id, before, budget.input_tokens())
            .await?;
        // Messages the summary stands for are not shown again.
        if let Some(summary) = session.window.active_summary() {
            let shown = history
                .iter()
                .take_while(|m| m.index >= summary.end_index)
                .count();
            history.truncate(shown);
        }
        Ok(WindowSource {
            budget,
            stored_tail,
            history,
        })
    }

    /// The stored messages of a paused turn (the newest ones with its turn id), oldest first.
    async fn load_turn_tail(
        &self,
        tenant: &TenantId,
        session: &Session,
        turn_id: &str,
    ) -> Result<Vec<SharedMessage>, EngineError> {
        let mut tail = Vec::new();
        let mut before = session.message_count;
        'pages: while before > 0 {
            let page = self
                .store
                .list_messages_before(tenant, &session.id, before, HISTORY_PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            for message in page {
                if message.turn_id != turn_id {
                    break 'pages;
                }
                before = message.index;
                tail.push(message);
            }
        }
        tail.reverse();
        Ok(tail)
    }

    /// Stored history before index `before`, newest first: enough to fill `budget` tokens
    /// (and to finish a tool-result group at the edge), never the whole history.
    async fn load_history(
        &self,
        tenant: &TenantId,
        session_id: &str,
        before: u64,
        budget: u32,
    ) -> Result<Vec<SharedMessage>, EngineError> {
        let mut history: Vec<SharedMessage> = Vec::new();
        let mut tokens: u64 = 0;
        let mut cursor = before;
        while cursor > 0 {
            let complete_group = history.last().is_none_or(|m| m.role != Role::Tool);
            if tokens > u64::from(budget) && complete_group {
                break;
            }
            let page = self
                .store
                .list_messages_before(tenant, session_id, cursor, HISTORY_PAGE)
                .await?;
            let Some(oldest) = page.last() else { break };
            cursor = oldest.index;
            tokens += page.iter().map(|m| u64::from(m.token_count)).sum::<u64>();
            history.extend(page);
        }
        Ok(history)
    }
}

/// With the `disabled` strategy, refuses a window that leaves out any of the `before` stored
/// messages.
fn check_nothing_dropped(session: &Session, before: u64, taken: usize) -> Result<(), EngineError> {
    let omitted = before - taken as u64;
    if session.window.strategy == WindowStrategy::Disabled && omitted > 0 {
        return Err(EngineError::InvalidArgument(format!(
            "session '{}' uses the window strategy disabled, and {omitted} of its {before} stored messages no longer fit its window of {} tokens; raise max_context_tokens, switch to sliding_window or summarize, or start a new session",
            session.id, session.max_context_tokens
        )));
    }
    Ok(())
}

/// What a window is chosen from, read once per turn (or preview).
struct WindowSource {
    /// The session's budget.
    budget: WindowBudget,
    /// The paused turn's stored messages, oldest first (always in the window).
    stored_tail: Vec<SharedMessage>,
    /// History before them, newest first.
    history: Vec<SharedMessage>,
}

/// Refuses a conditional change whose etag the session no longer has (AIP-154).
fn check_etag(session: &Session, etag: Option<&str>) -> Result<(), EngineError> {
    match etag {
        Some(given) if given != session.etag() => Err(EngineError::EtagMismatch {
            session_id: session.id.clone(),
            given: given.to_string(),
            current: session.etag(),
        }),
        _ => Ok(()),
    }
}

/// Checks a client-set expiry: it must lie in the future.
fn check_expiry(at: SystemTime, now: SystemTime) -> Result<SystemTime, EngineError> {
    if at <= now {
        return Err(EngineError::InvalidArgument(
            "expire_time is in the past: set a future time, or leave it unset for the server's session TTL"
                .into(),
        ));
    }
    Ok(session::to_micros(at))
}

fn too_large(error: window::TurnTooLarge, budget: WindowBudget, head: &PinnedHead) -> EngineError {
    EngineError::MessageTooLarge {
        needed: error.needed,
        available: error.available,
        over: error.needed - error.available,
        max_context_tokens: budget.max_context_tokens,
        reserved_output_tokens: budget.reserved_output_tokens,
        pinned: head.tokens(),
    }
}

#[cfg(test)]
mod tests;
