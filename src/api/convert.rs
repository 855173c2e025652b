//! Conversions between wire types (`api::v1`, `prost_types`) and domain types.
//!
//! Wire input that cannot be represented in the domain (a non-finite number in a `Struct`,
//! an unknown enum value, a bad page token) is refused here with a message saying what to
//! fix; everything else is validated by the engine.

use std::time::SystemTime;

use prost_types::value::Kind;
use serde_json::{Number, Value};

use super::v1;
use crate::domain::session::{
    Context, FinishReason, Message, Role, ServerToolSelection, Session, SessionState, ToolCall,
    ToolResult, ToolSpec, Usage, WindowStrategy,
};
use crate::engine::{
    EntryKind, NewSession, Preview, PreviewEntry, ServerToolsChange, SessionUpdate, WindowSettings,
};
use crate::model::{BackendInfo, ModelInfo};

/// Wire input that cannot be accepted; the text says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

/// A `Struct` as a JSON object (`None` → empty).
pub fn context_from_wire(
    what: &str,
    value: Option<prost_types::Struct>,
) -> Result<Context, WireError> {
    match value {
        None => Ok(Context::new()),
        Some(s) => struct_to_map(what, s),
    }
}

/// A `Struct` as a merge patch: `None` when absent.
pub fn patch_from_wire(
    what: &str,
    value: Option<prost_types::Struct>,
) -> Result<Option<Context>, WireError> {
    value.map(|s| struct_to_map(what, s)).transpose()
}

fn struct_to_map(what: &str, value: prost_types::Struct) -> Result<Context, WireError> {
    value
        .fields
        .into_iter()
        .map(|(k, v)| Ok((k, value_from_wire(what, v)?)))
        .collect()
}

/// A protobuf `Value` as JSON. The decoder bounds nesting, so recursion is bounded too.
pub fn value_from_wire(what: &str, value: prost_types::Value) -> Result<Value, WireError> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            let number = if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                Number::from(n as i64)
            } else {
                Number::from_f64(n).ok_or_else(|| {
                    WireError(format!(
                        "{what} contains the number {n}, which JSON cannot represent"
                    ))
                })?
            };
            Value::Number(number)
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .map(|v| value_from_wire(what, v))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_map(what, s)?),
    })
}

/// A JSON object as a `Struct`.
pub fn context_to_wire(context: &Context) -> prost_types::Struct {
    prost_types::Struct {
        fields: context
            .iter()
            .map(|(k, v)| (k.clone(), value_to_wire(v)))
            .collect(),
    }
}

/// JSON as a protobuf `Value`.
pub fn value_to_wire(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(value_to_wire).collect(),
        }),
        Value::Object(map) => Kind::StructValue(context_to_wire(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// The range of a `google.protobuf.Timestamp`: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z, in seconds since the Unix epoch.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// A requested expiry from the wire (`None` when unset).
pub fn expire_time_from_wire(
    field: &str,
    time: Option<prost_types::Timestamp>,
) -> Result<Option<SystemTime>, WireError> {
    time.map(|t| {
        if !TIMESTAMP_SECONDS.contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
            return Err(WireError(format!(
                "{field} is out of range: a timestamp lies between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z (seconds {} to {}, nanos 0 to 999999999)",
                TIMESTAMP_SECONDS.start(),
                TIMESTAMP_SECONDS.end()
            )));
        }
        SystemTime::try_from(t).map_err(|e| {
            WireError(format!(
                "{field} is not a valid timestamp ({e}): use seconds since the Unix epoch with nanos in 0..1e9"
            ))
        })
    })
    .transpose()
}

/// Client-declared tools from the wire.
pub fn tools_from_wire(tools: Vec<v1::ToolDefinition>) -> Result<Vec<ToolSpec>, WireError> {
    tools
        .into_iter()
        .map(|t| {
            Ok(ToolSpec {
                input_schema: context_from_wire(
                    &format!("input_schema of tool {:?}", t.name),
                    t.input_schema,
                )?,
                annotations: context_from_wire(
                    &format!("annotations of tool {:?}", t.name),
                    t.annotations,
                )?,
                name: t.name,
                description: t.description,
            })
        })
        .collect()
}

/// A tool definition for the wire.
pub fn tool_to_wire(tool: &ToolSpec) -> v1::ToolDefinition {
    v1::ToolDefinition {
        name: tool.name.clone(),
        description: tool.description.clone(),
        input_schema: Some(context_to_wire(&tool.input_schema)),
        annotations: (!tool.annotations.is_empty()).then(|| context_to_wire(&tool.annotations)),
    }
}

/// A tool call for the wire.
pub fn tool_call_to_wire(call: &ToolCall) -> v1::ToolCall {
    v1::ToolCall {
        tool_call_id: call.id.clone(),
        name: call.name.clone(),
        arguments: Some(context_to_wire(&call.arguments)),
    }
}

/// Tool results from the wire.
pub fn tool_results_from_wire(results: Vec<v1::ToolResult>) -> Vec<ToolResult> {
    results
        .into_iter()
        .map(|r| ToolResult {
            tool_call_id: r.tool_call_id,
            content: r.content,
            is_error: r.is_error,
        })
        .collect()
}

/// A tool result for the wire.
pub fn tool_result_to_wire(result: &ToolResult) -> v1::ToolResult {
    v1::ToolResult {
        tool_call_id: result.tool_call_id.clone(),
        content: result.content.clone(),
        is_error: result.is_error,
    }
}

/// Usage for the wire.
pub fn usage_to_wire(usage: &Usage) -> v1::Usage {
    v1::Usage {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        context_tokens: usage.context_tokens,
    }
}

/// A finish reason for the wire.
pub fn finish_to_wire(finish: FinishReason) -> v1::FinishReason {
    match finish {
        FinishReason::Stop => v1::FinishReason::Stop,
        FinishReason::ToolCalls => v1::FinishReason::ToolCalls,
        FinishReason::Length => v1::FinishReason::Length,
        FinishReason::Cancelled => v1::FinishReason::Cancelled,
        FinishReason::StepLimit => v1::FinishReason::StepLimit,
    }
}

fn role_to_wire(role: Role) -> v1::MessageRole {
    match role {
        Role::User => v1::MessageRole::User,
        Role::Assistant => v1::MessageRole::Assistant,
        Role::Tool => v1::MessageRole::Tool,
    }
}

/// A session for the wire.
pub fn session_to_wire(session: &Session) -> v1::Session {
    v1::Session {
        session_id: session.id.clone(),
        system_prompt: session.system_prompt.clone(),
        context: Some(context_to_wire(&session.context)),
        model: session.model.clone(),
        tools: session.tools.iter().map(tool_to_wire).collect(),
        labels: session.labels.clone().into_iter().collect(),
        create_time: Some(timestamp(session.create_time)),
        update_time: Some(timestamp(session.update_time)),
        message_count: session.message_count,
        state: match session.state() {
            SessionState::Idle => v1::SessionState::Idle,
            SessionState::AwaitingToolResults => v1::SessionState::AwaitingToolResults,
        } as i32,
        pending_tool_calls: session
            .pending
            .iter()
            .flat_map(|p| p.tool_calls.iter().map(tool_call_to_wire))
            .collect(),
        usage: Some(usage_to_wire(&session.usage)),
        max_context_tokens: session.max_context_tokens,
        expire_time: session.expire_time.map(timestamp),
        window: Some(v1::WindowSettings {
            strategy: strategy_to_wire(session.window.strategy) as i32,
            summarize_threshold_percent: session.window.summarize_threshold_percent,
            summarizer_model: session.window.summarizer_model.clone(),
        }),
        summary: session
            .window
            .summary
            .as_ref()
            .map(|summary| v1::ContextSummary {
                text: summary.text.clone(),
                first_message_index: summary.first_index,
                end_message_index: summary.end_index,
                token_count: summary.token_count,
            }),
        token_estimate_scale: session.window.token_scale,
        etag: session.etag(),
        server_tools: session
            .server_tools
            .as_ref()
            .map(|selection| v1::ServerToolSelection {
                patterns: selection.patterns.clone(),
            }),
    }
}

fn strategy_to_wire(strategy: WindowStrategy) -> v1::WindowStrategy {
    match strategy {
        WindowStrategy::SlidingWindow => v1::WindowStrategy::SlidingWindow,
        WindowStrategy::Summarize => v1::WindowStrategy::Summarize,
        WindowStrategy::Disabled => v1::WindowStrategy::Disabled,
    }
}

/// Window settings from the wire (absent: the defaults).
pub fn window_from_wire(settings: Option<v1::WindowSettings>) -> Result<WindowSettings, WireError> {
    let Some(settings) = settings else {
        return Ok(WindowSettings::default());
    };
    let strategy = match v1::WindowStrategy::try_from(settings.strategy) {
        Ok(v1::WindowStrategy::Unspecified | v1::WindowStrategy::SlidingWindow) => {
            WindowStrategy::SlidingWindow
        }
        Ok(v1::WindowStrategy::Summarize) => WindowStrategy::Summarize,
        Ok(v1::WindowStrategy::Disabled) => WindowStrategy::Disabled,
        Err(_) => {
            return Err(WireError(format!(
                "window.strategy {} is not a known WindowStrategy; use WINDOW_STRATEGY_SLIDING_WINDOW, WINDOW_STRATEGY_SUMMARIZE or WINDOW_STRATEGY_DISABLED",
                settings.strategy
            )));
        }
    };
    Ok(WindowSettings {
        strategy,
        summarize_threshold_percent: settings.summarize_threshold_percent,
        summarizer_model: settings.summarizer_model,
    })
}

/// A listed model for the wire.
pub fn model_to_wire(model: &ModelInfo, default_model: &str) -> v1::ModelInfo {
    v1::ModelInfo {
        name: model.name.clone(),
        backend: model.backend.clone(),
        kind: model.kind.clone(),
        context_window: model.context_window,
        is_default: model.name == default_model,
    }
}

/// A configured backend for the wire.
pub fn backend_to_wire(backend: &BackendInfo) -> v1::BackendInfo {
    v1::BackendInfo {
        name: backend.name.clone(),
        kind: backend.kind.clone(),
        context_window: backend.context_window,
        default_model: backend.default_model.clone(),
    }
}

/// A stored message for the wire.
pub fn message_to_wire(message: &Message) -> v1::Message {
    v1::Message {
        index: message.index,
        role: role_to_wire(message.role) as i32,
        content: message.content.clone(),
        tool_calls: message.tool_calls.iter().map(tool_call_to_wire).collect(),
        tool_call_id: message.tool_call_id.clone(),
        tool_name: message.tool_name.clone(),
        is_error: message.is_error,
        create_time: Some(timestamp(message.create_time)),
        token_count: message.token_count,
        turn_id: message.turn_id.clone(),
    }
}

fn entry_to_wire(entry: &PreviewEntry) -> v1::ContextEntry {
    let (kind, role) = match entry.kind {
        EntryKind::SystemPrompt => (
            v1::ContextEntryKind::SystemPrompt,
            v1::MessageRole::Unspecified,
        ),
        EntryKind::Context => (v1::ContextEntryKind::Context, v1::MessageRole::Unspecified),
        EntryKind::History => (
            v1::ContextEntryKind::History,
            entry.role.map(role_to_wire).unwrap_or_default(),
        ),
        EntryKind::UserMessage => (v1::ContextEntryKind::UserMessage, v1::MessageRole::User),
        EntryKind::Summary => (v1::ContextEntryKind::Summary, v1::MessageRole::Unspecified),
        EntryKind::PendingSummary => (
            v1::ContextEntryKind::PendingSummary,
            v1::MessageRole::Unspecified,
        ),
    };
    v1::ContextEntry {
        kind: kind as i32,
        role: role as i32,
        content: entry.content.clone(),
        token_count: entry.token_count,
        message_index: entry.message_index,
        tool_calls: entry.tool_calls.iter().map(tool_call_to_wire).collect(),
        tool_call_id: entry.tool_call_id.clone(),
        summary_first_message_index: entry.summarized.map(|(first, _)| first),
        summary_end_message_index: entry.summarized.map(|(_, end)| end),
    }
}

/// A window preview for the wire.
pub fn preview_to_wire(preview: &Preview) -> v1::PreviewContextResponse {
    v1::PreviewContextResponse {
        entries: preview.entries.iter().map(entry_to_wire).collect(),
        total_tokens: preview.total_tokens,
        omitted_messages: preview.omitted_messages,
        max_context_tokens: preview.budget.max_context_tokens,
        reserved_output_tokens: preview.budget.reserved_output_tokens,
        model: preview.model.clone(),
        tools: preview.tools.iter().map(|t| tool_to_wire(t)).collect(),
        summary_kept: preview.summary_kept,
    }
}

/// Labels from the wire, in a stable order.
pub fn labels_from_wire(
    labels: std::collections::HashMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    labels.into_iter().collect()
}

/// Page tokens are opaque to clients: a kind tag and a key, hex-encoded, so a token from one
/// listing cannot be mistaken for another's.
pub fn encode_page_token(kind: &str, key: &str) -> String {
    format!("{kind}:{key}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a page token made by [`encode_page_token`] with the same `kind`.
pub fn decode_page_token(kind: &str, token: &str) -> Result<String, WireError> {
    let bad = || {
        WireError(format!(
            "page_token {token:?} is not one this listing issued; pass next_page_token unchanged, or empty for the first page"
        ))
    };
    if !token.is_ascii() || !token.len().is_multiple_of(2) || token.len() > 1024 {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_string)
        .ok_or_else(bad)
}

/// A new session from `CreateSession`'s fields: the one conversion every door uses (a
/// Converse `open` frame carries the same fields, see [`create_request_from_open`]).
/// `prefix` is put before field names in messages (`"open."` for the frame).
pub fn new_session_from_wire(
    prefix: &str,
    r: v1::CreateSessionRequest,
) -> Result<NewSession, WireError> {
    Ok(NewSession {
        session_id: r.session_id,
        system_prompt: r.system_prompt,
        context: context_from_wire("context", r.context)?,
        model: r.model,
        tools: tools_from_wire(r.tools)?,
        labels: labels_from_wire(r.labels),
        max_context_tokens: r.max_context_tokens,
        expire_time: expire_time_from_wire(&format!("{prefix}expire_time"), r.expire_time)?,
        window: window_from_wire(r.window)?,
        server_tools: r.server_tools.map(server_tools_from_wire),
    })
}

/// A selection of server-side tools from the wire (patterns are checked by the engine).
pub fn server_tools_from_wire(selection: v1::ServerToolSelection) -> ServerToolSelection {
    ServerToolSelection {
        patterns: selection.patterns,
    }
}

/// The session settings of a Converse `open` frame, as the `CreateSession` request they mean.
pub fn create_request_from_open(open: v1::ConverseOpen) -> v1::CreateSessionRequest {
    v1::CreateSessionRequest {
        session_id: open.session_id,
        system_prompt: open.system_prompt,
        context: open.context,
        model: open.model,
        tools: open.tools,
        labels: open.labels,
        max_context_tokens: open.max_context_tokens,
        expire_time: open.expire_time,
        window: open.window,
        server_tools: open.server_tools,
    }
}

/// A change to a session from `UpdateSession`, with the etag it is conditional on (`None`
/// when the request names none).
pub fn update_from_wire(
    r: v1::UpdateSessionRequest,
) -> Result<(SessionUpdate, Option<String>), WireError> {
    let update = SessionUpdate {
        context_patch: patch_from_wire("context", r.context)?,
        system_prompt: r.system_prompt,
        tools: r
            .tools
            .map(|list| tools_from_wire(list.tools))
            .transpose()?,
        model: r.model,
        max_context_tokens: r.max_context_tokens,
        window: r.window.map(|w| window_from_wire(Some(w))).transpose()?,
        set_labels: labels_from_wire(r.labels),
        remove_labels: r.remove_labels,
        expire_time: expire_time_from_wire("expire_time", r.expire_time)?,
        server_tools: server_tools_change_from_wire(r.server_tools, r.reset_server_tools)?,
    };
    Ok((update, etag_from_wire(r.etag)))
}

/// What `UpdateSession`'s `server_tools` and `reset_server_tools` ask for together: they
/// contradict each other (set this selection / forget any selection), so both at once is
/// refused rather than one silently winning.
fn server_tools_change_from_wire(
    selection: Option<v1::ServerToolSelection>,
    reset: bool,
) -> Result<Option<ServerToolsChange>, WireError> {
    match (selection, reset) {
        (Some(_), true) => Err(WireError(
            "server_tools and reset_server_tools cannot both be set: send server_tools to choose tools, or reset_server_tools to go back to the server's default ones".into(),
        )),
        (Some(selection), false) => Ok(Some(ServerToolsChange::Replace(
            server_tools_from_wire(selection),
        ))),
        (None, true) => Ok(Some(ServerToolsChange::Reset)),
        (None, false) => Ok(None),
    }
}

/// An etag from the wire: `None` when empty (the change is unconditional).
pub fn etag_from_wire(etag: String) -> Option<String> {
    (!etag.is_empty()).then_some(etag)
}

const SESSIONS_PAGE: &str = "sessions";
const MESSAGES_PAGE: &str = "messages";

/// `ListSessions`' page token for continuing after the session id `next` (empty: last page).
pub fn sessions_page_token(next: Option<&str>) -> String {
    next.map(|id| encode_page_token(SESSIONS_PAGE, id))
        .unwrap_or_default()
}

/// The session id a `ListSessions` page token continues after (`None`: the first page).
pub fn sessions_page_from_token(token: &str) -> Result<Option<String>, WireError> {
    match token {
        "" => Ok(None),
        token => decode_page_token(SESSIONS_PAGE, token).map(Some),
    }
}

/// `ListMessages`' page token for continuing at message index `next` of `session_id`
/// (empty: last page).
pub fn messages_page_token(session_id: &str, next: Option<u64>) -> String {
    next.map(|n| encode_page_token(MESSAGES_PAGE, &format!("{session_id}@{n}")))
        .unwrap_or_default()
}

/// The message index a `ListMessages` page token of `session_id` continues at (0: the first
/// page). A token of another session's listing is refused.
pub fn messages_page_from_token(session_id: &str, token: &str) -> Result<u64, WireError> {
    if token.is_empty() {
        return Ok(0);
    }
    let key = decode_page_token(MESSAGES_PAGE, token)?;
    let (session, index) = key.rsplit_once('@').unwrap_or_default();
    if session != session_id {
        return Err(WireError(
            "page_token belongs to another session's listing; pass next_page_token unchanged, or empty for the first page".into(),
        ));
    }
    index
        .parse()
        .map_err(|_| WireError("page_token is not one this listing issued".into()))
}

/// A JSON value for `CallToolResponse.structured_content`.
pub fn structured_to_wire(value: Option<&Value>) -> Option<prost_types::Value> {
    value.map(value_to_wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn struct_round_trip() {
        let value = json!({"a": 1, "b": [true, null, "x", 2.5], "c": {"d": -3}});
        let map = value.as_object().cloned().unwrap();
        let wire = context_to_wire(&map);
        assert_eq!(context_from_wire("context", Some(wire)).unwrap(), map);
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        let wire = prost_types::Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert!(value_from_wire("context", wire).is_err());
    }

    #[test]
    fn page_tokens() {
        let token = encode_page_token("sessions", "abc");
        assert_eq!(decode_page_token("sessions", &token).unwrap(), "abc");
        assert!(decode_page_token("messages", &token).is_err());
        assert!(decode_page_token("sessions", "zz").is_err());
        assert!(decode_page_token("sessions", "abc").is_err());
        assert!(decode_page_token("sessions", "é1").is_err());
    }
}
