//! A `SessionStore` decorator that injects faults into the store it wraps, following a plan:
//! fail an operation before it runs, delay it, or run it and then report a failure (the
//! commit happened, the caller is told it did not). Used to test that every store failure
//! reaches the caller as its documented status and leaves nothing half-done.
//!
//! A plan is a list of [`Rule`]s, each naming an [`Op`], which of its calls it hits (counted
//! from when the rule was added) and the [`Fault`]:
//!
//! ```
//! # use contextd::store_faults::{Faults, Fault, Op, Rule, StoreError};
//! let faults = Faults::new();
//! // The 3rd commit from now fails without being written.
//! faults.inject(Rule::nth(Op::Commit, 3, Fault::Fail(StoreError::Unavailable("disk".into()))));
//! ```
//!
//! [`serve_with_faults`] runs the server over the configured store wrapped in a plan, so that
//! integration tests drive a real server through real clients. API keys are not wrapped. The
//! wrapper costs nothing unless a server is started this way.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub use super::StoreError;
use super::{SessionLease, SessionStore};
use crate::config::Config;
use crate::domain::TenantId;
use crate::domain::key::TenantUsage;
use crate::domain::receipt::TurnReceipt;
use crate::domain::session::{Session, SharedMessage};

/// A store operation a rule can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`SessionStore::get_session`].
    GetSession,
    /// [`SessionStore::list_sessions`].
    ListSessions,
    /// [`SessionStore::commit`].
    Commit,
    /// [`SessionStore::get_receipt`].
    GetReceipt,
    /// [`SessionStore::delete_receipts_before`].
    DeleteReceiptsBefore,
    /// [`SessionStore::delete_session`].
    DeleteSession,
    /// [`SessionStore::list_messages`].
    ListMessages,
    /// [`SessionStore::list_messages_before`].
    ListMessagesBefore,
    /// [`SessionStore::search_messages`].
    SearchMessages,
    /// [`SessionStore::lease_session`].
    LeaseSession,
    /// [`SessionStore::delete_expired`].
    DeleteExpired,
    /// [`SessionStore::count_sessions`].
    CountSessions,
    /// [`SessionStore::tenant_usage`].
    TenantUsage,
    /// [`SessionStore::delete_tenant`].
    DeleteTenant,
}

/// What happens to a call a rule hits.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The operation does not run; the call returns this error.
    Fail(StoreError),
    /// The call waits this long, then the operation runs.
    Delay(Duration),
    /// The operation runs (a commit is written); then the call returns this error, as when a
    /// connection drops between the database's commit and its acknowledgement.
    FailAfter(StoreError),
}

/// One line of a plan: which calls of an operation get which fault.
#[derive(Debug, Clone)]
pub struct Rule {
    op: Op,
    /// Calls of `op` to let through before the first hit.
    skip: u64,
    /// How many calls to hit; `None` for every one from then on.
    times: Option<u64>,
    fault: Fault,
}

impl Rule {
    /// Hits only the `n`th call of `op` (1-based, counted from when the rule is added).
    pub fn nth(op: Op, n: u64, fault: Fault) -> Self {
        Self {
            op,
            skip: n.saturating_sub(1),
            times: Some(1),
            fault,
        }
    }

    /// Hits the next `count` calls of `op`.
    pub fn next(op: Op, count: u64, fault: Fault) -> Self {
        Self {
            op,
            skip: 0,
            times: Some(count),
            fault,
        }
    }

    /// Hits every call of `op` until the plan is cleared.
    pub fn always(op: Op, fault: Fault) -> Self {
        Self {
            op,
            skip: 0,
            times: None,
            fault,
        }
    }
}

/// A plan of faults, shared by the test that writes it and the store that follows it.
#[derive(Default)]
pub struct Faults {
    plan: Mutex<Vec<Rule>>,
    hits: Mutex<Vec<Op>>,
}

impl Faults {
    /// An empty plan (every call goes through).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds a rule to the plan. When several rules would hit a call, the first added wins.
    pub fn inject(&self, rule: Rule) {
        self.plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
    }

    /// Removes every rule: from now on every call goes through.
    pub fn clear(&self) {
        self.plan.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// How many calls of `op` a rule has hit so far.
    pub fn hits(&self, op: Op) -> usize {
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|hit| **hit == op)
            .count()
    }

    /// The fault for this call of `op`, if a rule hits it; counts the call for every rule on
    /// `op` and drops rules that are used up.
    fn take(&self, op: Op) -> Option<Fault> {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let mut chosen = None;
        for rule in plan.iter_mut().filter(|rule| rule.op == op) {
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            if chosen.is_none() && rule.times != Some(0) {
                chosen = Some(rule.fault.clone());
                if let Some(times) = rule.times.as_mut() {
                    *times -= 1;
                }
            }
        }
        plan.retain(|rule| rule.times != Some(0));
        if chosen.is_some() {
            self.hits.lock().unwrap_or_else(|e| e.into_inner()).push(op);
        }
        chosen
    }
}

/// `inner`, with the faults of `plan` injected.
pub struct FaultStore {
    inner: Arc<dyn SessionStore>,
    plan: Arc<Faults>,
}

impl FaultStore {
    /// Wraps `inner`, following `plan`.
    pub fn new(inner: Arc<dyn SessionStore>, plan: Arc<Faults>) -> Self {
        Self { inner, plan }
    }

    async fn around<T>(
        &self,
        op: Op,
        run: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self.plan.take(op) {
            None => run.await,
            Some(Fault::Fail(error)) => Err(error),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                run.await
            }
            Some(Fault::FailAfter(error)) => {
                run.await?;
                Err(error)
            }
        }
    }
}

#[async_trait]
impl SessionStore for FaultStore {
    async fn get_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        self.around(Op::GetSession, self.inner.get_session(tenant, session_id))
            .await
    }

    async fn list_sessions(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.around(
            Op::ListSessions,
            self.inner.list_sessions(tenant, after, limit),
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
        self.around(
            Op::Commit,
            self.inner
                .commit(tenant, session, expected_version, messages, receipt),
        )
        .await
    }

    async fn get_receipt(
        &self,
        tenant: &TenantId,
        session_id: &str,
        key: &str,
    ) -> Result<Option<TurnReceipt>, StoreError> {
        self.around(
            Op::GetReceipt,
            self.inner.get_receipt(tenant, session_id, key),
        )
        .await
    }

    async fn delete_receipts_before(
        &self,
        before: SystemTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.around(
            Op::DeleteReceiptsBefore,
            self.inner.delete_receipts_before(before, limit),
        )
        .await
    }

    async fn delete_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.around(
            Op::DeleteSession,
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
        self.around(
            Op::ListMessages,
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
        self.around(
            Op::ListMessagesBefore,
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
        self.around(
            Op::SearchMessages,
            self.inner.search_messages(tenant, session_id, query, limit),
        )
        .await
    }

    async fn lease_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<SessionLease, StoreError> {
        self.around(
            Op::LeaseSession,
            self.inner.lease_session(tenant, session_id),
        )
        .await
    }

    async fn delete_expired(&self, now: SystemTime, limit: usize) -> Result<u64, StoreError> {
        self.around(Op::DeleteExpired, self.inner.delete_expired(now, limit))
            .await
    }

    async fn count_sessions(&self, tenant: &TenantId, now: SystemTime) -> Result<u64, StoreError> {
        self.around(Op::CountSessions, self.inner.count_sessions(tenant, now))
            .await
    }

    async fn tenant_usage(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<TenantUsage>, StoreError> {
        self.around(Op::TenantUsage, self.inner.tenant_usage(tenant))
            .await
    }

    async fn delete_tenant(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        self.around(Op::DeleteTenant, self.inner.delete_tenant(tenant))
            .await
    }
}

/// Serves contextd as [`crate::server::serve`] does, over the configured store wrapped in a
/// [`FaultStore`] that follows `plan`.
pub async fn serve_with_faults(
    listener: tokio::net::TcpListener,
    config: Config,
    plan: Arc<Faults>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), crate::server::ServeError> {
    let mut open = crate::server::open(&config).await?;
    open.store = Arc::new(FaultStore::new(open.store.clone(), plan));
    crate::server::serve_store(listener, config, open, shutdown).await
}
