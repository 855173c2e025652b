//! The `KeyStore` port: where API keys live when they are kept in the database.
//!
//! Keys are global, not per tenant: a presented key is what names the tenant. The SQL stores
//! keep them in `api_keys` beside the sessions (so every replica sees a revocation at its next
//! lookup); the memory store keeps them for as long as the process runs. Deployments that keep
//! keys in a secret use `auth.keys_file` instead.

use std::time::SystemTime;

use async_trait::async_trait;

use super::StoreError;
use crate::domain::TenantId;
use crate::domain::key::ApiKey;

/// Stored API keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key (`AlreadyExists` if its id is taken).
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    /// The key with this id, revoked and expired ones included.
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Every key (of `tenant` only, when given), ordered by tenant and creation.
    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, StoreError>;

    /// Marks the key revoked at `at` (keeping an earlier revocation); returns it as stored
    /// now, or `None` when no key has this id.
    async fn revoke_key(&self, id: &str, at: SystemTime) -> Result<Option<ApiKey>, StoreError>;

    /// Deletes the tenant's keys; returns how many went.
    async fn delete_tenant_keys(&self, tenant: &TenantId) -> Result<u64, StoreError>;
}
