//! What contextd offers an MCP host, in MCP's terms but no protocol's encoding: the tools
//! (every server-side tool of the engine, plus `contextd_interact`), the sessions as
//! resources (`contextd://sessions/{id}`), and how a tool call or a resource read runs.
//!
//! Both MCP doors (the gRPC binding in [`super::grpc`] and Streamable HTTP in
//! [`super::server`]) are thin encoders over this one catalogue, so they list the same tools
//! and answer the same results. It asks the engine for the tools on every listing, so tools
//! the engine's registry gains show up here without a change.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::McpConfig;
use crate::domain::Scope;
use crate::domain::session::{Context, FinishReason, Message, Session, ToolCall, ToolSpec};
use crate::engine::{Engine, EngineError, ErrorKind, Lifecycle, TurnRequest, TurnSink};

/// The tool that hands a message to a contextd session and answers the reply.
pub const INTERACT_TOOL: &str = "contextd_interact";
/// The scheme and path of session resources: `contextd://sessions/{id}`.
pub const SESSION_URI_PREFIX: &str = "contextd://sessions/";
/// The argument that names the session of a tool that works on one.
const SESSION_ARGUMENT: &str = "session_id";
/// MIME type of every resource text.
pub const RESOURCE_MIME: &str = "application/json";

/// A tool as MCP lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// Its name (what `tools/call` names).
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments (an object schema).
    pub input_schema: Map<String, Value>,
    /// MCP's `ToolAnnotations` as JSON (`title`, `readOnlyHint`, ...) that contextd vouches
    /// for: its own tools' (another MCP server's hints are in `description`). Empty when
    /// there are none.
    pub annotations: Map<String, Value>,
}

/// A tool's result as MCP answers it: execution failures are results with `is_error`, so
/// the host's model can read them and retry.
#[derive(Debug, Clone, PartialEq)]
pub struct McpToolResult {
    /// Text content.
    pub text: String,
    /// The same result as JSON, when there is one.
    pub structured: Option<Value>,
    /// The tool ran (or was asked to run) and failed; `text` says why.
    pub is_error: bool,
}

impl McpToolResult {
    fn error(message: impl Into<String>) -> Self {
        Self {
            text: message.into(),
            structured: None,
            is_error: true,
        }
    }
}

/// A session as a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionResource {
    /// `contextd://sessions/{id}`.
    pub uri: String,
    /// The session id.
    pub name: String,
    /// One line about it (model, message count).
    pub description: String,
}

/// A read resource's text.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceText {
    /// The URI read.
    pub uri: String,
    /// The JSON document.
    pub text: String,
}

/// Why an MCP request could not be answered at all (as opposed to a tool that failed, which
/// is an [`McpToolResult`] with `is_error`).
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The engine refused the request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A tool call without a tool name.
    #[error("the tool name is required: name one of tools/list (ListTools)")]
    MissingToolName,
    /// A tool that does not exist.
    #[error("unknown tool '{name}'; available: {known}")]
    UnknownTool {
        /// The name asked for.
        name: String,
        /// Every tool's name, comma separated.
        known: String,
    },
    /// A resource URI that names no session of the caller.
    #[error(
        "no resource '{0}': contextd's resources are contextd://sessions/{{id}} (see resources/list)"
    )]
    UnknownResource(String),
    /// contextd has no prompts.
    #[error("no prompt '{0}': contextd offers no prompts")]
    UnknownPrompt(String),
}

impl McpError {
    /// The protocol-neutral kind, which each door maps in its one table.
    pub fn kind(&self) -> ErrorKind {
        match self {
            McpError::Engine(e) => e.kind(),
            McpError::MissingToolName => ErrorKind::InvalidArgument,
            McpError::UnknownTool { .. }
            | McpError::UnknownResource(_)
            | McpError::UnknownPrompt(_) => ErrorKind::NotFound,
        }
    }
}

/// The catalogue over one engine.
#[derive(Clone)]
pub struct McpCatalog {
    engine: Arc<Engine>,
    lifecycle: Lifecycle,
    config: McpConfig,
}

impl McpCatalog {
    /// The catalogue of `engine`, bounded by `config`; `contextd_interact` turns follow
    /// `lifecycle` (refused while draining, cancelled on close).
    pub fn new(engine: Arc<Engine>, lifecycle: Lifecycle, config: McpConfig) -> Self {
        Self {
            engine,
            lifecycle,
            config,
        }
    }

    /// Every tool `scope`'s tenant may use: the engine's server-side tools (those that work
    /// on a session take a required `session_id` argument), then `contextd_interact`.
    pub fn tools(&self, scope: &Scope) -> Vec<McpTool> {
        let mut tools: Vec<McpTool> = self
            .engine
            .server_tools(&scope.tenant)
            .into_iter()
            .map(|tool| {
                // The listing's own copy: the spec stays shared with the registry.
                let ToolSpec {
                    name,
                    mut description,
                    mut input_schema,
                    mut annotations,
                } = Arc::unwrap_or_clone(tool.spec);
                if tool.needs_session {
                    add_session_argument(&mut input_schema);
                }
                if !tool.own_annotations && !annotations.is_empty() {
                    // Another server's word: shown to the host, not asserted by contextd.
                    let hints = Value::Object(std::mem::take(&mut annotations));
                    description.push_str(&format!("\n(server hints: {hints})"));
                }
                McpTool {
                    name,
                    description,
                    input_schema,
                    annotations,
                }
            })
            .collect();
        tools.push(interact_tool());
        tools
    }

    /// Runs tool `name`. Reply text of `contextd_interact` goes to `sink` as it is produced
    /// (a door that streams progress passes a sink that sends it); the call stops when
    /// `cancel` fires. Only a missing or unknown tool name is an error: everything that goes
    /// wrong while running the tool is a result with `is_error`.
    pub async fn call_tool<S: TurnSink>(
        &self,
        scope: &Scope,
        name: &str,
        arguments: Context,
        sink: &mut S,
        cancel: &CancellationToken,
    ) -> Result<McpToolResult, McpError> {
        if name.is_empty() {
            return Err(McpError::MissingToolName);
        }
        if name == INTERACT_TOOL {
            let _ticket = self.lifecycle.begin_turn(&scope.tenant)?;
            return Ok(self.interact(scope, arguments, sink, cancel).await);
        }
        let Some(tool) = self
            .engine
            .server_tools(&scope.tenant)
            .into_iter()
            .find(|t| t.spec.name == name)
        else {
            return Err(McpError::UnknownTool {
                name: name.to_string(),
                known: self.known_names(scope),
            });
        };
        let mut arguments = arguments;
        let session_id = if tool.needs_session {
            match arguments.remove(SESSION_ARGUMENT) {
                Some(Value::String(id)) => Some(id),
                Some(other) => {
                    return Ok(McpToolResult::error(format!(
                        "session_id must be a string (the session the tool works on), not {other}"
                    )));
                }
                None => {
                    return Ok(McpToolResult::error(format!(
                        "tool '{name}' works on a session: set the session_id argument"
                    )));
                }
            }
        } else {
            None
        };
        let call = self
            .engine
            .call_tool(scope, name, &arguments, session_id.as_deref());
        let output = tokio::select! {
            output = call => output,
            () = cancel.cancelled() => Err(EngineError::Cancelled),
        };
        match output {
            Ok(output) => Ok(McpToolResult {
                text: output.content,
                structured: output.structured,
                is_error: output.is_error,
            }),
            Err(EngineError::UnknownTool { name, known }) => {
                Err(McpError::UnknownTool { name, known })
            }
            Err(e) => Ok(McpToolResult::error(e.to_string())),
        }
    }

    /// `contextd_interact`: one turn on the named session (created when missing).
    async fn interact<S: TurnSink>(
        &self,
        scope: &Scope,
        mut arguments: Context,
        sink: &mut S,
        cancel: &CancellationToken,
    ) -> McpToolResult {
        let request = match interact_request(&mut arguments) {
            Ok(request) => request,
            Err(message) => return McpToolResult::error(message),
        };
        // The turn ends on the caller's cancel or the server's close, whichever comes first,
        // and is then not stored.
        let turn_cancel = self.lifecycle.turn_token();
        let run = self.engine.run_turn(scope, request, sink, &turn_cancel);
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            () = cancel.cancelled() => {
                turn_cancel.cancel();
                run.await
            }
        };
        match result {
            Ok(outcome) => {
                let structured = json!({
                    "session_id": outcome.session_id,
                    "turn_id": outcome.turn_id,
                    "response": outcome.response,
                    "context": Value::Object(outcome.context),
                    "finish_reason": finish_name(outcome.finish),
                    "tool_calls": outcome.tool_calls.iter().map(tool_call_json).collect::<Vec<_>>(),
                    "session_created": outcome.session_created,
                });
                McpToolResult {
                    text: outcome.response,
                    structured: Some(structured),
                    is_error: false,
                }
            }
            Err(e) => McpToolResult::error(e.to_string()),
        }
    }

    /// The caller's newest sessions (at most `mcp.max_listed_resources`), newest first.
    pub async fn resources(&self, scope: &Scope) -> Result<Vec<SessionResource>, McpError> {
        let sessions = self
            .engine
            .newest_sessions(scope, self.config.max_listed_resources)
            .await?;
        Ok(sessions
            .iter()
            .map(|s| SessionResource {
                uri: format!("{SESSION_URI_PREFIX}{}", s.id),
                name: s.id.clone(),
                description: format!(
                    "contextd session '{}': model {}, {} messages",
                    s.id, s.model, s.message_count
                ),
            })
            .collect())
    }

    /// Reads `contextd://sessions/{id}`: the session's context and its newest history as
    /// JSON, at most `mcp.max_resource_bytes`, saying how to read what did not fit.
    pub async fn read_resource(&self, scope: &Scope, uri: &str) -> Result<ResourceText, McpError> {
        let Some(id) = uri.strip_prefix(SESSION_URI_PREFIX) else {
            return Err(McpError::UnknownResource(uri.to_string()));
        };
        if crate::domain::session::validate_session_id(id).is_err() {
            return Err(McpError::UnknownResource(uri.to_string()));
        }
        let newest = self.engine.limits().max_page_size as usize;
        let (session, messages) = match self
            .engine
            .session_with_newest_history(scope, id, newest)
            .await
        {
            Ok(found) => found,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(McpError::UnknownResource(uri.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(ResourceText {
            uri: uri.to_string(),
            text: session_document(
                &SessionHead::from(&session),
                &messages,
                self.config.max_resource_bytes,
            ),
        })
    }

    fn known_names(&self, scope: &Scope) -> String {
        self.tools(scope)
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Adds the required `session_id` argument to a tool's object schema.
fn add_session_argument(schema: &mut Map<String, Value>) {
    let properties = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(properties) = properties {
        properties.insert(
            SESSION_ARGUMENT.to_string(),
            json!({"type": "string", "description": "The contextd session the tool works on."}),
        );
    }
    let required = schema
        .entry("required")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(required) = required
        && !required.iter().any(|r| r == SESSION_ARGUMENT)
    {
        required.push(Value::String(SESSION_ARGUMENT.to_string()));
    }
    schema
        .entry("type")
        .or_insert_with(|| Value::String("object".into()));
}

fn interact_tool() -> McpTool {
    let schema = json!({
        "type": "object",
        "properties": {
            "session_id": {"type": "string", "description": "The contextd session to talk to (1 to 128 characters of [A-Za-z0-9._:-]); created when missing."},
            "message": {"type": "string", "description": "The user message for this turn."},
            "context": {"type": "object", "description": "An RFC 7386 JSON Merge Patch for the session's structured context, applied before the turn."}
        },
        "required": ["session_id", "message"],
        "additionalProperties": false
    });
    McpTool {
        name: INTERACT_TOOL.to_string(),
        description: "Send a message to a contextd session (its history, context and tools are kept by contextd) and get the model's reply.".into(),
        input_schema: match schema {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        // It adds a turn to the session (nothing is removed) and calls a model.
        annotations: match json!({
            "title": "Talk to a contextd session",
            "readOnlyHint": false,
            "destructiveHint": false,
            "idempotentHint": false,
            "openWorldHint": true
        }) {
            Value::Object(map) => map,
            _ => Map::new(),
        },
    }
}

/// Reads `contextd_interact`'s arguments; the error says what to fix.
fn interact_request(arguments: &mut Context) -> Result<TurnRequest, String> {
    let session_id = match arguments.remove("session_id") {
        Some(Value::String(id)) => id,
        Some(_) => return Err("session_id must be a string".into()),
        None => return Err("session_id is required: the contextd session to talk to".into()),
    };
    let message = match arguments.remove("message") {
        Some(Value::String(message)) => message,
        Some(_) => return Err("message must be a string".into()),
        None => return Err("message is required: the user message for this turn".into()),
    };
    let context_patch = match arguments.remove("context") {
        None | Some(Value::Null) => None,
        Some(Value::Object(patch)) => Some(patch),
        Some(_) => {
            return Err(
                "context must be an object (a JSON Merge Patch of the session's context)".into(),
            );
        }
    };
    if let Some(extra) = arguments.keys().next() {
        return Err(format!(
            "unknown argument '{extra}': contextd_interact takes session_id, message and context"
        ));
    }
    Ok(TurnRequest {
        session_id,
        message,
        context_patch,
        ..TurnRequest::default()
    })
}

fn finish_name(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "stop",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
        FinishReason::StepLimit => "step_limit",
    }
}

fn tool_call_json(call: &ToolCall) -> Value {
    json!({"id": call.id, "name": call.name, "arguments": Value::Object(call.arguments.clone())})
}

fn message_json(message: &Message) -> Value {
    let mut value = json!({
        "index": message.index,
        "role": message.role.as_str(),
        "content": message.content,
    });
    if !message.tool_calls.is_empty() {
        value["tool_calls"] = message.tool_calls.iter().map(tool_call_json).collect();
    }
    if !message.tool_call_id.is_empty() {
        value["tool_call_id"] = json!(message.tool_call_id);
        value["tool_name"] = json!(message.tool_name);
        value["is_error"] = json!(message.is_error);
    }
    value
}

/// What a session resource shows of the session itself.
struct SessionHead<'a> {
    id: &'a str,
    model: &'a str,
    message_count: u64,
    context: &'a Context,
}

impl<'a> From<&'a Session> for SessionHead<'a> {
    fn from(session: &'a Session) -> Self {
        Self {
            id: &session.id,
            model: &session.model,
            message_count: session.message_count,
            context: &session.context,
        }
    }
}

/// The JSON document of a session resource: id, model, context, and as many of the newest
/// messages (given newest first) as fit in `max_bytes`, oldest of them first; when some are
/// left out, `truncated` says how many and how to read them.
fn session_document(
    session: &SessionHead<'_>,
    newest_first: &[crate::domain::session::SharedMessage],
    max_bytes: usize,
) -> String {
    let mut document = json!({
        "session_id": session.id,
        "model": session.model,
        "message_count": session.message_count,
        "context": Value::Object(session.context.clone()),
        "history": [],
    });
    // Room for the note that may be added; it is short and bounded.
    const NOTE_ROOM: usize = 512;
    let mut used = document.to_string().len() + NOTE_ROOM;
    let mut context_left_out = false;
    if used > max_bytes {
        document["context"] = Value::Null;
        context_left_out = true;
        used = document.to_string().len() + NOTE_ROOM;
    }
    let mut kept = Vec::new();
    for message in newest_first {
        let value = message_json(message);
        let size = value.to_string().len() + 1;
        if used + size > max_bytes {
            break;
        }
        used += size;
        kept.push(value);
    }
    let included = kept.len() as u64;
    kept.reverse();
    document["history"] = Value::Array(kept);
    let omitted = session.message_count.saturating_sub(included);
    if omitted > 0 || context_left_out {
        let first = omitted;
        let mut note = format!(
            "history holds the newest {included} of {} messages (from index {first}); read the earlier ones with ListMessages (GET /v1/sessions/{}/messages)",
            session.message_count, session.id
        );
        if context_left_out {
            note.push_str(&format!(
                "; the context is larger than mcp.max_resource_bytes ({max_bytes} bytes): read it with GetSession (GET /v1/sessions/{})",
                session.id
            ));
        }
        document["truncated"] = json!({
            "omitted_messages": omitted,
            "context_omitted": context_left_out,
            "note": note,
        });
    }
    document.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::session::Role;

    fn message(index: u64, content: &str) -> crate::domain::session::SharedMessage {
        Arc::new(Message {
            index,
            role: if index.is_multiple_of(2) {
                Role::User
            } else {
                Role::Assistant
            },
            content: content.to_string(),
            tool_calls: Vec::new(),
            tool_call_id: String::new(),
            tool_name: String::new(),
            is_error: false,
            create_time: std::time::SystemTime::UNIX_EPOCH,
            token_count: 1,
            turn_id: String::new(),
        })
    }

    fn context() -> Context {
        let mut context = Context::new();
        context.insert("user".into(), json!("ann"));
        context
    }

    fn session(count: u64, context: &Context) -> SessionHead<'_> {
        SessionHead {
            id: "s1",
            model: "echo",
            message_count: count,
            context,
        }
    }

    #[test]
    fn a_document_keeps_the_newest_messages_that_fit_and_says_how_to_read_the_rest() {
        let newest_first: Vec<_> = (0..100)
            .rev()
            .map(|i| message(i, &"x".repeat(100)))
            .collect();
        let text = session_document(&session(100, &context()), &newest_first, 4096);
        assert!(text.len() <= 4096, "{}", text.len());
        let doc: Value = serde_json::from_str(&text).unwrap();
        let history = doc["history"].as_array().unwrap();
        assert!(!history.is_empty() && history.len() < 100);
        assert_eq!(history.last().unwrap()["index"], 99);
        let first = history[0]["index"].as_u64().unwrap();
        assert_eq!(doc["truncated"]["omitted_messages"], first);
        assert!(
            doc["truncated"]["note"]
                .as_str()
                .unwrap()
                .contains("ListMessages")
        );
        assert_eq!(doc["context"]["user"], "ann");
    }

    #[test]
    fn a_document_that_fits_has_no_note() {
        let newest_first: Vec<_> = (0..3).rev().map(|i| message(i, "hi")).collect();
        let doc: Value = serde_json::from_str(&session_document(
            &session(3, &context()),
            &newest_first,
            4096,
        ))
        .unwrap();
        assert_eq!(doc["history"].as_array().unwrap().len(), 3);
        assert!(doc.get("truncated").is_none());
    }

    #[test]
    fn the_session_argument_is_added_and_required() {
        let mut schema = match json!({"type": "object", "properties": {"key": {"type": "string"}}, "additionalProperties": false})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        add_session_argument(&mut schema);
        assert_eq!(schema["properties"]["session_id"]["type"], "string");
        assert_eq!(schema["required"], json!(["session_id"]));
    }

    #[test]
    fn interact_arguments_are_checked() {
        let args = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let r = interact_request(&mut args(
            json!({"session_id": "a", "message": "hi", "context": {"k": 1}}),
        ))
        .unwrap();
        assert_eq!((r.session_id.as_str(), r.message.as_str()), ("a", "hi"));
        assert!(
            interact_request(&mut args(json!({"message": "hi"})))
                .unwrap_err()
                .contains("session_id")
        );
        assert!(
            interact_request(&mut args(
                json!({"session_id": "a", "message": "hi", "city": "Paris"})
            ))
            .unwrap_err()
            .contains("city")
        );
        assert!(
            interact_request(&mut args(
                json!({"session_id": "a", "message": "hi", "context": 3})
            ))
            .unwrap_err()
            .contains("object")
        );
    }
}
