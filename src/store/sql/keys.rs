//! API keys in the `api_keys` table, beside the sessions: every replica reads the same rows,
//! so a revocation is seen at each replica's next lookup.

use std::time::SystemTime;

use async_trait::async_trait;

use super::{Pools, SqlStore, from_micros, micros, settle, unavailable};
use crate::domain::key::ApiKey;
use crate::domain::{Role, TenantId};
use crate::store::StoreError;
use crate::store::keys::KeyStore;

/// A query of `api_keys` with the given condition, selecting every column [`KeyRow`] reads.
macro_rules! select_keys {
    ($rest:literal) => {
        concat!(
            "SELECT key_id, key_hash, tenant_id, role, label, create_time, expire_time,
                 revoke_time FROM api_keys ",
            $rest
        )
    };
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    key_id: String,
    key_hash: Vec<u8>,
    tenant_id: String,
    role: String,
    label: String,
    create_time: i64,
    expire_time: Option<i64>,
    revoke_time: Option<i64>,
}

impl KeyRow {
    fn into_key(self) -> Result<ApiKey, StoreError> {
        let hash: [u8; 32] = self.key_hash.as_slice().try_into().map_err(|_| {
            StoreError::Unavailable(format!("stored API key '{}' is unreadable", self.key_id))
        })?;
        Ok(ApiKey {
            id: self.key_id,
            hash,
            tenant: TenantId::new(self.tenant_id),
            // Anything but "admin" grants least.
            role: if self.role == Role::Admin.as_str() {
                Role::Admin
            } else {
                Role::User
            },
            label: self.label,
            create_time: from_micros(self.create_time),
            expire_time: self.expire_time.map(from_micros),
            revoke_time: self.revoke_time.map(from_micros),
        })
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.ensure_present()?;
        on_pool!(&self.pools, write, |pool| {
            let mut conn = self.writer(pool).await?;
            let result = sqlx::query(
                "INSERT INTO api_keys (key_id, key_hash, tenant_id, role, label, create_time,
                     expire_time, revoke_time)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (key_id) DO NOTHING",
            )
            .bind(&key.id)
            .bind(key.hash.as_slice())
            .bind(key.tenant.as_str())
            .bind(key.role.as_str())
            .bind(&key.label)
            .bind(micros(key.create_time))
            .bind(key.expire_time.map(micros))
            .bind(key.revoke_time.map(micros))
            .execute(&mut *conn)
            .await
            .map_err(unavailable)
            .and_then(|done| match done.rows_affected() {
                0 => Err(StoreError::AlreadyExists(key.id.clone())),
                _ => Ok(()),
            });
            settle(&mut conn, &result);
            result
        })
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        self.ensure_present()?;
        let row: Option<KeyRow> = on_pool!(&self.pools, read, |pool| {
            sqlx::query_as(select_keys!("WHERE key_id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(unavailable)?;
        row.map(KeyRow::into_key).transpose()
    }

    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>, StoreError> {
        self.ensure_present()?;
        let rows: Vec<KeyRow> = on_pool!(&self.pools, read, |pool| {
            sqlx::query_as(select_keys!(
                "WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY tenant_id, create_time, key_id"
            ))
            .bind(tenant.map(TenantId::as_str))
            .fetch_all(pool)
            .await
        })
        .map_err(unavailable)?;
        rows.into_iter().map(KeyRow::into_key).collect()
    }

    async fn revoke_key(&self, id: &str, at: SystemTime) -> Result<Option<ApiKey>, StoreError> {
        self.ensure_present()?;
        on_pool!(&self.pools, write, |pool| {
            let mut conn = self.writer(pool).await?;
            let result = sqlx::query(
                "UPDATE api_keys SET revoke_time = COALESCE(revoke_time, $2) WHERE key_id = $1",
            )
            .bind(id)
            .bind(micros(at))
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(unavailable);
            settle(&mut conn, &result);
            result
        })?;
        self.get_key(id).await
    }

    async fn delete_tenant_keys(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.ensure_present()?;
        on_pool!(&self.pools, write, |pool| {
            let mut conn = self.writer(pool).await?;
            let result = sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
                .map_err(unavailable);
            settle(&mut conn, &result);
            result
        })
    }
}
