//! `model_context_protocol.Mcp`: Google's MCP gRPC binding on contextd's port, so a client
//! generated from that binding lists and calls contextd's tools and reads its sessions.
//!
//! Decode → one catalogue call → encode; what the tools and resources are lives in
//! [`super::catalog`], shared with `/mcp`. The binding has no notifications, paging or
//! progress, so resources are the newest `mcp.max_listed_resources` sessions and a tool's
//! reply comes whole. Every response says `RESULT_TYPE_COMPLETE` (contextd never asks the
//! client for input). Prompts, resource templates and completions are empty rather than
//! UNIMPLEMENTED, as MCP servers without them answer. gRPC metadata such as
//! `mcp-protocol-version` is accepted and not required: the messages are the same for every
//! version the binding names.

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::catalog::{McpCatalog, McpError, McpTool, McpToolResult, RESOURCE_MIME};
use crate::api::convert::{context_from_wire, context_to_wire};
use crate::api::mcp::{self, mcp_server::Mcp};
use crate::engine::NoSink;
use crate::server::scope::caller_scope;
use crate::server::status::code_of;

/// Implements the binding's `Mcp` service over the catalogue.
pub struct McpGrpc {
    catalog: McpCatalog,
}

impl McpGrpc {
    /// The service over `catalog`.
    pub fn new(catalog: McpCatalog) -> Self {
        Self { catalog }
    }
}

impl From<McpError> for Status {
    fn from(error: McpError) -> Self {
        Status::new(code_of(error.kind()), error.to_string())
    }
}

/// Response fields of a finished request.
fn complete() -> Option<mcp::ResponseFields> {
    Some(mcp::ResponseFields {
        result_type: mcp::ResultType::Complete as i32,
        ..mcp::ResponseFields::default()
    })
}

fn tool_to_wire(tool: McpTool) -> mcp::Tool {
    let title = tool.annotations.get("title").and_then(Value::as_str);
    mcp::Tool {
        title: title.unwrap_or_default().to_string(),
        annotations: annotations_to_wire(&tool.annotations),
        name: tool.name,
        description: tool.description,
        input_schema: Some(context_to_wire(&tool.input_schema)),
        ..mcp::Tool::default()
    }
}

/// MCP's hints in the binding's message. Its fields are plain booleans, so a hint the tool
/// leaves out takes MCP's default (`destructiveHint` and `openWorldHint` true, the others
/// false) rather than the protobuf one.
fn annotations_to_wire(hints: &Map<String, Value>) -> Option<mcp::ToolAnnotations> {
    if hints.is_empty() {
        return None;
    }
    let hint =
        |key: &str, default: bool| hints.get(key).and_then(Value::as_bool).unwrap_or(default);
    Some(mcp::ToolAnnotations {
        title: hints
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        read_only_hint: hint("readOnlyHint", false),
        destructive_hint: hint("destructiveHint", true),
        idempotent_hint: hint("idempotentHint", false),
        open_world_hint: hint("openWorldHint", true),
    })
}

fn result_to_wire(result: McpToolResult) -> mcp::CallToolResponse {
    mcp::CallToolResponse {
        common: complete(),
        content: vec![mcp::call_tool_response::Content {
            text: Some(mcp::TextContent {
                text: result.text,
                ..mcp::TextContent::default()
            }),
            ..Default::default()
        }],
        // MCP's structured content is an object; other JSON results are in the text.
        structured_content: match result.structured {
            Some(serde_json::Value::Object(object)) => Some(context_to_wire(&object)),
            _ => None,
        },
        is_error: result.is_error,
    }
}

#[tonic::async_trait]
impl Mcp for McpGrpc {
    async fn list_resources(
        &self,
        request: Request<mcp::ListResourcesRequest>,
    ) -> Result<Response<mcp::ListResourcesResponse>, Status> {
        let scope = caller_scope(&request)?;
        let resources = self.catalog.resources(&scope).await?;
        Ok(Response::new(mcp::ListResourcesResponse {
            common: complete(),
            resources: resources
                .into_iter()
                .map(|r| mcp::Resource {
                    uri: r.uri,
                    name: r.name,
                    description: r.description,
                    mime_type: RESOURCE_MIME.into(),
                    ..mcp::Resource::default()
                })
                .collect(),
            cache_scope: mcp::CacheScope::Private as i32,
            ..Default::default()
        }))
    }

    async fn read_resource(
        &self,
        request: Request<mcp::ReadResourceRequest>,
    ) -> Result<Response<mcp::ReadResourceResponse>, Status> {
        let scope = caller_scope(&request)?;
        let uri = request.into_inner().uri;
        if uri.is_empty() {
            return Err(Status::invalid_argument(
                "uri is required: a contextd://sessions/{id} from ListResources",
            ));
        }
        let read = self.catalog.read_resource(&scope, &uri).await?;
        Ok(Response::new(mcp::ReadResourceResponse {
            common: complete(),
            resource: vec![mcp::ResourceContents {
                uri: read.uri,
                mime_type: RESOURCE_MIME.into(),
                text: read.text,
                ..Default::default()
            }],
            cache_scope: mcp::CacheScope::Private as i32,
            ..Default::default()
        }))
    }

    async fn list_resource_templates(
        &self,
        _request: Request<mcp::ListResourceTemplatesRequest>,
    ) -> Result<Response<mcp::ListResourceTemplatesResponse>, Status> {
        Ok(Response::new(mcp::ListResourceTemplatesResponse {
            common: complete(),
            ..Default::default()
        }))
    }

    async fn list_prompts(
        &self,
        _request: Request<mcp::ListPromptsRequest>,
    ) -> Result<Response<mcp::ListPromptsResponse>, Status> {
        Ok(Response::new(mcp::ListPromptsResponse {
            common: complete(),
            ..Default::default()
        }))
    }

    async fn get_prompt(
        &self,
        request: Request<mcp::GetPromptRequest>,
    ) -> Result<Response<mcp::GetPromptResponse>, Status> {
        Err(McpError::UnknownPrompt(request.into_inner().name).into())
    }

    async fn list_tools(
        &self,
        request: Request<mcp::ListToolsRequest>,
    ) -> Result<Response<mcp::ListToolsResponse>, Status> {
        let scope = caller_scope(&request)?;
        Ok(Response::new(mcp::ListToolsResponse {
            common: complete(),
            tools: self
                .catalog
                .tools(&scope)
                .into_iter()
                .map(tool_to_wire)
                .collect(),
            ..Default::default()
        }))
    }

    async fn call_tool(
        &self,
        request: Request<mcp::CallToolRequest>,
    ) -> Result<Response<mcp::CallToolResponse>, Status> {
        let scope = caller_scope(&request)?;
        let call = request.into_inner().request.unwrap_or_default();
        if call.name.is_empty() {
            return Err(McpError::MissingToolName.into());
        }
        let arguments = context_from_wire("arguments", call.arguments)?;
        // A client that goes away drops this future, which ends the call; nothing else
        // cancels it.
        let cancel = CancellationToken::new();
        let result = self
            .catalog
            .call_tool(&scope, &call.name, arguments, &mut NoSink, &cancel)
            .await?;
        Ok(Response::new(result_to_wire(result)))
    }

    async fn complete(
        &self,
        _request: Request<mcp::CompletionRequest>,
    ) -> Result<Response<mcp::CompletionResponse>, Status> {
        Ok(Response::new(mcp::CompletionResponse {
            common: complete(),
            ..Default::default()
        }))
    }
}
