//! API keys and what a tenant stores: the records behind authentication and tenant admin.
//!
//! A key's secret is never stored: only its SHA-256, from which the key's public id is
//! derived too (so a presented key is found by its hash and compared in full).

use std::time::SystemTime;

use super::scope::{Role, TenantId};

/// The longest tenant id.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// Why a tenant id is not one.
pub fn check_tenant_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_TENANT_ID_LEN {
        return Err(format!(
            "a tenant id has 1 to {MAX_TENANT_ID_LEN} characters; '{}' has {}",
            id.escape_default(),
            id.chars().count()
        ));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(bad) => Err(format!(
            "a tenant id has only letters, digits, '.', '_' and '-'; '{}' has '{}'",
            id.escape_default(),
            bad.escape_default()
        )),
        None => Ok(()),
    }
}

/// A stored API key (everything but its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Its public id (the first 12 hex digits of its hash): what `keys list` shows and
    /// `keys revoke` takes.
    pub id: String,
    /// SHA-256 of the whole key text.
    pub hash: [u8; 32],
    /// The tenant whose sessions it reaches.
    pub tenant: TenantId,
    /// What else it may do.
    pub role: Role,
    /// A note of the operator's, such as who holds it.
    pub label: String,
    /// When it was made.
    pub create_time: SystemTime,
    /// When it stops working, if ever.
    pub expire_time: Option<SystemTime>,
    /// When it was revoked, if it was.
    pub revoke_time: Option<SystemTime>,
}

impl ApiKey {
    /// Whether the key lets a caller in at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.revoke_time.is_none() && self.expire_time.is_none_or(|expires| now < expires)
    }
}

/// What one tenant stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant: TenantId,
    /// Its sessions.
    pub sessions: u64,
    /// Messages in their histories.
    pub messages: u64,
    /// Tokens of those messages, as counted when they were stored.
    pub tokens: u64,
    /// Bytes the store holds for it: session documents and message texts.
    pub bytes: u64,
    /// Its API keys, revoked ones included.
    pub keys: u64,
}

/// `usage` with each of `keys` counted for its tenant (a tenant with keys but no sessions is
/// added), ordered by tenant id.
pub fn count_keys(mut usage: Vec<TenantUsage>, keys: &[ApiKey]) -> Vec<TenantUsage> {
    for key in keys {
        match usage.iter_mut().find(|u| u.tenant == key.tenant) {
            Some(entry) => entry.keys += 1,
            None => usage.push(TenantUsage {
                tenant: key.tenant.clone(),
                keys: 1,
                ..TenantUsage::default()
            }),
        }
    }
    usage.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tenant_ids() {
        for good in ["default", "acme", "a", "team-1.prod_eu", &"x".repeat(64)] {
            assert!(check_tenant_id(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(check_tenant_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validity() {
        let now = SystemTime::now();
        let mut key = ApiKey {
            id: "0123456789ab".into(),
            hash: [0; 32],
            tenant: TenantId::new("t"),
            role: Role::User,
            label: String::new(),
            create_time: now,
            expire_time: None,
            revoke_time: None,
        };
        assert!(key.is_valid_at(now));
        key.expire_time = Some(now + Duration::from_secs(1));
        assert!(key.is_valid_at(now));
        assert!(!key.is_valid_at(now + Duration::from_secs(1)));
        key.expire_time = None;
        key.revoke_time = Some(now);
        assert!(!key.is_valid_at(now));
    }
}
