//! `contextd.v1.ToolService`: server-side tools over gRPC (MCP `tools/list`, `tools/call`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::logging::record_session;
use super::scope::caller_scope;
use crate::api::convert::{context_from_wire, structured_to_wire, tool_to_wire};
use crate::api::v1::{self, tool_service_server::ToolService};
use crate::engine::Engine;

/// Implements `ToolService` over the engine.
pub struct ToolApi {
    engine: Arc<Engine>,
}

impl ToolApi {
    /// The service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl ToolService for ToolApi {
    async fn list_tools(
        &self,
        request: Request<v1::ListToolsRequest>,
    ) -> Result<Response<v1::ListToolsResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        let (session_tools, offered_tools) = if r.session_id.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            record_session(&r.session_id);
            let session = self.engine.get_session(&scope, &r.session_id).await?;
            (
                session.tools.iter().map(tool_to_wire).collect(),
                self.engine
                    .offered_tools(&scope.tenant, &session)
                    .into_iter()
                    .map(|tool| tool.name.clone())
                    .collect(),
            )
        };
        Ok(Response::new(v1::ListToolsResponse {
            tools: self
                .engine
                .server_tools(&scope.tenant)
                .iter()
                .map(|tool| tool_to_wire(&tool.spec))
                .collect(),
            session_tools,
            offered_tools,
        }))
    }

    async fn call_tool(
        &self,
        request: Request<v1::CallToolRequest>,
    ) -> Result<Response<v1::CallToolResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument(
                "name is required: the server-side tool to call (see ListTools)",
            ));
        }
        let arguments = context_from_wire("arguments", r.arguments)?;
        let session_id = (!r.session_id.is_empty()).then_some(r.session_id.as_str());
        if let Some(id) = session_id {
            record_session(id);
        }
        let output = self
            .engine
            .call_tool(&scope, &r.name, &arguments, session_id)
            .await?;
        Ok(Response::new(v1::CallToolResponse {
            content: output.content,
            structured_content: structured_to_wire(output.structured.as_ref()),
            is_error: output.is_error,
        }))
    }
}
