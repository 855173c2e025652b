//! The engine: one API for every door (gRPC today; HTTP, sockets and MCP build on the same
//! calls). Every entry point takes the caller's [`Scope`](crate::domain::Scope) first and
//! answers domain types or an [`EngineError`] whose [`ErrorKind`] each door maps to its own
//! status.
//!
//! It works on domain types only and reaches the outside through three ports: a
//! [`SessionStore`], a [`ModelRegistry`] of `ModelBackend`s, and a [`ToolRegistry`] of
//! `ToolProvider`s. It never names a protocol or a driver.
//!
//! - [`sessions`]: create, open (get or create), get, list in pages, update and delete,
//!   conditional on an etag when the caller names one.
//! - [`preview`]: what the model would see for a message, entry by entry.
//! - [`resources`]: the newest sessions and a session with its newest history (MCP resources).
//! - [`window`]: choosing and loading a window: one assembly for turns and previews.
//! - `kept`: the history each session's last turn chose from, kept for its next turn.
//! - [`dispatch`]: which server-side tools a session offers, and running them.
//! - [`turn`]: a turn in three phases (begin, step loop, commit), paused for client tools
//!   and continued with their results or abandoned.
//! - [`receipts`]: idempotent turns (a repeated key gets the stored outcome).
//! - [`conversation`]: a Converse stream's state machine (open, queued frames, cancel of a
//!   running or paused turn).
//! - [`lifecycle`]: graceful shutdown as turns see it (draining, closing, running turns).
//! - [`summary`]: the `summarize` window strategy.
//! - [`tenants`]: tenant usage, export and deletion (admin).
//! - `quota`: the per-tenant storage quota.
//! - [`locks`]: per-(tenant, session) turn locks; [`validate`]: input limits;
//!   [`error`]: the errors and their kinds.

pub mod conversation;
pub mod dispatch;
pub mod error;
mod kept;
pub mod lifecycle;
pub mod locks;
pub mod preview;
mod quota;
pub mod receipts;
pub mod resources;
pub mod sessions;
pub mod summary;
pub mod tenants;
mod tool_output;
pub mod turn;
mod turn_metrics;
pub mod validate;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

pub use conversation::{Conversation, ConverseEnd, ConverseEvent, ConverseFrame, ConverseSink};
pub use error::{EngineError, ErrorKind};
pub use lifecycle::Lifecycle;
pub use preview::{EntryKind, Preview, PreviewEntry};
pub use sessions::{NewSession, ServerToolsChange, SessionUpdate, WindowSettings};
pub use turn::{NoSink, SinkClosed, TurnEvent, TurnOutcome, TurnRequest, TurnSink};

use crate::config::{EngineConfig, Limits};
use crate::domain::session::{self, Session};
use crate::domain::{Scope, TenantId};
use crate::model::{ModelBackend, ModelInfo, ModelRegistry};
use crate::store::{SessionLease, SessionStore};
use crate::tools::ToolRegistry;
use locks::TurnLocks;

/// The context engine. Cheap to share behind an `Arc`; all state lives in the store, except
/// the per-session turn locks and the windows kept between turns (which the store's state
/// decides the use of).
pub struct Engine {
    store: Arc<dyn SessionStore>,
    models: ModelRegistry,
    tools: ToolRegistry,
    locks: TurnLocks,
    /// Each session's last window, for its next turn.
    kept: kept::KeptWindows,
    config: EngineConfig,
    limits: Limits,
    session_ttl: Option<Duration>,
    /// Each tenant's stored bytes, for `limits.tenant_storage_bytes`.
    storage: quota::StorageUsage,
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
            kept: kept::KeptWindows::new(config.window_cache_bytes),
            config,
            limits,
            session_ttl: None,
            storage: quota::StorageUsage::default(),
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

    /// Deletes up to `limit` turn receipts older than `limits.idempotency_window`; returns
    /// how many went.
    pub async fn sweep_receipts(&self, limit: usize) -> Result<u64, EngineError> {
        let before = session::now()
            .checked_sub(self.limits.idempotency_window)
            .unwrap_or(std::time::UNIX_EPOCH);
        Ok(self.store.delete_receipts_before(before, limit).await?)
    }

    /// How many live sessions the caller's tenant has.
    pub async fn count_sessions(&self, scope: &Scope) -> Result<u64, EngineError> {
        Ok(self
            .store
            .count_sessions(&scope.tenant, session::now())
            .await?)
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

    pub(super) fn resolve_model(
        &self,
        name: &str,
    ) -> Result<(Arc<dyn ModelBackend>, ModelInfo), EngineError> {
        self.models
            .resolve(name)
            .ok_or_else(|| EngineError::UnknownModel {
                model: name.to_string(),
                known: self.models.known_names(),
            })
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;
