//! The `ToolProvider` port and the registry of server-side tools.
//!
//! Server-side tools run inside contextd: the model calls them during a turn (the turn loop
//! continues without the client), and clients call them directly through `ToolService`.
//! Client-declared tools are not here: they live on the session and pause the turn.

pub mod builtin;
pub mod mcp;
pub mod schema;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::domain::TenantId;
use crate::domain::session::{Context, SharedMessage, SharedTool, ToolSpec};
use crate::store::SessionStore;
use schema::CompiledSchema;

/// What a tool returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// Text for the model (and `CallTool.content`).
    pub content: String,
    /// The same result as JSON, when the tool has one.
    pub structured: Option<Value>,
    /// The tool ran and failed; `content` says why.
    pub is_error: bool,
}

impl ToolOutput {
    /// A successful result with a JSON value; the text is the compact JSON.
    pub fn json(value: Value) -> Self {
        Self {
            content: value.to_string(),
            structured: Some(value),
            is_error: false,
        }
    }

    /// A failure the model (or client) can read.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            content: message.into(),
            structured: None,
            is_error: true,
        }
    }
}

/// The session a tool works on. In a turn, `context` is the turn's working copy, so what a
/// tool changes is stored with the turn (or dropped with it).
pub struct ToolScope<'a> {
    /// The tenant the session belongs to (the caller's).
    pub tenant: &'a TenantId,
    /// The session.
    pub session_id: &'a str,
    /// The session's context, writable.
    pub context: &'a mut Context,
    /// The store, for reading the session's stored history.
    pub store: &'a dyn SessionStore,
    /// In a turn: the turn's messages so far, not stored yet (the session itself may not
    /// be stored yet, on its first turn). Empty outside turns.
    pub turn_messages: &'a [SharedMessage],
}

/// A server-side tool, whether it needs a session, and its schema compiled. Built with
/// [`ServerTool::new`], once per listing: cloning it shares the spec and the compiled schema,
/// so a turn that lists the tools it offers copies no schema.
#[derive(Debug, Clone)]
pub struct ServerTool {
    /// Name, description, schema.
    pub spec: SharedTool,
    /// Whether calls must name a session.
    pub needs_session: bool,
    /// `spec.input_schema`, compiled when the tool was built.
    pub schema: CompiledSchema,
    /// Whether contextd vouches for `spec.annotations`: true for its own tools. An MCP
    /// server's annotations are only what that server says, so contextd's MCP doors pass
    /// them on as text in the description, never as annotations of contextd's own (a host
    /// may trust contextd's hints; it should not trust them on another server's word).
    pub own_annotations: bool,
}

impl ServerTool {
    /// The tool `spec`, its schema compiled now.
    pub fn new(spec: ToolSpec, needs_session: bool) -> Self {
        let schema = CompiledSchema::new(&spec.input_schema);
        Self {
            spec: Arc::new(spec),
            needs_session,
            schema,
            own_annotations: false,
        }
    }

    /// The same tool, its annotations contextd's own (see [`ServerTool::own_annotations`]).
    pub fn with_own_annotations(mut self) -> Self {
        self.own_annotations = true;
        self
    }

    /// Checks `arguments` against the tool's `input_schema`; the error is for the model.
    pub fn check_arguments(&self, arguments: &Context) -> Result<(), String> {
        self.schema.check(&self.spec.name, arguments)
    }
}

/// A source of server-side tools.
#[async_trait]
pub trait ToolProvider: Send + Sync {
    /// The tools this provider runs now for `tenant` (a source configured for other tenants
    /// does not exist for this one). May change while the server runs (an MCP server
    /// announces a new list); a provider whose source is down keeps answering the tools it
    /// last knew, and their calls fail with the reason.
    fn tools(&self, tenant: &TenantId) -> Vec<ServerTool>;
    /// Every tool it runs, whichever tenants may use it: for start-up checks that hold for
    /// every tenant (no two sources offering one name).
    fn every_tool(&self) -> Vec<ServerTool>;
    /// Waits until the provider's first discovery finished (a source that failed to start
    /// counts as finished: it keeps being retried). An error stops startup.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
    /// Runs `name` (one of `tools(scope.tenant)`) with `arguments`, already checked against
    /// the tool's `input_schema`.
    async fn call(&self, name: &str, arguments: &Context, scope: ToolScope<'_>) -> ToolOutput;
}

/// All server-side tools, by name. Providers are asked for their tools at every look-up,
/// because an MCP server's list changes while contextd runs; each provider answers from a
/// snapshot it keeps, so a look-up never waits on a server.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    providers: Vec<Arc<dyn ToolProvider>>,
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider. Earlier providers win a name clash.
    pub fn register(&mut self, provider: Arc<dyn ToolProvider>) {
        self.providers.push(provider);
    }

    /// Waits for every provider's first discovery, then checks that no two providers offer
    /// one name (whichever tenants they serve).
    pub async fn ready(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for provider in &self.providers {
            provider.ready().await?;
            for tool in provider.every_tool() {
                if !seen.insert(tool.spec.name.clone()) {
                    return Err(format!(
                        "two tool sources offer a tool named {:?}; rename one",
                        tool.spec.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every server-side tool `tenant` may use, in registration order (a name an earlier
    /// provider has is left out).
    pub fn tools(&self, tenant: &TenantId) -> Vec<ServerTool> {
        let mut lists: Vec<Vec<ServerTool>> =
            self.providers.iter().map(|p| p.tools(tenant)).collect();
        if lists.len() <= 1 {
            // Names are unique within a provider.
            return lists.pop().unwrap_or_default();
        }
        let mut seen = std::collections::HashSet::new();
        lists
            .iter()
            .flatten()
            .filter(|tool| seen.insert(tool.spec.name.as_str()))
            .cloned()
            .collect()
    }

    /// The tool named `name` that `tenant` may use, and its provider.
    pub fn find(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Option<(ServerTool, Arc<dyn ToolProvider>)> {
        self.providers.iter().find_map(|provider| {
            provider
                .tools(tenant)
                .into_iter()
                .find(|tool| tool.spec.name == name)
                .map(|tool| (tool, provider.clone()))
        })
    }

    /// Names of every server-side tool `tenant` may use, comma separated (for error
    /// messages, which name only what the caller may know).
    pub fn known_names(&self, tenant: &TenantId) -> String {
        let tools = self.tools(tenant);
        let names: Vec<&str> = tools.iter().map(|t| t.spec.name.as_str()).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    }
}
