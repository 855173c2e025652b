//! `contextd keys` and `contextd tenants`: key and tenant administration from the terminal.
//!
//! With `--server ADDR` (and an admin key in `--key` or `CONTEXTD_API_KEY`) the commands go
//! to the running server's `AdminService`. Without it they work on the store directly (the
//! same `--store`, `--data-dir` and `--config` as `serve`), which no server may hold at the
//! time (SQLite's data directory is held by one process; for PostgreSQL both ways work). When
//! the configuration names `auth.keys_file`, key commands edit that file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::api::convert::{message_to_wire, session_to_wire};
use crate::api::v1;
use crate::auth::admin::{KeyAdmin, KeyGrant};
use crate::auth::keys_file::rfc3339;
use crate::client::{Client, ConnectOptions};
use crate::config::{Config, RoleName, parse_duration};
use crate::domain::Scope;
use crate::domain::key::count_keys;
use crate::engine::Engine;
use crate::engine::tenants::ExportRecord;
use crate::server::admin::{key_to_wire, usage_to_wire};
use crate::store::open::OpenStore;

/// Where the commands act: a running server, or the store.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// Manage a running server through its AdminService (HOST:PORT or http://HOST:PORT);
    /// omitted: work on the store itself, which no server may hold.
    #[arg(long, global = true, env = "CONTEXTD_SERVER", value_name = "ADDR")]
    server: Option<String>,
    /// An admin API key, for --server.
    #[arg(
        long,
        global = true,
        env = "CONTEXTD_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    key: Option<String>,
    /// TOML configuration file, as for `serve` (its store, data directory and auth.keys_file).
    #[arg(long, global = true, env = "CONTEXTD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The store, as for `serve`: `sqlite`, `memory` or a postgres:// URL.
    #[arg(long, global = true, env = "CONTEXTD_STORE", value_name = "STORE")]
    store: Option<String>,
    /// Directory of the SQLite store, as for `serve`.
    #[arg(long, global = true, env = "CONTEXTD_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// `contextd keys …`.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a key and print it (once: only its hash is kept).
    Add {
        /// The tenant whose sessions the key reaches (1-64 of A-Z a-z 0-9 . _ -).
        #[arg(long, value_name = "TENANT")]
        tenant: String,
        /// `user` (its tenant's sessions) or `admin` (also keys and tenants).
        #[arg(long, value_enum, default_value = "user")]
        role: RoleName,
        /// How long the key works (`30d`, `12h`); omitted: until revoked.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// A note, such as who holds the key.
        #[arg(long, value_name = "TEXT", default_value = "")]
        label: String,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long, value_name = "TENANT")]
        tenant: Option<String>,
    },
    /// Revoke a key by id (as `keys list` shows it).
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// `contextd tenants …`.
#[derive(clap::Subcommand, Debug)]
pub enum TenantsCommand {
    /// List tenants with their sessions, messages, tokens, bytes and keys.
    List,
    /// Write all of a tenant's sessions and messages to stdout as JSON lines.
    Export {
        /// The tenant.
        tenant: String,
    },
    /// Delete all of a tenant's sessions, messages and keys.
    Delete {
        /// The tenant.
        tenant: String,
    },
}

/// An administration command.
#[derive(Debug)]
pub enum Command {
    /// A key command.
    Keys(KeysCommand),
    /// A tenant command.
    Tenants(TenantsCommand),
}

/// Where the work is done.
enum Admin {
    Online(Box<Client>),
    Offline {
        keys: KeyAdmin,
        engine: Arc<Engine>,
        store: OpenStore,
    },
}

/// Runs `command` at `target`; the error is the message to print.
pub async fn run(target: Target, command: Command) -> Result<(), String> {
    let admin = Admin::open(target).await?;
    let result = admin.run(command).await;
    if let Admin::Offline { store, .. } = &admin {
        store.close().await;
    }
    result
}

impl Admin {
    async fn open(target: Target) -> Result<Self, String> {
        if let Some(server) = &target.server {
            let mut options = ConnectOptions::default();
            if let Some(key) = &target.key {
                options = options.bearer_token(key.clone());
            }
            let client = Client::connect_with(server, options)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Admin::Online(Box::new(client)));
        }
        let mut config = match &target.config {
            Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(store) = target.store {
            config.store = store;
        }
        if let Some(dir) = target.data_dir {
            config.data_dir = dir;
        }
        let store = crate::server::open(&config).await.map_err(|e| {
            format!("{e}\n(to manage a running server, pass --server ADDR with an admin --key)")
        })?;
        let engine = Arc::new(Engine::new(
            store.store.clone(),
            crate::model::ModelRegistry::new(),
            crate::tools::ToolRegistry::new(),
            config.engine.clone(),
            config.limits.clone(),
        ));
        Ok(Admin::Offline {
            keys: KeyAdmin::new(&config.auth, store.keys.clone()),
            engine,
            store,
        })
    }

    async fn run(&self, command: Command) -> Result<(), String> {
        match command {
            Command::Keys(KeysCommand::Add {
                tenant,
                role,
                expires,
                label,
            }) => {
                let ttl = expires
                    .map(|text| {
                        parse_duration(&text).map_err(|e| format!("invalid --expires: {e}"))
                    })
                    .transpose()?;
                let created = self
                    .create_key(KeyGrant {
                        tenant,
                        role: role.into(),
                        label,
                        ttl,
                    })
                    .await?;
                let key = created.key.unwrap_or_default();
                let expires = key
                    .expire_time
                    .map(|t| format!("expires {t}"))
                    .unwrap_or_else(|| "does not expire".into());
                eprintln!(
                    "created key {} for tenant {} ({}, {expires}); it is shown only now: keep it in a secret",
                    key.key_id,
                    key.tenant_id,
                    role_name(key.role)
                );
                println!("{}", created.secret);
                Ok(())
            }
            Command::Keys(KeysCommand::List { tenant }) => {
                let keys = self.list_keys(tenant.as_deref()).await?;
                print_keys(&keys);
                Ok(())
            }
            Command::Keys(KeysCommand::Revoke { id }) => {
                let key = self.revoke_key(&id).await?;
                println!("revoked key {} of tenant {}", key.key_id, key.tenant_id);
                Ok(())
            }
            Command::Tenants(TenantsCommand::List) => {
                print_tenants(&self.list_tenants().await?);
                Ok(())
            }
            Command::Tenants(TenantsCommand::Export { tenant }) => self.export(&tenant).await,
            Command::Tenants(TenantsCommand::Delete { tenant }) => {
                let deleted = self.delete_tenant(&tenant).await?;
                println!(
                    "deleted {} sessions, {} messages and {} keys of tenant {tenant}",
                    deleted.deleted_sessions, deleted.deleted_messages, deleted.deleted_keys
                );
                Ok(())
            }
        }
    }

    async fn create_key(&self, grant: KeyGrant) -> Result<v1::CreateKeyResponse, String> {
        match self {
            Admin::Online(client) => {
                let role = match grant.role {
                    crate::domain::Role::User => v1::KeyRole::User,
                    crate::domain::Role::Admin => v1::KeyRole::Admin,
                };
                client
                    .create_key(&grant.tenant, role, &grant.label, grant.ttl)
                    .await
                    .map_err(|e| e.to_string())
            }
            Admin::Offline { keys, .. } => {
                let (key, secret) = keys.create(grant).await.map_err(|e| e.to_string())?;
                Ok(v1::CreateKeyResponse {
                    key: Some(key_to_wire(&key)),
                    secret,
                })
            }
        }
    }

    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<v1::ApiKey>, String> {
        match self {
            Admin::Online(client) => client.list_keys(tenant).await.map_err(|e| e.to_string()),
            Admin::Offline { keys, .. } => Ok(keys
                .list(tenant)
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(key_to_wire)
                .collect()),
        }
    }

    async fn revoke_key(&self, id: &str) -> Result<v1::ApiKey, String> {
        match self {
            Admin::Online(client) => client.revoke_key(id).await.map_err(|e| e.to_string()),
            Admin::Offline { keys, .. } => keys
                .revoke(id)
                .await
                .map(|k| key_to_wire(&k))
                .map_err(|e| e.to_string()),
        }
    }

    async fn list_tenants(&self) -> Result<Vec<v1::TenantUsage>, String> {
        match self {
            Admin::Online(client) => client.list_tenants().await.map_err(|e| e.to_string()),
            Admin::Offline { keys, engine, .. } => {
                let usage = engine
                    .tenant_usage(&Scope::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let keys = keys.list(None).await.map_err(|e| e.to_string())?;
                Ok(count_keys(usage, &keys)
                    .into_iter()
                    .map(usage_to_wire)
                    .collect())
            }
        }
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<v1::DeleteTenantResponse, String> {
        match self {
            Admin::Online(client) => client
                .delete_tenant(tenant)
                .await
                .map_err(|e| e.to_string()),
            Admin::Offline { keys, engine, .. } => {
                let (sessions, messages) = engine
                    .delete_tenant(&Scope::default(), tenant)
                    .await
                    .map_err(|e| e.to_string())?;
                let deleted_keys = keys
                    .delete_tenant_keys(&crate::domain::TenantId::new(tenant))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(v1::DeleteTenantResponse {
                    deleted_sessions: sessions,
                    deleted_messages: messages,
                    deleted_keys,
                })
            }
        }
    }

    /// Writes the tenant's records to stdout, one proto3 JSON object per line.
    async fn export(&self, tenant: &str) -> Result<(), String> {
        let pool = DescriptorPool::decode(crate::api::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("cannot read the descriptors: {e}"))?;
        let descriptor = pool
            .get_message_by_name("contextd.v1.ExportTenantResponse")
            .ok_or("the descriptors lack ExportTenantResponse")?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut write = |record: v1::ExportTenantResponse| -> Result<(), String> {
            let mut dynamic = DynamicMessage::new(descriptor.clone());
            dynamic
                .transcode_from(&record)
                .map_err(|e| format!("cannot encode a record: {e}"))?;
            writeln!(out, "{}", crate::http::json::to_json(&dynamic))
                .map_err(|e| format!("cannot write the export: {e}"))
        };
        match self {
            Admin::Online(client) => {
                let mut records = client
                    .export_tenant(tenant)
                    .await
                    .map_err(|e| e.to_string())?;
                while let Some(record) = records.next().await {
                    write(record.map_err(|e| e.to_string())?)?;
                }
            }
            Admin::Offline { engine, .. } => {
                let records = engine
                    .export_tenant(&Scope::default(), tenant)
                    .map_err(|e| e.to_string())?;
                futures_util::pin_mut!(records);
                while let Some(record) = records.next().await {
                    write(export_to_wire(record.map_err(|e| e.to_string())?))?;
                }
            }
        }
        out.flush()
            .map_err(|e| format!("cannot write the export: {e}"))
    }
}

fn export_to_wire(record: ExportRecord) -> v1::ExportTenantResponse {
    match record {
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
    }
}

fn role_name(role: i32) -> &'static str {
    match v1::KeyRole::try_from(role) {
        Ok(v1::KeyRole::Admin) => "admin",
        _ => "user",
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
        .map(rfc3339)
        .unwrap_or_else(|| "-".into())
}

fn print_keys(keys: &[v1::ApiKey]) {
    println!(
        "ID            TENANT            ROLE   CREATED                 EXPIRES                 REVOKED                 LABEL"
    );
    for key in keys {
        println!(
            "{:<13} {:<17} {:<6} {:<23} {:<23} {:<23} {}",
            key.key_id,
            key.tenant_id,
            role_name(key.role),
            time(&key.create_time),
            time(&key.expire_time),
            time(&key.revoke_time),
            key.label
        );
    }
}

fn print_tenants(tenants: &[v1::TenantUsage]) {
    println!("TENANT            SESSIONS   MESSAGES     TOKENS        BYTES   KEYS");
    for t in tenants {
        println!(
            "{:<17} {:>8} {:>10} {:>10} {:>12} {:>6}",
            t.tenant_id, t.sessions, t.messages, t.tokens, t.bytes, t.keys
        );
    }
}
