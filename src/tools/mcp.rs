//! Tools from MCP servers: contextd as an MCP client (the official SDK, `rmcp`), one client
//! per `[[mcp_servers]]` entry, behind the same [`ToolProvider`] port as the built-ins.
//!
//! Each server has a supervisor task that owns its connection: it starts the server (a child
//! process over stdio, or a Streamable HTTP endpoint), lists its tools (every page), refreshes
//! the list on `notifications/tools/list_changed`, and when the connection ends (a crash, a
//! closed stream) marks the server down and starts it again with a doubling backoff. What
//! turns and `CallTool` read is a snapshot behind a lock that is never held across an
//! `.await`, so a look-up never waits on a server. While a server is down its last known tools
//! stay listed and answer `is_error` with the reason. A call that outlives `call_timeout_ms`,
//! or whose turn is cancelled, is dropped; rmcp then sends `notifications/cancelled`.
//!
//! With `scope = "shared"` (the default) one connection serves every tenant. With
//! `scope = "tenant"` each tenant gets its own connection (its own process, for stdio),
//! started on its first call and supervised like the shared one, at most `max_processes` of
//! them, and stopped again once no call has used it for `idle_timeout_ms` (which frees its
//! place under the bound); the tools every tenant sees are listed by a discovery connection
//! started with contextd. A server with `tenants` set does not exist for any other tenant.
//!
//! Tool names are `<server>__<tool>`, with characters outside `[A-Za-z0-9_-]` replaced by `_`
//! and names over 64 characters cut and given a 6-hex-digit hash of the full name.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{NotificationContext, Peer, RoleClient, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ServerTool, ToolOutput, ToolProvider, ToolScope};
use crate::config::{McpScope, McpServerConfig, McpTransport};
use crate::domain::TenantId;
use crate::domain::session::{Context, MAX_TOOL_NAME_LEN, ToolSpec};

/// First restart delay; doubled after every failed start, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The protocol offered: the newest with an `initialize` handshake, which the servers in
/// the wild speak; rmcp accepts what the server answers among the versions it knows.
const PROTOCOL: ProtocolVersion = ProtocolVersion::LATEST_WITH_INITIALIZE;

/// One connection to an MCP server (one process, for stdio): its settings and the snapshot
/// its supervisor keeps.
struct McpServer {
    config: McpServerConfig,
    state: RwLock<ServerState>,
    /// Set once the first start finished (up or not), for [`ToolProvider::ready`] and for a
    /// tenant's first call.
    started: watch::Sender<bool>,
    /// Cancelled to stop the server for good (a tenant's idle connection): its supervisor
    /// ends and drops the connection, which ends the process.
    stop: CancellationToken,
    /// Calls on it now, and when the last one ended: what the idle reaper reads. Changed
    /// only under the owning entry's `per_tenant` lock, so a call handed this connection is
    /// never reaped before it counts here.
    usage: Mutex<Usage>,
}

/// How a connection is used: by how many calls now, and since when by none.
struct Usage {
    calls: usize,
    idle_since: Instant,
}

impl McpServer {
    /// A connection to `config`'s server, started and kept up by its own supervisor task.
    fn start(config: &McpServerConfig) -> Arc<Self> {
        let (started, _) = watch::channel(false);
        let server = Arc::new(McpServer {
            config: config.clone(),
            state: RwLock::new(ServerState::default()),
            started,
            stop: CancellationToken::new(),
            usage: Mutex::new(Usage {
                calls: 0,
                idle_since: Instant::now(),
            }),
        });
        tokio::spawn(supervise(server.clone()));
        server
    }

    /// Counts one more call on it until the returned guard is dropped.
    fn use_for_call(self: &Arc<Self>) -> InUse {
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).calls += 1;
        InUse(self.clone())
    }

    /// Whether no call has used it for `idle` or longer.
    fn idle_for(&self, idle: Duration) -> bool {
        let usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.calls == 0 && usage.idle_since.elapsed() >= idle
    }

    /// The tools it last listed.
    fn tools(&self) -> Vec<ServerTool> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.tools.iter().map(|(t, _)| t.clone()).collect()
    }

    /// The server's own name of the tool contextd calls `name`, when it listed one.
    fn original_name(&self, name: &str) -> Option<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .tools
            .iter()
            .find(|(t, _)| t.spec.name == name)
            .map(|(_, original)| original.clone())
    }

    /// Waits, at most `startup_timeout_ms`, for the first start to finish (up or not).
    async fn first_start(&self) {
        let mut started = self.started.subscribe();
        let bound = Duration::from_millis(self.config.startup_timeout_ms);
        let _ = tokio::time::timeout(bound, started.wait_for(|s| *s)).await;
    }
}

/// One call's use of a connection (see [`McpServer::use_for_call`]).
struct InUse(Arc<McpServer>);

impl std::ops::Deref for InUse {
    type Target = McpServer;

    fn deref(&self) -> &McpServer {
        &self.0
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut usage = self.0.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.calls -= 1;
        if usage.calls == 0 {
            usage.idle_since = Instant::now();
        }
    }
}

/// Each tenant's connection of a `scope = "tenant"` server.
type TenantConnections = Mutex<HashMap<TenantId, Arc<McpServer>>>;

/// What the supervisor last learnt. One owner writes it (the supervisor); readers copy out.
#[derive(Default)]
struct ServerState {
    /// Listed tools, by contextd name, with the server's own name for each.
    tools: Vec<(ServerTool, String)>,
    /// The connection, while the server is up.
    peer: Option<Peer<RoleClient>>,
    /// Why the server is down, while it is.
    down: Option<String>,
    /// Starts tried so far, the first included.
    attempts: u64,
}

/// One `[[mcp_servers]]` entry and its connections.
struct McpEntry {
    config: McpServerConfig,
    /// The connection whose tool list every tenant sees, started with contextd. With
    /// `scope = "shared"` every call goes to it too; with `scope = "tenant"` it only lists
    /// (a discovery connection) and calls go to the tenant's own.
    listing: Arc<McpServer>,
    /// With `scope = "tenant"`: each tenant's connection, started on its first call, at most
    /// `max_processes`, removed by the idle reaper. A plain mutex: a look-up, an insert or a
    /// removal, never held across an `.await`.
    per_tenant: Arc<TenantConnections>,
}

impl McpEntry {
    /// The connection `tenant`'s call goes to, counted as in use until the guard is
    /// dropped; started now when it is the tenant's first. `Err` with the message for the
    /// caller when the bound of processes is reached.
    fn connection_for(&self, tenant: &TenantId) -> Result<InUse, String> {
        if self.config.scope == McpScope::Shared {
            return Ok(self.listing.use_for_call());
        }
        let mut per_tenant = self.per_tenant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = per_tenant.get(tenant) {
            return Ok(server.use_for_call());
        }
        let max = self.config.max_processes;
        if per_tenant.len() >= max as usize {
            tracing::warn!(mcp_server = %self.config.name, tenant = %tenant, max_processes = max, "MCP server refused a tenant: max_processes reached");
            return Err(format!(
                "MCP server '{}' runs one process per tenant and has reached its bound of {max} (max_processes); raise max_processes in its [[mcp_servers]] entry to serve more tenants",
                self.config.name
            ));
        }
        tracing::info!(mcp_server = %self.config.name, tenant = %tenant, "starting the tenant's MCP server");
        let server = McpServer::start(&self.config);
        per_tenant.insert(tenant.clone(), server.clone());
        Ok(server.use_for_call())
    }
}

/// Stops the tenant connections of one `scope = "tenant"` server that no call has used for
/// `idle_timeout_ms`, checking a few times per timeout; ends with the connections' owner.
async fn reap_idle(server: String, connections: Weak<TenantConnections>, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
    loop {
        tokio::time::sleep(every).await;
        let Some(connections) = connections.upgrade() else {
            return;
        };
        let mut connections = connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|tenant, connection| {
            if !connection.idle_for(idle) {
                return true;
            }
            tracing::info!(mcp_server = %server, tenant = %tenant, idle_ms = idle.as_millis() as u64, "stopping the tenant's idle MCP server");
            connection.stop.cancel();
            false
        });
    }
}

/// The tools of every configured MCP server.
pub struct McpTools {
    entries: Vec<McpEntry>,
}

impl McpTools {
    /// Starts a supervisor per server (needs a Tokio runtime): the shared connection, or the
    /// discovery connection of a `scope = "tenant"` server. Tools appear as each server
    /// answers; [`ToolProvider::ready`] waits for every first start.
    pub fn start(configs: &[McpServerConfig]) -> Self {
        let entries = configs
            .iter()
            .map(|config| {
                let entry = McpEntry {
                    config: config.clone(),
                    listing: McpServer::start(config),
                    per_tenant: Arc::default(),
                };
                if config.scope == McpScope::Tenant && config.idle_timeout_ms > 0 {
                    tokio::spawn(reap_idle(
                        config.name.clone(),
                        Arc::downgrade(&entry.per_tenant),
                        Duration::from_millis(config.idle_timeout_ms),
                    ));
                }
                entry
            })
            .collect();
        Self { entries }
    }
}

#[async_trait]
impl ToolProvider for McpTools {
    /// The listed tools of the servers `tenant` may use (`tenants`), whatever their scope.
    fn tools(&self, tenant: &TenantId) -> Vec<ServerTool> {
        first_of_each_name(
            self.entries
                .iter()
                .filter(|e| e.config.serves(tenant))
                .flat_map(|e| e.listing.tools()),
        )
    }

    fn every_tool(&self) -> Vec<ServerTool> {
        first_of_each_name(self.entries.iter().flat_map(|e| e.listing.tools()))
    }

    /// Waits for every listing connection's first start; with `scope = "tenant"` no tenant
    /// process is started here (each starts on its tenant's first call).
    async fn ready(&self) -> Result<(), String> {
        for entry in &self.entries {
            let mut started = entry.listing.started.subscribe();
            let _ = started.wait_for(|s| *s).await;
        }
        // Names are unique within a server (see `name_tools`); across servers they must be too.
        let mut seen: HashMap<String, &str> = HashMap::new();
        for entry in &self.entries {
            for tool in entry.listing.tools() {
                if let Some(other) = seen.insert(tool.spec.name.clone(), &entry.config.name) {
                    return Err(format!(
                        "MCP servers {other:?} and {:?} both offer a tool named {:?}; rename one of the servers",
                        entry.config.name, tool.spec.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Finds the server that listed `name` among those the tenant may use, picks the
    /// tenant's connection (starting it on the first call with `scope = "tenant"`) and calls.
    async fn call(&self, name: &str, arguments: &Context, scope: ToolScope<'_>) -> ToolOutput {
        // A server for other tenants does not exist for this one, here as in `tools`.
        let Some((entry, original)) = self
            .entries
            .iter()
            .filter(|e| e.config.serves(scope.tenant))
            .find_map(|e| e.listing.original_name(name).map(|o| (e, o)))
        else {
            return ToolOutput::error(format!("no MCP server offers a tool '{name}'"));
        };
        let server = match entry.connection_for(scope.tenant) {
            Ok(server) => server,
            Err(refusal) => return ToolOutput::error(refusal),
        };
        // A tenant's first call waits for its process to start; the others find it started.
        server.first_start().await;
        call_on(&server, name, original, arguments).await
    }
}

/// The tools in server order, each name once. Start-up refuses two servers offering one
/// name, but a server that lists again later (`list_changed`) can add a name an earlier server
/// already has: the earlier one keeps it, as [`McpTools::call`] sends calls to the first
/// server that lists a name, so the listing names exactly what a call would reach.
fn first_of_each_name(tools: impl Iterator<Item = ServerTool>) -> Vec<ServerTool> {
    let tools: Vec<ServerTool> = tools.collect();
    let mut seen = std::collections::HashSet::new();
    // Clones share the spec and schema: no name or schema is copied.
    tools
        .iter()
        .filter(|tool| seen.insert(tool.spec.name.as_str()))
        .cloned()
        .collect()
}

/// Calls the tool contextd names `name` (`original` on the server) on one connection.
async fn call_on(
    server: &McpServer,
    name: &str,
    original: String,
    arguments: &Context,
) -> ToolOutput {
    let server_name = &server.config.name;
    let (peer, down) = {
        let state = server.state.read().unwrap_or_else(|e| e.into_inner());
        (state.peer.clone(), state.down.is_some())
    };
    let Some(peer) = peer else {
        // Why it is down (a command path, a URL, an OS error) is the operator's to read in
        // the log, where the supervisor wrote it; the model and the caller learn only that.
        let state = if down {
            "is down"
        } else {
            "has not started yet"
        };
        return ToolOutput::error(format!(
            "MCP server '{server_name}' {state}; it is being restarted, try again later"
        ));
    };
    let params = CallToolRequestParams::new(original).with_arguments(arguments.clone());
    let timeout = Duration::from_millis(server.config.call_timeout_ms);
    // Dropping the request (this timeout, or the turn's cancel dropping this future)
    // makes rmcp send `notifications/cancelled` for it.
    match tokio::time::timeout(timeout, peer.call_tool(params)).await {
        Ok(Ok(result)) => match serde_json::to_value(&result) {
            Ok(value) => output_of(&value),
            Err(e) => ToolOutput::error(format!(
                "MCP server '{server_name}' answered a result that cannot be read: {e}"
            )),
        },
        // The server's own JSON-RPC error is its answer to the call; anything else is a
        // transport failure whose text may name addresses, so it goes to the log only.
        Ok(Err(rmcp::ServiceError::McpError(e))) => ToolOutput::error(format!(
            "MCP server '{server_name}' refused the call to '{name}': {}",
            e.message
        )),
        Ok(Err(e)) => {
            tracing::error!(mcp_server = %server_name, tool = %name, error = %e, "MCP tool call failed");
            ToolOutput::error(format!(
                "MCP server '{server_name}' failed the call to '{name}' (the connection to it broke); try again later"
            ))
        }
        Err(_) => ToolOutput::error(format!(
            "MCP server '{server_name}' did not answer '{name}' within {} ms (call_timeout_ms); the call was cancelled",
            server.config.call_timeout_ms
        )),
    }
}

/// Receives the server's notifications: a changed tool list wakes the supervisor.
struct Listener {
    changed: Arc<Notify>,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("contextd", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(PROTOCOL)
    }
}

/// Marks the first start finished when dropped, so [`ToolProvider::ready`] never waits on a
/// supervisor that ended without marking it (a panic in a transport, say).
struct StartedOnDrop(Arc<McpServer>);

impl Drop for StartedOnDrop {
    fn drop(&mut self) {
        let mut state = self.0.state.write().unwrap_or_else(|e| e.into_inner());
        state.peer = None;
        if state.down.is_none() {
            state.down = Some("its supervisor stopped".into());
        }
        drop(state);
        self.0.started.send_replace(true);
    }
}

/// Keeps one server connected until it is stopped (see [`McpServer::stop`]) or contextd ends.
async fn supervise(server: Arc<McpServer>) {
    let _started = StartedOnDrop(server.clone());
    let stop = server.stop.clone();
    tokio::select! {
        // Dropping the loop drops the connection, and rmcp ends a stdio server's process.
        _ = stop.cancelled() => {
            let mut state = server.state.write().unwrap_or_else(|e| e.into_inner());
            state.peer = None;
            state.down = Some("it was stopped, unused for idle_timeout_ms".into());
        }
        _ = keep_connected(&server) => {}
    }
}

/// Connects, serves until the connection ends, and connects again with a doubling backoff.
async fn keep_connected(server: &Arc<McpServer>) {
    let name = server.config.name.clone();
    let mut backoff = FIRST_BACKOFF;
    loop {
        server
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .attempts += 1;
        let changed = Arc::new(Notify::new());
        let startup = Duration::from_millis(server.config.startup_timeout_ms);
        let connected = tokio::time::timeout(startup, connect(server, changed.clone()))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "it did not start within {} ms (startup_timeout_ms)",
                    server.config.startup_timeout_ms
                ))
            });
        let reason = match connected {
            Ok(running) => {
                tracing::info!(
                    mcp_server = %name,
                    protocol = %running.peer_info().map(|i| i.protocol_version.to_string()).unwrap_or_default(),
                    tools = server.tools().len(),
                    "MCP server up"
                );
                server.started.send_replace(true);
                backoff = FIRST_BACKOFF;
                serve_until_closed(server, running, changed).await
            }
            Err(reason) => reason,
        };
        tracing::error!(mcp_server = %name, reason = %reason, retry_in_ms = backoff.as_millis() as u64, "MCP server down");
        {
            let mut state = server.state.write().unwrap_or_else(|e| e.into_inner());
            state.peer = None;
            state.down = Some(reason);
        }
        server.started.send_replace(true);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Starts the server, says hello and lists its tools into the snapshot.
async fn connect(
    server: &McpServer,
    changed: Arc<Notify>,
) -> Result<RunningService<RoleClient, Listener>, String> {
    let config = &server.config;
    let listener = Listener { changed };
    let running = match config.transport {
        McpTransport::Stdio => {
            let mut command = tokio::process::Command::new(&config.command);
            command.args(&config.args).envs(&config.env);
            if let Some(cwd) = &config.cwd {
                command.current_dir(cwd);
            }
            let (transport, stderr) = TokioChildProcess::builder(command)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {:?}: {e}", config.command))?;
            if let Some(stderr) = stderr {
                let name = config.name.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::info!(mcp_server = %name, "{line}");
                    }
                });
            }
            listener
                .serve(transport)
                .await
                .map_err(|e| format!("the MCP handshake failed: {e}"))?
        }
        McpTransport::Http => {
            let mut headers = HashMap::new();
            for (key, value) in config.resolved_headers().map_err(|e| e.to_string())? {
                let key = http::HeaderName::try_from(key.as_str())
                    .map_err(|e| format!("header {key:?}: {e}"))?;
                let value = http::HeaderValue::try_from(value.as_str())
                    .map_err(|e| format!("header {key}: {e}"))?;
                headers.insert(key, value);
            }
            // reqwest is built without a bundled crypto provider: without one installed,
            // building a client panics (and this task with it), so ring is installed first
            // (a second install is refused harmlessly) and the client is built here, where a
            // failure is a reason rather than a panic.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
            let transport = StreamableHttpClientTransport::with_client(
                client,
                rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
                    config.url.clone(),
                )
                .custom_headers(headers),
            );
            listener
                .serve(transport)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", config.url))?
        }
    };
    refresh_tools(server, running.peer()).await?;
    Ok(running)
}

/// Serves the snapshot while the connection lasts; returns why it ended.
async fn serve_until_closed(
    server: &McpServer,
    running: RunningService<RoleClient, Listener>,
    changed: Arc<Notify>,
) -> String {
    let peer = running.peer().clone();
    {
        let mut state = server.state.write().unwrap_or_else(|e| e.into_inner());
        state.peer = Some(peer.clone());
        state.down = None;
    }
    let closed = running.waiting();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            ended = &mut closed => {
                return match ended {
                    Ok(reason) => format!("the connection ended ({reason:?})"),
                    Err(e) => format!("the connection failed ({e})"),
                };
            }
            _ = changed.notified() => {
                if let Err(reason) = refresh_tools(server, &peer).await {
                    tracing::warn!(mcp_server = %server.config.name, reason = %reason, "MCP tool list not refreshed");
                }
            }
        }
    }
}

/// Lists every page of the server's tools and stores them under contextd names in its
/// snapshot.
async fn refresh_tools(server: &McpServer, peer: &Peer<RoleClient>) -> Result<(), String> {
    let config = &server.config;
    let listed = peer
        .list_all_tools()
        .await
        .map_err(|e| format!("tools/list failed: {e}"))?;
    let tools = name_tools(config, listed)?;
    tracing::info!(mcp_server = %config.name, tools = tools.len(), "MCP tools listed");
    server
        .state
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .tools = tools;
    Ok(())
}

/// contextd's names for a server's tools, filtered by `allow_tools` / `deny_tools`.
fn name_tools(
    config: &McpServerConfig,
    listed: Vec<rmcp::model::Tool>,
) -> Result<Vec<(ServerTool, String)>, String> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut tools = Vec::new();
    for tool in listed {
        let original = tool.name.to_string();
        if !config.allows(&original) {
            continue;
        }
        let name = tool_name(&config.name, &original);
        if let Some(other) = seen.insert(name.clone(), original.clone()) {
            return Err(format!(
                "its tools {other:?} and {original:?} both become {name:?}; deny one with deny_tools"
            ));
        }
        let description = tool.description.map(|d| d.to_string()).unwrap_or_default();
        // Hints from the server: listed as they are, never acted on, never sent to a model.
        let annotations = match tool.annotations.as_ref().map(serde_json::to_value) {
            Some(Ok(Value::Object(hints))) => hints,
            _ => Default::default(),
        };
        // Compiled here, once per listing: calls reuse it until the server lists again.
        tools.push((
            ServerTool::new(
                ToolSpec {
                    name,
                    description,
                    input_schema: (*tool.input_schema).clone(),
                    annotations,
                },
                false,
            ),
            original,
        ));
    }
    Ok(tools)
}

/// `<server>__<tool>`: characters outside `[A-Za-z0-9_-]` become `_`; a name over 64
/// characters is cut and ends in a 6-hex-digit hash of the full name, so cut names differ.
pub fn tool_name(server: &str, tool: &str) -> String {
    let full: String = format!("{server}__{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if full.len() <= MAX_TOOL_NAME_LEN {
        return full;
    }
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let hash = format!("{server}__{tool}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!(
        "{}_{:06x}",
        &full[..MAX_TOOL_NAME_LEN - 7],
        hash & 0xff_ffff
    )
}

/// The result the model and `CallTool` see: text parts joined, other parts described, the
/// whole MCP result kept as the structured value.
fn output_of(result: &Value) -> ToolOutput {
    let mut texts = Vec::new();
    for part in result["content"].as_array().into_iter().flatten() {
        match part["type"].as_str() {
            Some("text") => texts.push(part["text"].as_str().unwrap_or_default().to_string()),
            Some(kind @ ("image" | "audio")) => texts.push(format!(
                "[{kind} {} {}]",
                part["mimeType"].as_str().unwrap_or("unknown type"),
                size_of_base64(part["data"].as_str().unwrap_or_default())
            )),
            Some("resource") => {
                let resource = &part["resource"];
                let uri = resource["uri"].as_str().unwrap_or_default();
                match resource["text"].as_str() {
                    Some(text) => texts.push(format!("[resource {uri}]\n{text}")),
                    None => texts.push(format!(
                        "[resource {uri} {} {}]",
                        resource["mimeType"].as_str().unwrap_or("unknown type"),
                        size_of_base64(resource["blob"].as_str().unwrap_or_default())
                    )),
                }
            }
            Some("resource_link") => texts.push(format!(
                "[link {} {}]",
                part["name"].as_str().unwrap_or_default(),
                part["uri"].as_str().unwrap_or_default()
            )),
            other => texts.push(format!("[{} part]", other.unwrap_or("unknown"))),
        }
    }
    ToolOutput {
        content: texts.join("\n"),
        structured: Some(result.clone()),
        is_error: result["isError"].as_bool().unwrap_or(false),
    }
}

/// The decoded size of base64 data, for people (`12 KB`).
fn size_of_base64(data: &str) -> String {
    // Every 4 characters are 3 bytes, less one byte per `=` of padding at the end.
    let padding = data.bytes().rev().take_while(|&b| b == b'=').count().min(2);
    let bytes = (data.len() / 4 * 3).saturating_sub(padding);
    if bytes < 1024 {
        format!("{bytes} B")
    } else {
        format!("{} KB", bytes / 1024)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_are_prefixed_sanitised_and_cut_with_a_hash() {
        assert_eq!(
            tool_name("time", "get_current_time"),
            "time__get_current_time"
        );
        assert_eq!(tool_name("fs", "read.file/v2"), "fs__read_file_v2");
        let long = "x".repeat(80);
        let a = tool_name("srv", &format!("{long}a"));
        let b = tool_name("srv", &format!("{long}b"));
        assert_eq!(a.len(), MAX_TOOL_NAME_LEN);
        assert_ne!(a, b);
        assert!(a.starts_with("srv__xxx"));
        assert!(crate::domain::session::validate_tool_name(&a).is_ok());
    }

    #[test]
    fn results_keep_every_part_and_describe_what_is_not_text() {
        let result = json!({
            "content": [
                {"type": "text", "text": "first"},
                {"type": "image", "data": "A".repeat(16384), "mimeType": "image/png"},
                {"type": "text", "text": "second"}
            ],
            "structuredContent": {"n": 1},
            "isError": false
        });
        let out = output_of(&result);
        assert_eq!(out.content, "first\n[image image/png 12 KB]\nsecond");
        assert_eq!(out.structured, Some(result));
        assert!(!out.is_error);
        assert!(output_of(&json!({"content": [], "isError": true})).is_error);
        // Padding is not data: "AAE=" is two bytes.
        let audio =
            json!({"content": [{"type": "audio", "data": "AAE=", "mimeType": "audio/wav"}]});
        assert_eq!(output_of(&audio).content, "[audio audio/wav 2 B]");
        let link =
            json!({"content": [{"type": "resource_link", "name": "notes", "uri": "file:///n"}]});
        assert_eq!(output_of(&link).content, "[link notes file:///n]");
    }

    #[test]
    fn annotations_are_kept_as_their_own_field() {
        let config = McpServerConfig::stdio("srv", "unused", &[]);
        let mut tool = listed(json!({"type": "object"}));
        tool.annotations = Some(rmcp::model::ToolAnnotations::new().read_only(true));
        let named = name_tools(&config, vec![tool]).unwrap();
        let spec = &named[0].0.spec;
        assert_eq!(spec.description, "looks things up");
        assert_eq!(spec.annotations.get("readOnlyHint"), Some(&json!(true)));
        // Without annotations there are none.
        let plain = name_tools(&config, vec![listed(json!({"type": "object"}))]).unwrap();
        assert!(plain[0].0.spec.annotations.is_empty());
    }

    fn listed(schema: Value) -> rmcp::model::Tool {
        rmcp::model::Tool::new(
            "lookup",
            "looks things up",
            Arc::new(schema.as_object().cloned().unwrap()),
        )
    }

    #[test]
    fn a_relisted_tool_is_checked_against_its_new_schema() {
        let config = McpServerConfig::stdio("srv", "unused", &[]);
        let by_id = json!({"type": "object", "properties": {"id": {"type": "integer"}},
                           "required": ["id"], "additionalProperties": false});
        let by_name = json!({"type": "object", "properties": {"name": {"type": "string"}},
                             "required": ["name"], "additionalProperties": false});
        let first = name_tools(&config, vec![listed(by_id)]).unwrap();
        let (tool, _) = &first[0];
        let id: Context = json!({"id": 7}).as_object().cloned().unwrap();
        let name: Context = json!({"name": "x"}).as_object().cloned().unwrap();
        assert!(tool.check_arguments(&id).is_ok());
        assert!(tool.check_arguments(&name).is_err());
        // The server announces a new list where the same tool takes other arguments.
        let second = name_tools(&config, vec![listed(by_name)]).unwrap();
        let (tool, _) = &second[0];
        assert_eq!(tool.spec.name, "srv__lookup");
        assert!(tool.check_arguments(&name).is_ok());
        let refused = tool.check_arguments(&id).unwrap_err();
        assert!(
            refused.contains("'srv__lookup'") && refused.contains("name"),
            "{refused}"
        );
    }

    /// A server that cannot start is tried again after 0.5 s, then 1 s, 2 s, 4 s, ...,
    /// never more than 30 s apart. Virtual time: the delays are exact, whatever the load.
    #[tokio::test(start_paused = true)]
    async fn failed_starts_are_retried_with_a_doubling_backoff_up_to_a_cap() {
        let config = McpServerConfig::stdio("gone", "/nonexistent/contextd-mcp-server", &[]);
        let server = McpServer::start(&config);
        let attempts = || server.state.read().unwrap().attempts;
        let started = Instant::now();
        let mut expected_at = Duration::ZERO;
        let mut delay = FIRST_BACKOFF;
        for attempt in 1..=10u64 {
            // Just before the next start is due, exactly `attempt` starts were tried.
            tokio::time::sleep_until(started + expected_at + delay - Duration::from_millis(1))
                .await;
            assert_eq!(attempts(), attempt, "at {:?}", started.elapsed());
            expected_at += delay;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
        // Ten failures in, the delay is at its cap.
        assert_eq!(delay, MAX_BACKOFF);
        let down = server
            .state
            .read()
            .unwrap()
            .down
            .clone()
            .unwrap_or_default();
        assert!(down.contains("cannot start"), "{down}");
        server.stop.cancel();
    }

    /// A stopped server's supervisor ends and says why the server is down.
    #[tokio::test(start_paused = true)]
    async fn a_stopped_server_is_not_started_again() {
        let config = McpServerConfig::stdio("gone", "/nonexistent/contextd-mcp-server", &[]);
        let server = McpServer::start(&config);
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.stop.cancel();
        tokio::time::sleep(Duration::from_secs(120)).await;
        let state = server.state.read().unwrap();
        assert_eq!(state.attempts, 1);
        assert!(
            state
                .down
                .as_deref()
                .unwrap_or_default()
                .contains("idle_timeout_ms")
        );
    }

    /// A connection in use is never idle; it is once its last call ended `idle` ago.
    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_calls_for_the_timeout() {
        let config = McpServerConfig::stdio("gone", "/nonexistent/contextd-mcp-server", &[]);
        let server = McpServer::start(&config);
        let idle = Duration::from_secs(10);
        let call = server.use_for_call();
        tokio::time::sleep(idle * 2).await;
        assert!(!server.idle_for(idle), "a call is running");
        drop(call);
        assert!(!server.idle_for(idle), "the call just ended");
        tokio::time::sleep(idle).await;
        assert!(server.idle_for(idle));
        server.stop.cancel();
    }
}
