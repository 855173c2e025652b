//! The provider fault matrix: every way a model provider fails, for both the
//! OpenAI-compatible and the Anthropic backends, through unary `Interact` and streamed
//! `StreamResponse` alike.
//!
//! Faults: a stall before the first byte of the answer, a stall in the middle of the stream,
//! a stream cut in the middle of an event, an event that is not JSON, a connection closed
//! before the status line, and HTTP 429 and 500 with each provider's own error body. For each
//! the caller gets the gRPC status the fault deserves, with a message that names the backend
//! and says what happened (and neither the key nor an address or source path); nothing of
//! the failed turn is stored; and the same session takes the next turn.
//!
//! The backends run with short first-token and idle timeouts (a second) and one retry, so a
//! stall costs a second and a retried status two requests.

mod common;
mod fake_providers;

use std::time::Duration;

use common::*;
use contextd::api::v1::CreateSessionRequest;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::config::{BackendConfig, BackendKind, Config};
use fake_providers::*;
use tonic::Code;
use tonic::transport::Channel;

/// The key the backends send: it must never reach a caller.
const KEY: &str = "sk-fault-7d3e91b0-never-shown";

/// The first-token and idle timeouts of the backends under test. Short, so stalls end
/// quickly; long enough that a healthy loopback reply is never near them.
const STALL_LIMIT_MS: u64 = 1000;

/// What each provider says when it rate-limits (Anthropic's documented error shape).
const ANTHROPIC_RATE_LIMITED: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;

/// Anthropic's answer to an internal failure.
const ANTHROPIC_INTERNAL: &str = r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fz"}"#;

/// OpenAI's answer to an internal failure.
const OPENAI_INTERNAL: &str = r#"{
  "error": {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": null,
    "code": null
  }
}"#;

/// Which call drives the turn.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// Unary `Interact`.
    Interact,
    /// Server-streaming `StreamResponse`.
    Stream,
}

/// One way for a provider to fail.
#[derive(Debug, Clone, Copy)]
enum Fault {
    StallBeforeFirstByte,
    StallMidStream,
    CutMidEvent,
    MalformedEvent,
    ClosedBeforeStatusLine,
    RateLimited,
    InternalError,
}

/// The provider under test: its backend kind, the backend name and a model of it.
#[derive(Debug, Clone, Copy)]
struct Provider {
    kind: BackendKind,
    name: &'static str,
    model: &'static str,
}

const OPENAI: Provider = Provider {
    kind: BackendKind::Openai,
    name: "oa",
    model: "oa/gpt-4o-mini",
};

const ANTHROPIC: Provider = Provider {
    kind: BackendKind::Anthropic,
    name: "an",
    model: "an/claude-sonnet-4-5",
};

impl Provider {
    /// The first frames of a text reply, to stall or cut after.
    fn reply_start(self) -> Vec<String> {
        match self.kind {
            BackendKind::Openai => {
                let mut frames = openai_text(&["Partial"], (1, 1));
                frames.truncate(2);
                frames
            }
            BackendKind::Anthropic => anthropic_text_start("Partial"),
        }
    }

    /// A whole text reply saying `text`.
    fn reply(self, text: &str) -> Reply {
        Reply::sse(match self.kind {
            BackendKind::Openai => openai_text(&[text], (9, 2)),
            BackendKind::Anthropic => anthropic_text(&[text], 9, 2),
        })
    }

    /// The first half of an event of this provider's stream (no blank line after it).
    fn half_event(self) -> String {
        match self.kind {
            BackendKind::Openai => {
                r#"data: {"id":"chatcmpl-123","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"ne"#.to_string()
            }
            BackendKind::Anthropic => {
                "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_de".to_string()
            }
        }
    }

    /// A whole event whose data is not JSON.
    fn malformed_event(self) -> String {
        match self.kind {
            BackendKind::Openai => openai_frame(
                r#"{"id":"chatcmpl-123","choices":[{"index":0,"delta":{"content":"x"}}"#,
            ),
            BackendKind::Anthropic => anthropic_frame(
                "content_block_delta",
                r#"{"type": content_block_delta, "index": 0}"#,
            ),
        }
    }

    /// Two answers of `status` with the provider's error body (one per attempt).
    fn error_status(self, status: u16) -> Vec<Reply> {
        let body = match (self.kind, status) {
            (BackendKind::Openai, 429) => OPENAI_RATE_LIMITED,
            (BackendKind::Openai, _) => OPENAI_INTERNAL,
            (BackendKind::Anthropic, 429) => ANTHROPIC_RATE_LIMITED,
            (BackendKind::Anthropic, _) => ANTHROPIC_INTERNAL,
        };
        (0..2)
            .map(|_| Reply::status(status, body).with_header("retry-after", "0"))
            .collect()
    }

    /// The scripted replies of `fault`, the status code it must give, and the words of the
    /// message that say what happened.
    fn fault(self, fault: Fault) -> (Vec<Reply>, Code, &'static [&'static str]) {
        match fault {
            Fault::StallBeforeFirstByte => (
                vec![Reply::StallBeforeHead],
                Code::Unavailable,
                &["no response within", "first_token_timeout_ms"],
            ),
            Fault::StallMidStream => (
                vec![Reply::Sse {
                    frames: self.reply_start(),
                    gap: Duration::ZERO,
                    end: StreamEnd::Stall,
                }],
                Code::Unavailable,
                &["no streamed event within", "idle_timeout_ms"],
            ),
            Fault::CutMidEvent => {
                let mut frames = self.reply_start();
                frames.push(self.half_event());
                (
                    vec![Reply::Sse {
                        frames,
                        gap: Duration::ZERO,
                        end: StreamEnd::Cut,
                    }],
                    Code::Unavailable,
                    &["the stream was cut"],
                )
            }
            Fault::MalformedEvent => {
                let mut frames = self.reply_start();
                frames.push(self.malformed_event());
                (
                    vec![Reply::sse(frames)],
                    Code::Unavailable,
                    &["an event that is not JSON"],
                )
            }
            // The request was sent and may have been processed: it is not sent again.
            Fault::ClosedBeforeStatusLine => (
                vec![Reply::CloseBeforeHead],
                Code::Unavailable,
                &["the request to the provider failed"],
            ),
            Fault::RateLimited => (
                self.error_status(429),
                Code::ResourceExhausted,
                &["rate-limiting", "HTTP 429", "2 attempts"],
            ),
            Fault::InternalError => (self.error_status(500), Code::Unavailable, &["HTTP 500"]),
        }
    }
}

/// A file holding [`KEY`], unique per call.
fn key_file(label: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "contextd-provider-faults-{}-{label}.key",
        std::process::id()
    ));
    std::fs::write(&path, format!("{KEY}\n")).expect("write the key file");
    path
}

/// A server whose only model backend is `provider` at `fake`, with short stall limits and
/// one quick retry.
async fn start(provider: Provider, fake: &FakeProvider, label: &str) -> TestServer {
    let mut backend = BackendConfig::new(provider.name, provider.kind, &fake.base_url());
    backend.api_key_file = Some(key_file(label));
    backend.first_token_timeout_ms = STALL_LIMIT_MS;
    backend.idle_timeout_ms = STALL_LIMIT_MS;
    backend.max_retries = 1;
    backend.retry_base_ms = 10;
    backend.retry_max_ms = 100;
    TestServer::start_with(Config {
        backends: vec![backend],
        ..test_config()
    })
    .await
}

/// The first turn through `call` fails with the fault's status; the session and its history
/// are as before; the next turn succeeds.
async fn check_fault(provider: Provider, fault: Fault, call: Call) {
    let label = format!("{}-{fault:?}-{call:?}", provider.name);
    let fake = FakeProvider::start().await;
    let server = start(provider, &fake, &label).await;
    let mut sessions: SessionServiceClient<Channel> = server.sessions().await;
    let mut interact = server.interact().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "s".into(),
            model: provider.model.into(),
            ..Default::default()
        },
    )
    .await;
    // One good turn first, so there is history the failed turn must leave alone.
    fake.script([provider.reply("Before")]);
    assert_eq!(
        say(&mut interact, "s", "Hello", None).await.response,
        "Before"
    );
    let session_before = get_session(&mut sessions, "s").await;
    let history_before = all_messages(&mut sessions, "s", 0).await;
    let requests_before = fake.requests().len();

    let (replies, code, says) = provider.fault(fault);
    let scripted = replies.len();
    fake.script(replies);
    let status = match call {
        Call::Interact => {
            match within(
                "Interact",
                interact.interact(interact_request("s", "Hi", None)),
            )
            .await
            {
                Ok(reply) => panic!("{label}: the turn succeeded: {:?}", reply.into_inner()),
                Err(status) => status,
            }
        }
        Call::Stream => stream_status(&mut interact, stream_request("s", "Hi", None)).await,
    };
    let message = status.message();
    assert_eq!(status.code(), code, "{label}: {message}");
    assert!(
        message.contains(&format!("'{}'", provider.name)),
        "{label}: the message does not name the backend: {message}"
    );
    for words in says {
        assert!(
            message.contains(words),
            "{label}: '{words}' missing: {message}"
        );
    }
    for secret in [
        KEY,
        "sk-fault",
        "127.0.0.1",
        &format!(":{}", fake.addr.port()),
        "src/",
        ".rs:",
    ] {
        assert!(
            !message.contains(secret),
            "{label}: '{secret}' shown: {message}"
        );
    }
    let sent = fake.requests().len() - requests_before;
    assert!(
        (1..=scripted).contains(&sent),
        "{label}: {sent} requests for {scripted} scripted replies"
    );
    if matches!(fault, Fault::RateLimited | Fault::InternalError) {
        assert_eq!(sent, 2, "{label}: a retryable status is retried once");
    }
    if matches!(fault, Fault::StallBeforeFirstByte | Fault::StallMidStream) {
        within(
            "the stalled connection to be closed",
            fake.wait_client_closed(1),
        )
        .await;
    }

    // Nothing of the failed turn is stored.
    let session_after = get_session(&mut sessions, "s").await;
    assert_eq!(
        session_after.message_count, session_before.message_count,
        "{label}"
    );
    assert_eq!(session_after.usage, session_before.usage, "{label}");
    assert_eq!(session_after.state, session_before.state, "{label}");
    assert_eq!(session_after.context, session_before.context, "{label}");
    assert!(session_after.pending_tool_calls.is_empty(), "{label}");
    assert_eq!(
        all_messages(&mut sessions, "s", 0).await,
        history_before,
        "{label}"
    );

    assert_eq!(fake.unused_replies(), 0, "{label}: replies left unused");

    // The session takes the next turn.
    fake.script([provider.reply("After")]);
    let next = say(&mut interact, "s", "Again", None).await;
    assert_eq!(next.response, "After", "{label}");
    let history = all_messages(&mut sessions, "s", 0).await;
    assert_eq!(history.len(), history_before.len() + 2, "{label}");
    assert_eq!(
        history[..history_before.len()],
        history_before[..],
        "{label}"
    );
    assert!(server.stop().await, "{label}: the server stops cleanly");
}

/// One test per provider and fault, each through both calls.
macro_rules! fault_tests {
    ($($name:ident: $provider:expr, $fault:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            check_fault($provider, $fault, Call::Interact).await;
            check_fault($provider, $fault, Call::Stream).await;
        }
    )*};
}

fault_tests! {
    openai_stall_before_the_first_byte: OPENAI, Fault::StallBeforeFirstByte;
    openai_stall_mid_stream: OPENAI, Fault::StallMidStream;
    openai_stream_cut_mid_event: OPENAI, Fault::CutMidEvent;
    openai_malformed_json_event: OPENAI, Fault::MalformedEvent;
    openai_connection_closed_before_the_status_line: OPENAI, Fault::ClosedBeforeStatusLine;
    openai_429_in_its_error_format: OPENAI, Fault::RateLimited;
    openai_500_in_its_error_format: OPENAI, Fault::InternalError;
    anthropic_stall_before_the_first_byte: ANTHROPIC, Fault::StallBeforeFirstByte;
    anthropic_stall_mid_stream: ANTHROPIC, Fault::StallMidStream;
    anthropic_stream_cut_mid_event: ANTHROPIC, Fault::CutMidEvent;
    anthropic_malformed_json_event: ANTHROPIC, Fault::MalformedEvent;
    anthropic_connection_closed_before_the_status_line: ANTHROPIC, Fault::ClosedBeforeStatusLine;
    anthropic_429_in_its_error_format: ANTHROPIC, Fault::RateLimited;
    anthropic_500_in_its_error_format: ANTHROPIC, Fault::InternalError;
}
