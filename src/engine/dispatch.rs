//! Tool dispatch: which server-side tools a session's model is offered, running one in a
//! turn (on the turn's working context, stored with the turn or dropped with it), and
//! running one directly for `CallTool` (under the session's turn lock, so it never races a
//! turn).

use super::Engine;
use super::error::EngineError;
use super::validate::check_context;
use crate::domain::session::{Context, Session, ToolCall, ToolSpec, validate_session_id};
use crate::domain::{Scope, TenantId};
use crate::tools::{ServerTool, ToolOutput, ToolScope};

impl Engine {
    /// Server-side tools.
    pub fn server_tools(&self) -> Vec<ServerTool> {
        self.tools.tools().cloned().collect()
    }

    /// Tools a session's model is offered: server-side ones, then the client's.
    pub(super) fn offered_tools(&self, session: &Session) -> Vec<ToolSpec> {
        let mut tools: Vec<ToolSpec> = self.tools.tools().map(|t| t.spec.clone()).collect();
        tools.extend(session.tools.iter().cloned());
        tools
    }

    /// Runs a server-side tool directly (not in a turn).
    pub async fn call_tool(
        &self,
        scope: &Scope,
        name: &str,
        arguments: &Context,
        session_id: Option<&str>,
    ) -> Result<ToolOutput, EngineError> {
        check_context("arguments", arguments, &self.limits)?;
        let (tool, provider) = self
            .tools
            .find(name)
            .ok_or_else(|| EngineError::UnknownTool {
                name: name.to_string(),
                known: self.tools.known_names(),
            })?;
        let Some(session_id) = session_id else {
            if tool.needs_session {
                return Err(EngineError::InvalidArgument(format!(
                    "tool '{name}' works on a session: set session_id"
                )));
            }
            let mut scratch = Context::new();
            let tool_scope = ToolScope {
                tenant: &scope.tenant,
                session_id: "",
                context: &mut scratch,
                store: self.store.as_ref(),
            };
            return Ok(provider.call(name, arguments, tool_scope).await);
        };
        validate_session_id(session_id).map_err(EngineError::InvalidArgument)?;
        // Same lock as a turn: a tool that changes the context must not race a turn.
        let _turn = self.lock_session(&scope.tenant, session_id).await?;
        let mut session = self.get_session(scope, session_id).await?;
        let mut context = session.context.clone();
        let output = provider
            .call(
                name,
                arguments,
                ToolScope {
                    tenant: &scope.tenant,
                    session_id,
                    context: &mut context,
                    store: self.store.as_ref(),
                },
            )
            .await;
        if context != session.context {
            let version = session.version;
            session.context = context;
            self.save_change(&scope.tenant, &mut session, version)
                .await?;
        }
        Ok(output)
    }

    /// Runs a server-side tool on the turn's working context.
    pub(super) async fn run_server_tool(
        &self,
        tenant: &TenantId,
        session_id: &str,
        call: &ToolCall,
        context: &mut Context,
    ) -> ToolOutput {
        let Some((_, provider)) = self.tools.find(&call.name) else {
            return ToolOutput::error(format!(
                "unknown tool '{}'; available: {}",
                call.name,
                self.tools.known_names()
            ));
        };
        let scope = ToolScope {
            tenant,
            session_id,
            context,
            store: self.store.as_ref(),
        };
        provider.call(&call.name, &call.arguments, scope).await
    }
}
