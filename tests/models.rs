//! The OpenAI-compatible and Anthropic backends against fake providers on loopback: text and
//! streamed turns, client- and server-side tool calls (arguments split mid-JSON, parallel
//! calls), usage, summarization at the threshold, cancellation reaching the provider, cut
//! streams, retries with `Retry-After`, error mapping, token-estimate calibration, and
//! `ModelService.ListModels`.

mod common;
mod fake_providers;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use contextd::api::v1::model_service_client::ModelServiceClient;
use contextd::api::v1::stream_response_response::Event as StreamEvent;
use contextd::api::v1::tool_service_client::ToolServiceClient;
use contextd::api::v1::{
    CallToolRequest, ContextEntryKind, CreateSessionRequest, FinishReason, ListModelsRequest,
    PreviewContextRequest, PreviewContextResponse, UpdateSessionRequest, WindowSettings,
    WindowStrategy,
};
use contextd::config::{BackendConfig, BackendKind, Config};
use fake_providers::*;
use serde_json::{Value as Json, json};
use tonic::Code;

/// The key the fakes are configured with: it must never show up in a status or a log line.
const KEY: &str = "sk-test-4f9a2c71-never-in-logs";

/// A file holding [`KEY`], unique per call.
fn key_file() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!(
        "contextd-models-test-{}-{n}.key",
        std::process::id()
    ));
    std::fs::write(&path, format!("{KEY}\n")).expect("write key file");
    path
}

/// A backend pointing at `fake`, with quick retries.
fn backend(name: &str, kind: BackendKind, fake: &FakeProvider) -> BackendConfig {
    let mut config = BackendConfig::new(name, kind, &fake.base_url());
    config.api_key_file = Some(key_file());
    config.retry_base_ms = 10;
    config.retry_max_ms = 3000;
    config
}

async fn start(backends: Vec<BackendConfig>) -> TestServer {
    let config = Config {
        backends,
        ..common::test_config()
    };
    TestServer::start_with(config).await
}

fn session(id: &str, model: &str) -> CreateSessionRequest {
    CreateSessionRequest {
        session_id: id.into(),
        model: model.into(),
        ..Default::default()
    }
}

fn roles(body: &Json) -> Vec<String> {
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_text_turn_maps_request_reply_and_usage() {
    let fake = FakeProvider::start().await;
    fake.script([Reply::sse(openai_text(&["Hello", " there", "!"], (31, 3)))]);
    let server = start(vec![backend("oa", BackendKind::Openai, &fake)]).await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            system_prompt: "Be brief.".into(),
            context: ctx(json!({"user_id": "u1"})),
            ..session("s", "oa/gpt-4o-mini")
        },
    )
    .await;

    let reply = say(&mut server.interact().await, "s", "Hi", None).await;
    assert_eq!(reply.response, "Hello there!");
    assert_eq!(reply.finish_reason(), FinishReason::Stop);
    let usage = reply.usage.expect("usage");
    assert_eq!((usage.input_tokens, usage.output_tokens), (31, 3));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers["authorization"], format!("Bearer {KEY}"));
    let body = &request.body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(roles(body), ["system", "system", "user"]);
    assert_eq!(body["messages"][0]["content"], "Be brief.");
    assert!(
        body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("u1")
    );
    assert_eq!(body["messages"][2]["content"], "Hi");
    let tools: Vec<&str> = body["tools"]
        .as_array()
        .expect("server-side tools offered")
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"history_search"), "{tools:?}");

    let stored = all_messages(&mut sessions, "s", 0).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].content, "Hello there!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_streamed_turn_sends_deltas_as_they_come() {
    let fake = FakeProvider::start().await;
    fake.script([Reply::sse(anthropic_text(&["Hello", " world"], 25, 15))]);
    let server = start(vec![backend("an", BackendKind::Anthropic, &fake)]).await;
    create_session(
        &mut server.sessions().await,
        CreateSessionRequest {
            system_prompt: "Be brief.".into(),
            ..session("s", "an/claude-sonnet-4-5")
        },
    )
    .await;

    let events = stream_events(
        &mut server.interact().await,
        stream_request("s", "Hi", None),
    )
    .await;
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(d) => Some(d.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, ["Hello", " world"]);
    let Some(StreamEvent::Completed(done)) = events.last() else {
        panic!("{events:?}")
    };
    let usage = done.usage.expect("usage");
    assert_eq!((usage.input_tokens, usage.output_tokens), (25, 15));

    let request = &fake.requests()[0];
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.headers["x-api-key"], KEY);
    assert_eq!(request.headers["anthropic-version"], "2023-06-01");
    assert!(!request.headers.contains_key("authorization"));
    assert_eq!(request.body["model"], "claude-sonnet-4-5");
    assert_eq!(request.body["system"], "Be brief.");
    assert_eq!(request.body["stream"], true);
    assert!(request.body["max_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        request.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_parallel_client_tool_calls_split_mid_json_round_trip() {
    let fake = FakeProvider::start().await;
    fake.script([
        Reply::sse(openai_tool_calls(
            &[
                ("call_a", "get_weather", &["{\"ci", "ty\": \"Par", "is\"}"]),
                ("call_b", "get_weather", &["{\"city\"", ": \"Rome\"}"]),
            ],
            (80, 40),
        )),
        Reply::sse(openai_text(&["Paris is sunny, Rome is warm."], (120, 9))),
    ]);
    let server = start(vec![backend("oa", BackendKind::Openai, &fake)]).await;
    create_session(
        &mut server.sessions().await,
        CreateSessionRequest {
            tools: vec![tool_def("get_weather", "Weather for a city.")],
            ..session("s", "oa/gpt-4o-mini")
        },
    )
    .await;
    let mut interact = server.interact().await;

    let paused = say(&mut interact, "s", "Weather in Paris and Rome?", None).await;
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    let calls: Vec<(String, Json)> = paused
        .tool_calls
        .iter()
        .map(|c| (c.tool_call_id.clone(), json_of(&c.arguments)))
        .collect();
    assert_eq!(
        calls,
        [
            ("call_a".to_string(), json!({"city": "Paris"})),
            ("call_b".to_string(), json!({"city": "Rome"}))
        ]
    );
    let first_tools = &fake.requests()[0].body["tools"];
    let weather = first_tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "get_weather")
        .expect("client tool offered");
    assert_eq!(
        weather["function"]["parameters"]["properties"]["city"]["type"],
        "string"
    );

    let done = send_results(
        &mut interact,
        "s",
        vec![result("call_a", "sunny"), result("call_b", "warm")],
    )
    .await
    .expect("results accepted");
    assert_eq!(done.response, "Paris is sunny, Rome is warm.");
    assert_eq!(done.turn_id, paused.turn_id);

    let second = &fake.requests()[1].body;
    assert_eq!(roles(second), ["user", "assistant", "tool", "tool"]);
    let assistant = &second["messages"][1];
    assert!(assistant["content"].is_null());
    let arguments: Json = serde_json::from_str(
        assistant["tool_calls"][1]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(arguments, json!({"city": "Rome"}));
    assert_eq!(second["messages"][2]["tool_call_id"], "call_a");
    assert_eq!(second["messages"][3]["content"], "warm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_server_side_tool_loop() {
    let fake = FakeProvider::start().await;
    fake.script([
        Reply::sse(anthropic_tool_use(
            "Saving it.",
            "toolu_01A09q90qw90lq917835lq9",
            "context_set",
            &["{\"patch\": {\"ci", "ty\": \"Par", "is\"}}"],
        )),
        Reply::sse(anthropic_text(&[" Saved."], 600, 3)),
    ]);
    let server = start(vec![backend("an", BackendKind::Anthropic, &fake)]).await;
    let mut sessions = server.sessions().await;
    create_session(&mut sessions, session("s", "an/claude-sonnet-4-5")).await;

    let reply = say(&mut server.interact().await, "s", "Remember Paris.", None).await;
    assert_eq!(reply.response, "Saving it. Saved.");
    assert_eq!(reply.finish_reason(), FinishReason::Stop);
    assert_eq!(json_of(&reply.updated_context), json!({"city": "Paris"}));

    let second = &fake.requests()[1].body;
    let messages = second["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["content"][1]["type"], "tool_use");
    assert_eq!(
        messages[1]["content"][1]["input"],
        json!({"patch": {"city": "Paris"}})
    );
    let result = &messages[2]["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["tool_use_id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(result["is_error"], false);
    assert_eq!(get_session(&mut sessions, "s").await.message_count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summarize_folds_old_turns_at_the_threshold() {
    let fake = FakeProvider::start().await;
    fake.script((0..4).map(|n| {
        Reply::sse(openai_text(
            &[&format!("SUMMARY-{n}: the user counted turns.")],
            (100, 8),
        ))
    }));
    let server = start(vec![backend("oa", BackendKind::Openai, &fake)]).await;
    summarizing_session(&server, "s").await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;

    let mut summarized_at = None;
    for turn in 0..30 {
        let message =
            format!("turn {turn}: the quick brown fox jumps over the lazy dog, marker m{turn}x");
        let preview = within(
            "PreviewContext",
            sessions.preview_context(PreviewContextRequest {
                session_id: "s".into(),
                message: message.clone(),
                context: None,
                summarize: false,
            }),
        )
        .await
        .expect("preview")
        .into_inner();
        let input_budget = preview.max_context_tokens - preview.reserved_output_tokens;
        assert!(preview.total_tokens <= input_budget, "{preview:?}");
        // The preview says when the turn will summarize first, and which messages it folds.
        let pending = preview
            .entries
            .iter()
            .find(|e| e.kind() == ContextEntryKind::PendingSummary)
            .cloned();
        say(&mut interact, "s", &message, None).await;
        let stored = get_session(&mut sessions, "s").await.summary;
        assert_eq!(
            stored.is_some(),
            pending.is_some(),
            "turn {turn}: window {} of {input_budget} tokens; summary written: {stored:?}",
            preview.total_tokens
        );
        if let (Some(pending), Some(stored)) = (pending, stored) {
            assert_eq!(
                (
                    pending.summary_first_message_index,
                    pending.summary_end_message_index
                ),
                (
                    Some(stored.first_message_index),
                    Some(stored.end_message_index)
                ),
                "the pending range is the one written"
            );
            assert!(
                pending.content.contains("oa/summarizer"),
                "{}",
                pending.content
            );
            assert!(
                pending.token_count >= stored.token_count,
                "{pending:?} {stored:?}"
            );
            assert_eq!(fake.requests().len(), 1, "the preview called no model");
            summarized_at = Some(turn);
            break;
        }
    }
    let turn = summarized_at.expect("the window reached the threshold");
    assert!(
        turn > 2,
        "summarized only once the window filled up (turn {turn})"
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "one summary written");
    let asked = &requests[0].body;
    assert_eq!(asked["model"], "summarizer");
    assert!(asked["tools"].is_null(), "the summarizer gets no tools");
    let prompt = asked["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("marker m0x"), "{prompt}");

    let session = get_session(&mut sessions, "s").await;
    let summary = session.summary.expect("summary");
    assert_eq!(summary.text, "SUMMARY-0: the user counted turns.");
    assert_eq!(summary.first_message_index, 0);
    assert!(summary.end_message_index >= 2 && summary.end_message_index % 2 == 0);

    let preview = within(
        "PreviewContext",
        sessions.preview_context(PreviewContextRequest {
            session_id: "s".into(),
            message: "next".into(),
            context: None,
            summarize: false,
        }),
    )
    .await
    .expect("preview")
    .into_inner();
    let entry = preview
        .entries
        .iter()
        .find(|e| e.kind() == ContextEntryKind::Summary)
        .expect("summary entry");
    assert_eq!(entry.content, summary.text);
    assert_eq!(entry.summary_first_message_index, Some(0));
    assert_eq!(
        entry.summary_end_message_index,
        Some(summary.end_message_index)
    );
    assert!(
        preview
            .entries
            .iter()
            .filter_map(|e| e.message_index)
            .all(|i| i >= summary.end_message_index),
        "summarized messages are not shown again"
    );

    // The originals stay in storage.
    let stored = all_messages(&mut sessions, "s", 0).await;
    assert_eq!(stored.len() as u64, session.message_count);
    let found = within(
        "history_search",
        ToolServiceClient::new(server.channel().await).call_tool(CallToolRequest {
            name: "history_search".into(),
            arguments: ctx(json!({"query": "marker m0x"})),
            session_id: "s".into(),
        }),
    )
    .await
    .expect("history_search")
    .into_inner();
    assert!(!found.is_error, "{}", found.content);
    assert!(found.content.contains("marker m0x"), "{}", found.content);
}

/// A summarize session on a 600-token window whose summaries `oa/summarizer` writes.
async fn summarizing_session(server: &TestServer, id: &str) {
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            max_context_tokens: 600,
            window: Some(WindowSettings {
                strategy: WindowStrategy::Summarize as i32,
                summarize_threshold_percent: 0,
                summarizer_model: "oa/summarizer".into(),
            }),
            ..session(id, "echo")
        },
    )
    .await;
}

/// The message of every turn in the summarize tests (about 20 tokens).
const TURN: &str = "the quick brown fox jumps over the lazy dog, and counts another turn";

/// Sends [`TURN`] until the preview says the next one would summarize first.
async fn fill_to_threshold(
    sessions: &mut contextd::api::v1::session_service_client::SessionServiceClient<
        tonic::transport::Channel,
    >,
    interact: &mut contextd::api::v1::interact_service_client::InteractServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
) {
    for _ in 0..60 {
        let preview = preview_summarizing(sessions, id, TURN, false).await;
        if preview
            .entries
            .iter()
            .any(|e| e.kind() == ContextEntryKind::PendingSummary)
        {
            return;
        }
        say(interact, id, TURN, None).await;
    }
    panic!("the window of {id} never reached the threshold");
}

async fn preview_summarizing(
    sessions: &mut contextd::api::v1::session_service_client::SessionServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
    message: &str,
    summarize: bool,
) -> PreviewContextResponse {
    within(
        "PreviewContext",
        sessions.preview_context(PreviewContextRequest {
            session_id: id.into(),
            message: message.into(),
            context: None,
            summarize,
        }),
    )
    .await
    .expect("preview")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_with_summarize_writes_the_summary_the_next_turn_uses() {
    let fake = FakeProvider::start().await;
    let server = start(vec![backend("oa", BackendKind::Openai, &fake)]).await;
    summarizing_session(&server, "p").await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    fill_to_threshold(&mut sessions, &mut interact, "p").await;
    assert!(fake.requests().is_empty(), "previews call no model");
    let before = get_session(&mut sessions, "p").await;

    fake.script([Reply::sse(openai_text(
        &["SUMMARY: counted turns."],
        (90, 6),
    ))]);
    let preview = preview_summarizing(&mut sessions, "p", TURN, true).await;
    assert!(preview.summary_kept, "{preview:?}");
    assert_eq!(fake.requests().len(), 1, "one summarizer call");
    let entry = preview
        .entries
        .iter()
        .find(|e| e.kind() == ContextEntryKind::Summary)
        .expect("the written summary is shown");
    assert_eq!(entry.content, "SUMMARY: counted turns.");
    let after = get_session(&mut sessions, "p").await;
    let summary = after.summary.clone().expect("the summary is stored");
    assert_eq!(summary.text, "SUMMARY: counted turns.");
    assert_eq!(
        after.message_count, before.message_count,
        "no turn was stored"
    );

    // The next turn uses it: no second summarizer call, and the same window the preview showed.
    let again = preview_summarizing(&mut sessions, "p", TURN, false).await;
    assert_eq!(
        again.entries, preview.entries,
        "a second preview shows the kept summary"
    );
    say(&mut interact, "p", TURN, None).await;
    assert_eq!(fake.requests().len(), 1, "the turn did not summarize again");
    assert_eq!(get_session(&mut sessions, "p").await.summary, Some(summary));

    // Where no summary is due, summarize = true writes nothing.
    summarizing_session(&server, "q").await;
    say(&mut interact, "q", TURN, None).await;
    let quiet = preview_summarizing(&mut sessions, "q", TURN, true).await;
    assert!(!quiet.summary_kept);
    assert_eq!(fake.requests().len(), 1);
    assert!(get_session(&mut sessions, "q").await.summary.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_written_while_the_session_changed_is_not_kept() {
    let fake = FakeProvider::start().await;
    let server = start(vec![backend("oa", BackendKind::Openai, &fake)]).await;
    summarizing_session(&server, "c").await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    fill_to_threshold(&mut sessions, &mut interact, "c").await;
    // The summarizer answers slowly; the session changes while it writes.
    fake.script([Reply::Sse {
        frames: openai_text(&["SUMMARY", " late", "."], (90, 6)),
        gap: Duration::from_millis(1500),
        end: StreamEnd::Complete,
    }]);
    let mut previewing = sessions.clone();
    let preview =
        tokio::spawn(async move { preview_summarizing(&mut previewing, "c", TURN, true).await });
    within("the summarizer call", async {
        while fake.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    within(
        "UpdateSession",
        sessions.update_session(UpdateSessionRequest {
            session_id: "c".into(),
            labels: [("changed".to_string(), "yes".to_string())].into(),
            ..Default::default()
        }),
    )
    .await
    .expect("update");
    let preview = preview.await.expect("preview task");
    assert!(!preview.summary_kept, "{preview:?}");
    let session = get_session(&mut sessions, "c").await;
    assert!(session.summary.is_none(), "{:?}", session.summary);
    assert_eq!(session.labels["changed"], "yes", "the update stands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_stream_closes_the_provider_connection_and_stores_nothing() {
    let fake = FakeProvider::start().await;
    let mut frames = openai_text(&["Hel"], (1, 1));
    frames.truncate(2);
    fake.script([Reply::Sse {
        frames,
        gap: Duration::ZERO,
        end: StreamEnd::Stall,
    }]);
    let server = start(vec![backend("oa", BackendKind::Openai, &fake)]).await;
    let mut sessions = server.sessions().await;
    create_session(&mut sessions, session("s", "oa/gpt-4o-mini")).await;

    let mut client = server.interact().await;
    let mut stream = within(
        "StreamResponse",
        client.stream_response(stream_request("s", "Hi", None)),
    )
    .await
    .expect("stream starts")
    .into_inner();
    loop {
        let event = within("a delta", stream.message())
            .await
            .expect("stream ok")
            .expect("an event")
            .event;
        if matches!(event, Some(StreamEvent::Delta(_))) {
            break;
        }
    }
    drop(stream);
    drop(client);
    within(
        "the provider to see the connection close",
        fake.wait_client_closed(1),
    )
    .await;
    eventually("the cancelled turn released the session", || {
        let mut sessions = sessions.clone();
        async move {
            sessions
                .update_session(UpdateSessionRequest {
                    session_id: "s".into(),
                    ..Default::default()
                })
                .await
                .is_ok()
        }
    })
    .await;
    assert_eq!(get_session(&mut sessions, "s").await.message_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_streams_fail_unavailable_without_retry_and_store_nothing() {
    let openai = FakeProvider::start().await;
    let mut frames = openai_text(&["Partial"], (1, 1));
    frames.truncate(2);
    openai.script([Reply::Sse {
        frames,
        gap: Duration::ZERO,
        end: StreamEnd::Cut,
    }]);
    let anthropic = FakeProvider::start().await;
    anthropic.script([Reply::Sse {
        frames: anthropic_text_start("Partial"),
        gap: Duration::ZERO,
        end: StreamEnd::Cut,
    }]);
    let server = start(vec![
        backend("oa", BackendKind::Openai, &openai),
        backend("an", BackendKind::Anthropic, &anthropic),
    ])
    .await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    for (id, model, fake) in [
        ("o", "oa/gpt-4o-mini", &openai),
        ("a", "an/claude-sonnet-4-5", &anthropic),
    ] {
        create_session(&mut sessions, session(id, model)).await;
        let status = stream_status(&mut interact, stream_request(id, "Hi", None)).await;
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        assert!(
            status.message().contains("cut") || status.message().contains("ended"),
            "{}",
            status.message()
        );
        assert_eq!(
            fake.requests().len(),
            1,
            "a started reply is never requested again"
        );
        assert_eq!(get_session(&mut sessions, id).await.message_count, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_5xx_and_429_then_succeeds() {
    let fake = FakeProvider::start().await;
    fake.script([
        Reply::status(
            503,
            r#"{"error":{"message":"The server is overloaded","type":"server_error"}}"#,
        ),
        Reply::status(429, OPENAI_RATE_LIMITED).with_header("retry-after", "0"),
        Reply::sse(openai_text(&["OK"], (5, 1))),
    ]);
    let server = start(vec![backend("oa", BackendKind::Openai, &fake)]).await;
    create_session(&mut server.sessions().await, session("s", "oa/gpt-4o-mini")).await;
    let reply = say(&mut server.interact().await, "s", "Hi", None).await;
    assert_eq!(reply.response, "OK");
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].body, requests[2].body,
        "the same request is sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let fake = FakeProvider::start().await;
    fake.script([
        Reply::status(429, OPENAI_RATE_LIMITED).with_header("retry-after", "1"),
        Reply::sse(openai_text(&["OK"], (5, 1))),
    ]);
    let server = start(vec![backend("oa", BackendKind::Openai, &fake)]).await;
    create_session(&mut server.sessions().await, session("s", "oa/gpt-4o-mini")).await;
    say(&mut server.interact().await, "s", "Hi", None).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    // retry_base_ms is 10: only Retry-After makes the client wait this long.
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_map_to_statuses_naming_the_backend_not_the_key() {
    let fake = FakeProvider::start().await;
    let mut config = backend("oa", BackendKind::Openai, &fake);
    config.max_retries = 2;
    let server = start(vec![config]).await;
    create_session(&mut server.sessions().await, session("s", "oa/gpt-4o-mini")).await;
    let mut interact = server.interact().await;

    let cases: Vec<(Vec<Reply>, Code, &str)> = vec![
        // The provider refused contextd's key: the caller's credentials are not in
        // question, so the caller sees UNAVAILABLE.
        (
            vec![Reply::status(401, &openai_invalid_key(KEY))],
            Code::Unavailable,
            "rejected contextd's credentials",
        ),
        (
            vec![Reply::status(
                403,
                r#"{"error":{"message":"Project does not have access to model","type":"invalid_request_error"}}"#,
            )],
            Code::Unavailable,
            "rejected contextd's credentials",
        ),
        (
            (0..3)
                .map(|_| Reply::status(429, OPENAI_RATE_LIMITED).with_header("retry-after", "0"))
                .collect(),
            Code::ResourceExhausted,
            "3 attempts",
        ),
        (
            (0..3)
                .map(|_| {
                    Reply::status(500, r#"{"error":{"message":"boom","type":"server_error"}}"#)
                })
                .collect(),
            Code::Unavailable,
            "HTTP 500",
        ),
        (
            vec![Reply::status(
                404,
                r#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error"}}"#,
            )],
            // Summarized: the provider's own words are logged, not passed through.
            Code::InvalidArgument,
            "does not know this model",
        ),
        (
            vec![Reply::sse(vec![openai_stream_error(&format!(
                "upstream failed for key {KEY}"
            ))])],
            Code::Unavailable,
            "mid-stream",
        ),
    ];
    for (replies, code, says) in cases {
        let before = fake.requests().len();
        let count = replies.len();
        fake.script(replies);
        let status = expect_code(
            within(
                "Interact",
                interact.interact(interact_request("s", "Hi", None)),
            )
            .await,
            code,
        );
        assert!(status.message().contains("'oa'"), "{}", status.message());
        assert!(status.message().contains(says), "{}", status.message());
        assert!(
            !status.message().contains("gpt-9") && !status.message().contains("127.0.0.1"),
            "{}",
            status.message()
        );
        assert!(!status.message().contains(KEY), "{}", status.message());
        assert!(
            !status.message().contains("sk-test"),
            "{}",
            status.message()
        );
        assert_eq!(fake.requests().len() - before, count, "{code:?}");
    }
    assert_eq!(fake.unused_replies(), 0);

    // An endpoint nobody listens on: connection errors are retried, then UNAVAILABLE.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let mut dead = BackendConfig::new("dead", BackendKind::Openai, &url);
    dead.retry_base_ms = 1;
    let server = start(vec![dead]).await;
    create_session(&mut server.sessions().await, session("d", "dead/m")).await;
    let status = expect_code(
        within(
            "Interact",
            server
                .interact()
                .await
                .interact(interact_request("d", "Hi", None)),
        )
        .await,
        Code::Unavailable,
    );
    assert!(
        status.message().contains("cannot connect"),
        "{}",
        status.message()
    );
    // Neither the address nor the OS error reach the caller; the request id does.
    assert!(
        !status.message().contains("127.0.0.1"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("refused"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("'dead'"), "{}", status.message());
    let id = status.metadata().get("x-request-id").expect("a request id");
    assert!(
        status
            .message()
            .contains(&format!("(request id {})", id.to_str().unwrap())),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_error_event_and_idle_timeout_are_unavailable() {
    let fake = FakeProvider::start().await;
    let mut config = backend("an", BackendKind::Anthropic, &fake);
    config.idle_timeout_ms = 300;
    let server = start(vec![config]).await;
    let mut sessions = server.sessions().await;
    create_session(&mut sessions, session("s", "an/claude-sonnet-4-5")).await;
    let mut interact = server.interact().await;

    let mut frames = anthropic_text_start("Hel");
    frames.push(anthropic_error("overloaded_error", "Overloaded"));
    fake.script([Reply::sse(frames)]);
    let status = stream_status(&mut interact, stream_request("s", "Hi", None)).await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("Overloaded"),
        "{}",
        status.message()
    );

    fake.script([Reply::Sse {
        frames: anthropic_text_start("Hel"),
        gap: Duration::ZERO,
        end: StreamEnd::Stall,
    }]);
    let status = stream_status(&mut interact, stream_request("s", "Hi", None)).await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("idle_timeout_ms"),
        "{}",
        status.message()
    );
    within(
        "the stalled connection to close",
        fake.wait_client_closed(1),
    )
    .await;
    assert_eq!(get_session(&mut sessions, "s").await.message_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_length_errors_trim_the_window_once_then_fail() {
    let fake = FakeProvider::start().await;
    let server = start(vec![backend("oa", BackendKind::Openai, &fake)]).await;
    create_session(&mut server.sessions().await, session("s", "oa/gpt-4o-mini")).await;
    let mut interact = server.interact().await;
    for n in 0..3 {
        fake.script([Reply::sse(openai_text(&[&format!("answer {n}")], (10, 2)))]);
        say(
            &mut interact,
            "s",
            &format!("question {n} with some words in it"),
            None,
        )
        .await;
    }

    fake.script([
        Reply::status(400, OPENAI_CONTEXT_LENGTH),
        Reply::sse(openai_text(&["fits now"], (10, 2))),
    ]);
    let reply = say(&mut interact, "s", "question 3", None).await;
    assert_eq!(reply.response, "fits now");
    let requests = fake.requests();
    let (refused, retried) = (&requests[3].body, &requests[4].body);
    let count = |b: &Json| b["messages"].as_array().unwrap().len();
    assert!(
        count(retried) < count(refused),
        "{} then {}",
        count(refused),
        count(retried)
    );
    assert_eq!(
        retried["messages"].as_array().unwrap().last().unwrap()["content"],
        "question 3"
    );

    fake.script([
        Reply::status(400, OPENAI_CONTEXT_LENGTH),
        Reply::status(400, OPENAI_CONTEXT_LENGTH),
    ]);
    let status = expect_code(
        within(
            "Interact",
            interact.interact(interact_request("s", "question 4", None)),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("max_context_tokens"),
        "{}",
        status.message()
    );
    assert_eq!(fake.unused_replies(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_token_estimate_is_corrected_from_reported_input_tokens() {
    let fake = FakeProvider::start().await;
    let server = start(vec![backend("an", BackendKind::Anthropic, &fake)]).await;
    let mut sessions = server.sessions().await;
    create_session(&mut sessions, session("s", "an/claude-sonnet-4-5")).await;
    assert_eq!(
        get_session(&mut sessions, "s").await.token_estimate_scale,
        0.0
    );

    let message = "The committee reviewed every proposal carefully before the vote. ".repeat(120);
    let preview = within(
        "PreviewContext",
        sessions.preview_context(PreviewContextRequest {
            session_id: "s".into(),
            message: message.clone(),
            context: None,
            summarize: false,
        }),
    )
    .await
    .expect("preview")
    .into_inner();
    let counted = u64::from(preview.total_tokens);
    assert!(counted >= 1024, "{counted}");
    fake.script([Reply::sse(anthropic_text(&["Noted."], counted * 2, 3))]);
    say(&mut server.interact().await, "s", &message, None).await;
    let scale = get_session(&mut sessions, "s").await.token_estimate_scale;
    assert!((scale - 2.0).abs() < 1e-9, "{scale}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_strategy_refuses_instead_of_trimming() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            max_context_tokens: 200,
            window: Some(WindowSettings {
                strategy: WindowStrategy::Disabled as i32,
                ..Default::default()
            }),
            ..session("s", "")
        },
    )
    .await;
    let mut interact = server.interact().await;
    let mut refused = None;
    for n in 0..20 {
        match within(
            "Interact",
            interact.interact(interact_request(
                "s",
                &format!("message number {n} of several"),
                None,
            )),
        )
        .await
        {
            Ok(_) => continue,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("the history outgrew the window");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("disabled"),
        "{}",
        status.message()
    );

    // Switching to sliding_window lets the session go on.
    within(
        "UpdateSession",
        sessions.update_session(UpdateSessionRequest {
            session_id: "s".into(),
            window: Some(WindowSettings {
                strategy: WindowStrategy::SlidingWindow as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .await
    .expect("update");
    say(&mut interact, "s", "one more", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_models_shows_backends_and_windows() {
    let fake = FakeProvider::start().await;
    let mut openai = backend("oa", BackendKind::Openai, &fake);
    openai.default_model = "gpt-4o-mini".into();
    openai.models = vec!["gpt-4o".into()];
    openai.context_window = 128_000;
    let mut anthropic = backend("an", BackendKind::Anthropic, &fake);
    anthropic.context_window = 200_000;
    let server = start(vec![openai, anthropic]).await;

    let listed = within(
        "ListModels",
        ModelServiceClient::new(server.channel().await).list_models(ListModelsRequest {}),
    )
    .await
    .expect("ListModels")
    .into_inner();
    assert_eq!(listed.default_model, "echo");
    let models: Vec<(&str, u32, bool)> = listed
        .models
        .iter()
        .map(|m| (m.name.as_str(), m.context_window, m.is_default))
        .collect();
    assert_eq!(
        models,
        [
            ("echo", 8192, true),
            ("oa/gpt-4o", 128_000, false),
            ("oa/gpt-4o-mini", 128_000, false)
        ]
    );
    let backends: Vec<(&str, &str, u32)> = listed
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.kind.as_str(), b.context_window))
        .collect();
    assert_eq!(
        backends,
        [("an", "anthropic", 200_000), ("oa", "openai", 128_000)]
    );

    // The backend's name alone means its default model; its window is the backend's.
    let mut sessions = server.sessions().await;
    let created = create_session(&mut sessions, session("s", "oa")).await;
    assert_eq!(created.model, "oa/gpt-4o-mini");
    assert_eq!(created.max_context_tokens, 128_000);
    let status = expect_code(
        within(
            "CreateSession",
            sessions.create_session(session("t", "nope/x")),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("oa/<model>"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_settings_on_open_and_update_are_checked() {
    let server = TestServer::start().await;
    let mut conversation = Conversation::start(&mut server.interact().await).await;
    conversation
        .send(contextd::api::v1::converse_request::Frame::Open(
            contextd::api::v1::ConverseOpen {
                session_id: "c".into(),
                window: Some(WindowSettings {
                    strategy: WindowStrategy::Summarize as i32,
                    summarize_threshold_percent: 75,
                    summarizer_model: "echo".into(),
                }),
                ..Default::default()
            },
        ))
        .await;
    let opened = match conversation.next().await.event {
        Some(contextd::api::v1::converse_response::Event::Opened(opened)) => opened,
        other => panic!("expected opened, got {other:?}"),
    };
    let window = opened.session.expect("session").window.expect("window");
    assert_eq!(window.strategy(), WindowStrategy::Summarize);
    assert_eq!(window.summarize_threshold_percent, 75);

    let mut sessions = server.sessions().await;
    for (settings, says) in [
        (
            WindowSettings {
                strategy: WindowStrategy::Summarize as i32,
                summarize_threshold_percent: 5,
                ..Default::default()
            },
            "summarize_threshold_percent 5",
        ),
        (
            WindowSettings {
                strategy: WindowStrategy::Summarize as i32,
                summarizer_model: "nowhere/model".into(),
                ..Default::default()
            },
            "unknown summarizer_model",
        ),
        (
            WindowSettings {
                strategy: 42,
                ..Default::default()
            },
            "WindowStrategy",
        ),
    ] {
        let status = expect_code(
            within(
                "UpdateSession",
                sessions.update_session(UpdateSessionRequest {
                    session_id: "c".into(),
                    window: Some(settings),
                    ..Default::default()
                }),
            )
            .await,
            Code::InvalidArgument,
        );
        assert!(status.message().contains(says), "{}", status.message());
    }
    let unchanged = get_session(&mut sessions, "c")
        .await
        .window
        .expect("window");
    assert_eq!(unchanged.summarize_threshold_percent, 75);
}
