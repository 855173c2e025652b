//! Tenant administration: what each tenant stores, exporting one tenant's data, deleting it.
//!
//! Only an admin may reach other tenants; a user sees its own tenant's usage and nothing else.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::Stream;

use super::{Engine, EngineError};
use crate::domain::key::{TenantUsage, check_tenant_id};
use crate::domain::session::{Session, SharedMessage};
use crate::domain::{Scope, TenantId};

/// Sessions or messages read per store call while exporting.
const EXPORT_PAGE: usize = 200;

/// One record of an export.
#[derive(Debug, Clone)]
pub enum ExportRecord {
    /// A session, before its history.
    Session(Box<Session>),
    /// A message of the session exported last (its id first).
    Message(String, SharedMessage),
}

/// Refuses a non-admin caller.
pub(crate) fn require_admin(scope: &Scope, what: &str) -> Result<(), EngineError> {
    if scope.is_admin() {
        Ok(())
    } else {
        Err(EngineError::PermissionDenied(format!(
            "{what} needs an admin key; this key is a user key of tenant '{}'",
            scope.tenant
        )))
    }
}

/// The tenant an admin names, checked.
pub(crate) fn tenant_named(id: &str) -> Result<TenantId, EngineError> {
    check_tenant_id(id).map_err(EngineError::InvalidArgument)?;
    Ok(TenantId::new(id))
}

impl Engine {
    /// What each tenant stores (an admin: every tenant with sessions; a user: its own, also
    /// when it stores nothing). `keys` is left for the caller to fill in.
    pub async fn tenant_usage(&self, scope: &Scope) -> Result<Vec<TenantUsage>, EngineError> {
        if scope.is_admin() {
            return Ok(self.store.tenant_usage(None).await?);
        }
        let mut own = self.store.tenant_usage(Some(&scope.tenant)).await?;
        if own.is_empty() {
            own.push(TenantUsage {
                tenant: scope.tenant.clone(),
                ..TenantUsage::default()
            });
        }
        Ok(own)
    }

    /// Deletes every session of `tenant` (admin only); returns how many sessions and messages
    /// went.
    pub async fn delete_tenant(
        &self,
        scope: &Scope,
        tenant: &str,
    ) -> Result<(u64, u64), EngineError> {
        require_admin(scope, "deleting a tenant")?;
        let tenant = tenant_named(tenant)?;
        let (sessions, messages) = self.store.delete_tenant(&tenant).await?;
        self.kept.forget_tenant(&tenant);
        self.forget_stored(&tenant);
        tracing::info!(%tenant, sessions, messages, "deleted a tenant's sessions");
        Ok((sessions, messages))
    }

    /// Every session of `tenant` (admin only), each followed by its history oldest first,
    /// read page by page as the stream is consumed. A store failure ends the stream with that
    /// error.
    pub fn export_tenant(
        self: &Arc<Self>,
        scope: &Scope,
        tenant: &str,
    ) -> Result<impl Stream<Item = Result<ExportRecord, EngineError>> + Send + 'static, EngineError>
    {
        require_admin(scope, "exporting a tenant")?;
        let state = Export {
            engine: self.clone(),
            tenant: tenant_named(tenant)?,
            after: None,
            sessions: VecDeque::new(),
            messages: VecDeque::new(),
            current: None,
            listed_all: false,
            failed: false,
        };
        Ok(futures_util::stream::unfold(
            state,
            |mut state| async move {
                let next = state.next().await?;
                if next.is_err() {
                    state.failed = true;
                }
                Some((next, state))
            },
        ))
    }
}

/// Where an export stands.
struct Export {
    engine: Arc<Engine>,
    tenant: TenantId,
    /// The last session id listed.
    after: Option<String>,
    /// Listed sessions not sent yet.
    sessions: VecDeque<Session>,
    /// Read messages of `current` not sent yet.
    messages: VecDeque<SharedMessage>,
    /// The session whose history is being sent, and the next index to read.
    current: Option<(String, u64)>,
    listed_all: bool,
    failed: bool,
}

impl Export {
    async fn next(&mut self) -> Option<Result<ExportRecord, EngineError>> {
        if self.failed {
            return None;
        }
        let store = &self.engine.store;
        loop {
            if let Some(message) = self.messages.pop_front() {
                let id = self.current.as_ref().map(|(id, _)| id.clone())?;
                return Some(Ok(ExportRecord::Message(id, message)));
            }
            if let Some((id, from)) = self.current.take() {
                match store
                    .list_messages(&self.tenant, &id, from, EXPORT_PAGE)
                    .await
                {
                    Err(e) => return Some(Err(e.into())),
                    Ok(page) if page.is_empty() => continue,
                    Ok(page) => {
                        let next = page.last().map_or(from, |m| m.index + 1);
                        self.messages.extend(page);
                        self.current = Some((id, next));
                        continue;
                    }
                }
            }
            if let Some(session) = self.sessions.pop_front() {
                self.current = Some((session.id.clone(), 0));
                return Some(Ok(ExportRecord::Session(Box::new(session))));
            }
            if self.listed_all {
                return None;
            }
            match store
                .list_sessions(&self.tenant, self.after.as_deref(), EXPORT_PAGE)
                .await
            {
                Err(e) => return Some(Err(e.into())),
                Ok(page) => {
                    self.listed_all = page.len() < EXPORT_PAGE;
                    self.after = page.last().map(|s| s.id.clone());
                    self.sessions.extend(page);
                }
            }
        }
    }
}
