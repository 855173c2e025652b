//! `auth.keys_file`: API keys kept in a TOML file instead of the store, for `--store memory`
//! and for deployments that keep keys in a mounted secret.
//!
//! The file holds hashes only, never keys:
//!
//! ```toml
//! [[keys]]
//! id = "3f2a9c01b7de"
//! sha256 = "3f2a9c01b7de…"   # 64 hex digits
//! tenant = "acme"
//! role = "user"             # or "admin"
//! label = "billing service"
//! created = "2026-12-02T06:00:00Z"
//! expires = "2027-01-01T00:00:00Z"   # optional
//! revoked = "2026-12-10T09:30:00Z"   # optional
//! ```
//!
//! `contextd keys add|revoke` edit it when it is configured; a running server reads it again
//! on SIGHUP (keeping the keys it has when the new text is invalid).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::domain::key::{ApiKey, check_tenant_id};
use crate::domain::{Role, TenantId};

/// The file's shape.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default)]
    keys: Vec<Entry>,
}

/// One key in the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    sha256: String,
    tenant: String,
    #[serde(default = "user")]
    role: String,
    #[serde(default)]
    label: String,
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked: Option<String>,
}

fn user() -> String {
    Role::User.as_str().to_string()
}

/// A keys file and what it said when last read.
pub struct KeysFile {
    path: PathBuf,
}

impl KeysFile {
    /// The file at `path` (not read yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every key; a missing file has none.
    pub fn load(&self) -> Result<Vec<ApiKey>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read auth.keys_file {}: {e}", self.shown())),
        };
        let file: FileText = toml::from_str(&text)
            .map_err(|e| format!("auth.keys_file {} is invalid: {e}", self.shown()))?;
        file.keys
            .into_iter()
            .map(|entry| {
                let id = entry.id.clone();
                entry
                    .into_key()
                    .map_err(|e| format!("auth.keys_file {}: key {id}: {e}", self.shown()))
            })
            .collect()
    }

    /// Writes `keys` as the whole file (owner-only permissions; replaced atomically).
    pub fn save(&self, keys: &[ApiKey]) -> Result<(), String> {
        let file = FileText {
            keys: keys.iter().map(Entry::of).collect(),
        };
        let body = toml::to_string(&file).map_err(|e| format!("cannot encode the keys: {e}"))?;
        let text = format!(
            "# contextd API keys: SHA-256 hashes only, never the keys themselves.\n\
             # Edited by `contextd keys add|revoke`; a running server rereads it on SIGHUP.\n\n{body}"
        );
        let partial = self.path.with_extension("partial");
        write_private(&partial, text.as_bytes())
            .and_then(|()| std::fs::rename(&partial, &self.path))
            .map_err(|e| format!("cannot write auth.keys_file {}: {e}", self.shown()))
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

impl Entry {
    fn of(key: &ApiKey) -> Self {
        Self {
            id: key.id.clone(),
            sha256: hex::encode(key.hash),
            tenant: key.tenant.to_string(),
            role: key.role.as_str().to_string(),
            label: key.label.clone(),
            created: rfc3339(key.create_time),
            expires: key.expire_time.map(rfc3339),
            revoked: key.revoke_time.map(rfc3339),
        }
    }

    fn into_key(self) -> Result<ApiKey, String> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&self.sha256, &mut hash)
            .map_err(|_| "sha256 must be 64 hex digits".to_string())?;
        if super::secret::key_id(&hash) != self.id {
            return Err("id must be the first 12 hex digits of sha256".into());
        }
        check_tenant_id(&self.tenant)?;
        let role = match self.role.as_str() {
            "user" => Role::User,
            "admin" => Role::Admin,
            other => return Err(format!("role must be \"user\" or \"admin\", not {other:?}")),
        };
        Ok(ApiKey {
            id: self.id,
            hash,
            tenant: TenantId::new(self.tenant),
            role,
            label: self.label,
            create_time: parse_time("created", &self.created)?,
            expire_time: self
                .expires
                .map(|t| parse_time("expires", &t))
                .transpose()?,
            revoke_time: self
                .revoked
                .map(|t| parse_time("revoked", &t))
                .transpose()?,
        })
    }
}

/// RFC 3339 text of a time, in UTC.
pub fn rfc3339(time: SystemTime) -> String {
    prost_types::Timestamp::from(time).to_string()
}

fn parse_time(field: &str, text: &str) -> Result<SystemTime, String> {
    prost_types::Timestamp::from_str(text)
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
        .ok_or_else(|| format!("{field} must be an RFC 3339 time such as 2027-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_round_trip_through_the_file() {
        let dir = std::env::temp_dir().join(format!("contextd-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = KeysFile::new(&dir.join("keys.toml"));
        assert!(file.load().unwrap().is_empty());
        let new = super::super::secret::generate().unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let key = ApiKey {
            id: new.id.clone(),
            hash: new.hash,
            tenant: TenantId::new("acme"),
            role: Role::Admin,
            label: "ci".into(),
            create_time: now,
            expire_time: Some(now + Duration::from_secs(86_400)),
            revoke_time: None,
        };
        file.save(std::slice::from_ref(&key)).unwrap();
        assert_eq!(file.load().unwrap(), vec![key]);
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(!text.contains(&new.text), "the key itself is never written");
        std::fs::write(file.path(), "[[keys]]\nid = \"x\"\n").unwrap();
        assert!(file.load().unwrap_err().contains("invalid"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
