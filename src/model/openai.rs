//! The `openai` backend: any OpenAI-compatible Chat Completions endpoint (OpenAI, Ollama,
//! vLLM, llama.cpp server, LM Studio), streamed.
//!
//! Mapping: the system prompt, the rendered context and the running summary become `system`
//! messages; history keeps its roles (`tool` messages carry `tool_call_id`); tools are offered
//! as `tools[].function` with their JSON Schema as `parameters`. The reply streams as
//! `chat.completion.chunk` events: text deltas go out as they arrive; `tool_calls` deltas are
//! assembled by `index` (a call's `arguments` may be split anywhere, even mid-JSON) and
//! released when the reply ends; `stream_options.include_usage` adds a final chunk with
//! `usage`; `data: [DONE]` ends the stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use eventsource_stream::Event;
use serde_json::{Value, json};

use super::http::{HttpBackend, Prepared, SseParser};
use super::{
    BackendInfo, ModelBackend, ModelError, ModelEvent, ModelFinish, ModelInfo, ModelRequest,
    ModelStream,
};
use crate::config::BackendConfig;
use crate::domain::session::{Context, Role, ToolCall};

/// Prefix of the summary's system message.
pub const SUMMARY_HEADING: &str = "Summary of the earlier conversation:";

/// An OpenAI-compatible backend.
#[derive(Debug)]
pub struct OpenAiBackend {
    http: Arc<HttpBackend>,
    info: BackendInfo,
    listed: Vec<String>,
}

impl OpenAiBackend {
    /// The backend a `[[backends]]` entry of kind `openai` describes (reads its key).
    pub fn new(config: &BackendConfig) -> Result<Self, String> {
        Ok(Self {
            http: Arc::new(HttpBackend::new(config)?),
            info: BackendInfo {
                name: config.name.clone(),
                kind: "openai".into(),
                context_window: config.context_window,
                default_model: config.default_model.clone(),
                initial_token_scale: 1.0,
            },
            listed: listed_models(config),
        })
    }
}

/// The default model first, then the other listed ones, without repeats.
pub fn listed_models(config: &BackendConfig) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for model in std::iter::once(&config.default_model).chain(&config.models) {
        if !model.is_empty() && !names.contains(model) {
            names.push(model.clone());
        }
    }
    names
}

impl ModelBackend for OpenAiBackend {
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
        let mut extra = Vec::new();
        if let Some(key) = self.http.key() {
            extra.push(("authorization", format!("Bearer {}", key.expose())));
        }
        let prepared = Prepared {
            url: format!("{}/chat/completions", self.http.endpoint),
            headers: self.http.headers(&extra)?,
            body: serde_json::to_vec(&body).unwrap_or_default(),
        };
        Ok(self.http.stream(prepared, ChunkParser::default()))
    }
}

/// The Chat Completions request for a model step.
pub fn request_body(model: &str, request: &ModelRequest) -> Value {
    let mut messages = Vec::new();
    for system in [
        request.system_prompt.clone(),
        request.context_text.clone(),
        request
            .summary
            .as_ref()
            .map(|s| format!("{SUMMARY_HEADING}\n{s}"))
            .unwrap_or_default(),
    ] {
        if !system.is_empty() {
            messages.push(json!({"role": "system", "content": system}));
        }
    }
    for message in &request.messages {
        messages.push(match message.role {
            Role::User => json!({"role": "user", "content": message.content}),
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": message.tool_call_id,
                "content": message.content,
            }),
            Role::Assistant => {
                let mut value = json!({"role": "assistant", "content": message.content});
                if !message.tool_calls.is_empty() {
                    if message.content.is_empty() {
                        value["content"] = Value::Null;
                    }
                    value["tool_calls"] = message
                        .tool_calls
                        .iter()
                        .map(|call| {
                            json!({
                                "id": call.id,
                                "type": "function",
                                "function": {
                                    "name": call.name,
                                    "arguments": Value::Object(call.arguments.clone()).to_string(),
                                },
                            })
                        })
                        .collect();
                }
                value
            }
        });
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_completion_tokens": request.max_output_tokens,
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": object_schema(&tool.input_schema),
                    },
                })
            })
            .collect();
    }
    body
}

/// A tool's schema as providers require it: an object schema (an empty one accepts any
/// object).
pub fn object_schema(schema: &Context) -> Value {
    if schema.is_empty() {
        json!({"type": "object", "properties": {}})
    } else {
        Value::Object(schema.clone())
    }
}

/// A tool call being assembled from deltas.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Reads `chat.completion.chunk` events.
#[derive(Debug, Default)]
pub struct ChunkParser {
    calls: BTreeMap<u64, PartialCall>,
    finish: Option<ModelFinish>,
    usage: Option<(u64, u64)>,
    done: bool,
}

impl ChunkParser {
    fn closing_events(&mut self, http: &HttpBackend) -> Result<Vec<ModelEvent>, ModelError> {
        let mut events = Vec::new();
        for (_, call) in std::mem::take(&mut self.calls) {
            events.push(ModelEvent::ToolCall(finish_call(http, call)?));
        }
        if let Some((input_tokens, output_tokens)) = self.usage {
            events.push(ModelEvent::Usage {
                input_tokens,
                output_tokens,
            });
        }
        let finish = match self.finish {
            Some(ModelFinish::Stop)
                if events.iter().any(|e| matches!(e, ModelEvent::ToolCall(_))) =>
            {
                // Some servers say "stop" after tool calls; the calls decide.
                ModelFinish::ToolCalls
            }
            Some(finish) => finish,
            None => ModelFinish::Stop,
        };
        events.push(ModelEvent::Finish(finish));
        Ok(events)
    }
}

fn finish_call(http: &HttpBackend, call: PartialCall) -> Result<ToolCall, ModelError> {
    let arguments = match call.arguments.trim() {
        "" => Context::new(),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(ModelError::Unavailable {
                    backend: http.name.clone(),
                    message: format!(
                        "the model called tool '{}' with arguments that are not a JSON object",
                        call.name
                    ),
                });
            }
        },
    };
    Ok(ToolCall {
        id: call.id,
        name: call.name,
        arguments,
    })
}

impl SseParser for ChunkParser {
    fn on_event(
        &mut self,
        http: &HttpBackend,
        event: Event,
    ) -> Result<Vec<ModelEvent>, ModelError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return self.closing_events(http);
        }
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| ModelError::Unavailable {
            backend: http.name.clone(),
            message: format!("the provider sent an event that is not JSON: {e}"),
        })?;
        if let Some(error) = chunk.get("error") {
            let kind = error
                .get("type")
                .or_else(|| error.get("code"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| error.to_string());
            return Err(http.stream_error(kind, &message));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let field = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some((field("prompt_tokens"), field("completion_tokens")));
        }
        let mut events = Vec::new();
        let choices = chunk.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            let delta = choice.get("delta");
            if let Some(text) = delta
                .and_then(|d| d.get("content"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                events.push(ModelEvent::Delta(text.to_string()));
            }
            let calls = delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let partial = self.calls.entry(index).or_default();
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    partial.id = id.to_string();
                }
                let function = call.get("function");
                if let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) {
                    partial.name.push_str(name);
                }
                if let Some(arguments) = function
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                {
                    partial.arguments.push_str(arguments);
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(match reason {
                    "length" => ModelFinish::Length,
                    "tool_calls" | "function_call" => ModelFinish::ToolCalls,
                    _ => ModelFinish::Stop,
                });
            }
        }
        Ok(events)
    }

    fn on_end(&mut self, http: &HttpBackend) -> Result<Vec<ModelEvent>, ModelError> {
        if self.done {
            return Ok(Vec::new());
        }
        // Servers that omit `[DONE]` still say how the reply finished.
        if self.finish.is_some() {
            self.done = true;
            return self.closing_events(http);
        }
        Err(ModelError::Unavailable {
            backend: http.name.clone(),
            message: "the stream ended before the reply was complete".into(),
        })
    }

    fn complete(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, BackendKind};

    fn http() -> HttpBackend {
        HttpBackend::new(&BackendConfig::new(
            "oa",
            BackendKind::Openai,
            "http://127.0.0.1:9",
        ))
        .unwrap()
    }

    fn feed(parser: &mut ChunkParser, data: &str) -> Vec<ModelEvent> {
        parser
            .on_event(
                &http(),
                Event {
                    data: data.into(),
                    ..Event::default()
                },
            )
            .unwrap()
    }

    #[test]
    fn assembles_parallel_tool_calls_split_mid_json() {
        let mut p = ChunkParser::default();
        let http = http();
        assert!(feed(&mut p, r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#).is_empty());
        feed(
            &mut p,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]},"finish_reason":null}]}"#,
        );
        feed(
            &mut p,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}]}"#,
        );
        feed(
            &mut p,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\": \"Paris\"}"}}]},"finish_reason":null}]}"#,
        );
        feed(
            &mut p,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        );
        feed(
            &mut p,
            r#"{"choices":[],"usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99}}"#,
        );
        let events = p
            .on_event(
                &http,
                Event {
                    data: "[DONE]".into(),
                    ..Event::default()
                },
            )
            .unwrap();
        assert!(p.complete());
        let ModelEvent::ToolCall(first) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (first.id.as_str(), first.name.as_str()),
            ("call_a", "get_weather")
        );
        assert_eq!(first.arguments["city"], "Paris");
        let ModelEvent::ToolCall(second) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(second.name, "get_time");
        assert_eq!(
            events[2],
            ModelEvent::Usage {
                input_tokens: 82,
                output_tokens: 17
            }
        );
        assert_eq!(events[3], ModelEvent::Finish(ModelFinish::ToolCalls));
    }

    #[test]
    fn a_stream_without_a_finish_is_cut() {
        let mut p = ChunkParser::default();
        feed(
            &mut p,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
        );
        assert!(matches!(
            p.on_end(&http()),
            Err(ModelError::Unavailable { .. })
        ));
    }

    #[test]
    fn request_maps_roles_tools_and_summary() {
        use crate::domain::session::{Message, ToolSpec};
        let message = |role, content: &str| {
            std::sync::Arc::new(Message {
                index: 0,
                role,
                content: content.into(),
                tool_calls: vec![],
                tool_call_id: "call_1".into(),
                tool_name: "t".into(),
                is_error: false,
                create_time: std::time::SystemTime::now(),
                token_count: 1,
                turn_id: String::new(),
            })
        };
        let request = ModelRequest {
            model: "oa/gpt-4o-mini".into(),
            system_prompt: "Be brief.".into(),
            context: Context::new(),
            context_text: "Session context (JSON):\n{}".into(),
            summary: Some("They met.".into()),
            messages: vec![message(Role::User, "hi"), message(Role::Tool, "42")],
            tools: vec![Arc::new(ToolSpec {
                name: "t".into(),
                description: "d".into(),
                input_schema: Context::new(),
                annotations: Context::new(),
            })],
            max_output_tokens: 50,
        };
        let body = request_body(http().provider_model(&request.model), &request);
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(
            body["messages"][2]["content"],
            "Summary of the earlier conversation:\nThey met."
        );
        assert_eq!(body["messages"][4]["role"], "tool");
        assert_eq!(body["messages"][4]["tool_call_id"], "call_1");
        assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");
        assert_eq!(body["stream_options"]["include_usage"], true);
    }
}
