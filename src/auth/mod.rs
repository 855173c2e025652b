//! Who is calling: API keys, client certificates, and the tenant and role they name.
//!
//! The [`Authenticator`] turns a request's credentials into the caller's [`Scope`] once, at
//! the edge ([`layer`] for every HTTP-borne door, the JSON-lines door per line, the WebSocket
//! door from its `open` frame when the upgrade carried none). Handlers and the engine only
//! ever see the scope.
//!
//! - `auth.mode = "none"`: nobody is checked; every call is the tenant `default`, as admin.
//!   Allowed only on loopback addresses unless `--insecure-listen` says otherwise.
//! - `keys`: `authorization: Bearer ctxd_…` ([`secret`]); keys live in the store (shared by
//!   replicas; a checked key is trusted for `auth.key_cache_ms` before it is looked up again,
//!   so a revocation takes effect everywhere within that) or in `auth.keys_file`
//!   ([`keys_file`], reread on SIGHUP).
//! - `mtls`: the verified client certificate's URI SAN or subject CN, mapped to a tenant by
//!   `auth.mtls_tenants`.

pub mod admin;
pub mod keys_file;
pub mod layer;
pub mod secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{AuthConfig, AuthMode};
use crate::domain::key::ApiKey;
use crate::domain::{Scope, TenantId};
use crate::server::peer::PeerIdentity;
use crate::store::keys::KeyStore;
use keys_file::KeysFile;

/// The most keys the lookup cache holds before it starts over (a bound, not a tuning knob:
/// only keys that were presented and valid are cached).
const CACHE_ENTRIES: usize = 10_000;

/// Why a caller was not let in. The messages say what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials.
    #[error(
        "this call needs an API key: send the header `authorization: Bearer <key>` (an operator makes keys with `contextd keys add --tenant <tenant>`)"
    )]
    Missing,
    /// Credentials of the wrong shape.
    #[error(
        "the authorization header must be `Bearer ` followed by a contextd API key (ctxd_ and 43 more characters)"
    )]
    Malformed,
    /// A well-formed key nobody issued (or one deleted with its tenant).
    #[error("the API key is not valid: no such key (check it was copied whole)")]
    Unknown,
    /// A revoked key.
    #[error("the API key was revoked; ask an operator for a new one")]
    Revoked,
    /// An expired key.
    #[error("the API key has expired; ask an operator for a new one")]
    Expired,
    /// `mtls` without a verified client certificate.
    #[error(
        "this server identifies callers by TLS client certificate: connect over TLS with a certificate its client CA signed"
    )]
    NoCertificate,
    /// A certificate whose names map to no tenant.
    #[error("the client certificate ({0}) is not mapped to a tenant in auth.mtls_tenants")]
    UnmappedCertificate(String),
    /// The key store could not be asked.
    #[error("cannot check the API key now: {0}; retry")]
    Unavailable(String),
}

impl AuthError {
    /// A short name for logs and the `contextd_rejected_total` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::Malformed | AuthError::Unknown => "invalid_key",
            AuthError::Revoked => "revoked_key",
            AuthError::Expired => "expired_key",
            AuthError::NoCertificate | AuthError::UnmappedCertificate(_) => "unmapped_certificate",
            AuthError::Unavailable(_) => "key_store_unavailable",
        }
    }

    /// The gRPC status a door answers with.
    pub fn status(&self) -> tonic::Status {
        match self {
            AuthError::Unavailable(_) => tonic::Status::unavailable(self.to_string()),
            _ => tonic::Status::unauthenticated(self.to_string()),
        }
    }
}

/// Where keys are looked up.
enum Keys {
    /// In the store, with a short-lived cache of valid keys.
    Store {
        store: Arc<dyn KeyStore>,
        cache: Mutex<HashMap<String, (ApiKey, Instant)>>,
        cache_for: Duration,
    },
    /// In `auth.keys_file`, as last read.
    File {
        file: KeysFile,
        keys: RwLock<Arc<HashMap<String, ApiKey>>>,
    },
}

/// Turns credentials into scopes (see the module docs).
pub struct Authenticator {
    mode: AuthMode,
    keys: Keys,
    /// Certificate identity → scope, for `mtls`.
    certificates: HashMap<String, Scope>,
    config: AuthConfig,
}

impl Authenticator {
    /// The authenticator `config` describes, over the store's keys (unless a keys file is
    /// configured, which is read now).
    pub fn new(config: &AuthConfig, store: Arc<dyn KeyStore>) -> Result<Self, String> {
        let keys = match &config.keys_file {
            Some(path) => {
                let file = KeysFile::new(path);
                let keys = index(file.load()?);
                Keys::File {
                    file,
                    keys: RwLock::new(Arc::new(keys)),
                }
            }
            None => Keys::Store {
                store,
                cache: Mutex::new(HashMap::new()),
                cache_for: Duration::from_millis(config.key_cache_ms),
            },
        };
        let certificates = config
            .mtls_tenants
            .iter()
            .map(|entry| {
                (
                    entry.identity.clone(),
                    Scope {
                        tenant: TenantId::new(&entry.tenant),
                        role: entry.role.into(),
                    },
                )
            })
            .collect();
        Ok(Self {
            mode: config.mode,
            keys,
            certificates,
            config: config.clone(),
        })
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Whether `endpoint` (see [`crate::config::OPEN_ENDPOINTS`]) is served without
    /// credentials.
    pub fn is_open(&self, endpoint: &str) -> bool {
        self.config.is_open(endpoint)
    }

    /// Whether keys live in `auth.keys_file` (so the admin service cannot add them).
    pub fn uses_keys_file(&self) -> bool {
        matches!(self.keys, Keys::File { .. })
    }

    /// The caller's scope from an `authorization` value (header or JSON member) and the
    /// connection's client certificate, by the configured mode.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<&PeerIdentity>,
    ) -> Result<Scope, AuthError> {
        match self.mode {
            AuthMode::None => Ok(Scope::default()),
            AuthMode::Keys => self.bearer(authorization).await,
            AuthMode::Mtls => self.certificate(peer),
        }
    }

    /// The scope of a `Bearer` credential.
    async fn bearer(&self, authorization: Option<&str>) -> Result<Scope, AuthError> {
        let value = authorization.map(str::trim).filter(|v| !v.is_empty());
        let Some(value) = value else {
            return Err(AuthError::Missing);
        };
        let key_text = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => return Err(AuthError::Malformed),
        };
        if !secret::is_well_formed(key_text) {
            return Err(AuthError::Malformed);
        }
        let hash = secret::hash(key_text);
        let id = secret::key_id(&hash);
        let key = self.find(&id).await?.ok_or(AuthError::Unknown)?;
        if !secret::hashes_match(&hash, &key.hash) {
            return Err(AuthError::Unknown);
        }
        if key.revoke_time.is_some() {
            return Err(AuthError::Revoked);
        }
        if !key.is_valid_at(SystemTime::now()) {
            return Err(AuthError::Expired);
        }
        Ok(Scope {
            tenant: key.tenant,
            role: key.role,
        })
    }

    /// The stored key with this id, from the cache while it is fresh.
    async fn find(&self, id: &str) -> Result<Option<ApiKey>, AuthError> {
        match &self.keys {
            Keys::File { keys, .. } => Ok(read(keys).get(id).cloned()),
            Keys::Store {
                store,
                cache,
                cache_for,
            } => {
                if let Some((key, at)) = lock(cache).get(id)
                    && at.elapsed() < *cache_for
                {
                    return Ok(Some(key.clone()));
                }
                let found = store
                    .get_key(id)
                    .await
                    .map_err(|e| AuthError::Unavailable(e.to_string()))?;
                let mut cache = lock(cache);
                match &found {
                    Some(key) if key.is_valid_at(SystemTime::now()) => {
                        if cache.len() >= CACHE_ENTRIES {
                            cache.clear();
                        }
                        cache.insert(id.to_string(), (key.clone(), Instant::now()));
                    }
                    _ => {
                        cache.remove(id);
                    }
                }
                Ok(found)
            }
        }
    }

    /// The scope a verified client certificate names.
    fn certificate(&self, peer: Option<&PeerIdentity>) -> Result<Scope, AuthError> {
        let peer = peer.ok_or(AuthError::NoCertificate)?;
        peer.uri_sans
            .iter()
            .map(String::as_str)
            .chain(peer.common_name.as_deref())
            .find_map(|name| self.certificates.get(name).cloned())
            .ok_or_else(|| {
                let mut names: Vec<String> =
                    peer.uri_sans.iter().map(|u| format!("URI {u}")).collect();
                if let Some(cn) = &peer.common_name {
                    names.push(format!("CN {cn}"));
                }
                AuthError::UnmappedCertificate(names.join(", "))
            })
    }

    /// Rereads `auth.keys_file`, keeping the keys already read when the new text is
    /// invalid; a no-op for keys in the store.
    pub fn reload(&self) -> Result<usize, String> {
        let Keys::File { file, keys } = &self.keys else {
            return Ok(0);
        };
        let loaded = index(file.load()?);
        let count = loaded.len();
        *keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(count)
    }

    /// Forgets cached lookups of `id` (after a revocation through this process).
    pub fn forget(&self, id: &str) {
        if let Keys::Store { cache, .. } = &self.keys {
            lock(cache).remove(id);
        }
    }
}

/// Reloads the keys file on every SIGHUP for as long as the process runs.
pub fn reload_on_hangup(auth: Arc<Authenticator>) {
    if !auth.uses_keys_file() {
        return;
    }
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: auth.keys_file is read only at start");
            return;
        };
        while hangups.recv().await.is_some() {
            match auth.reload() {
                Ok(keys) => tracing::info!(keys, "reread auth.keys_file"),
                Err(e) => tracing::error!(error = %e, "kept the previous keys"),
            }
        }
    });
}

/// The JSON member that carries credentials where no header can: a JSON-lines line's, and a
/// WebSocket `open` frame's.
pub const AUTHORIZATION_MEMBER: &str = "authorization";

/// Takes the `authorization` member out of a JSON object (or out of its member `within`),
/// returning the member's text and the object without it. `None` (leave the text as it is)
/// when there is no such member or the text is not a JSON object.
pub fn take_authorization(text: &[u8], within: Option<&str>) -> Option<(String, Vec<u8>)> {
    // Most lines carry none: do not parse them twice.
    let needle = AUTHORIZATION_MEMBER.as_bytes();
    if !text.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_slice(text).ok()?;
    let object = match within {
        Some(member) => value.get_mut(member)?.as_object_mut()?,
        None => value.as_object_mut()?,
    };
    let taken = object.remove(AUTHORIZATION_MEMBER)?;
    let taken = match taken {
        serde_json::Value::String(text) => text,
        // Not text: a credential of the wrong shape, refused as such.
        other => other.to_string(),
    };
    Some((taken, value.to_string().into_bytes()))
}

fn index(keys: Vec<ApiKey>) -> HashMap<String, ApiKey> {
    keys.into_iter().map(|key| (key.id.clone(), key)).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single map operation: a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<Arc<T>>) -> Arc<T> {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_member_is_taken_out() {
        let (key, rest) =
            take_authorization(br#"{"sessionId":"s","authorization":"Bearer k"}"#, None).unwrap();
        assert_eq!(key, "Bearer k");
        assert_eq!(rest, br#"{"sessionId":"s"}"#);
        let (key, rest) = take_authorization(
            br#"{"open":{"authorization":"Bearer k","sessionId":"s"}}"#,
            Some("open"),
        )
        .unwrap();
        assert_eq!(key, "Bearer k");
        assert_eq!(rest, br#"{"open":{"sessionId":"s"}}"#);
        assert!(take_authorization(br#"{"message":"authorization"}"#, None).is_none());
        assert!(take_authorization(b"not json authorization", None).is_none());
    }
}
