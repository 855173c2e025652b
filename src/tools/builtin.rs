//! The built-in session tools: `context_get`, `context_set` and `history_search`.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{ServerTool, ToolOutput, ToolProvider, ToolScope};
use crate::domain::TenantId;
use crate::domain::measure::measure_context;
use crate::domain::patch::merge_context;
use crate::domain::session::{Context, Message, ToolSpec};
use crate::store::StoreError;

/// Name of the tool that reads the session context.
pub const CONTEXT_GET: &str = "context_get";
/// Name of the tool that merge-patches the session context.
pub const CONTEXT_SET: &str = "context_set";
/// Name of the tool that searches the session's stored history.
pub const HISTORY_SEARCH: &str = "history_search";

/// Default and largest number of `history_search` hits.
const SEARCH_LIMIT_DEFAULT: u64 = 10;
const SEARCH_LIMIT_MAX: u64 = 100;

/// The built-in tools. `context_set` keeps the context within the configured limits.
#[derive(Debug, Clone)]
pub struct BuiltinTools {
    max_context_depth: usize,
    max_context_bytes: usize,
    /// The tools, built (and their schemas compiled) once.
    tools: Vec<ServerTool>,
}

impl BuiltinTools {
    /// Built-in tools that keep contexts within `max_context_depth` levels and
    /// `max_context_bytes` bytes of JSON.
    pub fn new(max_context_depth: usize, max_context_bytes: usize) -> Self {
        Self {
            max_context_depth,
            max_context_bytes,
            tools: builtin_tools(),
        }
    }
}

fn schema(value: Value) -> Context {
    match value {
        Value::Object(map) => map,
        _ => Context::new(),
    }
}

/// The built-in tools' specs, schemas compiled.
fn builtin_tools() -> Vec<ServerTool> {
    let tool = |name: &str, description: &str, input_schema: Value, annotations: Value| {
        ServerTool::new(
            ToolSpec {
                name: name.to_string(),
                description: description.to_string(),
                input_schema: schema(input_schema),
                annotations: schema(annotations),
            },
            true,
        )
        .with_own_annotations()
    };
    // MCP's behaviour hints, true of these tools: they touch nothing outside the session.
    let reads = |title: &str| json!({"title": title, "readOnlyHint": true, "openWorldHint": false});
    vec![
        tool(
            CONTEXT_GET,
            "Read the session's structured context: the whole object, or the value of one top-level key.",
            json!({
                "type": "object",
                "properties": {"key": {"type": "string", "description": "Top-level key to read; omit for the whole context."}},
                "additionalProperties": false
            }),
            reads("Read the session context"),
        ),
        tool(
            CONTEXT_SET,
            "Change the session's structured context with an RFC 7386 JSON Merge Patch: objects merge, null deletes a key.",
            json!({
                "type": "object",
                "properties": {"patch": {"type": "object", "description": "The merge patch to apply."}},
                "required": ["patch"],
                "additionalProperties": false
            }),
            json!({
                "title": "Change the session context",
                "readOnlyHint": false,
                "destructiveHint": true,
                "idempotentHint": true,
                "openWorldHint": false
            }),
        ),
        tool(
            HISTORY_SEARCH,
            "Find earlier messages of this session containing a text (case-insensitive), newest first, including messages that no longer fit the context window.",
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Text to look for."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": SEARCH_LIMIT_MAX, "description": "Most messages to return (default 10)."}
                },
                "required": ["query"],
                "additionalProperties": false
            }),
            reads("Search the session history"),
        ),
    ]
}

#[async_trait]
impl ToolProvider for BuiltinTools {
    fn tools(&self, _tenant: &TenantId) -> Vec<ServerTool> {
        self.tools.clone()
    }

    fn every_tool(&self) -> Vec<ServerTool> {
        self.tools.clone()
    }

    async fn call(&self, name: &str, arguments: &Context, scope: ToolScope<'_>) -> ToolOutput {
        match name {
            CONTEXT_GET => context_get(arguments, scope.context),
            CONTEXT_SET => self.context_set(arguments, scope.context),
            HISTORY_SEARCH => history_search(arguments, &scope).await,
            other => ToolOutput::error(format!("the built-in tools have no tool '{other}'")),
        }
    }
}

fn context_get(arguments: &Context, context: &Context) -> ToolOutput {
    match arguments.get("key") {
        None | Some(Value::Null) => ToolOutput::json(Value::Object(context.clone())),
        Some(Value::String(key)) => match context.get(key) {
            Some(value) => ToolOutput::json(value.clone()),
            None => {
                let keys: Vec<_> = context.keys().map(String::as_str).collect();
                ToolOutput::error(format!(
                    "no key '{key}' in the session context (keys: {})",
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                ))
            }
        },
        Some(_) => ToolOutput::error("'key' must be a string"),
    }
}

impl BuiltinTools {
    fn context_set(&self, arguments: &Context, context: &mut Context) -> ToolOutput {
        let Some(Value::Object(patch)) = arguments.get("patch") else {
            return ToolOutput::error("'patch' must be a JSON object (an RFC 7386 merge patch)");
        };
        let mut updated = context.clone();
        merge_context(&mut updated, patch);
        let (depth, size) = measure_context(&updated);
        if depth > self.max_context_depth {
            return ToolOutput::error(format!(
                "the patched context would be nested {depth} levels deep; at most {} are allowed",
                self.max_context_depth
            ));
        }
        if size > self.max_context_bytes {
            return ToolOutput::error(format!(
                "the patched context would be {size} bytes of JSON; at most {} are allowed",
                self.max_context_bytes
            ));
        }
        *context = updated.clone();
        ToolOutput::json(Value::Object(updated))
    }
}

async fn history_search(arguments: &Context, scope: &ToolScope<'_>) -> ToolOutput {
    let Some(Value::String(query)) = arguments.get("query") else {
        return ToolOutput::error("'query' must be a string");
    };
    if query.is_empty() {
        return ToolOutput::error("'query' must not be empty");
    }
    let limit = match arguments.get("limit") {
        None | Some(Value::Null) => SEARCH_LIMIT_DEFAULT,
        Some(value) => match value.as_u64() {
            Some(n) if (1..=SEARCH_LIMIT_MAX).contains(&n) => n,
            _ => {
                return ToolOutput::error(format!(
                    "'limit' must be an integer from 1 to {SEARCH_LIMIT_MAX}"
                ));
            }
        },
    };
    let stored = match scope
        .store
        .search_messages(scope.tenant, scope.session_id, query, limit as usize)
        .await
    {
        Ok(found) => Ok(found),
        // A session's first turn: nothing of it is stored yet.
        Err(StoreError::NotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    };
    match stored {
        Ok(stored) => {
            // The running turn's own messages come first (they are the newest), matched as
            // the store matches (case-insensitive substring).
            let needle = query.to_lowercase();
            let found: Vec<&Message> = scope
                .turn_messages
                .iter()
                .rev()
                .filter(|m| m.content.to_lowercase().contains(&needle))
                .map(|m| m.as_ref())
                .chain(stored.iter().map(|m| m.as_ref()))
                .take(limit as usize)
                .collect();
            let hits: Vec<Value> = found
                .iter()
                .map(|m| json!({"index": m.index, "role": m.role.as_str(), "content": m.content}))
                .collect();
            let text = if found.is_empty() {
                format!("no message of this session contains '{query}'")
            } else {
                found
                    .iter()
                    .map(|m| format!("#{} {}: {}", m.index, m.role.as_str(), m.content))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            ToolOutput {
                content: text,
                structured: Some(json!({ "messages": hits })),
                is_error: false,
            }
        }
        Err(e) => ToolOutput::error(format!("history search failed: {e}")),
    }
}
