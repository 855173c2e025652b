//! Tool dispatch: which server-side tools a session's model is offered (its
//! `server_tools` selection, else `engine.default_server_tools`), checking every call's
//! arguments against the tool's `input_schema` before it runs, running one in a turn (on the
//! turn's working context, stored with the turn or dropped with it), and running one directly
//! for `CallTool` (under the session's turn lock, so it never races a turn).
//!
//! A selection is a list of names or `*` patterns, kept as the client wrote it: a tool an MCP
//! server announces later is offered to every session whose patterns match it. Arguments that
//! break the schema are a tool result with `is_error` (as MCP treats input validation
//! errors), so the model can read what is wrong and retry; they never reach the tool.

use super::Engine;
use super::error::EngineError;
use super::validate::check_context;
use crate::domain::session::{
    Context, ServerToolSelection, Session, SharedMessage, SharedTool, ToolCall, validate_session_id,
};
use crate::domain::{Scope, TenantId};
use crate::tools::{ServerTool, ToolOutput, ToolScope};

/// Longest pattern of a `server_tools` selection, in characters.
const MAX_PATTERN_LEN: usize = 128;

impl Engine {
    /// Server-side tools `tenant` may use (an MCP server configured for other tenants is
    /// not among them).
    pub fn server_tools(&self, tenant: &TenantId) -> Vec<ServerTool> {
        self.tools.tools(tenant)
    }

    /// Waits for every tool source's first discovery (MCP servers listed at start); an error
    /// (two sources offering one name) should stop startup.
    pub async fn tools_ready(&self) -> Result<(), EngineError> {
        self.tools
            .ready()
            .await
            .map_err(EngineError::InvalidArgument)
    }

    /// The patterns of the selection `session` follows: its own, or the server's default.
    fn selection_of<'a>(&'a self, session: &'a Session) -> &'a [String] {
        match &session.server_tools {
            Some(selection) => &selection.patterns,
            None => &self.config.default_server_tools,
        }
    }

    /// Tools a session of `tenant` offers its model: the selected server-side ones that
    /// tenant may use (shared with the registry, not copied), then the client's.
    pub fn offered_tools(&self, tenant: &TenantId, session: &Session) -> Vec<SharedTool> {
        let patterns = self.selection_of(session);
        let mut tools: Vec<SharedTool> = self
            .tools
            .tools(tenant)
            .into_iter()
            .filter(|t| offers(patterns, &t.spec.name))
            .map(|t| t.spec)
            .collect();
        tools.extend(session.tools.iter().cloned().map(SharedTool::new));
        tools
    }

    /// Checks a session's selection: a bounded number of patterns, each matching at least one
    /// server-side tool `tenant` may use (a configured MCP server that is down still counts
    /// with the tools it last listed). The error names only the tools that tenant may know.
    pub(super) fn check_server_tools(
        &self,
        tenant: &TenantId,
        selection: &ServerToolSelection,
    ) -> Result<(), EngineError> {
        let max = self.limits.max_tools;
        if selection.patterns.len() > max {
            return Err(EngineError::InvalidArgument(format!(
                "server_tools has {} patterns; at most {max} are allowed (limits.max_tools)",
                selection.patterns.len()
            )));
        }
        let known = self.tools.tools(tenant);
        for pattern in &selection.patterns {
            if pattern.is_empty() || pattern.chars().count() > MAX_PATTERN_LEN {
                return Err(EngineError::InvalidArgument(format!(
                    "server_tools pattern {pattern:?} must be 1 to {MAX_PATTERN_LEN} characters: a tool name, or a pattern with * such as \"time__*\""
                )));
            }
            if !known.iter().any(|t| pattern_matches(pattern, &t.spec.name)) {
                return Err(EngineError::InvalidArgument(format!(
                    "server_tools pattern {pattern:?} matches no server-side tool; known tools: {}",
                    self.tools.known_names(tenant)
                )));
            }
        }
        Ok(())
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
        let (tool, provider) =
            self.tools
                .find(&scope.tenant, name)
                .ok_or_else(|| EngineError::UnknownTool {
                    name: name.to_string(),
                    known: self.tools.known_names(&scope.tenant),
                })?;
        let Some(session_id) = session_id else {
            if tool.needs_session {
                return Err(EngineError::InvalidArgument(format!(
                    "tool '{name}' works on a session: set session_id"
                )));
            }
            if let Err(violation) = check_arguments(&tool, arguments) {
                return Ok(ToolOutput::error(violation));
            }
            let mut scratch = Context::new();
            let tool_scope = ToolScope {
                tenant: &scope.tenant,
                session_id: "",
                context: &mut scratch,
                store: self.store.as_ref(),
                turn_messages: &[],
            };
            return Ok(provider.call(name, arguments, tool_scope).await);
        };
        validate_session_id(session_id).map_err(EngineError::InvalidArgument)?;
        // Same lock as a turn: a tool that changes the context must not race a turn.
        let _turn = self.lock_session(&scope.tenant, session_id).await?;
        let mut session = self.get_session(scope, session_id).await?;
        if let Err(violation) = check_arguments(&tool, arguments) {
            return Ok(ToolOutput::error(violation));
        }
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
                    turn_messages: &[],
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

    /// Runs a server-side tool on the turn's working context. Dropping the future (the
    /// turn's cancel or deadline) abandons the call; the provider tells its server.
    pub(super) async fn run_server_tool(
        &self,
        tenant: &TenantId,
        session_id: &str,
        call: &ToolCall,
        context: &mut Context,
        turn_messages: &[SharedMessage],
    ) -> ToolOutput {
        let Some((tool, provider)) = self.tools.find(tenant, &call.name) else {
            super::turn_metrics::tool_call("unknown", true);
            return ToolOutput::error(format!(
                "unknown tool '{}'; available: {}",
                call.name,
                self.tools.known_names(tenant)
            ));
        };
        if let Err(violation) = check_arguments(&tool, &call.arguments) {
            super::turn_metrics::tool_call(&call.name, true);
            return ToolOutput::error(violation);
        }
        let scope = ToolScope {
            tenant,
            session_id,
            context,
            store: self.store.as_ref(),
            turn_messages,
        };
        let span = tracing::info_span!("tool.call", tool = %call.name, call_id = %call.id);
        let output = tracing::Instrument::instrument(
            provider.call(&call.name, &call.arguments, scope),
            span,
        )
        .await;
        super::turn_metrics::tool_call(&call.name, output.is_error);
        output
    }
}

/// Whether `selection` offers the tool `name`.
fn offers(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| pattern_matches(p, name))
}

/// Whether `pattern` (where `*` stands for any run of characters, possibly none) matches the
/// whole of `name`.
pub(crate) fn pattern_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let Some((last, middle)) = rest.split_last() else {
        // No `*`: the name itself.
        return pattern == name;
    };
    let Some(mut tail) = name.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match tail.find(part) {
            // The leftmost match leaves the most room for the parts after it.
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.ends_with(last)
}

/// Checks `arguments` against the tool's `input_schema`, compiled when the tool was listed
/// (see [`crate::tools::schema`]).
fn check_arguments(tool: &ServerTool, arguments: &Context) -> Result<(), String> {
    tool.check_arguments(arguments)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::domain::session::ToolSpec;

    use super::*;

    #[test]
    fn patterns_match_whole_names() {
        assert!(pattern_matches("context_get", "context_get"));
        assert!(!pattern_matches("context_get", "context_get2"));
        assert!(pattern_matches("time__*", "time__get_current_time"));
        assert!(!pattern_matches("time__*", "everything__echo"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("*__echo", "everything__echo"));
        assert!(!pattern_matches("*__echo", "everything__echo2"));
        assert!(pattern_matches("a*b*c", "abc"));
        assert!(pattern_matches("a*b*c", "a-b-b-c"));
        assert!(!pattern_matches("a*b*c", "a-c-b"));
        // The prefix and the suffix may not share characters.
        assert!(!pattern_matches("ab*ba", "aba"));
        let patterns = ["context_*".to_string(), "history_search".to_string()];
        assert!(offers(&patterns, "context_set"));
        assert!(offers(&patterns, "history_search"));
        assert!(!offers(&patterns, "time__get_current_time"));
        assert!(!offers(&[], "context_get"));
    }

    fn tool(schema: Value) -> ServerTool {
        ServerTool::new(
            ToolSpec {
                name: "t".into(),
                description: String::new(),
                input_schema: schema.as_object().cloned().unwrap_or_default(),
                annotations: Default::default(),
            },
            false,
        )
    }

    fn args(value: Value) -> Context {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let t = tool(json!({
            "type": "object",
            "properties": {"key": {"type": "string"}},
            "additionalProperties": false
        }));
        assert!(check_arguments(&t, &args(json!({"key": "a"}))).is_ok());
        assert!(check_arguments(&t, &args(json!({}))).is_ok());
        let extra = check_arguments(&t, &args(json!({"city": "Paris"}))).unwrap_err();
        assert!(extra.contains("'t'") && extra.contains("city"), "{extra}");
        let wrong = check_arguments(&t, &args(json!({"key": 3}))).unwrap_err();
        assert!(
            wrong.contains("/key") && wrong.contains("string"),
            "{wrong}"
        );
        // No schema: any object.
        assert!(check_arguments(&tool(json!({})), &args(json!({"x": 1}))).is_ok());
        // A schema that cannot be compiled refuses the call rather than running it unchecked.
        let broken = tool(json!({"type": 12}));
        assert!(check_arguments(&broken, &args(json!({}))).is_err());
    }

    #[test]
    fn many_violations_are_counted_not_all_listed() {
        let t = tool(json!({"type": "object", "additionalProperties": {"type": "string"}}));
        let arguments: Context = (0..8).map(|i| (format!("k{i}"), json!(i))).collect();
        let message = check_arguments(&t, &arguments).unwrap_err();
        assert!(message.ends_with("; and 3 more"), "{message}");
    }
}
