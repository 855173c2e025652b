//! The `anthropic` backend: the Messages API, streamed.
//!
//! Mapping: the system prompt, the rendered context and the running summary join into
//! `system`; user text and tool results (`tool_result` blocks) are `user` turns, the model's
//! text and `tool_use` blocks are `assistant` turns, adjacent turns of one role merged; tools
//! are offered with their JSON Schema as `input_schema`. Headers: `x-api-key` and
//! `anthropic-version`. The reply streams as `message_start` (input usage),
//! `content_block_start`/`content_block_delta` (`text_delta`, `input_json_delta`)/
//! `content_block_stop`, `message_delta` (`stop_reason`, output usage), `message_stop`; `ping`
//! and unknown events are ignored; `error` fails the step.
//!
//! Claude's tokenizer is not public: contextd counts with o200k and scales by a per-session
//! factor measured from the `input_tokens` the API reports (starting from
//! [`INITIAL_TOKEN_SCALE`]).

use std::sync::Arc;

use eventsource_stream::Event;
use serde_json::{Value, json};

use super::http::{HttpBackend, Prepared, SseParser};
use super::openai::{SUMMARY_HEADING, listed_models, object_schema};
use super::{
    BackendInfo, ModelBackend, ModelError, ModelEvent, ModelFinish, ModelInfo, ModelRequest,
    ModelStream,
};
use crate::config::BackendConfig;
use crate::domain::session::{Context, Role, ToolCall};

/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";

/// First guess of Claude tokens per o200k token, until the API reports real counts: Claude's
/// tokenizer splits English text into somewhat more tokens than o200k does.
pub const INITIAL_TOKEN_SCALE: f64 = 1.15;

/// The Messages API backend.
#[derive(Debug)]
pub struct AnthropicBackend {
    http: Arc<HttpBackend>,
    info: BackendInfo,
    listed: Vec<String>,
}

impl AnthropicBackend {
    /// The backend a `[[backends]]` entry of kind `anthropic` describes (reads its key).
    pub fn new(config: &BackendConfig) -> Result<Self, String> {
        Ok(Self {
            http: Arc::new(HttpBackend::new(config)?),
            info: BackendInfo {
                name: config.name.clone(),
                kind: "anthropic".into(),
                context_window: config.context_window,
                default_model: config.default_model.clone(),
                initial_token_scale: INITIAL_TOKEN_SCALE,
            },
            listed: listed_models(config),
        })
    }
}

impl ModelBackend for AnthropicBackend {
    fn models(&self) -> Vec<ModelInfo> {
        self.listed
            .iter()
            .map(|model| ModelInfo {
                name: format!("{}/{model}", self.info.name),
                context_window: self.info.context_window,
                backend: self.info.name.clone(),
                kind: self.info.kind.clone(),
                initial_token_scale: self.info.initial_token_scale,
            })
            .collect()
    }

    fn prefix(&self) -> Option<BackendInfo> {
        Some(self.info.clone())
    }

    fn stream(&self, request: &ModelRequest) -> Result<ModelStream, ModelError> {
        let body = request_body(self.http.provider_model(&request.model), request);
        let mut extra = vec![("anthropic-version", API_VERSION.to_string())];
        if let Some(key) = self.http.key() {
            extra.push(("x-api-key", key.expose().to_string()));
        }
        let prepared = Prepared {
            url: format!("{}/messages", self.http.endpoint),
            headers: self.http.headers(&extra)?,
            body: serde_json::to_vec(&body).unwrap_or_default(),
        };
        Ok(self.http.stream(prepared, EventParser::default()))
    }
}

/// The Messages API request for a model step.
pub fn request_body(model: &str, request: &ModelRequest) -> Value {
    let mut system = Vec::new();
    if !request.system_prompt.is_empty() {
        system.push(request.system_prompt.clone());
    }
    if !request.context_text.is_empty() {
        system.push(request.context_text.clone());
    }
    if let Some(summary) = &request.summary {
        system.push(format!("{SUMMARY_HEADING}\n{summary}"));
    }

    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let (role, blocks) = match message.role {
            Role::User => (
                "user",
                vec![json!({"type": "text", "text": message.content})],
            ),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.content,
                    "is_error": message.is_error,
                })],
            ),
            Role::Assistant => {
                let mut blocks = Vec::new();
                // The API refuses empty text blocks.
                if !message.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": message.content}));
                }
                for call in &message.tool_calls {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": Value::Object(call.arguments.clone()),
                    }));
                }
                ("assistant", blocks)
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    // A window that starts inside the history may open with the model's turn.
    if turns.first().is_some_and(|(role, _)| *role == "assistant") {
        turns.insert(
            0,
            (
                "user",
                vec![json!({"type": "text", "text": "(earlier conversation omitted)"})],
            ),
        );
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();

    let mut body = json!({
        "model": model,
        "max_tokens": request.max_output_tokens.max(1),
        "messages": messages,
        "stream": true,
    });
    if !system.is_empty() {
        body["system"] = Value::String(system.join("\n\n"));
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": object_schema(&tool.input_schema),
                })
            })
            .collect();
    }
    body
}

/// A `tool_use` block being assembled.
#[derive(Debug, Default)]
struct ToolBlock {
    index: u64,
    id: String,
    name: String,
    json: String,
}

/// Reads Messages API stream events.
#[derive(Debug, Default)]
pub struct EventParser {
    tool: Option<ToolBlock>,
    input_tokens: u64,
    output_tokens: u64,
    finish: Option<ModelFinish>,
    stopped: bool,
}

impl SseParser for EventParser {
    fn on_event(
        &mut self,
        http: &HttpBackend,
        event: Event,
    ) -> Result<Vec<ModelEvent>, ModelError> {
        if event.data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let data: Value =
            serde_json::from_str(&event.data).map_err(|e| ModelError::Unavailable {
                backend: http.name.clone(),
                message: format!("the provider sent an event that is not JSON: {e}"),
            })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        let mut events = Vec::new();
        match kind {
            "message_start" => {
                if let Some(usage) = data.pointer("/message/usage") {
                    self.input_tokens = input_tokens(usage);
                    self.output_tokens = field(usage, "output_tokens");
                }
            }
            "content_block_start" => {
                let block = data.get("content_block");
                if block.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
                    let text = |name: &str| {
                        block
                            .and_then(|b| b.get(name))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    self.tool = Some(ToolBlock {
                        index: field(&data, "index"),
                        id: text("id"),
                        name: text("name"),
                        json: String::new(),
                    });
                } else if let Some(text) = block
                    .and_then(|b| b.get("text"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    events.push(ModelEvent::Delta(text.to_string()));
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta");
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(text) = delta
                            .and_then(|d| d.get("text"))
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            events.push(ModelEvent::Delta(text.to_string()));
                        }
                    }
                    Some("input_json_delta") => {
                        if let (Some(tool), Some(part)) = (
                            self.tool.as_mut(),
                            delta
                                .and_then(|d| d.get("partial_json"))
                                .and_then(Value::as_str),
                        ) {
                            tool.json.push_str(part);
                        }
                    }
                    // thinking, signature, citations: not part of the reply text.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = field(&data, "index");
                if self.tool.as_ref().is_some_and(|t| t.index == index)
                    && let Some(tool) = self.tool.take()
                {
                    events.push(ModelEvent::ToolCall(finish_tool(http, tool)?));
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.finish = Some(match reason {
                        "max_tokens" => ModelFinish::Length,
                        "tool_use" => ModelFinish::ToolCalls,
                        _ => ModelFinish::Stop,
                    });
                }
                if let Some(usage) = data.get("usage") {
                    if usage.get("output_tokens").is_some() {
                        self.output_tokens = field(usage, "output_tokens");
                    }
                    if usage
                        .get("input_tokens")
                        .is_some_and(|v| v.as_u64().unwrap_or(0) > 0)
                    {
                        self.input_tokens = input_tokens(usage);
                    }
                }
            }
            "message_stop" => {
                self.stopped = true;
                events.push(ModelEvent::Usage {
                    input_tokens: self.input_tokens,
                    output_tokens: self.output_tokens,
                });
                events.push(ModelEvent::Finish(self.finish.unwrap_or(ModelFinish::Stop)));
            }
            "error" => {
                let kind = data
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let message = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no details)");
                return Err(http.stream_error(kind, message));
            }
            // `ping`, and event types added later (the API promises to add some).
            _ => {}
        }
        Ok(events)
    }

    fn on_end(&mut self, http: &HttpBackend) -> Result<Vec<ModelEvent>, ModelError> {
        if self.stopped {
            return Ok(Vec::new());
        }
        Err(ModelError::Unavailable {
            backend: http.name.clone(),
            message: "the stream ended before message_stop".into(),
        })
    }

    fn complete(&self) -> bool {
        self.stopped
    }
}

fn field(value: &Value, name: &str) -> u64 {
    value.get(name).and_then(Value::as_u64).unwrap_or(0)
}

/// Input tokens including prompt-cache reads and writes (all of them occupy the window).
fn input_tokens(usage: &Value) -> u64 {
    field(usage, "input_tokens")
        + field(usage, "cache_creation_input_tokens")
        + field(usage, "cache_read_input_tokens")
}

fn finish_tool(http: &HttpBackend, tool: ToolBlock) -> Result<ToolCall, ModelError> {
    let arguments = match tool.json.trim() {
        "" => Context::new(),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(ModelError::Unavailable {
                    backend: http.name.clone(),
                    message: format!(
                        "the model called tool '{}' with input that is not a JSON object",
                        tool.name
                    ),
                });
            }
        },
    };
    Ok(ToolCall {
        id: tool.id,
        name: tool.name,
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, BackendKind};

    fn http() -> HttpBackend {
        HttpBackend::new(&BackendConfig::new(
            "an",
            BackendKind::Anthropic,
            "http://127.0.0.1:9",
        ))
        .unwrap()
    }

    fn run(parser: &mut EventParser, events: &[(&str, &str)]) -> Vec<ModelEvent> {
        let http = http();
        events
            .iter()
            .flat_map(|(name, data)| {
                parser
                    .on_event(
                        &http,
                        Event {
                            event: name.to_string(),
                            data: data.to_string(),
                            ..Event::default()
                        },
                    )
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn tool_use_with_split_input_json() {
        let mut p = EventParser::default();
        let events = run(
            &mut p,
            &[
                (
                    "message_start",
                    r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2}}}"#,
                ),
                (
                    "content_block_start",
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}"#,
                ),
                (
                    "content_block_stop",
                    r#"{"type":"content_block_stop","index":0}"#,
                ),
                (
                    "content_block_start",
                    r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}"#,
                ),
                ("ping", r#"{"type": "ping"}"#),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\"}"}}"#,
                ),
                (
                    "content_block_stop",
                    r#"{"type":"content_block_stop","index":1}"#,
                ),
                (
                    "message_delta",
                    r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
                ),
                ("message_stop", r#"{"type":"message_stop"}"#),
            ],
        );
        assert_eq!(events[0], ModelEvent::Delta("Let me check.".into()));
        let ModelEvent::ToolCall(call) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(call.id, "toolu_01");
        assert_eq!(call.arguments["location"], "San Francisco, CA");
        assert_eq!(
            events[2],
            ModelEvent::Usage {
                input_tokens: 472,
                output_tokens: 89
            }
        );
        assert_eq!(events[3], ModelEvent::Finish(ModelFinish::ToolCalls));
        assert!(p.complete());
    }

    #[test]
    fn error_events_map_by_type() {
        let http = http();
        let mut p = EventParser::default();
        let error = p
            .on_event(
                &http,
                Event {
                    event: "error".into(),
                    data: r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#.into(),
                    ..Event::default()
                },
            )
            .unwrap_err();
        assert!(matches!(error, ModelError::Unavailable { .. }), "{error:?}");
    }

    #[test]
    fn request_merges_tool_results_into_one_user_turn() {
        use crate::domain::session::{Message, ToolSpec};
        let message = |role, content: &str, id: &str| {
            std::sync::Arc::new(Message {
                index: 0,
                role,
                content: content.into(),
                tool_calls: if role == Role::Assistant {
                    vec![ToolCall {
                        id: "toolu_1".into(),
                        name: "t".into(),
                        arguments: Context::new(),
                    }]
                } else {
                    vec![]
                },
                tool_call_id: id.into(),
                tool_name: "t".into(),
                is_error: false,
                create_time: std::time::SystemTime::now(),
                token_count: 1,
                turn_id: String::new(),
            })
        };
        let request = ModelRequest {
            model: "an/claude-sonnet-4-5".into(),
            system_prompt: "Be brief.".into(),
            context: Context::new(),
            context_text: String::new(),
            summary: None,
            messages: vec![
                message(Role::User, "weather?", ""),
                message(Role::Assistant, "", ""),
                message(Role::Tool, "sunny", "toolu_1"),
                message(Role::Tool, "warm", "toolu_2"),
            ],
            tools: vec![Arc::new(ToolSpec {
                name: "t".into(),
                description: "d".into(),
                input_schema: Context::new(),
                annotations: Context::new(),
            })],
            max_output_tokens: 64,
        };
        let body = request_body("claude-sonnet-4-5", &request);
        assert_eq!(body["system"], "Be brief.");
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1]["content"][0]["type"], "tool_use");
        assert_eq!(messages[2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(messages[2]["content"][1]["tool_use_id"], "toolu_2");
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    }
}
