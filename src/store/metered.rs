//! A `SessionStore` decorator that times every operation of the store it wraps, as
//! `contextd_store_operation_duration_seconds{store,operation}`, inside a `tracing` span
//! (`store.commit`, …), so that traces show what a call spent in the store.
//!
//! One wrapper for every store: the adapters stay free of metrics, and a new store is timed
//! the moment it is opened.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use tracing::Instrument;

use super::{SessionLease, SessionStore, StoreError};
use crate::domain::TenantId;
use crate::domain::receipt::TurnReceipt;
use crate::domain::session::{Session, SharedMessage};
use crate::telemetry::metrics::{Handles, STORE_OPERATION_DURATION_SECONDS};

/// `inner`, timed.
pub struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    store: &'static str,
}

impl MeteredStore {
    /// Times `inner`, whose kind (`memory`, `sqlite`, `postgres`) is `store`.
    pub fn new(inner: Arc<dyn SessionStore>, store: &'static str) -> Self {
        Self { inner, store }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        run: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let span = tracing::debug_span!("store", store = self.store, operation);
        let started = Instant::now();
        let result = run.instrument(span).await;
        static DURATIONS: Handles<metrics::Histogram> = Handles::new();
        DURATIONS
            .get(self.store, operation, || {
                metrics::histogram!(
                    STORE_OPERATION_DURATION_SECONDS,
                    "store" => self.store,
                    "operation" => operation
                )
            })
            .record(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn get_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        self.timed("get_session", self.inner.get_session(tenant, session_id))
            .await
    }

    async fn list_sessions(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.timed(
            "list_sessions",
            self.inner.list_sessions(tenant, after, limit),
        )
        .await
    }

    async fn newest_sessions(
        &self,
        tenant: &TenantId,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.timed(
            "newest_sessions",
            self.inner.newest_sessions(tenant, limit, now),
        )
        .await
    }

    async fn commit(
        &self,
        tenant: &TenantId,
        session: &Session,
        expected_version: Option<u64>,
        messages: &[SharedMessage],
        receipt: Option<&TurnReceipt>,
    ) -> Result<(), StoreError> {
        let span = tracing::info_span!(
            "store.commit",
            store = self.store,
            session = %session.id,
            messages = messages.len()
        );
        self.timed(
            "commit",
            self.inner
                .commit(tenant, session, expected_version, messages, receipt)
                .instrument(span),
        )
        .await
    }

    async fn get_receipt(
        &self,
        tenant: &TenantId,
        session_id: &str,
        key: &str,
    ) -> Result<Option<TurnReceipt>, StoreError> {
        self.timed(
            "get_receipt",
            self.inner.get_receipt(tenant, session_id, key),
        )
        .await
    }

    async fn delete_receipts_before(
        &self,
        before: SystemTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.timed(
            "delete_receipts_before",
            self.inner.delete_receipts_before(before, limit),
        )
        .await
    }

    async fn delete_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.timed(
            "delete_session",
            self.inner.delete_session(tenant, session_id),
        )
        .await
    }

    async fn list_messages(
        &self,
        tenant: &TenantId,
        session_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        self.timed(
            "list_messages",
            self.inner.list_messages(tenant, session_id, from, limit),
        )
        .await
    }

    async fn list_messages_before(
        &self,
        tenant: &TenantId,
        session_id: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        self.timed(
            "list_messages_before",
            self.inner
                .list_messages_before(tenant, session_id, before, limit),
        )
        .await
    }

    async fn search_messages(
        &self,
        tenant: &TenantId,
        session_id: &str,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        self.timed(
            "search_messages",
            self.inner.search_messages(tenant, session_id, query, limit),
        )
        .await
    }

    async fn lease_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<SessionLease, StoreError> {
        self.timed(
            "lease_session",
            self.inner.lease_session(tenant, session_id),
        )
        .await
    }

    async fn delete_expired(&self, now: SystemTime, limit: usize) -> Result<u64, StoreError> {
        self.timed("delete_expired", self.inner.delete_expired(now, limit))
            .await
    }

    async fn count_sessions(&self, tenant: &TenantId, now: SystemTime) -> Result<u64, StoreError> {
        self.timed("count_sessions", self.inner.count_sessions(tenant, now))
            .await
    }

    async fn tenant_usage(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<crate::domain::key::TenantUsage>, StoreError> {
        self.timed("tenant_usage", self.inner.tenant_usage(tenant))
            .await
    }

    async fn delete_tenant(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        self.timed("delete_tenant", self.inner.delete_tenant(tenant))
            .await
    }
}
