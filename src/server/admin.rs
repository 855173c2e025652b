//! `contextd.v1.AdminService`: API keys and tenants, for admin keys (a user key may list its
//! own tenant's usage). Keys are made, listed and revoked by [`KeyAdmin`], the same code
//! `contextd keys` runs offline; tenants are the engine's.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::scope::caller_scope;
use crate::api::convert::{message_to_wire, session_to_wire};
use crate::api::v1::{self, admin_service_server::AdminService};
use crate::auth::Authenticator;
use crate::auth::admin::{KeyAdmin, KeyGrant};
use crate::domain::key::{ApiKey, TenantUsage, count_keys};
use crate::domain::{Role, TenantId};
use crate::engine::Engine;
use crate::engine::tenants::{ExportRecord, require_admin, tenant_named};

/// Implements `AdminService`.
pub struct AdminApi {
    engine: Arc<Engine>,
    keys: KeyAdmin,
    auth: Arc<Authenticator>,
}

impl AdminApi {
    /// The service over `engine`'s tenants and `keys`, forgetting revoked keys in `auth`.
    pub fn new(engine: Arc<Engine>, keys: KeyAdmin, auth: Arc<Authenticator>) -> Self {
        Self { engine, keys, auth }
    }

    /// Refuses key changes when keys live in a file the server only reads.
    fn keys_writable(&self) -> Result<(), Status> {
        if self.keys.uses_keys_file() {
            return Err(Status::failed_precondition(
                "keys are kept in auth.keys_file: change them with `contextd keys add|revoke` \
                 on the machine that holds the file, then send the server SIGHUP",
            ));
        }
        Ok(())
    }
}

/// A tenant's usage on the wire.
pub fn usage_to_wire(u: TenantUsage) -> v1::TenantUsage {
    v1::TenantUsage {
        tenant_id: u.tenant.to_string(),
        sessions: u.sessions,
        messages: u.messages,
        tokens: u.tokens,
        bytes: u.bytes,
        keys: u.keys,
    }
}

/// An API key on the wire (never its hash).
pub fn key_to_wire(key: &ApiKey) -> v1::ApiKey {
    v1::ApiKey {
        key_id: key.id.clone(),
        tenant_id: key.tenant.to_string(),
        role: match key.role {
            Role::User => v1::KeyRole::User,
            Role::Admin => v1::KeyRole::Admin,
        } as i32,
        label: key.label.clone(),
        create_time: Some(key.create_time.into()),
        expire_time: key.expire_time.map(Into::into),
        revoke_time: key.revoke_time.map(Into::into),
    }
}

fn role_from_wire(role: i32) -> Result<Role, Status> {
    match v1::KeyRole::try_from(role) {
        Ok(v1::KeyRole::Unspecified | v1::KeyRole::User) => Ok(Role::User),
        Ok(v1::KeyRole::Admin) => Ok(Role::Admin),
        Err(_) => Err(Status::invalid_argument(format!(
            "role {role} is not a KeyRole; use KEY_ROLE_USER or KEY_ROLE_ADMIN"
        ))),
    }
}

fn ttl_from_wire(ttl: Option<prost_types::Duration>) -> Result<Option<Duration>, Status> {
    ttl.map(|d| {
        Duration::try_from(d).map_err(|_| {
            Status::invalid_argument("ttl must be a positive duration, such as \"2592000s\"")
        })
    })
    .transpose()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_key(
        &self,
        request: Request<v1::CreateKeyRequest>,
    ) -> Result<Response<v1::CreateKeyResponse>, Status> {
        let scope = caller_scope(&request)?;
        require_admin(&scope, "creating a key")?;
        self.keys_writable()?;
        let r = request.into_inner();
        if r.tenant_id.is_empty() {
            return Err(Status::invalid_argument(
                "tenant_id is required: the tenant whose sessions the key reaches",
            ));
        }
        let (key, secret) = self
            .keys
            .create(KeyGrant {
                tenant: r.tenant_id,
                role: role_from_wire(r.role)?,
                label: r.label,
                ttl: ttl_from_wire(r.ttl)?,
            })
            .await?;
        Ok(Response::new(v1::CreateKeyResponse {
            key: Some(key_to_wire(&key)),
            secret,
        }))
    }

    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        let scope = caller_scope(&request)?;
        require_admin(&scope, "listing keys")?;
        let r = request.into_inner();
        let tenant = (!r.tenant_id.is_empty()).then_some(r.tenant_id.as_str());
        let keys = self.keys.list(tenant).await?;
        Ok(Response::new(v1::ListKeysResponse {
            keys: keys.iter().map(key_to_wire).collect(),
        }))
    }

    async fn revoke_key(
        &self,
        request: Request<v1::RevokeKeyRequest>,
    ) -> Result<Response<v1::RevokeKeyResponse>, Status> {
        let scope = caller_scope(&request)?;
        require_admin(&scope, "revoking a key")?;
        self.keys_writable()?;
        let r = request.into_inner();
        let key = self.keys.revoke(&r.key_id).await?;
        self.auth.forget(&key.id);
        Ok(Response::new(v1::RevokeKeyResponse {
            key: Some(key_to_wire(&key)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        let scope = caller_scope(&request)?;
        let usage = self.engine.tenant_usage(&scope).await?;
        // Keys count too, and tenants with keys but no sessions are tenants.
        let keys = match scope.is_admin() {
            true => self.keys.list(None).await?,
            false => self.keys.list(Some(scope.tenant.as_str())).await?,
        };
        Ok(Response::new(v1::ListTenantsResponse {
            tenants: count_keys(usage, &keys)
                .into_iter()
                .map(usage_to_wire)
                .collect(),
        }))
    }

    type ExportTenantStream = BoxStream<v1::ExportTenantResponse>;

    async fn export_tenant(
        &self,
        request: Request<v1::ExportTenantRequest>,
    ) -> Result<Response<Self::ExportTenantStream>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        let records = self.engine.export_tenant(&scope, &r.tenant_id)?;
        let stream = records.map(|record| {
            Ok(match record.map_err(Status::from)? {
                ExportRecord::Session(session) => v1::ExportTenantResponse {
                    session_id: session.id.clone(),
                    record: Some(v1::export_tenant_response::Record::Session(
                        session_to_wire(&session),
                    )),
                },
                ExportRecord::Message(session_id, message) => v1::ExportTenantResponse {
                    session_id,
                    record: Some(v1::export_tenant_response::Record::Message(
                        message_to_wire(&message),
                    )),
                },
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn delete_tenant(
        &self,
        request: Request<v1::DeleteTenantRequest>,
    ) -> Result<Response<v1::DeleteTenantResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        let (sessions, messages) = self.engine.delete_tenant(&scope, &r.tenant_id).await?;
        let tenant: TenantId = tenant_named(&r.tenant_id)?;
        let deleted_keys = if self.keys.uses_keys_file() {
            tracing::warn!(%tenant, "the tenant's keys stay in auth.keys_file: remove them there");
            0
        } else {
            let keys = self.keys.list(Some(tenant.as_str())).await?;
            let deleted = self.keys.delete_tenant_keys(&tenant).await?;
            for key in &keys {
                self.auth.forget(&key.id);
            }
            deleted
        };
        Ok(Response::new(v1::DeleteTenantResponse {
            deleted_sessions: sessions,
            deleted_messages: messages,
            deleted_keys,
        }))
    }
}
