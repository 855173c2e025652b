//! `/mcp`: contextd as an MCP server over Streamable HTTP, with the official SDK (`rmcp`), on
//! the same router as the HTTP/JSON doors.
//!
//! Stateless: no MCP session is held between requests (`legacy_session_mode` off), so any
//! replica answers any request and nothing outlives a POST. The tools and resources are
//! [`super::catalog`]'s, as on the gRPC binding. `contextd_interact` streams the reply as
//! `notifications/progress` when the host sends a progress token (the POST's answer is then
//! an event stream); without one the reply comes as one JSON answer.
//!
//! DNS-rebinding protection is on: `Host` must be a loopback name (or one of
//! `mcp.allowed_hosts`), and a browser's `Origin` must be a loopback origin (or one of
//! `mcp.allowed_origins`); anything else is refused with 403 before it reaches a handler.
//! The caller's scope comes from the request's headers, as on every HTTP door. A host's
//! `notifications/cancelled` stops the call it names ([`super::cancel`]).

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    GetPromptRequestParams, GetPromptResponse, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::tower::StreamableHttpServerConfig;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::json;

use super::cancel::{CancelBridge, InFlight};
use super::catalog::{McpCatalog, McpError, RESOURCE_MIME};
use crate::api::code_name;
use crate::config::McpConfig;
use crate::domain::Scope;
use crate::engine::{ErrorKind, SinkClosed, TurnEvent, TurnSink};
use crate::server::scope::scope_of_extensions;
use crate::server::status::code_of;
use crate::telemetry::request_id::{self, RequestId};

/// The path `/mcp` is served on.
pub const MCP_PATH: &str = "/mcp";

/// Host names every `/mcp` request may name in `Host` (any port).
const LOOPBACK_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "::1", "[::1]"];
/// Browser origins `/mcp` always accepts (any port).
const LOOPBACK_ORIGINS: [&str; 6] = [
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://[::1]:*",
    "https://[::1]:*",
];

/// The tower service that serves `/mcp` (for axum's `route_service`): the SDK's, behind the
/// bridge that bounds request bodies and honours `notifications/cancelled`.
pub type McpHttpService = CancelBridge<StreamableHttpService<McpHandler, NeverSessionManager>>;

/// The `/mcp` service over `catalog`, configured by `config` (allowed hosts and origins) and
/// bounded to `max_request_bytes` per request.
pub fn mcp_service(
    catalog: McpCatalog,
    config: &McpConfig,
    max_request_bytes: usize,
) -> McpHttpService {
    let handler = McpHandler {
        catalog: Arc::new(catalog),
    };
    let hosts: Vec<String> = LOOPBACK_HOSTS
        .iter()
        .map(|h| h.to_string())
        .chain(config.allowed_hosts.iter().cloned())
        .collect();
    let origins: Vec<String> = LOOPBACK_ORIGINS
        .iter()
        .map(|o| o.to_string())
        .chain(config.allowed_origins.iter().cloned())
        .collect();
    let http = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(max_request_bytes);
    CancelBridge::new(
        StreamableHttpService::new(
            move || Ok(handler.clone()),
            Arc::new(NeverSessionManager::default()),
            http,
        ),
        max_request_bytes,
    )
}

/// The MCP server handler: decode → one catalogue call → encode.
#[derive(Clone)]
pub struct McpHandler {
    catalog: Arc<McpCatalog>,
}

/// The one table from error kinds to MCP (JSON-RPC) errors. The gRPC code's name goes in
/// `data.status`, so a host sees the same kind as a gRPC client would.
fn error_data(error: McpError) -> ErrorData {
    let kind = error.kind();
    let code = match (kind, &error) {
        // MCP answers an unknown tool as invalid params, like any bad request argument.
        (ErrorKind::NotFound, McpError::UnknownTool { .. }) => ErrorCode::INVALID_PARAMS,
        (ErrorKind::NotFound, _) => ErrorCode::RESOURCE_NOT_FOUND,
        (ErrorKind::InvalidArgument, _) => ErrorCode::INVALID_PARAMS,
        (ErrorKind::Unimplemented, _) => ErrorCode::METHOD_NOT_FOUND,
        (
            ErrorKind::AlreadyExists
            | ErrorKind::Aborted
            | ErrorKind::FailedPrecondition
            | ErrorKind::Unavailable
            | ErrorKind::ResourceExhausted
            | ErrorKind::DeadlineExceeded
            | ErrorKind::Cancelled
            | ErrorKind::Unauthenticated
            | ErrorKind::PermissionDenied
            | ErrorKind::Internal,
            _,
        ) => ErrorCode::INTERNAL_ERROR,
    };
    ErrorData::new(
        code,
        error.to_string(),
        Some(json!({"status": code_name(code_of(kind))})),
    )
}

/// One `/mcp` request: its log span (with the call's request id, so every line logged while
/// it runs names it, and an `rpc done` line at its end like every RPC's) and its metrics,
/// under the MCP gRPC binding's method name (the RPC metrics' method label is a gRPC method
/// on every door).
struct McpCall {
    method: &'static str,
    started: std::time::Instant,
    span: tracing::Span,
    request_id: RequestId,
}

impl McpCall {
    fn start(method: &'static str, context: &RequestContext<RoleServer>) -> Self {
        let request_id = context
            .extensions
            .get::<http::request::Parts>()
            .map(|parts| RequestId::from_header(parts.headers.get(request_id::HEADER)))
            .unwrap_or_else(RequestId::generate);
        let span = tracing::info_span!(
            "rpc",
            method = %format_args!("model_context_protocol.Mcp/{method}"),
            door = %"mcp",
            request_id = %request_id,
            session = tracing::field::Empty,
        );
        Self {
            method,
            started: std::time::Instant::now(),
            span,
            request_id,
        }
    }

    async fn run<T>(
        self,
        work: impl Future<Output = Result<T, ErrorData>>,
    ) -> Result<T, ErrorData> {
        use tracing::Instrument;
        let result = request_id::scope(self.request_id, work.instrument(self.span.clone())).await;
        let code = counted(self.method, self.started, &result);
        let _entered = self.span.enter();
        tracing::info!(
            code,
            latency_ms = format!("{:.2}", self.started.elapsed().as_secs_f64() * 1000.0),
            "rpc done"
        );
        result
    }
}

/// Counts one `/mcp` request; returns its code.
fn counted<T>(method: &str, started: std::time::Instant, result: &Result<T, ErrorData>) -> String {
    let code = match result {
        Ok(_) => "OK".to_owned(),
        Err(error) => error
            .data
            .as_ref()
            .and_then(|data| data.get("status"))
            .and_then(|status| status.as_str())
            .unwrap_or("UNKNOWN")
            .to_owned(),
    };
    crate::telemetry::metrics::rpc_done(
        &format!("model_context_protocol.Mcp/{method}"),
        &code,
        None,
        started.elapsed().as_secs_f64(),
    );
    code
}

/// The caller's scope, from the HTTP request the SDK hands along.
fn scope_of(context: &RequestContext<RoleServer>) -> Result<Scope, ErrorData> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| scope_of_extensions(&parts.extensions))
        // The authentication layer refuses such requests before they get here.
        .ok_or_else(|| {
            ErrorData::new(
                ErrorCode::INVALID_REQUEST,
                crate::auth::AuthError::Missing.to_string(),
                Some(json!({"status": "UNAUTHENTICATED"})),
            )
        })
}

/// Sends a turn's reply text to the host as progress notifications, one per delta.
struct ProgressSink {
    peer: Peer<RoleServer>,
    token: ProgressToken,
    sent: u32,
}

impl TurnSink for ProgressSink {
    async fn emit(&mut self, event: TurnEvent) -> Result<(), SinkClosed> {
        let TurnEvent::Delta(text) = event else {
            return Ok(());
        };
        self.sent += 1;
        self.peer
            .notify_progress(
                ProgressNotificationParam::new(self.token.clone(), f64::from(self.sent))
                    .with_message(text),
            )
            .await
            // The host went away: stop the turn.
            .map_err(|_| SinkClosed)
    }
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .enable_completions()
                .build(),
        )
        .with_server_info(rmcp::model::Implementation::new(
            "contextd",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "contextd keeps LLM conversations. contextd_interact sends a message to a session \
             (created when missing) and answers the reply; the other tools read and change a \
             session's context and history; every session is a resource \
             contextd://sessions/{id}.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let call = McpCall::start("ListTools", &context);
        call.run(async move {
            let tools = self
                .catalog
                .tools(&scope_of(&context)?)
                .into_iter()
                .map(|t| {
                    let tool = Tool::new(t.name, t.description, Arc::new(t.input_schema));
                    if t.annotations.is_empty() {
                        return tool;
                    }
                    // Annotations that do not have MCP's shape are left out, not guessed at.
                    match serde_json::from_value(serde_json::Value::Object(t.annotations)) {
                        Ok(annotations) => tool.annotate(annotations),
                        Err(_) => tool,
                    }
                })
                .collect();
            Ok::<ListToolsResult, ErrorData>(ListToolsResult::with_all_items(tools))
        })
        .await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = McpCall::start("CallTool", &context);
        call.run(async move {
            let scope = scope_of(&context)?;
            let arguments = request.arguments.unwrap_or_default();
            // Cancelled when the SDK cancels the request (the host left) or when the host
            // sends `notifications/cancelled` for it (see `super::cancel`).
            let cancel = context.ct.child_token();
            let _registered = context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Arc<InFlight>>())
                .zip(serde_json::to_value(&context.id).ok())
                .map(|(in_flight, id)| in_flight.register(&scope.tenant, &id, cancel.clone()));
            let result = match context.meta.get_progress_token() {
                Some(token) => {
                    let mut sink = ProgressSink {
                        peer: context.peer.clone(),
                        token,
                        sent: 0,
                    };
                    self.catalog
                        .call_tool(&scope, &request.name, arguments, &mut sink, &cancel)
                        .await
                }
                None => {
                    self.catalog
                        .call_tool(
                            &scope,
                            &request.name,
                            arguments,
                            &mut crate::engine::NoSink,
                            &cancel,
                        )
                        .await
                }
            }
            .map_err(error_data)?;
            let content = vec![ContentBlock::text(result.text)];
            let mut reply = if result.is_error {
                CallToolResult::error(content)
            } else {
                CallToolResult::success(content)
            };
            // MCP's structured content is an object; other JSON results are in the text.
            if let Some(structured @ serde_json::Value::Object(_)) = result.structured {
                reply.structured_content = Some(structured);
            }
            Ok::<CallToolResponse, ErrorData>(reply.into())
        })
        .await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let call = McpCall::start("ListResources", &context);
        call.run(async move {
            let resources = self
                .catalog
                .resources(&scope_of(&context)?)
                .await
                .map_err(error_data)?;
            Ok::<ListResourcesResult, ErrorData>(ListResourcesResult::with_all_items(
                resources
                    .into_iter()
                    .map(|r| {
                        Resource::new(r.uri, r.name)
                            .with_description(r.description)
                            .with_mime_type(RESOURCE_MIME)
                    })
                    .collect(),
            ))
        })
        .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let call = McpCall::start("ReadResource", &context);
        call.run(async move {
            let read = self
                .catalog
                .read_resource(&scope_of(&context)?, &request.uri)
                .await
                .map_err(error_data)?;
            Ok::<ReadResourceResponse, ErrorData>(
                ReadResourceResult::new(vec![
                    ResourceContents::text(read.text, read.uri).with_mime_type(RESOURCE_MIME),
                ])
                .into(),
            )
        })
        .await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        Err(error_data(McpError::UnknownPrompt(
            request.name.to_string(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;

    #[test]
    fn errors_map_through_one_table() {
        let unknown_tool = error_data(McpError::UnknownTool {
            name: "x".into(),
            known: "a".into(),
        });
        assert_eq!(unknown_tool.code, ErrorCode::INVALID_PARAMS);
        assert_eq!(unknown_tool.data, Some(json!({"status": "NOT_FOUND"})));
        let missing = error_data(McpError::UnknownResource("contextd://sessions/x".into()));
        assert_eq!(missing.code, ErrorCode::RESOURCE_NOT_FOUND);
        let busy = error_data(McpError::Engine(EngineError::ShuttingDown));
        assert_eq!(busy.code, ErrorCode::INTERNAL_ERROR);
        assert_eq!(busy.data, Some(json!({"status": "UNAVAILABLE"})));
    }
}
