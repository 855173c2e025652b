//! Making, listing and revoking API keys: one implementation for `contextd keys` offline (on
//! the store or the keys file, with no server running) and for the running server's
//! `AdminService`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::keys_file::KeysFile;
use super::secret;
use crate::config::AuthConfig;
use crate::domain::key::ApiKey;
use crate::domain::{Role, TenantId};
use crate::engine::EngineError;
use crate::engine::tenants::tenant_named;
use crate::store::StoreError;
use crate::store::keys::KeyStore;

/// The longest key label, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;
/// How many times a new key is drawn again when its id is taken (a 48-bit collision).
const ID_ATTEMPTS: usize = 4;

/// What a new key grants.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    /// Its tenant.
    pub tenant: String,
    /// Its role.
    pub role: Role,
    /// The operator's note.
    pub label: String,
    /// How long it works; `None`: until revoked.
    pub ttl: Option<Duration>,
}

/// Where keys are kept.
enum Place {
    Store(Arc<dyn KeyStore>),
    File(KeysFile),
}

/// Key management over the configured place.
pub struct KeyAdmin {
    place: Place,
}

impl KeyAdmin {
    /// Keys in `auth.keys_file` when configured, else in `store`.
    pub fn new(config: &AuthConfig, store: Arc<dyn KeyStore>) -> Self {
        let place = match &config.keys_file {
            Some(path) => Place::File(KeysFile::new(path)),
            None => Place::Store(store),
        };
        Self { place }
    }

    /// Whether keys live in a keys file.
    pub fn uses_keys_file(&self) -> bool {
        matches!(self.place, Place::File(_))
    }

    /// Makes a key; returns it with its secret text (shown once, never stored).
    pub async fn create(&self, grant: KeyGrant) -> Result<(ApiKey, String), EngineError> {
        let tenant = tenant_named(&grant.tenant)?;
        if grant.label.len() > MAX_LABEL_BYTES {
            return Err(EngineError::InvalidArgument(format!(
                "a key label has at most {MAX_LABEL_BYTES} bytes; this one has {}",
                grant.label.len()
            )));
        }
        let now = SystemTime::now();
        let expire_time =
            match grant.ttl {
                Some(ttl) if ttl.is_zero() => {
                    return Err(EngineError::InvalidArgument(
                    "a key's ttl must be positive (leave it unset for a key that does not expire)"
                        .into(),
                ));
                }
                Some(ttl) => Some(now.checked_add(ttl).ok_or_else(|| {
                    EngineError::InvalidArgument("the key's ttl is too long".into())
                })?),
                None => None,
            };
        for _ in 0..ID_ATTEMPTS {
            let new = secret::generate().map_err(EngineError::StoreUnavailable)?;
            let key = ApiKey {
                id: new.id,
                hash: new.hash,
                tenant: tenant.clone(),
                role: grant.role,
                label: grant.label.clone(),
                create_time: now,
                expire_time,
                revoke_time: None,
            };
            match self.insert(&key).await {
                Ok(()) => {
                    tracing::info!(key_id = %key.id, tenant = %key.tenant, role = key.role.as_str(), "API key created");
                    return Ok((key, new.text));
                }
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::StoreUnavailable(
            "could not draw an unused key id; retry".into(),
        ))
    }

    async fn insert(&self, key: &ApiKey) -> Result<(), StoreError> {
        match &self.place {
            Place::Store(store) => store.insert_key(key).await,
            Place::File(file) => {
                let mut keys = file.load().map_err(StoreError::Unavailable)?;
                if keys.iter().any(|k| k.id == key.id) {
                    return Err(StoreError::AlreadyExists(key.id.clone()));
                }
                keys.push(key.clone());
                file.save(&keys).map_err(StoreError::Unavailable)
            }
        }
    }

    /// Every key, or `tenant`'s.
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, EngineError> {
        let tenant = tenant.map(tenant_named).transpose()?;
        match &self.place {
            Place::Store(store) => Ok(store.list_keys(tenant.as_ref()).await?),
            Place::File(file) => {
                let mut keys = file.load().map_err(EngineError::StoreUnavailable)?;
                keys.retain(|k| tenant.as_ref().is_none_or(|t| &k.tenant == t));
                keys.sort_by(|a, b| (&a.tenant, a.create_time).cmp(&(&b.tenant, b.create_time)));
                Ok(keys)
            }
        }
    }

    /// Revokes the key `id` (keeping an earlier revocation's time).
    pub async fn revoke(&self, id: &str) -> Result<ApiKey, EngineError> {
        let now = SystemTime::now();
        let revoked = match &self.place {
            Place::Store(store) => store.revoke_key(id, now).await?,
            Place::File(file) => {
                let mut keys = file.load().map_err(EngineError::StoreUnavailable)?;
                let found = keys.iter_mut().find(|k| k.id == id).map(|key| {
                    key.revoke_time.get_or_insert(now);
                    key.clone()
                });
                if found.is_some() {
                    file.save(&keys).map_err(EngineError::StoreUnavailable)?;
                }
                found
            }
        };
        let key = revoked.ok_or_else(|| EngineError::KeyNotFound(id.to_string()))?;
        tracing::info!(key_id = %key.id, tenant = %key.tenant, "API key revoked");
        Ok(key)
    }

    /// Deletes the tenant's keys; returns how many went.
    pub async fn delete_tenant_keys(&self, tenant: &TenantId) -> Result<u64, EngineError> {
        match &self.place {
            Place::Store(store) => Ok(store.delete_tenant_keys(tenant).await?),
            Place::File(file) => {
                let mut keys = file.load().map_err(EngineError::StoreUnavailable)?;
                let before = keys.len();
                keys.retain(|k| &k.tenant != tenant);
                let deleted = (before - keys.len()) as u64;
                if deleted > 0 {
                    file.save(&keys).map_err(EngineError::StoreUnavailable)?;
                }
                Ok(deleted)
            }
        }
    }
}
