//! Fake model providers on loopback, for tests without the internet.
//!
//! One small HTTP/1.1 server plays either provider: it records every request (path, headers,
//! JSON body, arrival time) and answers each with the next scripted [`Reply`], written byte for
//! byte: server-sent-event streams in the exact framing of the OpenAI Chat Completions and
//! Anthropic Messages API references (one HTTP chunk per event), error statuses with
//! `Retry-After`, a stream cut without its final chunk, or a stream that stalls until the
//! client closes the connection (which the server observes and reports).
//!
//! The fixtures below follow the public API references' examples: field order, spacing and
//! event names as the providers send them.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How a scripted stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The final chunk is sent; the connection stays open for the next request.
    Complete,
    /// The connection is closed without the final chunk: a cut stream.
    Cut,
    /// Nothing more is sent; the server waits until the client closes the connection.
    Stall,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200 text/event-stream`: each frame is one chunk, `gap` apart.
    Sse {
        /// The raw SSE frames (each ends with a blank line).
        frames: Vec<String>,
        /// Pause before each frame.
        gap: Duration,
        /// How the stream ends.
        end: StreamEnd,
    },
    /// Any status with extra headers and a body.
    Status {
        /// HTTP status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// JSON body.
        body: String,
    },
    /// Reads the request and answers nothing, not even a status line, until the client
    /// closes the connection (counted as [`FakeProvider::closed_by_client`]).
    StallBeforeHead,
    /// Reads the request and closes the connection before a status line.
    CloseBeforeHead,
}

impl Reply {
    /// A complete SSE stream.
    pub fn sse(frames: Vec<String>) -> Self {
        Reply::Sse {
            frames,
            gap: Duration::ZERO,
            end: StreamEnd::Complete,
        }
    }

    /// An error status with a JSON body.
    pub fn status(status: u16, body: &str) -> Self {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// The same reply with an extra header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Status { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request path.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: HashMap<String, String>,
    /// The JSON body.
    pub body: Json,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    client_closed: Mutex<usize>,
    changed: Notify,
}

/// A fake provider listening on `127.0.0.1:<ephemeral>`.
#[derive(Clone)]
pub struct FakeProvider {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeProvider {
    /// Starts a fake with no replies scripted (it answers 500 until some are).
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake provider");
        let addr = listener.local_addr().expect("fake provider address");
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                tokio::spawn(serve_connection(socket, accepting.clone()));
            }
        });
        Self { addr, shared }
    }

    /// The base URL a backend config should use (`http://127.0.0.1:<port>/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues replies, answered in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .replies
            .lock()
            .expect("replies lock")
            .extend(replies);
    }

    /// Replies not used yet.
    pub fn unused_replies(&self) -> usize {
        self.shared.replies.lock().expect("replies lock").len()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// How many stalled streams the client closed.
    pub fn closed_by_client(&self) -> usize {
        *self.shared.client_closed.lock().expect("closed lock")
    }

    /// Waits until the client has closed `count` stalled streams in total.
    pub async fn wait_client_closed(&self, count: usize) {
        loop {
            let notified = self.shared.changed.notified();
            if self.closed_by_client() >= count {
                return;
            }
            notified.await;
        }
    }
}

async fn serve_connection(mut socket: TcpStream, shared: Arc<Shared>) {
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let header_end = loop {
            if let Some(at) = find(&buffer, b"\r\n\r\n") {
                break at;
            }
            let mut chunk = [0u8; 8192];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body_start = header_end + 4;
        while buffer.len() < body_start + length {
            let mut chunk = [0u8; 8192];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body =
            serde_json::from_slice(&buffer[body_start..body_start + length]).unwrap_or(Json::Null);
        buffer.drain(..body_start + length);
        shared
            .requests
            .lock()
            .expect("requests lock")
            .push(Recorded {
                path,
                headers,
                body,
                at: Instant::now(),
            });
        shared.changed.notify_waiters();

        let reply = shared
            .replies
            .lock()
            .expect("replies lock")
            .pop_front()
            .unwrap_or_else(|| {
                Reply::status(
                    500,
                    r#"{"error":{"message":"fake provider: no reply scripted","type":"server_error"}}"#,
                )
            });
        match reply {
            Reply::StallBeforeHead => {
                wait_for_client_close(&mut socket, &shared).await;
                return;
            }
            Reply::CloseBeforeHead => return,
            Reply::Status {
                status,
                headers,
                body,
            } => {
                let mut response = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    reason(status),
                    body.len()
                );
                for (name, value) in headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(&body);
                if socket.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Sse { frames, gap, end } => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for frame in frames {
                    if !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    let chunk = format!("{:x}\r\n{frame}\r\n", frame.len());
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                match end {
                    StreamEnd::Complete => {
                        if socket.write_all(b"0\r\n\r\n").await.is_err() {
                            return;
                        }
                    }
                    StreamEnd::Cut => return,
                    StreamEnd::Stall => {
                        wait_for_client_close(&mut socket, &shared).await;
                        return;
                    }
                }
            }
        }
    }
}

/// Sends nothing more and waits until the client closes the connection, then counts it.
async fn wait_for_client_close(socket: &mut TcpStream, shared: &Shared) {
    let mut rest = [0u8; 1024];
    loop {
        match socket.read(&mut rest).await {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    *shared.client_closed.lock().expect("closed lock") += 1;
    shared.changed.notify_waiters();
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions fixtures (`chat.completion.chunk`, as in the API reference)
// ---------------------------------------------------------------------------------------------

/// One `data:` frame.
pub fn openai_frame(json: &str) -> String {
    format!("data: {json}\n\n")
}

fn openai_chunk(delta: &str, finish: &str) -> String {
    openai_frame(&format!(
        r#"{{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#
    ))
}

/// The usage chunk `stream_options.include_usage` adds (empty `choices`).
pub fn openai_usage(prompt: u64, completion: u64) -> String {
    openai_frame(&format!(
        r#"{{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
        prompt + completion
    ))
}

/// `data: [DONE]`.
pub fn openai_done() -> String {
    "data: [DONE]\n\n".to_string()
}

/// A streamed text reply: a role chunk, one chunk per piece, the finish chunk, usage, done.
pub fn openai_text(pieces: &[&str], usage: (u64, u64)) -> Vec<String> {
    let mut frames = vec![openai_chunk(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
    )];
    for piece in pieces {
        frames.push(openai_chunk(
            &format!(r#"{{"content":{}}}"#, Json::String(piece.to_string())),
            "null",
        ));
    }
    frames.push(openai_chunk("{}", r#""stop""#));
    frames.push(openai_usage(usage.0, usage.1));
    frames.push(openai_done());
    frames
}

/// A streamed reply with parallel tool calls. Each call is `(id, name, argument pieces)`: the
/// first piece arrives with the id and name, the others in later chunks, interleaved between
/// the calls, split wherever the pieces say (mid-JSON included).
pub fn openai_tool_calls(calls: &[(&str, &str, &[&str])], usage: (u64, u64)) -> Vec<String> {
    let mut frames = vec![openai_chunk(
        r#"{"role":"assistant","content":null}"#,
        "null",
    )];
    let most = calls.iter().map(|(_, _, p)| p.len()).max().unwrap_or(0);
    for round in 0..most.max(1) {
        for (index, (id, name, pieces)) in calls.iter().enumerate() {
            let piece = Json::String(pieces.get(round).copied().unwrap_or_default().to_string());
            if round == 0 {
                frames.push(openai_chunk(
                    &format!(
                        r#"{{"tool_calls":[{{"index":{index},"id":"{id}","type":"function","function":{{"name":"{name}","arguments":{piece}}}}}]}}"#
                    ),
                    "null",
                ));
            } else if round < pieces.len() {
                frames.push(openai_chunk(
                    &format!(
                        r#"{{"tool_calls":[{{"index":{index},"function":{{"arguments":{piece}}}}}]}}"#
                    ),
                    "null",
                ));
            }
        }
    }
    frames.push(openai_chunk("{}", r#""tool_calls""#));
    frames.push(openai_usage(usage.0, usage.1));
    frames.push(openai_done());
    frames
}

/// An error object sent inside a stream, as OpenAI-compatible servers do.
pub fn openai_stream_error(message: &str) -> String {
    openai_frame(&format!(
        r#"{{"error":{{"message":{},"type":"server_error","param":null,"code":null}}}}"#,
        Json::String(message.to_string())
    ))
}

/// The 400 body of a window that is too long.
pub const OPENAI_CONTEXT_LENGTH: &str = r#"{
  "error": {
    "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9120 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded"
  }
}"#;

/// The 401 body, which quotes part of the key.
pub fn openai_invalid_key(key: &str) -> String {
    format!(
        r#"{{
  "error": {{
    "message": "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys.",
    "type": "invalid_request_error",
    "param": null,
    "code": "invalid_api_key"
  }}
}}"#
    )
}

/// The 429 body.
pub const OPENAI_RATE_LIMITED: &str = r#"{
  "error": {
    "message": "Rate limit reached for gpt-4o-mini in organization org-123 on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
    "type": "requests",
    "param": null,
    "code": "rate_limit_exceeded"
  }
}"#;

// ---------------------------------------------------------------------------------------------
// Anthropic Messages fixtures (streaming events, as in the API reference)
// ---------------------------------------------------------------------------------------------

/// One `event:` + `data:` frame.
pub fn anthropic_frame(event: &str, data: &str) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn message_start(input_tokens: u64) -> String {
    anthropic_frame(
        "message_start",
        &format!(
            r#"{{"type": "message_start", "message": {{"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null, "usage": {{"input_tokens": {input_tokens}, "output_tokens": 1}}}}}}"#
        ),
    )
}

fn message_end(stop_reason: &str, output_tokens: u64) -> Vec<String> {
    vec![
        anthropic_frame(
            "message_delta",
            &format!(
                r#"{{"type": "message_delta", "delta": {{"stop_reason": "{stop_reason}", "stop_sequence":null}}, "usage": {{"output_tokens": {output_tokens}}}}}"#
            ),
        ),
        anthropic_frame("message_stop", r#"{"type": "message_stop"}"#),
    ]
}

/// A streamed text reply (with a `ping` after the block starts, as the API sends).
pub fn anthropic_text(pieces: &[&str], input_tokens: u64, output_tokens: u64) -> Vec<String> {
    let mut frames = vec![
        message_start(input_tokens),
        anthropic_frame(
            "content_block_start",
            r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}"#,
        ),
        anthropic_frame("ping", r#"{"type": "ping"}"#),
    ];
    for piece in pieces {
        frames.push(anthropic_frame(
            "content_block_delta",
            &format!(
                r#"{{"type": "content_block_delta", "index": 0, "delta": {{"type": "text_delta", "text": {}}}}}"#,
                Json::String(piece.to_string())
            ),
        ));
    }
    frames.push(anthropic_frame(
        "content_block_stop",
        r#"{"type": "content_block_stop", "index": 0}"#,
    ));
    frames.extend(message_end("end_turn", output_tokens));
    frames
}

/// A reply with text, then one `tool_use` block whose input arrives in `pieces`.
pub fn anthropic_tool_use(text: &str, id: &str, name: &str, pieces: &[&str]) -> Vec<String> {
    let mut frames = vec![
        message_start(472),
        anthropic_frame(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        anthropic_frame(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
                Json::String(text.to_string())
            ),
        ),
        anthropic_frame(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        anthropic_frame(
            "content_block_start",
            &format!(
                r#"{{"type":"content_block_start","index":1,"content_block":{{"type":"tool_use","id":"{id}","name":"{name}","input":{{}}}}}}"#
            ),
        ),
        anthropic_frame(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        ),
    ];
    for piece in pieces {
        frames.push(anthropic_frame(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":1,"delta":{{"type":"input_json_delta","partial_json":{}}}}}"#,
                Json::String(piece.to_string())
            ),
        ));
    }
    frames.push(anthropic_frame(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":1}"#,
    ));
    frames.extend(message_end("tool_use", 89));
    frames
}

/// The `error` event (for example `overloaded_error`).
pub fn anthropic_error(kind: &str, message: &str) -> String {
    anthropic_frame(
        "error",
        &format!(r#"{{"type": "error", "error": {{"type": "{kind}", "message": "{message}"}}}}"#),
    )
}

/// The first frames of a text reply (to stall or cut after).
pub fn anthropic_text_start(first_piece: &str) -> Vec<String> {
    let mut frames = anthropic_text(&[first_piece], 25, 1);
    frames.truncate(4);
    frames
}
