//! Tool-call arguments assembled from JSON split into stream chunks, for both providers.
//!
//! Input: a split byte and the arguments text. The text is cut into pieces of 1 to 7
//! characters and streamed the way each provider does it: OpenAI-compatible
//! `function.arguments` deltas, Anthropic `input_json_delta` events. Checked: when the text
//! is a JSON object, both parsers give one tool call whose arguments equal it; blank text is
//! an empty object; anything else is an error that names the backend.
#![no_main]

use contextd::config::BackendKind;
use contextd::fuzzing::{AnthropicEventParser, ModelEvent, OpenAiChunkParser};
use contextd_fuzz::{BACKEND_NAME, SseOutcome, check_sse_outcome, http_backend, read_sse};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn frame(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(event) => format!("event: {event}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

fn openai_body(pieces: &[String]) -> String {
    let mut body = frame(
        None,
        &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0,
            "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1",
            "type": "function", "function": {"name": "lookup", "arguments": ""}}]},
            "finish_reason": null}]}),
    );
    for piece in pieces {
        body += &frame(
            None,
            &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                "finish_reason": null}]}),
        );
    }
    body += &frame(
        None,
        &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    );
    body + "data: [DONE]\n\n"
}

fn anthropic_body(pieces: &[String]) -> String {
    let mut body = frame(
        Some("message_start"),
        &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    );
    body += &frame(
        Some("content_block_start"),
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use",
            "id": "toolu_1", "name": "lookup", "input": {}}}),
    );
    for piece in pieces {
        body += &frame(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
        );
    }
    body += &frame(
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": 0}),
    );
    body += &frame(
        Some("message_delta"),
        &json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 5}}),
    );
    body + &frame(Some("message_stop"), &json!({"type": "message_stop"}))
}

fn check(provider: &str, outcome: &SseOutcome, text: &str) {
    check_sse_outcome(outcome);
    let calls: Vec<_> = outcome
        .events
        .iter()
        .filter_map(|e| match e {
            ModelEvent::ToolCall(call) => Some(call),
            _ => None,
        })
        .collect();
    let expected = if text.trim().is_empty() {
        Some(serde_json::Map::new())
    } else {
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        }
    };
    match expected {
        Some(arguments) => {
            assert!(outcome.error.is_none(), "{provider}: {:?}", outcome.error);
            assert_eq!(calls.len(), 1, "{provider}: {:?}", outcome.events);
            assert_eq!(
                calls[0].arguments, arguments,
                "{provider}: arguments differ"
            );
            assert_eq!(calls[0].name, "lookup");
        }
        None => {
            let error = outcome.error.as_ref().unwrap_or_else(|| {
                panic!(
                    "{provider}: arguments {text:?} accepted: {:?}",
                    outcome.events
                )
            });
            let message = error.to_string();
            assert!(
                message.contains(BACKEND_NAME) && message.contains("lookup"),
                "{message}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let pieces = pieces(text, usize::from(split % 7) + 1);
    let chunk = usize::from(split / 7 % 32) + 1;

    let body = openai_body(&pieces);
    let openai = http_backend(BackendKind::Openai);
    let outcome = read_sse(
        &openai,
        OpenAiChunkParser::default(),
        body.as_bytes(),
        chunk,
    );
    check("openai", &outcome, text);

    let body = anthropic_body(&pieces);
    let anthropic = http_backend(BackendKind::Anthropic);
    let outcome = read_sse(
        &anthropic,
        AnthropicEventParser::default(),
        body.as_bytes(),
        chunk,
    );
    check("anthropic", &outcome, text);
});
