//! The built-in `echo` model: offline and deterministic, so contextd runs with no setup and
//! tests can drive every path of the turn loop.
//!
//! Conventions (also in the README):
//! - The reply repeats the user's message and the context: `You said 'M'. User <user_id> is
//!   active. Current topic: <topic>. Context: k=v, ….`, streamed word by word.
//! - A message whose non-empty lines are all `/call <tool> <json-object>` asks for those tool
//!   calls (several lines: parallel calls in one step). An unknown tool gets a plain reply
//!   saying so. Once the results are back, the reply quotes each: `Tool <name> returned: …`.
//! - `/delay <ms> <rest>` waits `<ms>` milliseconds before each delta (and before tool calls),
//!   then treats `<rest>` as the message.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

use super::{
    ModelBackend, ModelError, ModelEvent, ModelFinish, ModelInfo, ModelRequest, ModelStream,
};
use crate::domain::session::{Context, Role, ToolCall, generate_tool_call_id};

/// Name of the echo model.
pub const ECHO_MODEL: &str = "echo";

/// Longest `/delay` honoured, so a typo cannot park a turn for hours.
pub const MAX_DELAY_MS: u64 = 60_000;

/// The offline echo model.
#[derive(Debug, Clone)]
pub struct EchoModel {
    context_window: u32,
}

impl EchoModel {
    /// An echo model advertising `context_window` tokens.
    pub fn new(context_window: u32) -> Self {
        Self { context_window }
    }
}

impl ModelBackend for EchoModel {
    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            name: ECHO_MODEL.to_string(),
            context_window: self.context_window,
            backend: ECHO_MODEL.to_string(),
            kind: ECHO_MODEL.to_string(),
            initial_token_scale: 1.0,
        }]
    }

    fn stream(&self, request: &ModelRequest) -> Result<ModelStream, ModelError> {
        let (delay, events) = plan_reply(request);
        let state = (VecDeque::from(events), delay);
        let stream = futures_util::stream::unfold(state, |(mut events, delay)| async move {
            let event = events.pop_front()?;
            if !delay.is_zero() && !matches!(event, ModelEvent::Finish(_)) {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(event), (events, delay)))
        });
        Ok(Box::pin(stream))
    }
}

/// Decides the whole reply up front: the per-event delay and the events.
fn plan_reply(request: &ModelRequest) -> (Duration, Vec<ModelEvent>) {
    let messages = &request.messages;
    // Results of tool calls are the newest messages: answer with them.
    let trailing_results: Vec<_> = messages
        .iter()
        .rev()
        .take_while(|m| m.role == Role::Tool)
        .collect();
    if !trailing_results.is_empty() {
        let delay = messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| parse_delay(&m.content).0)
            .unwrap_or_default();
        let text = trailing_results
            .iter()
            .rev()
            .map(|m| {
                if m.is_error {
                    format!("Tool {} failed: {}", m.tool_name, m.content)
                } else {
                    format!("Tool {} returned: {}", m.tool_name, m.content)
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        return (delay, text_events(&text, ModelFinish::Stop));
    }

    let user_text = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let (delay, text) = parse_delay(user_text);

    match plan_tool_calls(text, request) {
        Some(Ok(calls)) => {
            let mut events: Vec<_> = calls.into_iter().map(ModelEvent::ToolCall).collect();
            events.push(ModelEvent::Finish(ModelFinish::ToolCalls));
            (delay, events)
        }
        Some(Err(problem)) => (delay, text_events(&problem, ModelFinish::Stop)),
        None => (
            delay,
            text_events(&describe(text, &request.context), ModelFinish::Stop),
        ),
    }
}

/// Splits `/delay <ms> <rest>` into its delay and the rest.
fn parse_delay(text: &str) -> (Duration, &str) {
    let Some(rest) = text.strip_prefix("/delay ") else {
        return (Duration::ZERO, text);
    };
    let rest = rest.trim_start();
    let (number, remainder) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    match number.parse::<u64>() {
        Ok(ms) => (
            Duration::from_millis(ms.min(MAX_DELAY_MS)),
            remainder.trim_start(),
        ),
        Err(_) => (Duration::ZERO, text),
    }
}

/// Reads `/call` lines. `None`: not a tool-call message. `Some(Err(text))`: a call that cannot
/// be made, explained in `text` (the reply).
fn plan_tool_calls(text: &str, request: &ModelRequest) -> Option<Result<Vec<ToolCall>, String>> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() || !lines.iter().all(|l| l.starts_with("/call ")) {
        return None;
    }
    let mut calls = Vec::with_capacity(lines.len());
    for line in lines {
        let rest = line["/call ".len()..].trim();
        let (name, json) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if !request.tools.iter().any(|t| t.name == name) {
            let available = request
                .tools
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Some(Err(format!(
                "Unknown tool '{name}'. Available tools: {available}."
            )));
        }
        let arguments = match json.trim() {
            "" => Context::new(),
            json => match serde_json::from_str::<Value>(json) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return Some(Err(format!(
                        "Cannot call {name}: the arguments must be a JSON object, got {json}."
                    )));
                }
            },
        };
        calls.push(ToolCall {
            id: generate_tool_call_id(),
            name: name.to_string(),
            arguments,
        });
    }
    Some(Ok(calls))
}

/// The plain reply: the message and what the context says.
fn describe(message: &str, context: &Context) -> String {
    let mut reply = format!("You said '{message}'.");
    if let Some(user) = context.get("user_id").and_then(Value::as_str) {
        reply.push_str(&format!(" User {user} is active."));
    }
    if let Some(topic) = context.get("topic") {
        reply.push_str(&format!(" Current topic: {}.", plain(topic)));
    }
    let mut others: Vec<_> = context
        .iter()
        .filter(|(k, v)| k.as_str() != "topic" && !(k.as_str() == "user_id" && v.is_string()))
        .collect();
    if !others.is_empty() {
        others.sort_by(|a, b| a.0.cmp(b.0));
        let listed: Vec<_> = others
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect();
        reply.push_str(&format!(" Context: {}.", listed.join(", ")));
    }
    reply
}

/// A JSON value as a person would write it: strings without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Splits text into word deltas (each word with the whitespace after it) and a finish.
fn text_events(text: &str, finish: ModelFinish) -> Vec<ModelEvent> {
    let mut events = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Advance past the word, then past the whitespace that follows it.
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        events.push(ModelEvent::Delta(text[start..i].to_string()));
        start = i;
    }
    events.push(ModelEvent::Finish(finish));
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::session::{Message, ToolSpec};
    use serde_json::json;
    use std::sync::Arc;
    use std::time::SystemTime;

    fn message(role: Role, content: &str) -> Message {
        Message {
            index: 0,
            role,
            content: content.into(),
            tool_calls: vec![],
            tool_call_id: String::new(),
            tool_name: "lookup".into(),
            is_error: false,
            create_time: SystemTime::now(),
            token_count: 0,
            turn_id: String::new(),
        }
    }

    fn request(messages: Vec<Message>, context: Value) -> ModelRequest {
        ModelRequest {
            model: ECHO_MODEL.into(),
            system_prompt: String::new(),
            context: context.as_object().cloned().unwrap_or_default(),
            context_text: String::new(),
            summary: None,
            messages: messages.into_iter().map(Into::into).collect(),
            tools: vec![Arc::new(ToolSpec {
                name: "lookup".into(),
                description: String::new(),
                input_schema: Context::new(),
                annotations: Context::new(),
            })],
            max_output_tokens: 100,
        }
    }

    fn text_of(events: &[ModelEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                ModelEvent::Delta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn describes_message_and_context() {
        let req = request(
            vec![message(Role::User, "Tell me about climate change.")],
            json!({"user_id": "john_doe", "topic": "environment", "location": "NYC"}),
        );
        let (delay, events) = plan_reply(&req);
        assert_eq!(delay, Duration::ZERO);
        assert!(events.len() > 3, "streams several deltas");
        assert_eq!(
            text_of(&events),
            "You said 'Tell me about climate change.'. User john_doe is active. Current topic: environment. Context: location=NYC."
        );
    }

    #[test]
    fn calls_tools_and_quotes_results() {
        let req = request(
            vec![message(Role::User, "/call lookup {\"q\": 1}\n/call lookup")],
            json!({}),
        );
        let (_, events) = plan_reply(&req);
        assert!(matches!(&events[0], ModelEvent::ToolCall(c) if c.arguments["q"] == 1));
        assert!(matches!(&events[1], ModelEvent::ToolCall(c) if c.arguments.is_empty()));
        assert_eq!(events[2], ModelEvent::Finish(ModelFinish::ToolCalls));

        let mut result = message(Role::Tool, "42");
        result.tool_name = "lookup".into();
        let req = request(
            vec![message(Role::User, "/call lookup {}"), result],
            json!({}),
        );
        let (_, events) = plan_reply(&req);
        assert_eq!(text_of(&events), "Tool lookup returned: 42");
    }

    #[test]
    fn unknown_tool_and_bad_arguments_get_plain_replies() {
        let req = request(vec![message(Role::User, "/call nope {}")], json!({}));
        assert!(text_of(&plan_reply(&req).1).starts_with("Unknown tool 'nope'"));
        let req = request(vec![message(Role::User, "/call lookup [1]")], json!({}));
        assert!(text_of(&plan_reply(&req).1).contains("must be a JSON object"));
    }

    #[test]
    fn delay_prefix() {
        assert_eq!(
            parse_delay("/delay 25 hello there"),
            (Duration::from_millis(25), "hello there")
        );
        assert_eq!(parse_delay("/delay soon"), (Duration::ZERO, "/delay soon"));
        assert_eq!(parse_delay("plain"), (Duration::ZERO, "plain"));
    }
}
