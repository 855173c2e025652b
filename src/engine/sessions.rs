//! Session management: creating (or opening) sessions with checked settings, reading,
//! listing in pages, changing them (merge patch, settings, labels, expiry), conditional writes
//! by etag (AIP-154) and deleting. Every change takes the session's turn lock first, so it
//! never interleaves with a running turn.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::Engine;
use super::error::EngineError;
use super::validate::{check_context, check_labels, check_system_prompt, check_tool_limits};
use crate::domain::patch::merge_context;
use crate::domain::session::{
    self, Context, ServerToolSelection, Session, SharedMessage, ToolSpec, WindowState,
    WindowStrategy, generate_session_id, validate_session_id, validate_tools,
};
use crate::domain::{Scope, TenantId};
use crate::model::ModelInfo;

/// Smallest window a session may have, in tokens.
pub const MIN_CONTEXT_TOKENS: u32 = 16;
/// Largest window a session may have, in tokens.
pub const MAX_CONTEXT_TOKENS: u32 = 10_000_000;

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
    /// Server-side tools offered to the model; `None` for the server's default.
    pub server_tools: Option<ServerToolSelection>,
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
    /// A change to the selection of server-side tools.
    pub server_tools: Option<ServerToolsChange>,
}

/// How an update changes which server-side tools a session offers. Two variants because a
/// selection with no patterns already means "none": going back to the server's
/// `engine.default_server_tools` needs its own word.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerToolsChange {
    /// Offer the tools these patterns match (no patterns: none).
    Replace(ServerToolSelection),
    /// Forget the session's own selection: it follows `engine.default_server_tools` again,
    /// including later changes to that setting.
    Reset,
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

impl Engine {
    /// Creates a session.
    pub async fn create_session(
        &self,
        scope: &Scope,
        new: NewSession,
    ) -> Result<Session, EngineError> {
        let session = self.build_session(&scope.tenant, new)?;
        self.check_storage_quota(&scope.tenant).await?;
        self.store
            .commit(&scope.tenant, &session, None, &[], None)
            .await?;
        self.note_stored(&scope.tenant, session.system_prompt.len() as u64);
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
    pub(super) fn build_session(
        &self,
        tenant: &TenantId,
        new: NewSession,
    ) -> Result<Session, EngineError> {
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
        check_system_prompt(&new.system_prompt, &self.limits)?;
        check_context("context", &new.context, &self.limits)?;
        self.check_tools(tenant, &new.tools)?;
        check_labels(&new.labels, &self.limits)?;
        if let Some(selection) = &new.server_tools {
            self.check_server_tools(tenant, selection)?;
        }
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
            server_tools: new.server_tools,
        })
    }

    /// Checks window settings and applies them (the summary and token scale stay).
    pub(super) fn apply_window_settings(
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
    pub(super) fn window_size(
        &self,
        requested: u32,
        model: &ModelInfo,
    ) -> Result<u32, EngineError> {
        match requested {
            0 => Ok(model.context_window),
            n if (MIN_CONTEXT_TOKENS..=MAX_CONTEXT_TOKENS).contains(&n) => Ok(n),
            n => Err(EngineError::InvalidArgument(format!(
                "max_context_tokens {n} is out of range: use 0 (the model's default, {}) or {MIN_CONTEXT_TOKENS} to {MAX_CONTEXT_TOKENS}",
                model.context_window
            ))),
        }
    }

    pub(super) fn check_tools(
        &self,
        tenant: &TenantId,
        tools: &[ToolSpec],
    ) -> Result<(), EngineError> {
        check_tool_limits(tools, &self.limits)?;
        validate_tools(tools).map_err(EngineError::InvalidArgument)?;
        for tool in tools {
            if self.tools.find(tenant, &tool.name).is_some() {
                return Err(EngineError::InvalidArgument(format!(
                    "tool {:?} is a server-side tool; give the client-declared tool another name",
                    tool.name
                )));
            }
        }
        Ok(())
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

    /// Lists sessions with ids after `after`, at most `page_size` (see [`Self::page_size`])
    /// and at most `limits.max_page_bytes` of encoded items; also returns the id to continue
    /// after when there may be more. `encode` turns each session into the door's item and
    /// `size` measures that item as the reply will carry it, so the byte bound is the door's
    /// own encoding.
    pub async fn list_sessions<W>(
        &self,
        scope: &Scope,
        after: Option<&str>,
        page_size: u32,
        encode: impl Fn(&Session) -> W,
        size: impl Fn(&W) -> usize,
    ) -> Result<Page<W, String>, EngineError> {
        let limit = self.page_size(page_size);
        // One extra row tells whether another page exists, so the last page has no token.
        let mut sessions = self
            .store
            .list_sessions(&scope.tenant, after, limit + 1)
            .await?;
        // Expired sessions the sweep has not removed yet are already gone to clients.
        let now = session::now();
        sessions.retain(|s| !s.is_expired(now));
        let more = sessions.len() > limit;
        sessions.truncate(limit);
        let (items, taken) = fill_page(&sessions, self.limits.max_page_bytes, encode, size);
        let next = if more || taken < sessions.len() {
            sessions[..taken].last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// How many items a page holds when the caller asks for `requested` (0: the default),
    /// bounded by `limits.max_page_size`.
    pub(super) fn page_size(&self, requested: u32) -> usize {
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
        if let Some(prompt) = &update.system_prompt {
            check_system_prompt(prompt, &self.limits)?;
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
            self.check_tools(&scope.tenant, &tools)?;
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
        match update.server_tools {
            None => {}
            Some(ServerToolsChange::Replace(selection)) => {
                self.check_server_tools(&scope.tenant, &selection)?;
                session.server_tools = Some(selection);
            }
            Some(ServerToolsChange::Reset) => session.server_tools = None,
        }
        if let Some(settings) = update.window {
            self.apply_window_settings(&mut session.window, settings)?;
        }
        if let Some(size) = update.max_context_tokens {
            let (_, info) = self.resolve_model(&session.model)?;
            session.max_context_tokens = self.window_size(size, &info)?;
        }
        // Only a change that adds labels is checked, so labels can always be removed (even
        // below a limit lowered since they were set).
        let adds_labels = !update.set_labels.is_empty();
        session.labels.extend(update.set_labels);
        for key in &update.remove_labels {
            session.labels.remove(key);
        }
        if adds_labels {
            check_labels(&session.labels, &self.limits)?;
        }
        self.save_change(&scope.tenant, &mut session, version)
            .await?;
        Ok(session)
    }

    /// Stores a change to a session's settings or context (no new messages), refusing it if
    /// the session moved past `version` meanwhile.
    pub(super) async fn save_change(
        &self,
        tenant: &TenantId,
        session: &mut Session,
        version: u64,
    ) -> Result<(), EngineError> {
        session.touch(session::now());
        session.version = version + 1;
        Ok(self
            .store
            .commit(tenant, session, Some(version), &[], None)
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
        self.kept.forget(tenant, session_id);
        self.forget_stored(tenant);
        match deleted {
            Some(count) if !expired => Ok(count),
            _ => Err(EngineError::SessionNotFound(session_id.to_string())),
        }
    }

    /// Lists stored messages from index `from`, at most `page_size` and at most
    /// `limits.max_page_bytes` of encoded items (`encode` and `size` as for
    /// [`Self::list_sessions`]); also returns the index to continue from when there are more.
    pub async fn list_messages<W>(
        &self,
        scope: &Scope,
        session_id: &str,
        from: u64,
        page_size: u32,
        encode: impl Fn(&SharedMessage) -> W,
        size: impl Fn(&W) -> usize,
    ) -> Result<Page<W, u64>, EngineError> {
        let limit = self.page_size(page_size);
        let session = self.get_session(scope, session_id).await?;
        let messages = self
            .store
            .list_messages(&scope.tenant, session_id, from, limit)
            .await?;
        let (items, taken) = fill_page(&messages, self.limits.max_page_bytes, encode, size);
        let next = messages[..taken]
            .last()
            .map(|m| m.index + 1)
            .filter(|next| *next < session.message_count);
        Ok(Page { items, next })
    }
}

/// Encodes `items` in order while their encoded sizes add up to at most `max_bytes`; returns
/// the encoded items and how many of `items` they are. The first item always goes out, even
/// alone over the bound, so a listing never stalls on one large item.
fn fill_page<T, W>(
    items: &[T],
    max_bytes: usize,
    encode: impl Fn(&T) -> W,
    size: impl Fn(&W) -> usize,
) -> (Vec<W>, usize) {
    let mut page = Vec::with_capacity(items.len());
    let mut bytes = 0usize;
    for item in items {
        let encoded = encode(item);
        let item_bytes = size(&encoded);
        if !page.is_empty() && bytes.saturating_add(item_bytes) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(item_bytes);
        page.push(encoded);
    }
    let taken = page.len();
    (page, taken)
}

/// Refuses a conditional change whose etag the session no longer has (AIP-154).
pub(super) fn check_etag(session: &Session, etag: Option<&str>) -> Result<(), EngineError> {
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
pub(super) fn check_expiry(at: SystemTime, now: SystemTime) -> Result<SystemTime, EngineError> {
    if at <= now {
        return Err(EngineError::InvalidArgument(
            "expire_time is in the past: set a future time, or leave it unset for the server's session TTL"
                .into(),
        ));
    }
    Ok(session::to_micros(at))
}
