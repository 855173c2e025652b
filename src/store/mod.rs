//! The `SessionStore` port: where sessions and their histories live.
//!
//! Every write names the session version it was based on, so a store refuses a stale write
//! (`StoreError::Conflict`) instead of losing an update. A turn's messages and the session
//! change it causes are written in one `commit`, all or nothing.
//!
//! Tenancy is in the key: every method names the tenant first, and a store keeps each
//! tenant's sessions apart, so the same session id under two tenants is two sessions, and a
//! session of another tenant is simply absent (`None`, `NotFound`).

mod db_file;
#[doc(hidden)]
pub mod fault;
pub mod keys;
pub(crate) mod lru;
pub mod memory;
pub mod metered;
pub mod open;
pub mod sql;

use std::time::SystemTime;

use async_trait::async_trait;

use crate::domain::TenantId;
use crate::domain::key::TenantUsage;
use crate::domain::receipt::TurnReceipt;
use crate::domain::session::{Session, SharedMessage};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The session does not exist.
    #[error("session '{0}' does not exist")]
    NotFound(String),
    /// A session with this id exists already.
    #[error("session '{0}' already exists")]
    AlreadyExists(String),
    /// The session changed since it was read.
    #[error("session '{0}' was changed concurrently")]
    Conflict(String),
    /// The storage backend cannot be reached or failed; retrying later may work.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}

/// Persistent (or not) storage of sessions and histories.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Returns a session, or `None`.
    async fn get_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<Session>, StoreError>;

    /// Lists up to `limit` sessions with ids greater than `after` (all when `None`), ordered by
    /// id.
    async fn list_sessions(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError>;

    /// Up to `limit` sessions of `tenant` not expired at `now`, the most recently updated
    /// first (ties by id, so the order is stable). Durable stores answer it with one query
    /// on an index over (tenant, update time); this default walks the tenant's sessions in
    /// id order, for stores that have nothing better.
    async fn newest_sessions(
        &self,
        tenant: &TenantId,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<Session>, StoreError> {
        /// Sessions read per page while walking.
        const PAGE: usize = 500;
        let mut newest: Vec<Session> = Vec::new();
        if limit == 0 {
            return Ok(newest);
        }
        let mut after: Option<String> = None;
        loop {
            let page = self.list_sessions(tenant, after.as_deref(), PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|s| s.id.clone());
            newest.extend(page.into_iter().filter(|s| !s.is_expired(now)));
            sort_newest_first(&mut newest);
            newest.truncate(limit);
            if !full {
                return Ok(newest);
            }
        }
    }

    /// Writes a session and appends `messages` to its history, atomically.
    ///
    /// `expected_version`: `None` creates the session (`AlreadyExists` if the id is taken);
    /// `Some(v)` updates it only if the stored version is still `v` (`Conflict` otherwise,
    /// `NotFound` if it is gone). `messages` must continue the history at
    /// `Message::index == stored message_count` (`Conflict` otherwise). `receipt`, when
    /// given, is stored in the same transaction (replacing one with the same key).
    async fn commit(
        &self,
        tenant: &TenantId,
        session: &Session,
        expected_version: Option<u64>,
        messages: &[SharedMessage],
        receipt: Option<&TurnReceipt>,
    ) -> Result<(), StoreError>;

    /// The receipt stored for `key` on the session, if any.
    async fn get_receipt(
        &self,
        tenant: &TenantId,
        session_id: &str,
        key: &str,
    ) -> Result<Option<TurnReceipt>, StoreError>;

    /// Deletes up to `limit` receipts (of any tenant) stored before `before`; returns how
    /// many went. Receipts of a deleted session go with it.
    async fn delete_receipts_before(
        &self,
        before: SystemTime,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// Deletes a session with its history; returns how many messages it had, or `None` when
    /// it did not exist.
    async fn delete_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<u64>, StoreError>;

    /// Up to `limit` messages with `index >= from`, oldest first.
    async fn list_messages(
        &self,
        tenant: &TenantId,
        session_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError>;

    /// Up to `limit` messages with `index < before`, newest first (for window assembly, which
    /// walks back from the end and stops when the window is full).
    async fn list_messages_before(
        &self,
        tenant: &TenantId,
        session_id: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError>;

    /// Up to `limit` messages whose text contains `query` (case-insensitive), newest first.
    async fn search_messages(
        &self,
        tenant: &TenantId,
        session_id: &str,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError>;

    /// Takes the session's turn lease: while it is held, no other process sharing this store
    /// runs a turn or change on the session. Dropping the lease releases it.
    ///
    /// Stores that only one process can open (memory, SQLite) need no lease beyond the
    /// engine's in-process lock, and return [`SessionLease::local`].
    async fn lease_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<SessionLease, StoreError> {
        let _ = (tenant, session_id);
        Ok(SessionLease::local())
    }

    /// Deletes up to `limit` sessions of any tenant (with their histories and pending calls)
    /// whose `expire_time` is at or before `now`; returns how many went. Expiry is the server's
    /// housekeeping, not a caller's operation, so it spans tenants.
    async fn delete_expired(&self, now: SystemTime, limit: usize) -> Result<u64, StoreError>;

    /// Counts the tenant's sessions that have not expired at `now`.
    async fn count_sessions(&self, tenant: &TenantId, now: SystemTime) -> Result<u64, StoreError>;

    /// What each tenant stores (only `tenant`, when given), ordered by tenant id; a tenant
    /// with no sessions is absent. `keys` is left 0 (keys live in the [`keys::KeyStore`]).
    async fn tenant_usage(&self, tenant: Option<&TenantId>)
    -> Result<Vec<TenantUsage>, StoreError>;

    /// Deletes every session of the tenant with everything that hangs off it, all or nothing;
    /// returns how many sessions and messages went.
    async fn delete_tenant(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError>;
}

/// A held turn lease (see [`SessionStore::lease_session`]); released on drop.
pub struct SessionLease {
    _held: Option<Box<dyn Send + Sync>>,
}

impl SessionLease {
    /// A lease with nothing to release: the in-process lock is the whole lock.
    pub fn local() -> Self {
        Self { _held: None }
    }

    /// A lease that releases when `held` is dropped.
    pub fn holding(held: Box<dyn Send + Sync>) -> Self {
        Self { _held: Some(held) }
    }
}

/// Orders sessions as [`SessionStore::newest_sessions`] answers them: the most recently
/// updated first, ties by id.
pub fn sort_newest_first(sessions: &mut [Session]) {
    sessions.sort_by(|a, b| b.update_time.cmp(&a.update_time).then(a.id.cmp(&b.id)));
}
