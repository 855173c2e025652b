//! Who is asking: the caller's scope, passed first to every engine entry point.
//!
//! Today every request runs as the tenant `default`; the scope exists so that authentication
//! can fill it in at the edge later without touching the engine's callers again. Tenancy is
//! in the key, not in a filter: stores and turn locks key everything by (tenant, session id),
//! so a session of another tenant simply does not exist for the caller.

use std::fmt;

/// The name of the tenant every request belongs to until requests carry an authenticated one.
pub const DEFAULT_TENANT: &str = "default";

/// A tenant's identifier: the first half of every store and lock key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// The tenant named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// Its name, as stores write it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::new(DEFAULT_TENANT)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a caller may do beyond its own tenant's sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// Works on its own tenant's sessions only.
    #[default]
    User,
    /// May also manage keys and tenants (list them with their usage, export, delete).
    Admin,
}

impl Role {
    /// The role's name, as keys and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// The caller of an engine operation: whose sessions it may see and change.
///
/// With authentication off every caller is the `default` tenant as an admin (whoever reaches
/// a loopback port owns the service); with keys or mTLS the credential names both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The tenant whose sessions the operation works on.
    pub tenant: TenantId,
    /// What the caller may do beyond them.
    pub role: Role,
}

impl Default for Scope {
    fn default() -> Self {
        Self {
            tenant: TenantId::default(),
            role: Role::Admin,
        }
    }
}

impl Scope {
    /// The scope of tenant `tenant` as a user.
    pub fn tenant(tenant: impl Into<String>) -> Self {
        Self {
            tenant: TenantId::new(tenant),
            role: Role::User,
        }
    }

    /// Whether the caller may manage keys and tenants.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scope_is_the_default_tenant() {
        assert_eq!(Scope::default().tenant.as_str(), "default");
        assert_eq!(Scope::tenant("acme").tenant.to_string(), "acme");
    }
}
