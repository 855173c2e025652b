//! Configuration: one typed struct with documented defaults.
//!
//! Precedence, lowest first: built-in defaults < the TOML file (`--config`, `CONTEXTD_CONFIG`)
//! < environment variables (`CONTEXTD_*`) < command-line flags. The file may set any field;
//! the environment and flags cover the ones people change per run (see `contextd serve
//! --help`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:61900";

/// Everything contextd can be told.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`host:port`). Default `127.0.0.1:61900`.
    pub listen: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax (`info`, `contextd=debug`, …). `CONTEXTD_LOG` or
    /// `RUST_LOG` override it. Default `info`.
    pub log_filter: String,
    /// On SIGINT/SIGTERM, how long running turns may take to finish before streams are ended
    /// with UNAVAILABLE, in milliseconds. Default 10000.
    pub shutdown_grace_ms: u64,
    /// Input limits.
    pub limits: Limits,
    /// Turn and window settings.
    pub engine: EngineConfig,
    /// Where sessions live: `sqlite` (default; a file in `data_dir`), `memory` (nothing
    /// survives the process), or a `postgres://user@host:port/database` URL (several replicas
    /// may share it).
    pub store: String,
    /// Directory of the SQLite store, created on first start. Default `./contextd-data`.
    pub data_dir: PathBuf,
    /// Idle time-to-live of sessions that set no `expire_time` of their own, such as `30m`,
    /// `24h` or `7d`: a session untouched for this long expires. Unset (the default): never.
    pub session_ttl: Option<String>,
    /// Database tuning.
    pub storage: StorageConfig,
    /// Model providers (`[[backends]]`); their models are named `<name>/<model>`.
    pub backends: Vec<BackendConfig>,
    /// The HTTP/JSON, Server-Sent Events and JSON-lines doors.
    pub http: HttpConfig,
    /// The MCP doors: `/mcp` and the MCP gRPC binding (`[mcp]`).
    pub mcp: McpConfig,
    /// MCP servers whose tools contextd offers as server-side tools (`[[mcp_servers]]`),
    /// named `<server>__<tool>`.
    pub mcp_servers: Vec<McpServerConfig>,
    /// Who may call: API keys, client certificates or nobody checked (`[auth]`).
    pub auth: AuthConfig,
    /// Serve on a non-loopback address without authentication anyway (`--insecure-listen`).
    /// Default false: such a listen address with `auth.mode = "none"` refuses to start.
    pub insecure_listen: bool,
    /// TLS on the listener, and client certificates for mTLS (`[tls]`).
    pub tls: TlsConfig,
    /// Prometheus metrics (`[metrics]`).
    pub metrics: MetricsConfig,
    /// OpenTelemetry traces (`[telemetry]`).
    pub telemetry: TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_string(),
            log_format: LogFormat::Text,
            log_filter: "info".to_string(),
            shutdown_grace_ms: 10_000,
            limits: Limits::default(),
            engine: EngineConfig::default(),
            store: "sqlite".to_string(),
            data_dir: PathBuf::from("contextd-data"),
            session_ttl: None,
            storage: StorageConfig::default(),
            backends: Vec::new(),
            http: HttpConfig::default(),
            mcp: McpConfig::default(),
            mcp_servers: Vec::new(),
            auth: AuthConfig::default(),
            insecure_listen: false,
            tls: TlsConfig::default(),
            metrics: MetricsConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// How callers prove who they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Nobody is checked: every call is the tenant `default`, as an admin. Only for loopback
    /// addresses (or with `insecure_listen`).
    #[default]
    None,
    /// Every call carries `authorization: Bearer <key>`; the key names tenant and role.
    Keys,
    /// Every connection presents a client certificate (TLS with `--tls-client-ca`); its name
    /// maps to a tenant through `auth.mtls_tenants`.
    Mtls,
}

impl AuthMode {
    /// The mode as `--auth` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Keys => "keys",
            AuthMode::Mtls => "mtls",
        }
    }
}

/// Endpoints besides health that may be called without credentials when
/// `auth.open_endpoints` names them.
pub const OPEN_ENDPOINTS: [&str; 4] = ["reflection", "status", "openapi", "metrics"];

/// Authentication and tenants (`[auth]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` (default), `keys` or `mtls` (`--auth`, `CONTEXTD_AUTH`).
    pub mode: AuthMode,
    /// A file of hashed keys to use instead of the store's (`contextd keys add` writes to
    /// it when set; reloaded on SIGHUP). Default: keys live in the store.
    pub keys_file: Option<PathBuf>,
    /// Endpoints open without credentials besides health (always open): any of
    /// `reflection`, `status` (`/api/mcp/status`), `openapi` (`/openapi.json`) and
    /// `metrics` (`/metrics`). Default none.
    pub open_endpoints: Vec<String>,
    /// With `mode = "mtls"`: which certificate names which tenant (`[[auth.mtls_tenants]]`).
    pub mtls_tenants: Vec<MtlsTenant>,
    /// How long a checked key is trusted before it is looked up again, in milliseconds: a
    /// revocation reaches every replica within this. Default 2000; at most 5000.
    pub key_cache_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            keys_file: None,
            open_endpoints: Vec::new(),
            mtls_tenants: Vec::new(),
            key_cache_ms: 2_000,
        }
    }
}

/// One client certificate identity and the tenant it names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsTenant {
    /// The certificate's subject CN, or one of its URI SANs (`spiffe://…`): URI SANs are
    /// matched first, then the CN.
    pub identity: String,
    /// The tenant it names.
    pub tenant: String,
    /// `user` (default) or `admin`.
    #[serde(default)]
    pub role: RoleName,
}

/// A role as configuration spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// Its own tenant's sessions only.
    #[default]
    User,
    /// Also keys and tenants.
    Admin,
}

impl From<RoleName> for crate::domain::Role {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::User => crate::domain::Role::User,
            RoleName::Admin => crate::domain::Role::Admin,
        }
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for name in &self.open_endpoints {
            if !OPEN_ENDPOINTS.contains(&name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "auth.open_endpoints: unknown endpoint {name:?}; choose from {} (health is always open)",
                    OPEN_ENDPOINTS.join(", ")
                )));
            }
        }
        for entry in &self.mtls_tenants {
            crate::domain::key::check_tenant_id(&entry.tenant).map_err(|e| {
                ConfigError::Invalid(format!("auth.mtls_tenants entry {:?}: {e}", entry.identity))
            })?;
        }
        if self.mode == AuthMode::Mtls && self.mtls_tenants.is_empty() {
            return Err(ConfigError::Invalid(
                "auth.mode = \"mtls\" needs [[auth.mtls_tenants]] entries mapping certificate names to tenants".into(),
            ));
        }
        if self.key_cache_ms > 5_000 {
            return Err(ConfigError::Invalid(
                "auth.key_cache_ms is at most 5000 (a revocation must take effect within 5 s)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether `endpoint` (one of [`OPEN_ENDPOINTS`]) is served without credentials.
    pub fn is_open(&self, endpoint: &str) -> bool {
        self.mode == AuthMode::None || self.open_endpoints.iter().any(|e| e == endpoint)
    }
}

/// Settings of the MCP doors: contextd as an MCP server on `/mcp` and the MCP gRPC binding
/// (`[mcp]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// How many sessions `resources/list` (`ListResources`) names, newest first: neither
    /// door pages through resources. Default 100.
    pub max_listed_resources: usize,
    /// Largest resource text a read returns, in bytes of JSON: a session's context and as
    /// much of its newest history as fits, with a note on how to read the rest. Default
    /// 262144 (256 KiB).
    pub max_resource_bytes: usize,
    /// Origins (`scheme://host[:port]`) besides loopback ones that may call `/mcp` from a
    /// browser. A request with any other `Origin` header is refused with 403 (protection
    /// against DNS rebinding); requests without one (non-browser hosts) are served. Default
    /// none.
    pub allowed_origins: Vec<String>,
    /// Host names (or `host:port`) besides loopback ones that `/mcp` requests may name in
    /// their `Host` header, for a contextd reached under a DNS name; any other `Host` is
    /// refused with 403 (protection against DNS rebinding). Default none.
    pub allowed_hosts: Vec<String>,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            max_listed_resources: 100,
            max_resource_bytes: 256 * 1024,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Settings of the HTTP/JSON, Server-Sent Events and JSON-lines doors (`[http]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Deadline of an HTTP request that sends no `X-Request-Timeout`, in milliseconds; 0 (the
    /// default): none. On expiry the answer is 504 and the turn is not stored, as on gRPC.
    pub default_timeout_ms: u64,
    /// How often a Server-Sent Events stream sends a `: keep-alive` comment while it waits
    /// for the model, in milliseconds. Default 15000.
    pub sse_keep_alive_ms: u64,
    /// The web origins (`https://app.example.com`) whose pages may call contextd (CORS, for
    /// gRPC-Web, Connect and the JSON routes). Default: none (browsers refuse cross-origin
    /// calls); `["*"]`: every origin.
    pub cors_origins: Vec<String>,
    /// How often the server pings an open Converse WebSocket, in milliseconds. Default 20000.
    pub websocket_ping_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            default_timeout_ms: 0,
            sse_keep_alive_ms: 15_000,
            cors_origins: Vec::new(),
            websocket_ping_ms: 20_000,
        }
    }
}

impl HttpConfig {
    /// Checks `cors_origins`: `*` alone, or origins of the form `scheme://host[:port]`.
    fn validate_cors_origins(&self) -> Result<(), ConfigError> {
        let origins = &self.cors_origins;
        if origins.iter().any(|o| o == "*") {
            if origins.len() > 1 {
                return Err(ConfigError::Invalid(
                    "http.cors_origins: \"*\" allows every origin and must stand alone".into(),
                ));
            }
            return Ok(());
        }
        for origin in origins {
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            let valid = rest.is_some_and(|host| {
                !host.is_empty()
                    && host.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    })
            });
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "http.cors_origins: {origin:?} is not an origin; write scheme://host[:port] \
                     with no path or trailing slash, such as \"https://app.example.com\", or \"*\""
                )));
            }
        }
        Ok(())
    }
}

/// Database settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Most database connections for queries (SQLite: readers; one more connection writes).
    /// Default 16.
    pub max_connections: u32,
    /// PostgreSQL: most connections holding turn leases (one per session with a turn
    /// running on this replica). Default 64.
    pub max_lease_connections: u32,
    /// How long to wait for a connection (or, on SQLite, a lock) before failing with
    /// UNAVAILABLE, in milliseconds. Default 5000.
    pub connect_timeout_ms: u64,
    /// SQLite durability: `full` (default; a committed turn survives power loss) or `normal`
    /// (survives a crash of contextd, may lose the last turns on power loss; faster).
    pub sqlite_synchronous: SyncMode,
    /// How often expired sessions are deleted, in milliseconds. Expired sessions are NOT_FOUND
    /// from the moment they expire, whenever the sweep runs. Default 30000.
    pub sweep_interval_ms: u64,
    /// Group commit (SQLite and PostgreSQL): most commits written in one transaction. Commits
    /// that arrive while one transaction is being written wait for the next, which takes up
    /// to this many; no commit waits for a timer. Default 64.
    pub commit_batch_max_turns: usize,
    /// Group commit: most bytes (session documents and message texts) in one transaction; a
    /// single commit larger than this is written alone. Default 8 MiB.
    pub commit_batch_max_bytes: usize,
    /// SQLite: bytes of the write-through cache of hot sessions (their rows and newest
    /// messages, as committed), least recently used first out. 0: no cache. PostgreSQL never
    /// caches (other replicas write the same rows). Default 64 MiB.
    pub cache_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            max_lease_connections: 64,
            connect_timeout_ms: 5_000,
            sqlite_synchronous: SyncMode::Full,
            sweep_interval_ms: 30_000,
            commit_batch_max_turns: 64,
            commit_batch_max_bytes: 8 << 20,
            cache_bytes: 64 << 20,
        }
    }
}

/// SQLite's `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Sync the WAL on every commit.
    Full,
    /// Sync at checkpoints only.
    Normal,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Input limits. Requests beyond them are refused with INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest user message, in bytes of UTF-8. Default 1 MiB.
    pub max_message_bytes: usize,
    /// Largest context (or context patch, or tool arguments), in bytes of compact JSON.
    /// Default 1 MiB.
    pub max_context_bytes: usize,
    /// Deepest nesting of a context, patch or tool arguments (`{}` is 1). Default 32.
    pub max_context_depth: usize,
    /// Largest encoded gRPC request message. Larger ones are refused by the decoder with
    /// OUT_OF_RANGE. Default 4 MiB.
    pub max_request_bytes: usize,
    /// Page size when a request asks for 0. Default 50.
    pub default_page_size: u32,
    /// Largest page size; larger requests get this many. Default 1000.
    pub max_page_size: u32,
    /// Largest number of client-declared tools per session. Default 128.
    pub max_tools: usize,
    /// Frames a Converse stream may queue behind a running turn. Default 16.
    pub max_converse_queue: usize,
    /// Longest a streamed turn waits for a client to read before it ends the stream with
    /// DEADLINE_EXCEEDED and stops the turn (nothing stored), in milliseconds. Default 30000.
    pub stream_stall_timeout_ms: u64,
    /// Bytes of encoded events a stream may buffer for a client that reads slowly. Default
    /// 1 MiB.
    pub stream_buffer_bytes: usize,
    /// Largest tool result the model sees, in bytes; longer ones are cut with a
    /// `[truncated: N more bytes]` marker. Default 256 KiB.
    pub max_tool_result_bytes: usize,
    /// Largest tool result the model sees, in tokens; 0 (the default) for a quarter of the
    /// session's window.
    pub max_tool_result_tokens: u32,
    /// How long a turn's idempotency key is remembered: a repeat of the request within it
    /// gets the stored outcome instead of a second turn. `30m`, `24h`, `7d`, …; default 24 h.
    #[serde(deserialize_with = "duration_text")]
    pub idempotency_window: Duration,
    /// Most bytes one tenant may store (session documents and message texts, as
    /// `contextd tenants list` counts them); a write that finds the tenant at or over it is
    /// RESOURCE_EXHAUSTED naming this limit. 0 (the default): no quota.
    pub tenant_storage_bytes: u64,
    /// Largest system prompt, in bytes of UTF-8. Default 256 KiB.
    pub max_system_prompt_bytes: usize,
    /// Longest client-declared tool name, in bytes; at most 64, the longest name model
    /// providers accept. Default 64.
    pub max_tool_name_bytes: usize,
    /// Largest client-declared tool description, in bytes of UTF-8, and largest set of a
    /// tool's `annotations`, in bytes of compact JSON. Default 4 KiB.
    pub max_tool_description_bytes: usize,
    /// Largest client-declared tool `input_schema`, in bytes of compact JSON. Default 64 KiB.
    pub max_tool_schema_bytes: usize,
    /// Most labels on one session. Default 64.
    pub max_labels: usize,
    /// Longest label key, in bytes. Default 63.
    pub max_label_key_bytes: usize,
    /// Longest label value, in bytes. Default 256.
    pub max_label_value_bytes: usize,
    /// Most bytes of encoded items in one `ListSessions` or `ListMessages` page; a page that
    /// would grow past it ends early with a `next_page_token`, so a reply stays well under
    /// the 4 MiB most gRPC clients accept. A single item larger than this still goes out, alone
    /// on its page. Default 1 MiB.
    pub max_page_bytes: usize,
    /// Requests per second one tenant may make, over every door (a token bucket refilled at
    /// this rate); beyond it calls are refused with RESOURCE_EXHAUSTED (HTTP 429) and a retry
    /// delay. 0 (the default): no rate limit.
    pub tenant_requests_per_second: u32,
    /// How many requests a tenant may make at once beyond its rate (the bucket's size); 0
    /// for as many as `tenant_requests_per_second`. Default 0.
    pub tenant_request_burst: u32,
    /// Turns one tenant may run at once, over every door (Interact, streams, Converse, MCP);
    /// beyond it a turn is refused with RESOURCE_EXHAUSTED and a retry delay. 0 (the default):
    /// no limit.
    pub tenant_turns_in_flight: usize,
    /// Turns the whole server may run at once; 0 (the default): no limit.
    pub turns_in_flight: usize,
    /// Longest a new connection may take from accept until its protocol is known (and, on a
    /// TLS listener, the handshake is done), in milliseconds; a silent or slow peer is closed
    /// then. Default 10000.
    pub handshake_timeout_ms: u64,
    /// How long a connection with no open request or stream stays open, in milliseconds
    /// (an open Converse stream keeps it, however quiet). Default 300000 (5 minutes).
    pub idle_connection_timeout_ms: u64,
    /// How often HTTP/2 pings a connection, to find dead peers under open streams, in
    /// milliseconds. Default 60000.
    pub keepalive_interval_ms: u64,
    /// How long a ping may go unanswered before the connection is closed, in milliseconds.
    /// Default 20000.
    pub keepalive_timeout_ms: u64,
    /// Longest an HTTP/1 request's headers may take to arrive (from the first byte of a
    /// request, or from the end of the previous one), in milliseconds. Default 30000.
    pub header_read_timeout_ms: u64,
    /// Longest the body of a unary request (every call but a Converse stream) may take to
    /// arrive, from its headers, in milliseconds. Default 60000.
    pub request_body_timeout_ms: u64,
    /// Most connections open at once (every door, TLS handshakes included); one beyond it is
    /// closed at once. Default 10000.
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams (calls) per connection. Default 1024.
    pub max_concurrent_streams: u32,
}

/// A duration written as [`parse_duration`] reads it (`30m`, `24h`, …).
fn duration_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1 << 20,
            max_context_bytes: 1 << 20,
            max_context_depth: 32,
            max_request_bytes: 4 << 20,
            default_page_size: 50,
            max_page_size: 1000,
            max_tools: 128,
            max_converse_queue: 16,
            stream_stall_timeout_ms: 30_000,
            stream_buffer_bytes: 1 << 20,
            idempotency_window: Duration::from_secs(24 * 3600),
            tenant_storage_bytes: 0,
            max_tool_result_bytes: 256 << 10,
            max_tool_result_tokens: 0,
            max_system_prompt_bytes: 256 << 10,
            max_tool_name_bytes: 64,
            max_tool_description_bytes: 4 << 10,
            max_tool_schema_bytes: 64 << 10,
            max_labels: 64,
            max_label_key_bytes: 63,
            max_label_value_bytes: 256,
            max_page_bytes: 1 << 20,
            tenant_requests_per_second: 0,
            tenant_request_burst: 0,
            tenant_turns_in_flight: 0,
            turns_in_flight: 0,
            handshake_timeout_ms: 10_000,
            idle_connection_timeout_ms: 300_000,
            keepalive_interval_ms: 60_000,
            keepalive_timeout_ms: 20_000,
            header_read_timeout_ms: 30_000,
            request_body_timeout_ms: 60_000,
            max_connections: 10_000,
            max_concurrent_streams: 1024,
        }
    }
}

impl Limits {
    /// Checks the limits of stored fields and pages: each must allow something, and tool
    /// names cannot be longer than model providers accept.
    fn validate_stored_fields(&self) -> Result<(), ConfigError> {
        let at_least_one = [
            ("max_system_prompt_bytes", self.max_system_prompt_bytes),
            ("max_tool_name_bytes", self.max_tool_name_bytes),
            (
                "max_tool_description_bytes",
                self.max_tool_description_bytes,
            ),
            ("max_tool_schema_bytes", self.max_tool_schema_bytes),
            ("max_label_key_bytes", self.max_label_key_bytes),
            ("max_label_value_bytes", self.max_label_value_bytes),
            ("max_page_bytes", self.max_page_bytes),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.{key} must be at least 1"
                )));
            }
        }
        let longest = crate::domain::session::MAX_TOOL_NAME_LEN;
        if self.max_tool_name_bytes > longest {
            return Err(ConfigError::Invalid(format!(
                "limits.max_tool_name_bytes is {}; at most {longest} (model providers refuse longer tool names)",
                self.max_tool_name_bytes
            )));
        }
        if self.tenant_request_burst > 0 && self.tenant_requests_per_second == 0 {
            return Err(ConfigError::Invalid(
                "limits.tenant_request_burst needs limits.tenant_requests_per_second (0 turns the rate limit off)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Turn loop and context-window settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Model of sessions that do not name one. Default `echo`.
    pub default_model: String,
    /// Most model steps in one turn while server-side tools keep being called. Default 8.
    pub max_tool_steps: u32,
    /// Window size of the `echo` model and of sessions without one, in tokens. Default 8192.
    pub default_max_context_tokens: u32,
    /// Tokens kept free for the reply in every window (at most a quarter of the window).
    /// Default 1024.
    pub reserved_output_tokens: u32,
    /// Model that writes summaries for sessions with the `summarize` strategy that name no
    /// summarizer. Empty (the default): the session's own model.
    pub summarizer_model: String,
    /// Server-side tools offered to sessions that choose none (`server_tools` unset): names
    /// or `*` patterns. Default: the built-in session tools (`context_get`, `context_set`,
    /// `history_search`); tools of MCP servers are offered only where selected.
    pub default_server_tools: Vec<String>,
    /// Bytes of windows kept in memory between a session's turns, so that a turn reads and
    /// counts only the messages added since its session's last one (least recently used out
    /// first; `0`: none, every turn reads its window from the store). Default 64 MiB.
    pub window_cache_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_model: "echo".to_string(),
            max_tool_steps: 8,
            default_max_context_tokens: 8192,
            reserved_output_tokens: 1024,
            summarizer_model: String::new(),
            default_server_tools: ["context_get", "context_set", "history_search"]
                .map(String::from)
                .to_vec(),
            window_cache_bytes: 64 << 20,
        }
    }
}

/// The protocol a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// An OpenAI-compatible Chat Completions endpoint (OpenAI, Ollama, vLLM, llama.cpp
    /// server, LM Studio, …).
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
}

impl BackendKind {
    /// Lower-case name, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Openai => "openai",
            BackendKind::Anthropic => "anthropic",
        }
    }

    /// The provider's public endpoint, used when `base_url` is not set.
    pub fn default_base_url(self) -> &'static str {
        match self {
            BackendKind::Openai => "https://api.openai.com/v1",
            BackendKind::Anthropic => "https://api.anthropic.com/v1",
        }
    }
}

/// One `[[backends]]` entry: a model provider. Its models are named `<name>/<model>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Prefix of its model names: 1 to 64 characters of `[A-Za-z0-9._-]`, not `echo`.
    pub name: String,
    /// `openai` or `anthropic`.
    pub kind: BackendKind,
    /// Endpoint root, e.g. `http://127.0.0.1:11434/v1`. Default: the provider's public API.
    #[serde(default)]
    pub base_url: String,
    /// Environment variable holding the API key. Optional (local servers need none).
    #[serde(default)]
    pub api_key_env: String,
    /// File holding the API key (surrounding whitespace is ignored). Optional; not together
    /// with `api_key_env`.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Window size of its models, in tokens. Default 8192.
    #[serde(default = "default_context_window")]
    pub context_window: u32,
    /// Model used when a session names the backend alone (`model = "<name>"`). Optional.
    #[serde(default)]
    pub default_model: String,
    /// Models listed by `ModelService.ListModels` (any `<name>/<model>` works regardless).
    #[serde(default)]
    pub models: Vec<String>,
    /// Time to open the connection, in milliseconds. Default 10000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time from sending the request to the first streamed event, in milliseconds. Default
    /// 60000.
    #[serde(default = "default_first_token_timeout_ms")]
    pub first_token_timeout_ms: u64,
    /// Longest pause between streamed events, in milliseconds. Default 60000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Longest model step, in milliseconds. Default 600000.
    #[serde(default = "default_total_timeout_ms")]
    pub total_timeout_ms: u64,
    /// Retries on HTTP 429, 5xx and failures to connect, before the first streamed event.
    /// A connection that closes after the request was sent is not retried: the provider may
    /// have run it already. Default 3.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry delay in milliseconds; doubled per retry, with jitter, unless the provider
    /// sends `Retry-After`. Default 500.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest retry delay (also caps `Retry-After`), in milliseconds. Default 30000.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

fn default_context_window() -> u32 {
    8192
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_first_token_timeout_ms() -> u64 {
    60_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_total_timeout_ms() -> u64 {
    600_000
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_base_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    30_000
}

impl BackendConfig {
    /// A backend with every optional setting at its default.
    pub fn new(name: &str, kind: BackendKind, base_url: &str) -> Self {
        Self {
            name: name.to_string(),
            kind,
            base_url: base_url.to_string(),
            api_key_env: String::new(),
            api_key_file: None,
            context_window: default_context_window(),
            default_model: String::new(),
            models: Vec::new(),
            connect_timeout_ms: default_connect_timeout_ms(),
            first_token_timeout_ms: default_first_token_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            total_timeout_ms: default_total_timeout_ms(),
            max_retries: default_max_retries(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_ms: default_retry_max_ms(),
        }
    }

    /// The endpoint root without a trailing slash.
    pub fn endpoint(&self) -> String {
        let url = if self.base_url.is_empty() {
            self.kind.default_base_url()
        } else {
            self.base_url.as_str()
        };
        url.trim_end_matches('/').to_string()
    }

    /// Checks what types cannot; the message names the backend and the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        let bad = |what: String| Err(ConfigError::Invalid(format!("backend {name:?}: {what}")));
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad("name must be 1 to 64 characters of [A-Za-z0-9._-]".into());
        }
        if name == "echo" {
            return bad("the name echo is taken by the built-in model".into());
        }
        let url = self.endpoint();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return bad(format!(
                "base_url {url:?} must start with http:// or https://"
            ));
        }
        if !self.api_key_env.is_empty() && self.api_key_file.is_some() {
            return bad("set api_key_env or api_key_file, not both".into());
        }
        if self.context_window < 16 {
            return bad("context_window must be at least 16 tokens".into());
        }
        if self.connect_timeout_ms == 0
            || self.first_token_timeout_ms == 0
            || self.idle_timeout_ms == 0
            || self.total_timeout_ms == 0
        {
            return bad("timeouts must be at least 1 ms".into());
        }
        for model in self
            .models
            .iter()
            .chain(std::iter::once(&self.default_model).filter(|m| !m.is_empty()))
        {
            if model.is_empty() || model.chars().any(char::is_whitespace) {
                return bad(format!(
                    "model name {model:?} must be non-empty without spaces"
                ));
            }
        }
        Ok(())
    }
}

/// How contextd reaches an MCP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum McpTransport {
    /// A child process speaking JSON-RPC on stdin/stdout (`command`, `args`, `env`, `cwd`).
    Stdio,
    /// Streamable HTTP (`url`, `headers`).
    Http,
}

/// Who shares an MCP server's process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum McpScope {
    /// One process (or connection) for every session that uses it.
    #[default]
    Shared,
    /// One per tenant, bounded by `max_processes`.
    Tenant,
}

/// One `[[mcp_servers]]` entry: an MCP server whose tools become `<name>__<tool>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Prefix of its tools' names: 1 to 32 characters of `[A-Za-z0-9_-]`, without `__`.
    pub name: String,
    /// `stdio` or `http`.
    pub transport: McpTransport,
    /// stdio: the program to run (looked up on `PATH`).
    #[serde(default)]
    pub command: String,
    /// stdio: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: environment variables set for it (on top of contextd's own).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// stdio: its working directory. Default: contextd's.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// http: the Streamable HTTP endpoint, such as `http://127.0.0.1:3001/mcp`.
    #[serde(default)]
    pub url: String,
    /// http: headers sent with every request. `${VAR}` in a value is replaced by the
    /// environment variable `VAR` (start-up fails when it is not set).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Only these of its tools (names as the server gives them, or `*` patterns). Empty (the
    /// default): all.
    #[serde(default)]
    pub allow_tools: Vec<String>,
    /// None of these of its tools (names or `*` patterns); applied after `allow_tools`.
    #[serde(default)]
    pub deny_tools: Vec<String>,
    /// Longest wait for one tool call, in milliseconds; then the call is cancelled and
    /// answers `is_error`. Default 60000.
    #[serde(default = "default_mcp_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Longest wait for the server to start and list its tools, in milliseconds. Default
    /// 10000.
    #[serde(default = "default_mcp_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// Tenants that may use it; empty (the default): every tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// `shared` (the default: one process for every session of every tenant) or `tenant`
    /// (one process per tenant, started on the tenant's first call, plus one started with
    /// contextd that lists the tools).
    #[serde(default)]
    pub scope: McpScope,
    /// With `scope = "tenant"`: most tenant processes at once (the listing one not counted);
    /// a tenant past it gets `is_error` results naming this setting. Default 16.
    #[serde(default = "default_mcp_max_processes")]
    pub max_processes: u32,
    /// With `scope = "tenant"`: a tenant's process that no call has used for this many
    /// milliseconds is stopped (and its place under `max_processes` freed); the tenant's next
    /// call starts it again. 0: never stopped. Default 600000 (10 minutes).
    #[serde(default = "default_mcp_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_mcp_call_timeout_ms() -> u64 {
    60_000
}
fn default_mcp_startup_timeout_ms() -> u64 {
    10_000
}
fn default_mcp_max_processes() -> u32 {
    16
}
fn default_mcp_idle_timeout_ms() -> u64 {
    600_000
}

impl McpServerConfig {
    /// A stdio server with every optional setting at its default.
    pub fn stdio(name: &str, command: &str, args: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            transport: McpTransport::Stdio,
            command: command.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Default::default(),
            cwd: None,
            url: String::new(),
            headers: Default::default(),
            allow_tools: Vec::new(),
            deny_tools: Vec::new(),
            call_timeout_ms: default_mcp_call_timeout_ms(),
            startup_timeout_ms: default_mcp_startup_timeout_ms(),
            tenants: Vec::new(),
            scope: McpScope::Shared,
            max_processes: default_mcp_max_processes(),
            idle_timeout_ms: default_mcp_idle_timeout_ms(),
        }
    }

    /// A Streamable HTTP server with every optional setting at its default.
    pub fn http(name: &str, url: &str) -> Self {
        Self {
            transport: McpTransport::Http,
            url: url.to_string(),
            ..Self::stdio(name, "", &[])
        }
    }

    /// Whether its tool `tool` (the server's name) passes `allow_tools` and `deny_tools`.
    pub fn allows(&self, tool: &str) -> bool {
        let matches = |patterns: &[String]| {
            patterns
                .iter()
                .any(|p| crate::engine::dispatch::pattern_matches(p, tool))
        };
        (self.allow_tools.is_empty() || matches(&self.allow_tools)) && !matches(&self.deny_tools)
    }

    /// Whether `tenant` may use it (`tenants` empty: every tenant).
    pub fn serves(&self, tenant: &crate::domain::TenantId) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant.as_str())
    }

    /// `headers` with `${VAR}` replaced from the environment.
    pub fn resolved_headers(&self) -> Result<Vec<(String, String)>, ConfigError> {
        self.headers
            .iter()
            .map(|(key, value)| {
                let mut out = String::new();
                let mut rest = value.as_str();
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let after = &rest[start + 2..];
                    let Some(end) = after.find('}') else {
                        return Err(
                            self.invalid(format!("header {key}: '${{' without a closing '}}'"))
                        );
                    };
                    let var = &after[..end];
                    let found = std::env::var(var).map_err(|_| {
                        self.invalid(format!(
                            "header {key} names the environment variable {var}, which is not set"
                        ))
                    })?;
                    out.push_str(&found);
                    rest = &after[end + 1..];
                }
                out.push_str(rest);
                Ok((key.clone(), out))
            })
            .collect()
    }

    fn invalid(&self, what: String) -> ConfigError {
        ConfigError::Invalid(format!("mcp_servers {:?}: {what}", self.name))
    }

    /// Checks what types cannot; the message names the server and the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        if name.is_empty()
            || name.len() > 32
            || name.contains("__")
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        {
            return Err(self.invalid(
                "name must be 1 to 32 characters of [A-Za-z0-9_-] without \"__\" (its tools are named <name>__<tool>)".into(),
            ));
        }
        match self.transport {
            McpTransport::Stdio if self.command.is_empty() => {
                return Err(self.invalid("transport \"stdio\" needs command".into()));
            }
            McpTransport::Http
                if !(self.url.starts_with("http://") || self.url.starts_with("https://")) =>
            {
                return Err(self.invalid(format!(
                    "transport \"http\" needs a url starting with http:// or https:// (got {:?})",
                    self.url
                )));
            }
            _ => {}
        }
        if self.call_timeout_ms == 0 || self.startup_timeout_ms == 0 {
            return Err(
                self.invalid("call_timeout_ms and startup_timeout_ms must be at least 1".into())
            );
        }
        if self.scope == McpScope::Tenant && self.max_processes == 0 {
            return Err(self.invalid(
                "scope = \"tenant\" needs max_processes of at least 1 (the most tenants served at once, one process each)".into(),
            ));
        }
        self.resolved_headers()?;
        Ok(())
    }
}

/// A configuration problem; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The settings would expose the service unauthenticated.
    #[error("{0}")]
    Insecure(String),
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Checks values that types cannot: the listen address and limits.
    pub fn validate(&self) -> Result<SocketAddr, ConfigError> {
        if self.engine.max_tool_steps == 0 {
            return Err(ConfigError::Invalid(
                "engine.max_tool_steps must be at least 1".into(),
            ));
        }
        if self.engine.default_max_context_tokens < 16 {
            return Err(ConfigError::Invalid(
                "engine.default_max_context_tokens must be at least 16".into(),
            ));
        }
        let mut servers = std::collections::HashSet::new();
        for server in &self.mcp_servers {
            server.validate()?;
            if !servers.insert(server.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "mcp_servers {:?} is declared twice; server names must be unique",
                    server.name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for backend in &self.backends {
            backend.validate()?;
            if !names.insert(backend.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "backend {:?} is declared twice; backend names must be unique",
                    backend.name
                )));
            }
        }
        if self.limits.max_page_size == 0 || self.limits.default_page_size == 0 {
            return Err(ConfigError::Invalid(
                "limits.default_page_size and limits.max_page_size must be at least 1".into(),
            ));
        }
        if self.limits.stream_stall_timeout_ms == 0 || self.limits.stream_buffer_bytes == 0 {
            return Err(ConfigError::Invalid(
                "limits.stream_stall_timeout_ms and limits.stream_buffer_bytes must be at least 1"
                    .into(),
            ));
        }
        self.limits.validate_stored_fields()?;
        self.store_kind()?;
        self.session_ttl()?;
        if self.storage.sweep_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "storage.sweep_interval_ms must be at least 1".into(),
            ));
        }
        for (key, value) in [
            (
                "commit_batch_max_turns",
                self.storage.commit_batch_max_turns,
            ),
            (
                "commit_batch_max_bytes",
                self.storage.commit_batch_max_bytes,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "storage.{key} must be at least 1"
                )));
            }
        }
        if self.http.sse_keep_alive_ms == 0 {
            return Err(ConfigError::Invalid(
                "http.sse_keep_alive_ms must be at least 1".into(),
            ));
        }
        if self.http.websocket_ping_ms == 0 {
            return Err(ConfigError::Invalid(
                "http.websocket_ping_ms must be at least 1".into(),
            ));
        }
        self.http.validate_cors_origins()?;
        if self.mcp.max_resource_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "mcp.max_resource_bytes must be at least 1024".into(),
            ));
        }
        self.validate_connection_limits()?;
        self.auth.validate()?;
        if self.auth.mode == AuthMode::Mtls && self.tls.client_ca_file.is_none() {
            return Err(ConfigError::Invalid(
                "auth.mode = \"mtls\" identifies callers by client certificate: serve TLS with \
                 --tls-cert, --tls-key and --tls-client-ca"
                    .into(),
            ));
        }
        let addr = parse_listen(&self.listen)?;
        if self.auth.mode == AuthMode::None && !addr.ip().is_loopback() && !self.insecure_listen {
            return Err(ConfigError::Insecure(format!(
                "refusing to listen on {addr} without authentication: every process that reaches \
                 it could read, change and delete every conversation. Turn authentication on \
                 (--auth keys, with keys from `contextd keys add`, or --auth mtls), listen on \
                 127.0.0.1, or pass --insecure-listen to serve it unauthenticated anyway"
            )));
        }
        Ok(addr)
    }

    /// Connection limits of 0 would close every connection at once.
    fn validate_connection_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let durations = [
            ("limits.handshake_timeout_ms", limits.handshake_timeout_ms),
            (
                "limits.idle_connection_timeout_ms",
                limits.idle_connection_timeout_ms,
            ),
            ("limits.keepalive_interval_ms", limits.keepalive_interval_ms),
            ("limits.keepalive_timeout_ms", limits.keepalive_timeout_ms),
            (
                "limits.header_read_timeout_ms",
                limits.header_read_timeout_ms,
            ),
            (
                "limits.request_body_timeout_ms",
                limits.request_body_timeout_ms,
            ),
        ];
        for (name, value) in durations {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if limits.max_connections == 0 || limits.max_concurrent_streams == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_connections and limits.max_concurrent_streams must be at least 1"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The store `store` names.
    pub fn store_kind(&self) -> Result<StoreKind, ConfigError> {
        self.store.parse().map_err(ConfigError::Invalid)
    }

    /// The parsed `session_ttl`.
    pub fn session_ttl(&self) -> Result<Option<Duration>, ConfigError> {
        self.session_ttl
            .as_deref()
            .map(|text| {
                parse_duration(text)
                    .map_err(|e| ConfigError::Invalid(format!("invalid session_ttl: {e}")))
            })
            .transpose()
    }
}

/// Which store to use, as `--store` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// Nothing survives the process.
    Memory,
    /// `<data_dir>/contextd.db`.
    Sqlite,
    /// A PostgreSQL database URL (`postgres://user@host:port/db`).
    Postgres(String),
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(StoreKind::Memory),
            "sqlite" => Ok(StoreKind::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreKind::Postgres(url.to_string()))
            }
            other => Err(format!(
                "unknown store {other:?}: use \"sqlite\" (the default, in --data-dir), \"memory\", or a postgres://user@host:port/database URL"
            )),
        }
    }
}

/// Parses a duration such as `500ms`, `90s`, `15m`, `24h` or `7d` (a bare number is seconds).
///
/// ```
/// use std::time::Duration;
/// use contextd::config::parse_duration;
///
/// assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
/// assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || {
        format!("{text:?} is not a duration: use a number with ms, s, m, h or d, such as 30m or 7d")
    };
    let n: u64 = number.parse().map_err(|_| expected())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(expected()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(expected)?;
    if ms == 0 {
        return Err(format!("{text:?} is zero: a time-to-live must be positive"));
    }
    Ok(Duration::from_millis(ms))
}

/// Parses `host:port`, explaining a bad port.
///
/// ```
/// use contextd::config::parse_listen;
///
/// assert_eq!(parse_listen("127.0.0.1:61900").unwrap().port(), 61900);
/// assert_eq!(
///     parse_listen("127.0.0.1:619009").unwrap_err().to_string(),
///     "invalid port 619009: TCP ports are 1-65535 (did you mean 61900?)"
/// );
/// ```
pub fn parse_listen(listen: &str) -> Result<SocketAddr, ConfigError> {
    let Some((host, port)) = listen.rsplit_once(':') else {
        return Err(ConfigError::Invalid(format!(
            "invalid listen address {listen:?}: expected HOST:PORT, for example {DEFAULT_LISTEN}"
        )));
    };
    let port_number: u64 = port.parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "invalid port {port:?} in listen address {listen:?}: expected a number from 1 to 65535"
        ))
    })?;
    if port_number > 65535 {
        let mut suggestion = port_number;
        while suggestion > 65535 {
            suggestion /= 10;
        }
        return Err(ConfigError::Invalid(format!(
            "invalid port {port_number}: TCP ports are 1-65535 (did you mean {suggestion}?)"
        )));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        other => other.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "invalid listen address {listen:?}: {host:?} is not an IP address (use 127.0.0.1, 0.0.0.0 or [::1])"
            ))
        })?,
    };
    Ok(SocketAddr::new(ip, port_number as u16))
}

/// TLS on the listener (`[tls]`). With `cert_file` and `key_file` the port speaks TLS only
/// (plaintext connections are refused); the files are read again on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM (`--tls-cert`, `CONTEXTD_TLS_CERT`), leaf first.
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key, PEM: PKCS#8, PKCS#1 or SEC1 (`--tls-key`,
    /// `CONTEXTD_TLS_KEY`).
    pub key_file: Option<PathBuf>,
    /// CA certificates, PEM, that issue client certificates (`--tls-client-ca`,
    /// `CONTEXTD_TLS_CLIENT_CA`): set, every client must present a certificate one of them
    /// issued (mTLS), and its subject CN and URI SANs name the caller.
    pub client_ca_file: Option<PathBuf>,
}

/// Prometheus metrics (`[metrics]`): `GET /metrics` on the serving port, and optionally on a
/// listener of its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether contextd records metrics at all. Default true. Off, no recorder is installed
    /// (every metric call is a no-op) and `/metrics` answers 404 saying so.
    pub enabled: bool,
    /// A second address (`host:port`) where a plain HTTP listener serves only `GET /metrics`,
    /// for scrapers kept off the API port (`--metrics-listen`, `CONTEXTD_METRICS_LISTEN`).
    /// Default: none (`/metrics` is served on the API port only).
    pub listen: Option<String>,
    /// Whether the RPC metrics carry a `tenant` label. Off by default: every tenant adds a
    /// series per method and code, which a deployment with many tenants cannot afford.
    pub tenant_labels: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            tenant_labels: false,
        }
    }
}

/// OpenTelemetry traces (`[telemetry]`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Where spans are exported over OTLP/gRPC, such as `http://127.0.0.1:4317`
    /// (`--otlp-endpoint`, `CONTEXTD_OTLP_ENDPOINT`). Needs a build with the `otlp` feature.
    /// Default: none (no traces are exported).
    pub otlp_endpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_scope_tenant_needs_a_bound_and_tenants_limit_who_is_served() {
        let mut server = McpServerConfig::stdio("box", "toolbox", &[]);
        server.scope = McpScope::Tenant;
        assert!(server.validate().is_ok());
        server.max_processes = 0;
        let refused = server.validate().unwrap_err().to_string();
        assert!(refused.contains("max_processes"), "{refused}");
        server.tenants = vec!["a".into()];
        assert!(server.serves(&crate::domain::TenantId::new("a")));
        assert!(!server.serves(&crate::domain::TenantId::new("b")));
        server.tenants.clear();
        assert!(server.serves(&crate::domain::TenantId::new("b")));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:61900").unwrap(),
            "127.0.0.1:61900".parse().unwrap()
        );
        assert_eq!(parse_listen("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
        assert_eq!(
            parse_listen("localhost:5").unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        let err = parse_listen("127.0.0.1:619009").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid port 619009: TCP ports are 1-65535 (did you mean 61900?)"
        );
        assert!(parse_listen("nope").is_err());
        assert!(parse_listen("host.example:80").is_err());
    }

    #[test]
    fn file_overrides_defaults() {
        let config: Config = toml::from_str(
            "listen = \"0.0.0.0:7000\"\n[limits]\nmax_message_bytes = 10\n[engine]\nmax_tool_steps = 3\n",
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:7000");
        assert_eq!(config.limits.max_message_bytes, 10);
        assert_eq!(config.limits.max_context_depth, 32);
        assert_eq!(config.engine.max_tool_steps, 3);
        assert!(toml::from_str::<Config>("lisen = 1").is_err());
    }

    #[test]
    fn backends_as_users_write_them() {
        let config: Config = toml::from_str(
            r#"
[[backends]]
name = "local"                      # models are then named "local/<model>"
kind = "openai"                     # or "anthropic"
base_url = "http://127.0.0.1:11434/v1"
api_key_env = "LOCAL_API_KEY"       # optional; the key is read from this variable
context_window = 8192               # tokens, for the window manager

[[backends]]
name = "anthropic"
kind = "anthropic"
api_key_file = "/run/secrets/anthropic"
context_window = 200000
default_model = "claude-sonnet-4-5"
idle_timeout_ms = 5000
"#,
        )
        .unwrap();
        assert_eq!(config.backends.len(), 2);
        assert_eq!(config.backends[0].kind, BackendKind::Openai);
        assert_eq!(config.backends[0].endpoint(), "http://127.0.0.1:11434/v1");
        assert_eq!(config.backends[0].max_retries, 3);
        assert_eq!(
            config.backends[1].endpoint(),
            "https://api.anthropic.com/v1"
        );
        assert_eq!(config.backends[1].idle_timeout_ms, 5000);
        assert!(config.validate().is_ok());

        let typo = toml::from_str::<Config>(
            "[[backends]]\nname = \"x\"\nkind = \"openai\"\napi_key = \"k\"\n",
        );
        assert!(typo.unwrap_err().to_string().contains("api_key"));
        let unknown_kind =
            toml::from_str::<Config>("[[backends]]\nname = \"x\"\nkind = \"gemini\"\n");
        assert!(unknown_kind.is_err());
        let mut twice = config.clone();
        twice.backends[1].name = "local".into();
        assert!(twice.validate().unwrap_err().to_string().contains("twice"));
        let mut echo = config;
        echo.backends[0].name = "echo".into();
        assert!(echo.validate().is_err());
    }

    #[test]
    fn stored_field_and_rate_limits_are_checked_at_start() {
        let config: Config = toml::from_str(
            "[limits]\nmax_system_prompt_bytes = 1000\ntenant_requests_per_second = 20\ntenant_request_burst = 40\nturns_in_flight = 8\n",
        )
        .unwrap();
        assert_eq!(config.limits.max_system_prompt_bytes, 1000);
        assert_eq!(config.limits.tenant_request_burst, 40);
        assert!(config.validate().is_ok());
        for (key, limits) in [
            (
                "limits.max_page_bytes",
                Limits {
                    max_page_bytes: 0,
                    ..Limits::default()
                },
            ),
            (
                "limits.max_tool_name_bytes",
                Limits {
                    max_tool_name_bytes: 65,
                    ..Limits::default()
                },
            ),
            (
                "limits.tenant_request_burst",
                Limits {
                    tenant_request_burst: 10,
                    ..Limits::default()
                },
            ),
        ] {
            let config = Config {
                limits,
                ..Config::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn tls_and_connection_limits_read_from_the_file() {
        let config: Config = toml::from_str(
            "[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nclient_ca_file = \"ca.pem\"\n\
             [limits]\nhandshake_timeout_ms = 300\nmax_connections = 5\n",
        )
        .unwrap();
        assert_eq!(config.tls.cert_file.as_deref(), Some(Path::new("s.pem")));
        assert_eq!(
            config.tls.client_ca_file.as_deref(),
            Some(Path::new("ca.pem"))
        );
        assert_eq!(config.limits.handshake_timeout_ms, 300);
        assert_eq!(config.limits.max_connections, 5);
        assert_eq!(config.limits.max_concurrent_streams, 1024);
        assert!(config.validate().is_ok());
        let mut zero = config;
        zero.limits.idle_connection_timeout_ms = 0;
        let error = zero.validate().unwrap_err().to_string();
        assert!(
            error.contains("limits.idle_connection_timeout_ms"),
            "{error}"
        );
    }
}
