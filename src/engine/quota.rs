//! The per-tenant storage quota (`limits.tenant_storage_bytes`).
//!
//! What a tenant stores is measured by the store (the same figure `ListTenants` shows) at most
//! every [`REMEASURE`], and between measurements grown by the bytes each write adds, so the
//! check costs a map look-up per write, not a scan. Deleting a session or a tenant forgets the
//! figure, so freed space counts at once. The quota is a bound on growth, not an exact
//! accountant: replicas measure independently, and one write may pass the line by its own size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Engine, EngineError};
use crate::domain::TenantId;

/// How long a measured figure is trusted (grown by this process's writes meanwhile).
const REMEASURE: Duration = Duration::from_secs(30);

/// Each tenant's stored bytes as last measured, plus what was written since.
#[derive(Default)]
pub(crate) struct StorageUsage {
    tenants: Mutex<HashMap<TenantId, (u64, Instant)>>,
}

impl StorageUsage {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (u64, Instant)>> {
        // Single map operations only: a poisoned lock is still consistent.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine {
    /// Refuses a write for `tenant` once it stores `limits.tenant_storage_bytes` or more.
    pub(crate) async fn check_storage_quota(&self, tenant: &TenantId) -> Result<(), EngineError> {
        let quota = self.limits.tenant_storage_bytes;
        if quota == 0 {
            return Ok(());
        }
        let known = self
            .storage
            .lock()
            .get(tenant)
            .filter(|(_, at)| at.elapsed() < REMEASURE)
            .map(|(bytes, _)| *bytes);
        let stored = match known {
            Some(bytes) => bytes,
            None => {
                let measured = self
                    .store
                    .tenant_usage(Some(tenant))
                    .await?
                    .first()
                    .map_or(0, |u| u.bytes);
                self.storage
                    .lock()
                    .insert(tenant.clone(), (measured, Instant::now()));
                measured
            }
        };
        if stored >= quota {
            crate::telemetry::metrics::rejected("storage_quota");
            return Err(EngineError::ResourceExhausted(format!(
                "tenant '{tenant}' stores {stored} bytes, at its quota limits.tenant_storage_bytes \
                 ({quota}); delete sessions it no longer needs, or ask an operator to raise the quota"
            )));
        }
        Ok(())
    }

    /// Counts `bytes` just written for `tenant` against its quota.
    pub(crate) fn note_stored(&self, tenant: &TenantId, bytes: u64) {
        if self.limits.tenant_storage_bytes == 0 {
            return;
        }
        if let Some((stored, _)) = self.storage.lock().get_mut(tenant) {
            *stored = stored.saturating_add(bytes);
        }
    }

    /// Forgets the tenant's figure after a deletion, so the next write measures again.
    pub(crate) fn forget_stored(&self, tenant: &TenantId) {
        self.storage.lock().remove(tenant);
    }
}
