//! The wire format of the fake OpenAI-compatible upstream (`fake-openai`) that the `gateway`
//! scenario puts behind both gateways: every call is answered at once with the same short
//! reply ([`REPLY`], [`REPLY_WORDS`] words), so the model costs next to nothing and what is
//! measured is the gateway.
//!
//! - `POST /v1/chat/completions` with `"stream": true`: server-sent events as OpenAI sends
//!   them — a first `chat.completion.chunk` with the assistant role and empty content, one
//!   chunk per word, a chunk with `finish_reason: "stop"`, with
//!   `stream_options.include_usage` a last chunk with no choices and the `usage`, then
//!   `data: [DONE]`; every event is `data: <json>` and a blank line.
//! - `POST /v1/chat/completions` without it: one `chat.completion` object.
//! - `POST /v1/responses` (what SMG's `openai` backend calls for the Responses API, with the
//!   conversation's earlier items inlined in `input` and `store: false`): one `response`
//!   object, non-streaming.
//! - `GET /v1/models`, `GET /health`, and `GET /fake/stats`: the calls and input items
//!   received so far, so a run can tell how many upstream calls a turn made and how much of
//!   the conversation each carried.
//!
//! Token counts are estimates (a quarter of the bytes of what was sent in), as a local
//! server without a tokenizer would report them.

use bytes::Bytes;
use serde_json::{Value, json};

/// The reply to every call.
pub const REPLY: &str = "This is the fake upstream's fixed reply: twenty short words, streamed \
one at a time, so the model costs nothing.";

/// Words in [`REPLY`]; a streamed reply has one content chunk per word.
pub const REPLY_WORDS: usize = 20;

/// The model named in replies when a request names none.
pub const DEFAULT_MODEL: &str = "gpt-fake";

/// The `created` stamp of every reply (a fixed time keeps replies the same size).
pub const CREATED: u64 = 1_767_225_600;

/// What a request body asks for, as far as the fake reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The `model` member, or [`DEFAULT_MODEL`].
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// Items of `messages` (Chat Completions) or `input` (Responses; a string is one).
    pub items: u64,
    /// Estimated input tokens.
    pub input_tokens: u64,
}

/// Reads a request body; `None` when it is not a JSON object.
pub fn asked(body: &[u8]) -> Option<Asked> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let request = request.as_object()?;
    let items = match request.get("messages").or_else(|| request.get("input")) {
        Some(Value::Array(items)) => items.len() as u64,
        Some(Value::String(_)) => 1,
        _ => 0,
    };
    Some(Asked {
        model: request
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(DEFAULT_MODEL)
            .to_string(),
        stream: request.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: request
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true),
        items,
        input_tokens: (body.len() as u64).div_ceil(4),
    })
}

/// The words of [`REPLY`] as content deltas: the first bare, the others after a space, so
/// that they join back into [`REPLY`].
pub fn deltas() -> impl Iterator<Item = String> {
    REPLY.split(' ').enumerate().map(|(i, word)| {
        if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        }
    })
}

/// `value` as a JSON string literal.
fn quoted(value: &str) -> String {
    Value::from(value).to_string()
}

/// The `usage` of a Chat Completions reply, members in OpenAI's order.
fn usage_chat(asked: &Asked) -> String {
    format!(
        concat!(
            r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"#,
            r#""prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"#,
            r#""completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"#,
            r#""accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#
        ),
        asked.input_tokens,
        REPLY_WORDS,
        asked.input_tokens + REPLY_WORDS as u64
    )
}

/// One server-sent event: `data: <payload>` and a blank line.
pub fn event(payload: &str) -> Bytes {
    Bytes::from(format!("data: {payload}\n\n"))
}

/// The events of a streamed Chat Completions reply, `id` its completion id. Members come in
/// the order OpenAI writes them.
pub fn chat_stream(asked: &Asked, id: &str) -> Vec<Bytes> {
    let head = format!(
        r#"{{"id":{},"object":"chat.completion.chunk","created":{CREATED},"model":{},"service_tier":"default","system_fingerprint":"fp_fake","choices":"#,
        quoted(id),
        quoted(&asked.model)
    );
    // With include_usage, OpenAI sends `"usage":null` on every chunk but the last.
    let tail = if asked.include_usage {
        r#","usage":null}"#
    } else {
        "}"
    };
    let chunk = |delta: &str, finish: &str| {
        event(&format!(
            r#"{head}[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]{tail}"#
        ))
    };
    let mut events = Vec::with_capacity(REPLY_WORDS + 4);
    events.push(chunk(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
    ));
    for delta in deltas() {
        events.push(chunk(
            &format!(r#"{{"content":{}}}"#, quoted(&delta)),
            "null",
        ));
    }
    events.push(chunk("{}", r#""stop""#));
    if asked.include_usage {
        events.push(event(&format!(
            r#"{head}[],"usage":{}}}"#,
            usage_chat(asked)
        )));
    }
    events.push(event("[DONE]"));
    events
}

/// A non-streamed Chat Completions reply, members in OpenAI's order.
pub fn chat_completion(asked: &Asked, id: &str) -> String {
    format!(
        concat!(
            r#"{{"id":{},"object":"chat.completion","created":{},"model":{},"#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":{},"refusal":null,"annotations":[]}},"#,
            r#""logprobs":null,"finish_reason":"stop"}}],"usage":{},"#,
            r#""service_tier":"default","system_fingerprint":"fp_fake"}}"#
        ),
        quoted(id),
        CREATED,
        quoted(&asked.model),
        quoted(REPLY),
        usage_chat(asked)
    )
}

/// A Responses API reply (`id` the response's, `message_id` its output message's), members
/// in OpenAI's order.
pub fn response(asked: &Asked, id: &str, message_id: &str) -> String {
    format!(
        concat!(
            r#"{{"id":{},"object":"response","created_at":{},"status":"completed","background":false,"#,
            r#""error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"#,
            r#""model":{},"output":[{{"id":{},"type":"message","status":"completed","#,
            r#""content":[{{"type":"output_text","annotations":[],"logprobs":[],"text":{}}}],"#,
            r#""role":"assistant"}}],"parallel_tool_calls":true,"previous_response_id":null,"#,
            r#""reasoning":{{"effort":null,"summary":null}},"service_tier":"default","store":false,"#,
            r#""temperature":1.0,"text":{{"format":{{"type":"text"}}}},"tool_choice":"auto","#,
            r#""tools":[],"top_p":1.0,"truncation":"disabled","#,
            r#""usage":{{"input_tokens":{},"input_tokens_details":{{"cached_tokens":0}},"#,
            r#""output_tokens":{},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}},"#,
            r#""user":null,"metadata":{{}}}}"#
        ),
        quoted(id),
        CREATED,
        quoted(&asked.model),
        quoted(message_id),
        quoted(REPLY),
        asked.input_tokens,
        REPLY_WORDS,
        asked.input_tokens + REPLY_WORDS as u64
    )
}

/// An OpenAI error body.
pub fn error(message: &str, kind: &str, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": null}})
}

/// The model list of `GET /v1/models`.
pub fn models() -> Value {
    json!({
        "object": "list",
        "data": [{"id": DEFAULT_MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}]
    })
}

/// The text of a Responses API reply: its output messages' `output_text` parts, joined.
pub fn response_text(reply: &Value) -> Option<String> {
    let mut text = String::new();
    for item in reply.get("output")?.as_array()? {
        if item.get("type").and_then(Value::as_str) != Some("message") {
            continue;
        }
        for part in item.get("content")?.as_array()? {
            if part.get("type").and_then(Value::as_str) == Some("output_text") {
                text.push_str(part.get("text")?.as_str()?);
            }
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_has_its_word_count() {
        assert_eq!(REPLY.split(' ').count(), REPLY_WORDS);
        assert_eq!(deltas().collect::<String>(), REPLY);
    }

    #[test]
    fn reads_requests() {
        let chat = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"}]}"#;
        let asked = asked(chat).unwrap();
        assert_eq!(asked.model, "m");
        assert!(asked.stream && asked.include_usage);
        assert_eq!(asked.items, 2);
        assert_eq!(asked.input_tokens, (chat.len() as u64).div_ceil(4));

        let responses = super::asked(br#"{"input":"Hello","store":false}"#).unwrap();
        assert_eq!(responses.model, DEFAULT_MODEL);
        assert!(!responses.stream);
        assert_eq!(responses.items, 1);
        assert!(super::asked(b"[1]").is_none());
        assert!(super::asked(b"nope").is_none());
    }

    #[test]
    fn a_stream_is_openai_shaped() {
        let asked =
            asked(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#)
                .unwrap();
        let events = chat_stream(&asked, "chatcmpl-1");
        assert_eq!(events.len(), REPLY_WORDS + 4);
        let mut text = String::new();
        let mut finish = None;
        let mut usage = None;
        for (i, event) in events.iter().enumerate() {
            let line = std::str::from_utf8(event).unwrap();
            let payload = line.strip_prefix("data: ").unwrap();
            assert!(payload.ends_with("\n\n") && !payload[..payload.len() - 2].contains('\n'));
            let payload = payload.trim_end();
            if i == events.len() - 1 {
                assert_eq!(payload, "[DONE]");
                continue;
            }
            let chunk: Value = serde_json::from_str(payload).unwrap();
            assert!(payload.starts_with(r#"{"id":"chatcmpl-1","object":"chat.completion.chunk""#));
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["model"], "m");
            if let Some(choice) = chunk["choices"].get(0) {
                if i == 0 {
                    assert_eq!(choice["delta"]["role"], "assistant");
                }
                if let Some(t) = choice["delta"]["content"].as_str() {
                    text.push_str(t);
                }
                if !choice["finish_reason"].is_null() {
                    finish = Some(choice["finish_reason"].clone());
                }
            } else if chunk["usage"].is_object() {
                usage = Some(chunk["usage"]["completion_tokens"].clone());
            }
        }
        assert_eq!(text, REPLY);
        assert_eq!(finish, Some(json!("stop")));
        assert_eq!(usage, Some(json!(REPLY_WORDS)));

        let plain = super::asked(br#"{"stream":true}"#).unwrap();
        let events = chat_stream(&plain, "chatcmpl-2");
        assert_eq!(events.len(), REPLY_WORDS + 3);
        assert!(!std::str::from_utf8(&events[1]).unwrap().contains("usage"));
    }

    #[test]
    fn replies_carry_the_text() {
        let asked = asked(br#"{"model":"m","input":[{"role":"user","content":"hi"}]}"#).unwrap();
        let reply: Value = serde_json::from_str(&response(&asked, "resp_1", "msg_1")).unwrap();
        assert_eq!(reply["object"], "response");
        assert_eq!(response_text(&reply).as_deref(), Some(REPLY));
        assert_eq!(reply["usage"]["output_tokens"], REPLY_WORDS);
        let chat: Value = serde_json::from_str(&chat_completion(&asked, "chatcmpl-1")).unwrap();
        assert_eq!(chat["choices"][0]["message"]["content"], REPLY);
        assert!(response_text(&json!({"output": "x"})).is_none());
    }
}
