//! A Rust client for contextd: the generated tonic clients, and a thin wrapper over them that
//! takes JSON for contexts and returns the generated message types.
//!
//! [`Client`] holds one HTTP/2 connection (cheap to clone; clones share it) and offers one
//! method per operation: sessions ([`Client::create_session`], [`Client::get_session`],
//! [`Client::list_sessions`], [`Client::update_session`], [`Client::delete_session`],
//! [`Client::list_messages`], [`Client::preview_context`]), turns ([`Client::interact`],
//! [`Client::stream_response`], [`Client::converse`]) and server-side tools
//! ([`Client::list_tools`], [`Client::call_tool`]) and models ([`Client::list_models`]). Contexts and tool arguments go in as
//! [`serde_json::Value`] objects; [`context_json`] reads a returned `Struct` back as JSON.
//! Every failure is an [`Error`] whose [`Error::code`] is the gRPC status code.
//!
//! [`Conversation`] is one bidirectional `Converse` stream: send user messages, read typed
//! events, and let a [`ToolHandler`] answer client-side tool calls as they come.
//!
//! The connection is plaintext HTTP/2 (`h2c`) unless [`ConnectOptions::tls`] is given: then
//! it is TLS (rustls), verified against the CA in [`TlsOptions`], with an optional client
//! certificate for servers that require one (`contextd serve --tls-client-ca`).
//!
//! The generated clients are re-exported ([`SessionServiceClient`], [`InteractServiceClient`],
//! [`ToolServiceClient`]) for anything the wrapper does not cover; the messages live in
//! [`crate::api::v1`].
//!
//! # Example
//!
//! ```no_run
//! use contextd::client::{Client, ConnectOptions, context_json};
//! use serde_json::json;
//!
//! # async fn example() -> Result<(), contextd::client::Error> {
//! let client = Client::connect_with(
//!     "127.0.0.1:61900",
//!     ConnectOptions::default().bearer_token("secret"),
//! )
//! .await?;
//! let reply = client
//!     .interact("session_alpha", "Hello, I am John.", Some(json!({"user_id": "john_doe"})))
//!     .await?;
//! println!("{}", reply.response);
//! println!("{}", context_json(reply.updated_context.as_ref())?);
//!
//! // Stream a reply token by token.
//! use futures_util::StreamExt;
//! use contextd::client::StreamEvent;
//! let mut events = client.stream_response("session_alpha", "Tell me more.", None).await?;
//! while let Some(event) = events.next().await {
//!     if let StreamEvent::Delta(delta) = event? {
//!         print!("{}", delta.text);
//!     }
//! }
//!
//! // Converse, answering the client-side tool `get_weather` automatically.
//! use contextd::client::{ConverseOptions, tool_definition};
//! let mut conversation = client
//!     .converse(
//!         ConverseOptions::new("session_tools")
//!             .tool(tool_definition("get_weather", "Weather in a city", json!({"type": "object"}))?),
//!     )
//!     .await?;
//! conversation.set_tool_handler(|call| Ok(format!("sunny ({})", call.name)));
//! let done = conversation
//!     .turn(r#"/call get_weather {"city": "Paris"}"#, None)
//!     .await?;
//! println!("{}", done.response);
//! # Ok(())
//! # }
//! ```

mod conversation;

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::api::convert::{context_from_wire, context_to_wire, value_from_wire};
use crate::api::v1;

pub use conversation::{Conversation, ConverseEvent, ConverseOptions, ToolHandler};
pub use v1::admin_service_client::AdminServiceClient;
pub use v1::interact_service_client::InteractServiceClient;
pub use v1::model_service_client::ModelServiceClient;
pub use v1::session_service_client::SessionServiceClient;
pub use v1::stream_response_response::Event as StreamEvent;
pub use v1::tool_service_client::ToolServiceClient;

/// The address `contextd serve` listens on unless told otherwise.
pub const DEFAULT_TARGET: &str = "127.0.0.1:61900";

/// The transport every wrapper call goes through: the channel with the bearer-token
/// interceptor.
pub type Transport = InterceptedService<Channel, BearerToken>;

/// What went wrong in a client call. [`Error::code`] gives the gRPC status code of any variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made to the target (nothing listens there, or it is not
    /// reachable within the connect timeout).
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The target as given to [`Client::connect`].
        target: String,
        /// What the transport reported.
        #[source]
        source: tonic::transport::Error,
    },
    /// The target or an option cannot be used (a malformed address, a token that is not
    /// valid header text).
    #[error("{0}")]
    Config(String),
    /// An argument was refused before anything was sent (for example a context that is not a
    /// JSON object).
    #[error("{0}")]
    InvalidArgument(String),
    /// The server (or the transport, mid-call) answered with a gRPC status other than OK.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] Status),
    /// The server sent something this client cannot read.
    #[error("unexpected response: {0}")]
    Protocol(String),
}

impl Error {
    /// The gRPC status code: the server's for [`Error::Status`], `UNAVAILABLE` for a failed
    /// connection, `INVALID_ARGUMENT` for refused arguments and options, `INTERNAL` for
    /// responses that cannot be read.
    pub fn code(&self) -> Code {
        match self {
            Error::Connect { .. } => Code::Unavailable,
            Error::Config(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Status(status) => status.code(),
            Error::Protocol(_) => Code::Internal,
        }
    }

    /// The status message: the server's for [`Error::Status`], this error's text otherwise.
    pub fn message(&self) -> String {
        match self {
            Error::Status(status) => status.message().to_string(),
            other => other.to_string(),
        }
    }
}

/// The canonical upper-case name of a gRPC status code, for example `NOT_FOUND`.
pub use crate::api::code_name;

/// How [`Client::connect_with`] connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Sent as `authorization: Bearer <token>` metadata on every call when set.
    pub bearer_token: Option<String>,
    /// How long establishing the connection may take. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// A deadline for every unary call (sent as `grpc-timeout`); streams are not bounded.
    /// Default: none.
    pub timeout: Option<Duration>,
    /// TLS: set, the connection is TLS (the target may be `https://host:port` or
    /// `host:port`). Default: none (plaintext).
    pub tls: Option<TlsOptions>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            bearer_token: None,
            connect_timeout: Duration::from_secs(5),
            timeout: None,
            tls: None,
        }
    }
}

/// How a TLS connection is verified and which certificate the client shows.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// CA certificates (PEM) that issued the server's certificate; only they are trusted.
    pub ca_pem: Vec<u8>,
    /// The client's certificate chain and private key (PEM), for servers that require one.
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry; default: the target's host.
    pub domain_name: Option<String>,
}

impl TlsOptions {
    /// Trusts the CA certificates in `pem`.
    pub fn from_ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_pem: pem.into(),
            client_identity_pem: None,
            domain_name: None,
        }
    }

    /// Trusts the CA certificates in the PEM file `path`.
    pub fn from_ca_file(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        Ok(Self::from_ca_pem(read_pem("the CA file", path.as_ref())?))
    }

    /// Shows this client certificate (PEM chain and key) to the server: mTLS.
    pub fn client_identity_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_identity_pem = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Shows the client certificate in the PEM files `cert` and `key` to the server: mTLS.
    pub fn client_identity_files(
        self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Result<Self, Error> {
        let cert = read_pem("the client certificate file", cert.as_ref())?;
        let key = read_pem("the client key file", key.as_ref())?;
        Ok(self.client_identity_pem(cert, key))
    }

    /// Expects the server's certificate to name `name` instead of the target's host.
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.client_identity_pem {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

/// The bytes of a PEM file, or an [`Error::Config`] naming it.
fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {what} {}: {e}", path.display())))
}

impl ConnectOptions {
    /// Sends `token` as a bearer token on every call.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets a deadline for every unary call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Connects with TLS, verified as `tls` says.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Adds `authorization: Bearer <token>` to every request when a token is configured.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// An interceptor sending `token`, or nothing for `None`. Fails when the token is not
    /// valid header text.
    pub fn new(token: Option<&str>) -> Result<Self, Error> {
        token
            .map(|t| {
                format!("Bearer {t}").parse().map_err(|_| {
                    Error::Config(
                        "the bearer token must be printable ASCII without line breaks".to_string(),
                    )
                })
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The fields of a new session; everything but the id is optional.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// Identifier (1 to 128 characters of `[A-Za-z0-9._:-]`); empty: the server makes one.
    pub session_id: String,
    /// Instructions always shown to the model first.
    pub system_prompt: String,
    /// Initial context, a JSON object.
    pub context: Option<Value>,
    /// Model; empty: the server's default.
    pub model: String,
    /// Tools the client runs itself (see [`tool_definition`]).
    pub tools: Vec<v1::ToolDefinition>,
    /// Free-form labels.
    pub labels: HashMap<String, String>,
    /// Window size in tokens; 0: the model's default.
    pub max_context_tokens: u32,
    /// When the session expires; `None` for the server's idle TTL (if any).
    pub expire_time: Option<prost_types::Timestamp>,
    /// How its context window is managed; `None` for the sliding window.
    pub window: Option<v1::WindowSettings>,
    /// Server-side tools offered to its model: names or `*` patterns such as `time__*`
    /// (`Some(vec![])`: none); `None` for the server's `engine.default_server_tools`.
    pub server_tools: Option<Vec<String>>,
}

impl NewSession {
    /// A session with the given id and server defaults for everything else.
    pub fn new(session_id: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            ..Self::default()
        }
    }
}

/// Changes to a session; fields left `None` (or empty) stay as they are.
#[derive(Debug, Clone, Default)]
pub struct SessionUpdate {
    /// RFC 7386 merge patch for the context: objects merge, `null` deletes a key.
    pub context: Option<Value>,
    /// Replaces the system prompt.
    pub system_prompt: Option<String>,
    /// Replaces the client-declared tools (an empty list removes them all).
    pub tools: Option<Vec<v1::ToolDefinition>>,
    /// Replaces the model.
    pub model: Option<String>,
    /// Replaces the window size (0: the model's default).
    pub max_context_tokens: Option<u32>,
    /// Labels to add or replace.
    pub labels: HashMap<String, String>,
    /// Labels to remove.
    pub remove_labels: Vec<String>,
    /// A new fixed expiry.
    pub expire_time: Option<prost_types::Timestamp>,
    /// New window settings.
    pub window: Option<v1::WindowSettings>,
    /// Replaces the server-side tools offered to the model (names or `*` patterns; an empty
    /// list: none).
    pub server_tools: Option<Vec<String>>,
    /// Forgets the session's own selection of server-side tools, so it is offered the
    /// server's `engine.default_server_tools` again; refused together with `server_tools`.
    pub reset_server_tools: bool,
    /// Applies the change only while the session's `etag` is still this one (from a
    /// [`v1::Session`] read before); `ABORTED` otherwise. `None`: unconditional.
    pub etag: Option<String>,
}

/// The events of one `StreamResponse` turn, in order; `completed` is the last.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, Error>> + Send>>;

/// A connection to contextd with one method per operation. Cloning is cheap and shares the
/// connection.
#[derive(Debug, Clone)]
pub struct Client {
    admin: AdminServiceClient<Transport>,
    sessions: SessionServiceClient<Transport>,
    interact: InteractServiceClient<Transport>,
    tools: ToolServiceClient<Transport>,
    models: ModelServiceClient<Transport>,
    timeout: Option<Duration>,
}

impl Client {
    /// Connects to `target` (`host:port`, or `http://host:port`) with default options.
    pub async fn connect(target: &str) -> Result<Self, Error> {
        Self::connect_with(target, ConnectOptions::default()).await
    }

    /// Connects to `target` (`host:port`, `http://host:port`, or with [`ConnectOptions::tls`]
    /// `https://host:port`). The connection is made now, so an unreachable server fails here
    /// with [`Error::Connect`], and so does a TLS handshake that fails.
    pub async fn connect_with(target: &str, options: ConnectOptions) -> Result<Self, Error> {
        let mut endpoint =
            endpoint(target, options.tls.is_some())?.connect_timeout(options.connect_timeout);
        if let Some(tls) = &options.tls {
            endpoint = endpoint
                .tls_config(tls.tonic_config())
                .map_err(|e| Error::Config(format!("the TLS options cannot be used: {e}")))?;
        }
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            target: target.to_string(),
            source,
        })?;
        Self::from_channel(channel, options)
    }

    /// Wraps a channel made elsewhere (for example one with TLS configured); only the token
    /// and timeout of `options` apply.
    pub fn from_channel(channel: Channel, options: ConnectOptions) -> Result<Self, Error> {
        let token = BearerToken::new(options.bearer_token.as_deref())?;
        Ok(Self {
            admin: AdminServiceClient::with_interceptor(channel.clone(), token.clone()),
            sessions: SessionServiceClient::with_interceptor(channel.clone(), token.clone()),
            interact: InteractServiceClient::with_interceptor(channel.clone(), token.clone()),
            tools: ToolServiceClient::with_interceptor(channel.clone(), token.clone()),
            models: ModelServiceClient::with_interceptor(channel, token),
            timeout: options.timeout,
        })
    }

    /// The generated `SessionService` client on this connection.
    pub fn session_service(&self) -> SessionServiceClient<Transport> {
        self.sessions.clone()
    }

    /// The generated `InteractService` client on this connection.
    pub fn interact_service(&self) -> InteractServiceClient<Transport> {
        self.interact.clone()
    }

    /// The generated `ToolService` client on this connection.
    pub fn tool_service(&self) -> ToolServiceClient<Transport> {
        self.tools.clone()
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(timeout) = self.timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// Creates a session; `ALREADY_EXISTS` when the id is taken.
    pub async fn create_session(&self, session: NewSession) -> Result<v1::Session, Error> {
        let request = v1::CreateSessionRequest {
            session_id: session.session_id,
            system_prompt: session.system_prompt,
            context: patch_to_wire("context", session.context)?,
            model: session.model,
            tools: session.tools,
            labels: session.labels,
            max_context_tokens: session.max_context_tokens,
            expire_time: session.expire_time,
            window: session.window,
            server_tools: session.server_tools.map(server_tools_to_wire),
        };
        let response = self
            .sessions
            .clone()
            .create_session(self.request(request))
            .await?;
        session_of(response.into_inner().session)
    }

    /// Returns a session; `NOT_FOUND` when it does not exist.
    pub async fn get_session(&self, session_id: &str) -> Result<v1::Session, Error> {
        let request = v1::GetSessionRequest {
            session_id: session_id.to_string(),
        };
        let response = self
            .sessions
            .clone()
            .get_session(self.request(request))
            .await?;
        session_of(response.into_inner().session)
    }

    /// One page of sessions ordered by id. `page_size` 0 is the server's default; pass the
    /// previous page's `next_page_token` (empty for the first page).
    pub async fn list_sessions(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<v1::ListSessionsResponse, Error> {
        let request = v1::ListSessionsRequest {
            page_size,
            page_token: page_token.to_string(),
        };
        let response = self
            .sessions
            .clone()
            .list_sessions(self.request(request))
            .await?;
        Ok(response.into_inner())
    }

    /// Changes a session and returns it as it is afterwards.
    pub async fn update_session(
        &self,
        session_id: &str,
        update: SessionUpdate,
    ) -> Result<v1::Session, Error> {
        let request = v1::UpdateSessionRequest {
            session_id: session_id.to_string(),
            context: patch_to_wire("context", update.context)?,
            system_prompt: update.system_prompt,
            tools: update.tools.map(|tools| v1::ToolDefinitionList { tools }),
            model: update.model,
            max_context_tokens: update.max_context_tokens,
            labels: update.labels,
            remove_labels: update.remove_labels,
            expire_time: update.expire_time,
            window: update.window,
            etag: update.etag.unwrap_or_default(),
            server_tools: update.server_tools.map(server_tools_to_wire),
            reset_server_tools: update.reset_server_tools,
        };
        let response = self
            .sessions
            .clone()
            .update_session(self.request(request))
            .await?;
        session_of(response.into_inner().session)
    }

    /// Deletes a session with its history; returns how many messages were deleted.
    pub async fn delete_session(&self, session_id: &str) -> Result<u64, Error> {
        self.delete_session_if(session_id, None).await
    }

    /// Deletes a session only while its `etag` is still `etag` (`ABORTED` when it changed
    /// since it was read); `None` deletes unconditionally. Returns how many messages were
    /// deleted.
    pub async fn delete_session_if(
        &self,
        session_id: &str,
        etag: Option<&str>,
    ) -> Result<u64, Error> {
        let request = v1::DeleteSessionRequest {
            session_id: session_id.to_string(),
            etag: etag.unwrap_or_default().to_string(),
        };
        let response = self
            .sessions
            .clone()
            .delete_session(self.request(request))
            .await?;
        Ok(response.into_inner().deleted_messages)
    }

    /// One page of a session's history, oldest first.
    pub async fn list_messages(
        &self,
        session_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<v1::ListMessagesResponse, Error> {
        let request = v1::ListMessagesRequest {
            session_id: session_id.to_string(),
            page_size,
            page_token: page_token.to_string(),
        };
        let response = self
            .sessions
            .clone()
            .list_messages(self.request(request))
            .await?;
        Ok(response.into_inner())
    }

    /// A session's whole history, oldest first, following every page.
    pub async fn history(&self, session_id: &str) -> Result<Vec<v1::Message>, Error> {
        let mut messages = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list_messages(session_id, 0, &token).await?;
            messages.extend(page.messages);
            if page.next_page_token.is_empty() || page.next_page_token == token {
                return Ok(messages);
            }
            token = page.next_page_token;
        }
    }

    /// What the model would see if `message` (may be empty) were sent now with `context` as
    /// a patch. Changes nothing: a summary the turn would write first shows as a
    /// `PENDING_SUMMARY` entry.
    pub async fn preview_context(
        &self,
        session_id: &str,
        message: &str,
        context: Option<Value>,
    ) -> Result<v1::PreviewContextResponse, Error> {
        self.send_preview(session_id, message, context, false).await
    }

    /// [`Client::preview_context`], but a summary the turn would write first is written now
    /// (a summarizer model call) and kept for the next turn if the session did not change
    /// meanwhile (`summary_kept` says whether it was).
    pub async fn preview_context_summarized(
        &self,
        session_id: &str,
        message: &str,
        context: Option<Value>,
    ) -> Result<v1::PreviewContextResponse, Error> {
        self.send_preview(session_id, message, context, true).await
    }

    async fn send_preview(
        &self,
        session_id: &str,
        message: &str,
        context: Option<Value>,
        summarize: bool,
    ) -> Result<v1::PreviewContextResponse, Error> {
        let request = v1::PreviewContextRequest {
            session_id: session_id.to_string(),
            message: message.to_string(),
            context: patch_to_wire("context", context)?,
            summarize,
        };
        let response = self
            .sessions
            .clone()
            .preview_context(self.request(request))
            .await?;
        Ok(response.into_inner())
    }

    /// Runs one turn: merges `context` (a JSON object, as a merge patch) into the session,
    /// sends `message`, and returns the outcome. Creates the session when it does not exist.
    pub async fn interact(
        &self,
        session_id: &str,
        message: &str,
        context: Option<Value>,
    ) -> Result<v1::InteractResponse, Error> {
        self.interact_idempotent(session_id, message, context, "")
            .await
    }

    /// [`Client::interact`] with an idempotency key: a repeat with the same key on the session
    /// (within the server's `limits.idempotency_window`) gets the first attempt's outcome
    /// instead of a second turn, so a call that failed with UNAVAILABLE or a deadline can be
    /// retried safely. Use a fresh key (a UUID) per new message, the same one for its retries.
    pub async fn interact_idempotent(
        &self,
        session_id: &str,
        message: &str,
        context: Option<Value>,
        idempotency_key: &str,
    ) -> Result<v1::InteractResponse, Error> {
        let request = v1::InteractRequest {
            session_id: session_id.to_string(),
            message: message.to_string(),
            context: patch_to_wire("context", context)?,
            tool_results: Vec::new(),
            idempotency_key: idempotency_key.to_string(),
            abandon_tool_calls: false,
        };
        self.send_interact(request).await
    }

    /// Continues a turn paused for client-side tools with one result per pending call.
    pub async fn submit_tool_results(
        &self,
        session_id: &str,
        results: Vec<v1::ToolResult>,
    ) -> Result<v1::InteractResponse, Error> {
        let request = v1::InteractRequest {
            session_id: session_id.to_string(),
            tool_results: results,
            ..Default::default()
        };
        self.send_interact(request).await
    }

    /// Abandons the turn paused for client-side tools (`abandon_tool_calls`): every pending
    /// call gets the error result "cancelled by the client", the turn ends with
    /// `FINISH_REASON_CANCELLED` without another model step, and the session is idle again.
    /// INVALID_ARGUMENT when the session waits for no tool results. `idempotency_key` makes a
    /// retry safe (see [`Client::interact_idempotent`]); empty for none.
    pub async fn abandon_tool_calls(
        &self,
        session_id: &str,
        idempotency_key: &str,
    ) -> Result<v1::InteractResponse, Error> {
        let request = v1::InteractRequest {
            session_id: session_id.to_string(),
            idempotency_key: idempotency_key.to_string(),
            abandon_tool_calls: true,
            ..Default::default()
        };
        self.send_interact(request).await
    }

    /// One unary `Interact` with this client's metadata.
    async fn send_interact(
        &self,
        request: v1::InteractRequest,
    ) -> Result<v1::InteractResponse, Error> {
        let response = self
            .interact
            .clone()
            .interact(self.request(request))
            .await?;
        Ok(response.into_inner())
    }

    /// Runs one turn like [`Client::interact`], yielding its events as they happen: `started`,
    /// `delta`s, tool events, and `completed` last. Event kinds this client does not know are
    /// skipped.
    pub async fn stream_response(
        &self,
        session_id: &str,
        message: &str,
        context: Option<Value>,
    ) -> Result<EventStream, Error> {
        self.stream_response_idempotent(session_id, message, context, "")
            .await
    }

    /// [`Client::stream_response`] with an idempotency key (see
    /// [`Client::interact_idempotent`]); a repeat replays the stored turn as `started`, the
    /// whole reply as one `delta`, its tool calls and `completed`.
    pub async fn stream_response_idempotent(
        &self,
        session_id: &str,
        message: &str,
        context: Option<Value>,
        idempotency_key: &str,
    ) -> Result<EventStream, Error> {
        let request = v1::StreamResponseRequest {
            session_id: session_id.to_string(),
            message: message.to_string(),
            context: patch_to_wire("context", context)?,
            tool_results: Vec::new(),
            idempotency_key: idempotency_key.to_string(),
            abandon_tool_calls: false,
        };
        self.stream(request).await
    }

    /// Continues a turn paused for client-side tools with one result per pending call,
    /// streaming its events like [`Client::stream_response`].
    pub async fn stream_tool_results(
        &self,
        session_id: &str,
        results: Vec<v1::ToolResult>,
    ) -> Result<EventStream, Error> {
        let request = v1::StreamResponseRequest {
            session_id: session_id.to_string(),
            tool_results: results,
            ..Default::default()
        };
        self.stream(request).await
    }

    /// [`Client::abandon_tool_calls`] as a stream: `started`, then `completed` with
    /// `FINISH_REASON_CANCELLED`.
    pub async fn stream_abandon_tool_calls(
        &self,
        session_id: &str,
        idempotency_key: &str,
    ) -> Result<EventStream, Error> {
        let request = v1::StreamResponseRequest {
            session_id: session_id.to_string(),
            idempotency_key: idempotency_key.to_string(),
            abandon_tool_calls: true,
            ..Default::default()
        };
        self.stream(request).await
    }

    async fn stream(&self, request: v1::StreamResponseRequest) -> Result<EventStream, Error> {
        // The deadline would cut a long stream; streams are bounded by the caller instead.
        // Dropping the stream resets the call, and the server cancels the turn.
        let response = self
            .interact
            .clone()
            .stream_response(Request::new(request))
            .await?;
        let events = response
            .into_inner()
            .filter_map(|item| async move {
                match item {
                    Ok(v1::StreamResponseResponse { event }) => event.map(Ok),
                    Err(status) => Some(Err(Error::Status(status))),
                }
            })
            .boxed();
        Ok(events)
    }

    /// Opens a `Converse` stream on a session (creating it with `options` when it does not
    /// exist) and waits for the server's `opened` answer.
    pub async fn converse(&self, options: ConverseOptions) -> Result<Conversation, Error> {
        Conversation::open(self.interact.clone(), options).await
    }

    /// The models sessions may name, the configured provider backends and the default model.
    pub async fn list_models(&self) -> Result<v1::ListModelsResponse, Error> {
        let response = self
            .models
            .clone()
            .list_models(self.request(v1::ListModelsRequest {}))
            .await?;
        Ok(response.into_inner())
    }

    /// Makes an API key for `tenant_id` (admin keys only) and returns it with its secret,
    /// which the server never shows again. `ttl` `None`: until revoked.
    pub async fn create_key(
        &self,
        tenant_id: &str,
        role: v1::KeyRole,
        label: &str,
        ttl: Option<Duration>,
    ) -> Result<v1::CreateKeyResponse, Error> {
        let ttl = ttl
            .map(|ttl| {
                prost_types::Duration::try_from(ttl)
                    .map_err(|_| Error::Config("the key's ttl is too long".to_string()))
            })
            .transpose()?;
        let request = v1::CreateKeyRequest {
            tenant_id: tenant_id.to_string(),
            role: role as i32,
            label: label.to_string(),
            ttl,
        };
        let response = self.admin.clone().create_key(self.request(request)).await?;
        Ok(response.into_inner())
    }

    /// The API keys (never their secrets): every tenant's, or `tenant_id`'s.
    pub async fn list_keys(&self, tenant_id: Option<&str>) -> Result<Vec<v1::ApiKey>, Error> {
        let request = v1::ListKeysRequest {
            tenant_id: tenant_id.unwrap_or_default().to_string(),
        };
        let response = self.admin.clone().list_keys(self.request(request)).await?;
        Ok(response.into_inner().keys)
    }

    /// Revokes an API key by id; returns it as stored now.
    pub async fn revoke_key(&self, key_id: &str) -> Result<v1::ApiKey, Error> {
        let request = v1::RevokeKeyRequest {
            key_id: key_id.to_string(),
        };
        let response = self.admin.clone().revoke_key(self.request(request)).await?;
        response
            .into_inner()
            .key
            .ok_or_else(|| Error::Status(Status::internal("the reply carried no key")))
    }

    /// The tenants with what they store (a user key: its own tenant only).
    pub async fn list_tenants(&self) -> Result<Vec<v1::TenantUsage>, Error> {
        let response = self
            .admin
            .clone()
            .list_tenants(self.request(v1::ListTenantsRequest {}))
            .await?;
        Ok(response.into_inner().tenants)
    }

    /// Every session of a tenant, each followed by its history (admin keys only).
    pub async fn export_tenant(
        &self,
        tenant_id: &str,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<v1::ExportTenantResponse, Error>> + Send>>, Error>
    {
        let request = v1::ExportTenantRequest {
            tenant_id: tenant_id.to_string(),
        };
        // Unbounded by the unary deadline, like the other streams.
        let response = self
            .admin
            .clone()
            .export_tenant(Request::new(request))
            .await?;
        Ok(response
            .into_inner()
            .map(|r| r.map_err(Error::Status))
            .boxed())
    }

    /// Deletes all of a tenant's sessions and keys (admin keys only).
    pub async fn delete_tenant(&self, tenant_id: &str) -> Result<v1::DeleteTenantResponse, Error> {
        let request = v1::DeleteTenantRequest {
            tenant_id: tenant_id.to_string(),
        };
        let response = self
            .admin
            .clone()
            .delete_tenant(self.request(request))
            .await?;
        Ok(response.into_inner())
    }

    /// The server-side tools, and with `session_id` also that session's client-declared ones.
    pub async fn list_tools(
        &self,
        session_id: Option<&str>,
    ) -> Result<v1::ListToolsResponse, Error> {
        let request = v1::ListToolsRequest {
            session_id: session_id.unwrap_or_default().to_string(),
        };
        let response = self.tools.clone().list_tools(self.request(request)).await?;
        Ok(response.into_inner())
    }

    /// Runs a server-side tool with `arguments` (a JSON object). A tool that runs and fails
    /// answers `is_error = true`; only malformed calls are errors.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        session_id: Option<&str>,
    ) -> Result<v1::CallToolResponse, Error> {
        let request = v1::CallToolRequest {
            name: name.to_string(),
            arguments: patch_to_wire("arguments", Some(arguments))?,
            session_id: session_id.unwrap_or_default().to_string(),
        };
        let response = self.tools.clone().call_tool(self.request(request)).await?;
        Ok(response.into_inner())
    }
}

/// `host:port` or `http://host:port` as an endpoint; anything else is refused with a reason.
fn endpoint(target: &str, tls: bool) -> Result<Endpoint, Error> {
    let scheme = if tls { "https" } else { "http" };
    let url = if target.contains("://") {
        target.to_string()
    } else {
        format!("{scheme}://{target}")
    };
    if url.starts_with("https://") && !tls {
        return Err(Error::Config(format!(
            "target {target:?}: an https:// target needs ConnectOptions::tls (the CA to trust)"
        )));
    }
    if !url.starts_with(&format!("{scheme}://")) {
        return Err(Error::Config(format!(
            "target {target:?}: use `host:port` or `{scheme}://host:port`"
        )));
    }
    Endpoint::from_shared(url)
        .map_err(|e| Error::Config(format!("target {target:?} is not a valid address: {e}")))
}

fn session_of(session: Option<v1::Session>) -> Result<v1::Session, Error> {
    session.ok_or_else(|| Error::Protocol("the response carries no session".to_string()))
}

/// A JSON object as a `Struct` (`None` stays `None`); anything but an object is refused.
pub(crate) fn patch_to_wire(
    what: &str,
    value: Option<Value>,
) -> Result<Option<prost_types::Struct>, Error> {
    match value {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(context_to_wire(&map))),
        Some(other) => Err(Error::InvalidArgument(format!(
            "{what} must be a JSON object, not {}",
            json_kind(&other)
        ))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A returned `Struct` (a context, tool arguments) as a JSON object; absent is `{}`.
pub fn context_json(value: Option<&prost_types::Struct>) -> Result<Value, Error> {
    context_from_wire("context", value.cloned())
        .map(Value::Object)
        .map_err(|e| Error::Protocol(e.to_string()))
}

/// A returned `google.protobuf.Value` (a tool's structured result) as JSON; absent is `null`.
pub fn value_json(value: Option<&prost_types::Value>) -> Result<Value, Error> {
    match value {
        None => Ok(Value::Null),
        Some(v) => value_from_wire("value", v.clone()).map_err(|e| Error::Protocol(e.to_string())),
    }
}

fn server_tools_to_wire(patterns: Vec<String>) -> v1::ServerToolSelection {
    v1::ServerToolSelection { patterns }
}

/// A client-side tool for [`NewSession::tools`] or [`ConverseOptions::tool`]; `input_schema`
/// is a JSON Schema object (`{}` or `{"type": "object"}` accepts any arguments).
pub fn tool_definition(
    name: &str,
    description: &str,
    input_schema: Value,
) -> Result<v1::ToolDefinition, Error> {
    Ok(v1::ToolDefinition {
        name: name.to_string(),
        description: description.to_string(),
        input_schema: patch_to_wire("input_schema", Some(input_schema))?,
        annotations: None,
    })
}

/// A successful tool result answering `call`.
pub fn tool_result(call: &v1::ToolCall, content: impl Into<String>) -> v1::ToolResult {
    v1::ToolResult {
        tool_call_id: call.tool_call_id.clone(),
        content: content.into(),
        is_error: false,
    }
}

/// A failed tool result answering `call`: the model sees `message` as the failure.
pub fn tool_error(call: &v1::ToolCall, message: impl Into<String>) -> v1::ToolResult {
    v1::ToolResult {
        tool_call_id: call.tool_call_id.clone(),
        content: message.into(),
        is_error: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets() {
        assert_eq!(
            endpoint("127.0.0.1:61900", false)
                .unwrap()
                .uri()
                .to_string(),
            "http://127.0.0.1:61900/"
        );
        assert_eq!(
            endpoint("127.0.0.1:61900", true).unwrap().uri().to_string(),
            "https://127.0.0.1:61900/"
        );
        assert!(endpoint("http://localhost:1", false).is_ok());
        assert!(endpoint("https://localhost:1", true).is_ok());
        let err = endpoint("https://example.com", false).unwrap_err();
        assert!(err.to_string().contains("ConnectOptions::tls"), "{err}");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(endpoint("http://localhost:1", true).is_err());
        assert!(endpoint("not a target", false).is_err());
    }

    #[test]
    fn contexts_must_be_objects() {
        assert!(patch_to_wire("context", None).unwrap().is_none());
        let wire = patch_to_wire("context", Some(json!({"a": [1, "x"]})))
            .unwrap()
            .unwrap();
        assert_eq!(context_json(Some(&wire)).unwrap(), json!({"a": [1, "x"]}));
        let err = patch_to_wire("context", Some(json!([1]))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "context must be a JSON object, not an array"
        );
        assert_eq!(context_json(None).unwrap(), json!({}));
    }

    #[test]
    fn bearer_tokens_become_metadata() {
        let mut token = BearerToken::new(Some("abc")).unwrap();
        let request = token.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer abc"
        );
        let mut none = BearerToken::new(None).unwrap();
        assert!(none.call(Request::new(())).unwrap().metadata().is_empty());
        assert!(BearerToken::new(Some("line\nbreak")).is_err());
    }

    #[test]
    fn errors_carry_codes() {
        let err = Error::from(Status::not_found("no session x"));
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.message(), "no session x");
        assert_eq!(err.to_string(), "NOT_FOUND: no session x");
    }
}
