//! The edge: gRPC services over the engine, on one port.
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so the binary and the
//! tests start it the same way. Services: `contextd.v1.SessionService`, `InteractService`,
//! `ToolService`, `ModelService`, the MCP gRPC binding's `model_context_protocol.Mcp`,
//! `grpc.health.v1.Health`, and server reflection (v1 and v1alpha). Layers:
//! request logging ([`logging`]), per-tenant request rates ([`quota`]), RPC metrics
//! ([`rpc_metrics`]) and client deadlines ([`deadline`]).

mod accept;
mod activity;
pub mod admin;
mod call_end;
pub mod connections;
pub mod deadline;
pub(crate) mod drain;
pub mod interact;
pub mod logging;
pub mod model;
pub mod outbox;
pub mod peer;
pub mod quota;
mod refusal;
pub mod rpc_metrics;
pub mod scope;
pub mod session;
pub mod status;
pub mod tls;
pub mod tool;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::api::mcp::mcp_server::McpServer;
use crate::api::v1::{
    admin_service_server::AdminServiceServer, interact_service_server::InteractServiceServer,
    model_service_server::ModelServiceServer, session_service_server::SessionServiceServer,
    tool_service_server::ToolServiceServer,
};
use crate::config::{BackendKind, Config};
use crate::domain::tokens::TokenCounter;
use crate::engine::{Engine, Lifecycle};
use crate::http::JsonDoors;
use crate::model::anthropic::AnthropicBackend;
use crate::model::echo::EchoModel;
use crate::model::openai::OpenAiBackend;
use crate::model::{ModelBackend, ModelRegistry};
use crate::store::SessionStore;
use crate::store::open::{OpenError, OpenStore, open_store};
use crate::tools::ToolRegistry;
use crate::tools::builtin::BuiltinTools;

/// How long connections may take to close after streams were ended.
const CONNECTION_CLOSE_BOUND: Duration = Duration::from_secs(2);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A configured model backend could not be set up (its key is missing, …).
    #[error("{0}")]
    Backend(String),
    /// Reflection could not be set up from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    /// The listener failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error("{0}")]
    Store(#[from] OpenError),
    /// The HTTP routes could not be read from the descriptors.
    #[error("cannot set up the HTTP/JSON routes: {0}")]
    Http(String),
    /// A TLS file could not be used.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
}

/// The names of the served contextd services, for health.
pub const SERVICE_NAMES: [&str; 5] = [
    "contextd.v1.AdminService",
    "contextd.v1.SessionService",
    "contextd.v1.InteractService",
    "contextd.v1.ToolService",
    "contextd.v1.ModelService",
];

/// Opens the store the configuration names (creating the data directory, applying
/// migrations).
pub async fn open(config: &Config) -> Result<OpenStore, ServeError> {
    let kind = config.store_kind()?;
    Ok(open_store(&kind, &config.data_dir, &config.storage).await?)
}

/// Builds the engine the configuration describes over `store`: the echo model, every
/// `[[backends]]` entry (reading their keys) and the built-in tools.
pub fn build_engine(config: &Config, store: Arc<dyn SessionStore>) -> Result<Engine, ServeError> {
    // Every store operation timed, whichever store it is.
    let store: Arc<dyn SessionStore> = Arc::new(crate::store::metered::MeteredStore::new(
        store,
        match config.store_kind()? {
            crate::config::StoreKind::Memory => "memory",
            crate::config::StoreKind::Sqlite => "sqlite",
            crate::config::StoreKind::Postgres(_) => "postgres",
        },
    ));
    let mut models = ModelRegistry::new();
    models.register(Arc::new(EchoModel::new(
        config.engine.default_max_context_tokens,
    )));
    for backend in &config.backends {
        let built: Arc<dyn ModelBackend> = match backend.kind {
            BackendKind::Openai => {
                Arc::new(OpenAiBackend::new(backend).map_err(ServeError::Backend)?)
            }
            BackendKind::Anthropic => {
                Arc::new(AnthropicBackend::new(backend).map_err(ServeError::Backend)?)
            }
        };
        tracing::info!(
            backend = %backend.name,
            kind = backend.kind.as_str(),
            endpoint = %backend.endpoint(),
            context_window = backend.context_window,
            "model backend configured"
        );
        models.register(built);
    }
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(BuiltinTools::new(
        config.limits.max_context_depth,
        config.limits.max_context_bytes,
    )));
    // MCP servers' tools: one supervised client per `[[mcp_servers]]` entry.
    if !config.mcp_servers.is_empty() {
        tools.register(Arc::new(crate::tools::mcp::McpTools::start(
            &config.mcp_servers,
        )));
    }
    Ok(Engine::new(
        store,
        models,
        tools,
        config.engine.clone(),
        config.limits.clone(),
    )
    .with_session_ttl(config.session_ttl()?))
}

/// Serves contextd on `listener` until `shutdown` resolves, then shuts down gracefully (see
/// [`Lifecycle`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = open(&config).await?;
    serve_store(listener, config, store, shutdown).await
}

/// [`serve`] over an already opened store (closed when serving ends).
pub async fn serve_store(
    listener: tokio::net::TcpListener,
    config: Config,
    store: OpenStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // TLS files first: nothing has started yet when one cannot be used.
    let tls_state = tls::TlsState::load(&config.tls)?;
    if config.metrics.enabled {
        crate::telemetry::metrics::install();
    }
    let metrics_listener = match &config.metrics.listen {
        Some(addr) => Some(crate::http::scrape::bind(addr).await?),
        None => None,
    };
    // Loading the tokenizer tables takes a moment: do it beside startup, not in a turn.
    tokio::task::spawn_blocking(TokenCounter::warm_up);

    let engine = Arc::new(build_engine(&config, store.store.clone())?);
    engine
        .tools_ready()
        .await
        .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?;
    let sweeper = tokio::spawn(sweep_expired(
        engine.clone(),
        Duration::from_millis(config.storage.sweep_interval_ms),
    ));
    let lifecycle = Lifecycle::with_turn_limits(crate::engine::lifecycle::TurnLimits {
        total: config.limits.turns_in_flight,
        per_tenant: config.limits.tenant_turns_in_flight,
    });
    let max_request = config.limits.max_request_bytes;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    for name in SERVICE_NAMES {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(crate::api::MCP_FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(crate::api::MCP_FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let auth = Arc::new(
        crate::auth::Authenticator::new(&config.auth, store.keys.clone())
            .map_err(crate::config::ConfigError::Invalid)?,
    );
    crate::auth::reload_on_hangup(auth.clone());
    let exposed = listener.local_addr().is_ok_and(|a| !a.ip().is_loopback());
    if config.auth.mode == crate::config::AuthMode::None && exposed {
        tracing::warn!(
            "serving WITHOUT authentication on a non-loopback address (--insecure-listen): \
             whoever reaches the port reads, changes and deletes every conversation"
        );
    }
    tracing::info!(mode = config.auth.mode.as_str(), "authentication");
    let routes = Routes::new(
        SessionServiceServer::new(session::SessionApi::new(engine.clone()))
            .max_decoding_message_size(max_request)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip),
    )
    .add_service(
        InteractServiceServer::new(interact::InteractApi::new(
            engine.clone(),
            lifecycle.clone(),
        ))
        .max_decoding_message_size(max_request)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip),
    )
    .add_service(
        ToolServiceServer::new(tool::ToolApi::new(engine.clone()))
            .max_decoding_message_size(max_request)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip),
    )
    .add_service(
        ModelServiceServer::new(model::ModelApi::new(engine.clone()))
            .max_decoding_message_size(max_request)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip),
    )
    // Google's MCP gRPC binding, over the same tools and sessions as `/mcp`.
    .add_service(
        McpServer::new(crate::mcp::grpc::McpGrpc::new(
            crate::mcp::catalog::McpCatalog::new(
                engine.clone(),
                lifecycle.clone(),
                config.mcp.clone(),
            ),
        ))
        .max_decoding_message_size(max_request)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip),
    )
    .add_service(
        AdminServiceServer::new(admin::AdminApi::new(
            engine.clone(),
            crate::auth::admin::KeyAdmin::new(&config.auth, store.keys.clone()),
            auth.clone(),
        ))
        .max_decoding_message_size(max_request)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip),
    )
    .add_service(health_service)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha);

    let quota = quota::QuotaLayer::new(&config.limits);
    let grpc = routes
        .into_axum_router()
        .layer(deadline::DeadlineLayer)
        .layer(quota.clone())
        .layer(rpc_metrics::RpcMetricsLayer::new(&config.metrics))
        .layer(logging::RequestLogLayer);
    let doors = Arc::new(
        JsonDoors::new(&config, grpc, lifecycle.clone(), engine.clone(), auth)
            .map_err(ServeError::Http)?
            .with_quota(quota),
    );
    let app = doors.clone().router();

    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let phases = lifecycle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(
            running_turns = phases.running_turns(),
            grace_ms = grace.as_millis() as u64,
            "shutting down: no new connections or turns; waiting for running turns"
        );
        for name in SERVICE_NAMES {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        phases.drain();
        if tokio::time::timeout(grace, phases.idle()).await.is_err() {
            tracing::warn!(
                running_turns = phases.running_turns(),
                "shutdown grace period over: cancelling the remaining turns"
            );
        }
        phases.close();
    });

    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "contextd serving");
    }
    let reloads = tls_state.clone().map(tls::TlsState::reload_on_sighup);
    let listening = accept::Listening {
        app,
        doors,
        lifecycle: lifecycle.clone(),
        tls: tls_state,
        limits: connections::ConnectionLimits::from_config(&config.limits),
    };
    let metrics_task = metrics_listener
        .map(|listener| tokio::spawn(crate::http::scrape::serve(listener, lifecycle.clone())));
    let closing = lifecycle.clone();
    tokio::select! {
        () = accept::serve(listener, listening, config.limits.max_connections) => {}
        () = async move {
            closing.closed().await;
            tokio::time::sleep(CONNECTION_CLOSE_BOUND).await;
        } => {
            tracing::warn!("connections did not close in time; stopping anyway");
        }
    }
    sweeper.abort();
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    drop(engine);
    store.close().await;
    tracing::info!("contextd stopped");
    Ok(())
}

/// Deletes expired sessions every `interval`, in batches, for as long as the server runs.
async fn sweep_expired(engine: Arc<Engine>, interval: Duration) {
    const BATCH: usize = 500;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        loop {
            match engine.sweep_expired(BATCH).await {
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(sessions = n, "deleted expired sessions");
                    if n < BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expired-session sweep failed; retrying later");
                    break;
                }
            }
        }
        // Receipts past the idempotency window: forgotten, in batches as well.
        loop {
            match engine.sweep_receipts(BATCH).await {
                Ok(n) if n < BATCH as u64 => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "turn-receipt sweep failed; retrying later");
                    break;
                }
            }
        }
    }
}

/// Binds the configured address, explaining the usual failures.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (address already in use: is another contextd running? choose another with --listen)"
            }
            std::io::ErrorKind::PermissionDenied => " (permission denied: use a port above 1023)",
            std::io::ErrorKind::AddrNotAvailable => {
                " (this machine has no such address: use 127.0.0.1 or 0.0.0.0)"
            }
            _ => "",
        };
        format!("cannot listen on {addr}: {e}{hint}")
    })
}
