//! Domain types of a session: the session itself, its messages, tools and usage, and the
//! rules for their identifiers. These are what the engine, the stores and the model backends
//! share; the wire types live in [`crate::api`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// Structured context: a JSON object.
pub type Context = Map<String, Value>;

/// Longest session id accepted.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// Longest tool name accepted.
pub const MAX_TOOL_NAME_LEN: usize = 64;

/// A conversation: settings, merged context and state. History is stored separately.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Identifier, checked by [`validate_session_id`].
    pub id: String,
    /// Instructions pinned at the start of every window.
    pub system_prompt: String,
    /// Context merged from every request (RFC 7386).
    pub context: Context,
    /// Model that answers in this session.
    pub model: String,
    /// Tools the client declared and runs itself.
    pub tools: Vec<ToolSpec>,
    /// Client bookkeeping, not interpreted.
    pub labels: BTreeMap<String, String>,
    /// When the session was created.
    pub create_time: SystemTime,
    /// When the session last changed.
    pub update_time: SystemTime,
    /// Number of stored history messages; the next message gets this index.
    pub message_count: u64,
    /// The turn paused for client-side tools, if any.
    pub pending: Option<PendingTurn>,
    /// Tokens used by all turns so far.
    pub usage: Usage,
    /// Window size in tokens (including the reserved output budget).
    pub max_context_tokens: u32,
    /// Incremented by every write; stores refuse a write based on a stale version.
    pub version: u64,
    /// When the session expires (is deleted); `None` for never.
    pub expire_time: Option<SystemTime>,
    /// Idle time-to-live: every change moves `expire_time` to this long after it. `None` when
    /// the expiry is fixed (set by the client) or there is none.
    pub idle_ttl: Option<Duration>,
    /// How the context window is managed, and what that needs to remember.
    pub window: WindowState,
    /// Which server-side tools the model is offered; `None` for the server's default.
    pub server_tools: Option<ServerToolSelection>,
}

/// Which server-side tools a session's model is offered: tool names or `*` patterns
/// (`time__*`). No patterns: none. Kept as the client wrote it, so that tools an MCP server
/// adds later are offered to sessions whose patterns match them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerToolSelection {
    /// Names or patterns; `*` stands for any run of characters.
    pub patterns: Vec<String>,
}

/// How a session's window is kept within its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStrategy {
    /// Drop the oldest whole turns that do not fit (a tool call stays with its results; the
    /// newest turn is never dropped).
    #[default]
    SlidingWindow,
    /// When the window would pass the threshold, fold the oldest turns into a running
    /// summary (kept pinned); the originals stay in storage.
    Summarize,
    /// Never leave anything out: a turn whose history does not fit fails.
    Disabled,
}

impl WindowStrategy {
    /// The name used in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowStrategy::SlidingWindow => "sliding_window",
            WindowStrategy::Summarize => "summarize",
            WindowStrategy::Disabled => "disabled",
        }
    }
}

/// Default share of the input budget at which `summarize` folds turns, in percent.
pub const DEFAULT_SUMMARIZE_THRESHOLD_PERCENT: u32 = 90;

/// Everything a session keeps about its window: the chosen strategy and its settings, the
/// token-estimate correction measured from the provider, and the running summary. Stored as
/// one unit (one JSON document in durable stores).
#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct WindowState {
    /// The strategy.
    pub strategy: WindowStrategy,
    /// `summarize`: fold when the window would exceed this percentage of the input budget.
    /// 0: the default (90).
    pub summarize_threshold_percent: u32,
    /// `summarize`: the model that writes summaries. Empty: the server's
    /// `engine.summarizer_model`, or the session's own model.
    pub summarizer_model: String,
    /// Provider tokens per counted token, measured from the `input_tokens` the provider
    /// reported (models whose tokenizer is not public). 0: not measured yet.
    pub token_scale: f64,
    /// The running summary of the oldest turns (`summarize`).
    pub summary: Option<ContextSummary>,
}

impl WindowState {
    /// The threshold in effect, in percent.
    pub fn threshold_percent(&self) -> u32 {
        match self.summarize_threshold_percent {
            0 => DEFAULT_SUMMARIZE_THRESHOLD_PERCENT,
            n => n,
        }
    }

    /// The summary shown to the model, if the strategy uses one.
    pub fn active_summary(&self) -> Option<&ContextSummary> {
        match self.strategy {
            WindowStrategy::Summarize => self.summary.as_ref(),
            _ => None,
        }
    }
}

/// A summary that stands in for a range of stored messages in the window.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct ContextSummary {
    /// The summary text.
    pub text: String,
    /// Index of the first message it covers.
    pub first_index: u64,
    /// Index after the last message it covers: history from here on is shown as is.
    pub end_index: u64,
    /// Its cost in the window, in counted tokens.
    pub token_count: u32,
}

impl Session {
    /// Whether the session has expired at `now` (and must be treated as gone).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expire_time.is_some_and(|at| at <= now)
    }

    /// Records a change at `now`: the update time, and the expiry when it follows activity.
    pub fn touch(&mut self, now: SystemTime) {
        self.update_time = now;
        if let Some(ttl) = self.idle_ttl {
            self.expire_time = Some(now + ttl);
        }
    }

    /// The session's entity tag (AIP-154): a quoted string made of its stored version and its
    /// creation time, `"<version>-<create time in µs, hex>"`. The version changes with every
    /// write; the creation time tells apart a session deleted and created again under the same
    /// id, whose version starts over. Clients treat it as opaque and compare it for equality.
    pub fn etag(&self) -> String {
        let created = self
            .create_time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        format!("\"{}-{created:x}\"", self.version)
    }

    /// Whether the session waits for tool results.
    pub fn state(&self) -> SessionState {
        if self.pending.is_some() {
            SessionState::AwaitingToolResults
        } else {
            SessionState::Idle
        }
    }
}

/// A turn paused until the client sends the results of its tool calls.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingTurn {
    /// The paused turn; it keeps its id when it continues.
    pub turn_id: String,
    /// The client-side calls awaiting results, in the order the model made them.
    pub tool_calls: Vec<ToolCall>,
    /// Model steps the turn has taken so far (bounded by the step limit).
    pub steps: u32,
}

/// Whether a session can take a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Takes a new user message.
    Idle,
    /// Waits for tool results.
    AwaitingToolResults,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl Role {
    /// Lower-case name, as models and renderings use it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// The role named by [`Role::as_str`].
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// A stored message, shared: history is read far more often than written, and windows, model
/// requests and stores hand the same messages around without copying their text.
pub type SharedMessage = std::sync::Arc<Message>;

/// One stored message of a session's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Position in the history, from 0.
    pub index: u64,
    /// Who wrote it.
    pub role: Role,
    /// Its text (for a tool message, the result).
    pub content: String,
    /// For an assistant message: tools it asked for.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the call it answers.
    pub tool_call_id: String,
    /// For a tool message: the tool that ran.
    pub tool_name: String,
    /// For a tool message: whether the tool failed.
    pub is_error: bool,
    /// When it was stored.
    pub create_time: SystemTime,
    /// Its cost in a context window, counted once.
    pub token_count: u32,
    /// The turn that produced it.
    pub turn_id: String,
}

/// A tool a model may call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolSpec {
    /// Unique name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub input_schema: Context,
    /// Untrusted hints about its behaviour (MCP's `ToolAnnotations`): shown, never acted on,
    /// never sent to a model. Empty when there are none.
    #[serde(default, skip_serializing_if = "Context::is_empty")]
    pub annotations: Context,
}

/// A tool's description shared, not copied: the server-side tools' specs are offered to a
/// model on every turn, and each carries a JSON Schema that is deep to clone.
pub type SharedTool = std::sync::Arc<ToolSpec>;

/// A model's request to run a tool.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// Unique within the session.
    pub id: String,
    /// Tool to run.
    pub name: String,
    /// Arguments object.
    pub arguments: Context,
}

/// The outcome of a tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// The call it answers.
    pub tool_call_id: String,
    /// What the tool returned.
    pub content: String,
    /// Whether the tool failed.
    pub is_error: bool,
}

/// Token usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Tokens sent to the model, summed over calls.
    pub input_tokens: u64,
    /// Tokens generated, summed over calls.
    pub output_tokens: u64,
    /// Window size of the last model call.
    pub context_tokens: u64,
}

impl Usage {
    /// Adds `other` (sums input and output; the context size is the newer one).
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.context_tokens = other.context_tokens;
    }
}

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished its reply.
    Stop,
    /// Paused for client-side tools.
    ToolCalls,
    /// The model hit its output limit.
    Length,
    /// The client cancelled the turn.
    Cancelled,
    /// The server-side tool loop reached its step limit.
    StepLimit,
}

/// Checks a session id: 1 to 128 characters of `[A-Za-z0-9._:-]`.
pub fn validate_session_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("session_id is required: 1 to 128 characters of [A-Za-z0-9._:-]".into());
    }
    if id.len() > MAX_SESSION_ID_LEN {
        return Err(format!(
            "session_id is {} characters long; at most {MAX_SESSION_ID_LEN} are allowed",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "session_id {id:?} contains {bad:?}; only [A-Za-z0-9._:-] is allowed"
        ));
    }
    Ok(())
}

/// Checks a tool definition's name: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn validate_tool_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOOL_NAME_LEN {
        return Err(format!(
            "tool name {name:?} must be 1 to {MAX_TOOL_NAME_LEN} characters of [A-Za-z0-9_-]"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!("tool name {name:?} may only contain [A-Za-z0-9_-]"));
    }
    Ok(())
}

/// Checks a list of client-declared tools: valid, unique names.
pub fn validate_tools(tools: &[ToolSpec]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for tool in tools {
        validate_tool_name(&tool.name)?;
        if !seen.insert(tool.name.as_str()) {
            return Err(format!("tool {:?} is declared twice", tool.name));
        }
    }
    Ok(())
}

/// The current time, to the microsecond: the precision every store keeps, so a session reads
/// back exactly as it was written.
pub fn now() -> SystemTime {
    to_micros(SystemTime::now())
}

/// `time` truncated to whole microseconds (since the Unix epoch).
pub fn to_micros(time: SystemTime) -> SystemTime {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => std::time::UNIX_EPOCH + Duration::from_micros(after.as_micros() as u64),
        Err(_) => time,
    }
}

/// A new random session id.
pub fn generate_session_id() -> String {
    format!("s-{}", uuid::Uuid::new_v4().simple())
}

/// A new random turn id.
pub fn generate_turn_id() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

/// A new random tool call id.
pub fn generate_tool_call_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &id[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        assert!(validate_session_id("session_alpha").is_ok());
        assert!(validate_session_id("a.b:c-d_e9").is_ok());
        assert!(validate_session_id("").is_err());
        assert!(validate_session_id("has space").is_err());
        assert!(validate_session_id("ünï").is_err());
        assert!(validate_session_id(&"x".repeat(128)).is_ok());
        assert!(validate_session_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn tool_names() {
        assert!(validate_tool_name("get_weather").is_ok());
        assert!(validate_tool_name("bad name").is_err());
        let spec = |n: &str| ToolSpec {
            name: n.into(),
            description: String::new(),
            input_schema: Context::new(),
            annotations: Context::new(),
        };
        assert!(validate_tools(&[spec("a"), spec("a")]).is_err());
        assert!(validate_tools(&[spec("a"), spec("b")]).is_ok());
    }
}
