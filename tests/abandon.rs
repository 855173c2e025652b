//! Abandoning a turn paused for client-side tools: `abandon_tool_calls` on `Interact` and
//! `StreamResponse`, and a Converse `cancel` while paused. Each pending call gets the error
//! result "cancelled by the client", stored paired with its call; the turn ends
//! `FINISH_REASON_CANCELLED` without another model step; the session is idle again. On the
//! SQLite store (the default) and in memory, through the generated client and the Rust
//! wrapper.

mod common;

use std::path::PathBuf;

use common::*;
use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::converse_response::Event as ConverseEvent;
use contextd::api::v1::{
    ConverseCancel, CreateSessionRequest, FinishReason, InteractRequest, InteractResponse,
    MessageRole, SessionState, StreamResponseRequest,
};
use contextd::client::{Client, ConverseOptions, StreamEvent, tool_definition};
use contextd::config::Config;
use serde_json::json;
use tonic::Code;

/// The result every abandoned call gets.
const ABANDONED: &str = "cancelled by the client";

/// A configuration on `store` (`memory`, or `sqlite` in a fresh directory).
fn config_on(store: &str) -> Config {
    let data_dir: PathBuf = std::env::temp_dir().join(format!(
        "contextd-abandon-{}",
        uuid::Uuid::new_v4().simple()
    ));
    Config {
        store: store.into(),
        data_dir,
        ..test_config()
    }
}

/// Creates `session_id` with the client-side tools `get_weather` and `get_time`.
async fn session_with_tools(server: &TestServer, session_id: &str) {
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: session_id.to_string(),
            tools: vec![
                tool_def("get_weather", "Current weather for a city."),
                tool_def("get_time", "Local time for a city."),
            ],
            ..Default::default()
        },
    )
    .await;
}

/// Pauses a turn on `session_id` for two client-side calls.
async fn pause(server: &TestServer, session_id: &str) -> InteractResponse {
    let mut interact = server.interact().await;
    let paused = say(
        &mut interact,
        session_id,
        "/call get_weather {\"city\": \"Oslo\"}\n/call get_time {\"city\": \"Lima\"}",
        None,
    )
    .await;
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    assert_eq!(paused.tool_calls.len(), 2);
    paused
}

fn abandon_request(session_id: &str) -> InteractRequest {
    InteractRequest {
        session_id: session_id.to_string(),
        abandon_tool_calls: true,
        ..Default::default()
    }
}

/// The session's history after an abandon of `paused`: user, assistant with the calls, and an
/// error result for each call, paired by id, all in the paused turn; the session idle.
async fn assert_abandoned(server: &TestServer, session_id: &str, paused: &InteractResponse) {
    let mut sessions = server.sessions().await;
    let session = get_session(&mut sessions, session_id).await;
    assert_eq!(session.state(), SessionState::Idle);
    assert!(session.pending_tool_calls.is_empty());
    let messages = all_messages(&mut sessions, session_id, 0).await;
    let roles: Vec<_> = messages.iter().map(|m| m.role()).collect();
    assert_eq!(
        roles,
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Tool,
            MessageRole::Tool
        ],
        "{messages:?}"
    );
    assert_eq!(messages[1].tool_calls, paused.tool_calls);
    for (call, result) in paused.tool_calls.iter().zip(&messages[2..]) {
        assert_eq!(result.tool_call_id, call.tool_call_id);
        assert_eq!(result.tool_name, call.name);
        assert!(result.is_error, "{result:?}");
        assert_eq!(result.content, ABANDONED);
    }
    assert!(messages.iter().all(|m| m.turn_id == paused.turn_id));
    assert_eq!(session.message_count, 4);
}

/// After an abandon the session takes an ordinary turn.
async fn assert_next_turn_works(server: &TestServer, session_id: &str) {
    let mut interact = server.interact().await;
    let next = say(&mut interact, session_id, "hello again", None).await;
    assert_eq!(next.finish_reason(), FinishReason::Stop);
    assert!(
        next.response.contains("You said 'hello again'."),
        "{}",
        next.response
    );
    let mut sessions = server.sessions().await;
    assert_eq!(
        get_session(&mut sessions, session_id).await.message_count,
        6
    );
}

async fn abandon_via_interact(store: &str) {
    let server = TestServer::start_with(config_on(store)).await;
    session_with_tools(&server, "ab").await;
    let paused = pause(&server, "ab").await;
    let mut interact = server.interact().await;
    let done = within("Interact", interact.interact(abandon_request("ab")))
        .await
        .expect("abandon accepted")
        .into_inner();
    assert_eq!(done.finish_reason(), FinishReason::Cancelled);
    assert_eq!(done.turn_id, paused.turn_id, "the paused turn ends");
    // No model step: the echo model would have answered the results.
    assert_eq!(done.response, "");
    assert!(done.tool_calls.is_empty());
    assert_eq!(done.usage.unwrap_or_default().output_tokens, 0);
    assert_abandoned(&server, "ab", &paused).await;
    assert_next_turn_works(&server, "ab").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interact_abandons_the_paused_turn_on_sqlite() {
    abandon_via_interact("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interact_abandons_the_paused_turn_in_memory() {
    abandon_via_interact("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_response_abandons_the_paused_turn() {
    let server = TestServer::start_with(config_on("sqlite")).await;
    session_with_tools(&server, "st").await;
    let paused = pause(&server, "st").await;
    let mut interact = server.interact().await;
    let request = StreamResponseRequest {
        session_id: "st".into(),
        abandon_tool_calls: true,
        ..Default::default()
    };
    let events = stream_events(&mut interact, request).await;
    assert_eq!(events.len(), 2, "started and completed: {events:?}");
    assert!(matches!(&events[0], StreamEvent::Started(s) if s.turn_id == paused.turn_id));
    let Some(StreamEvent::Completed(done)) = events.last() else {
        panic!("ends with completed: {events:?}");
    };
    assert_eq!(done.finish_reason(), FinishReason::Cancelled);
    assert_eq!(done.turn_id, paused.turn_id);
    assert_abandoned(&server, "st", &paused).await;
    assert_next_turn_works(&server, "st").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandon_with_nothing_pending_or_with_more_is_refused() {
    let server = TestServer::start().await;
    session_with_tools(&server, "idle").await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    // An idle session: nothing to abandon.
    let status = expect_code(
        interact.interact(abandon_request("idle")).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("nothing to abandon"),
        "{}",
        status.message()
    );
    // A session that does not exist is not created by it.
    expect_code(
        interact.interact(abandon_request("missing")).await,
        Code::InvalidArgument,
    );
    let missing = sessions
        .get_session(contextd::api::v1::GetSessionRequest {
            session_id: "missing".into(),
        })
        .await;
    expect_code(missing, Code::NotFound);

    // With a message or tool results as well: refused, and the pause stays.
    let paused = pause(&server, "idle").await;
    let mut with_message = abandon_request("idle");
    with_message.message = "instead".into();
    let status = expect_code(interact.interact(with_message).await, Code::InvalidArgument);
    assert!(
        status.message().contains("abandon the paused turn first"),
        "{}",
        status.message()
    );
    let mut with_results = abandon_request("idle");
    with_results.tool_results = vec![result(&paused.tool_calls[0].tool_call_id, "x")];
    expect_code(interact.interact(with_results).await, Code::InvalidArgument);
    let session = get_session(&mut sessions, "idle").await;
    assert_eq!(session.state(), SessionState::AwaitingToolResults);
    assert_eq!(session.pending_tool_calls, paused.tool_calls);

    // Abandoned once, then there is nothing left to abandon.
    interact.interact(abandon_request("idle")).await.unwrap();
    expect_code(
        interact.interact(abandon_request("idle")).await,
        Code::InvalidArgument,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_abandon_repeats_its_outcome() {
    let server = TestServer::start_with(config_on("sqlite")).await;
    session_with_tools(&server, "keyed").await;
    let paused = pause(&server, "keyed").await;
    let mut interact = server.interact().await;
    let mut keyed = abandon_request("keyed");
    keyed.idempotency_key = "abandon-1".into();
    let first = interact.interact(keyed.clone()).await.unwrap().into_inner();
    assert_eq!(first.finish_reason(), FinishReason::Cancelled);
    // The repeat gets the stored outcome, though nothing is pending any more.
    let repeat = interact.interact(keyed.clone()).await.unwrap().into_inner();
    assert_eq!(repeat, first);
    assert_abandoned(&server, "keyed", &paused).await;
    // The same key on a request that does not abandon is another request.
    let mut other = interact_request("keyed", "hello", None);
    other.idempotency_key = "abandon-1".into();
    let status = expect_code(interact.interact(other).await, Code::InvalidArgument);
    assert!(
        status.message().contains("different request"),
        "{}",
        status.message()
    );
    // And a keyed message is not taken for a keyed abandon.
    let mut message = interact_request("keyed", "keyed message", None);
    message.idempotency_key = "message-1".into();
    interact.interact(message).await.unwrap();
    let mut abandon = abandon_request("keyed");
    abandon.idempotency_key = "message-1".into();
    expect_code(interact.interact(abandon).await, Code::InvalidArgument);
}

async fn converse_cancel_while_paused(store: &str) {
    let server = TestServer::start_with(config_on(store)).await;
    session_with_tools(&server, "cv").await;
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("cv").await;

    // Nothing running or paused: the cancel is refused and the stream goes on.
    conversation.send(Frame::Cancel(ConverseCancel {})).await;
    let error = converse_error(&conversation.until_end_of_turn().await);
    assert_eq!(error.code, Code::FailedPrecondition as i32, "{error:?}");

    conversation
        .send_message(
            "/call get_weather {\"city\": \"Oslo\"}\n/call get_time {\"city\": \"Lima\"}",
            None,
        )
        .await;
    let paused = converse_completed(&conversation.until_end_of_turn().await);
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);

    conversation.send(Frame::Cancel(ConverseCancel {})).await;
    let events = conversation.until_end_of_turn().await;
    assert!(
        matches!(&events[0].event, Some(ConverseEvent::Started(_))),
        "{events:?}"
    );
    let done = converse_completed(&events);
    assert_eq!(done.finish_reason(), FinishReason::Cancelled);
    assert_eq!(done.turn_id, paused.turn_id);
    assert!(events.iter().all(|e| e.turn_id == paused.turn_id));
    assert_abandoned(&server, "cv", &paused).await;

    // The stream goes on with an ordinary turn, and a cancel is again refused when idle.
    conversation.send_message("hello again", None).await;
    let next = converse_completed(&conversation.until_end_of_turn().await);
    assert_eq!(next.finish_reason(), FinishReason::Stop);
    conversation.send(Frame::Cancel(ConverseCancel {})).await;
    let error = converse_error(&conversation.until_end_of_turn().await);
    assert_eq!(error.code, Code::FailedPrecondition as i32, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_cancel_while_paused_abandons_on_sqlite() {
    converse_cancel_while_paused("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_cancel_while_paused_abandons_in_memory() {
    converse_cancel_while_paused("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_on_a_paused_session_can_abandon_it() {
    let server = TestServer::start().await;
    session_with_tools(&server, "reopen").await;
    let paused = pause(&server, "reopen").await;
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    let opened = conversation.open("reopen").await;
    assert_eq!(
        opened.session.unwrap().pending_tool_calls,
        paused.tool_calls
    );
    conversation.send(Frame::Cancel(ConverseCancel {})).await;
    let done = converse_completed(&conversation.until_end_of_turn().await);
    assert_eq!(done.finish_reason(), FinishReason::Cancelled);
    assert_abandoned(&server, "reopen", &paused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_abandons_through_every_call() {
    let server = TestServer::start().await;
    let client = Client::connect(&server.addr.to_string()).await.unwrap();

    // Interact.
    session_with_tools(&server, "rc-unary").await;
    let paused = pause(&server, "rc-unary").await;
    let done = client.abandon_tool_calls("rc-unary", "").await.unwrap();
    assert_eq!(done.finish_reason(), FinishReason::Cancelled);
    assert_abandoned(&server, "rc-unary", &paused).await;
    let err = client.abandon_tool_calls("rc-unary", "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // StreamResponse.
    session_with_tools(&server, "rc-stream").await;
    let paused = pause(&server, "rc-stream").await;
    let mut events = client
        .stream_abandon_tool_calls("rc-stream", "")
        .await
        .unwrap();
    let mut last = None;
    while let Some(event) = futures_util::StreamExt::next(&mut events).await {
        last = Some(event.unwrap());
    }
    match last {
        Some(StreamEvent::Completed(done)) => {
            assert_eq!(done.finish_reason(), FinishReason::Cancelled)
        }
        other => panic!("ends with completed: {other:?}"),
    }
    assert_abandoned(&server, "rc-stream", &paused).await;

    // Converse: cancel while paused, then the end of the abandon read by `until_end_of_turn`.
    let tool = tool_definition("get_weather", "Weather", json!({"type": "object"})).unwrap();
    let options = ConverseOptions::new("rc-converse").tool(tool.clone());
    let mut conversation = client.converse(options).await.unwrap();
    let paused = conversation
        .turn("/call get_weather {\"city\": \"Oslo\"}", None)
        .await
        .unwrap();
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    conversation.cancel().await.unwrap();
    let done = conversation.until_end_of_turn().await.unwrap();
    assert_eq!(done.finish_reason(), FinishReason::Cancelled);
    assert_eq!(done.turn_id, paused.turn_id);
    let next = conversation.turn("hello", None).await.unwrap();
    assert!(next.response.contains("You said 'hello'."), "{next:?}");

    // Cancel while paused with the abandon left unread: the next turn's reply is its own.
    let paused = conversation
        .turn("/call get_weather {\"city\": \"Rome\"}", None)
        .await
        .unwrap();
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    conversation.cancel().await.unwrap();
    let next = conversation.turn("and now", None).await.unwrap();
    assert_eq!(next.finish_reason(), FinishReason::Stop);
    assert!(next.response.contains("You said 'and now'."), "{next:?}");
    let history = client.history("rc-converse").await.unwrap();
    let abandoned: Vec<_> = history
        .iter()
        .filter(|m| m.role() == MessageRole::Tool)
        .map(|m| (m.content.as_str(), m.is_error))
        .collect();
    assert_eq!(abandoned, [(ABANDONED, true), (ABANDONED, true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_left_unread_that_paused_is_abandoned_by_the_next_message() {
    let server = TestServer::start().await;
    let client = Client::connect(&server.addr.to_string()).await.unwrap();
    let tool = tool_definition("get_weather", "Weather", json!({"type": "object"})).unwrap();
    let mut conversation = client
        .converse(ConverseOptions::new("unread").tool(tool))
        .await
        .unwrap();
    // The pausing turn's events are never read: the next message cancels it. Whether the
    // cancel reaches it running (nothing stored) or paused (abandoned), the session takes the
    // next message, and its reply is its own.
    conversation
        .send_message("/call get_weather {\"city\": \"Oslo\"}", None)
        .await
        .unwrap();
    let next = conversation.turn("next", None).await.unwrap();
    assert_eq!(next.finish_reason(), FinishReason::Stop);
    assert!(next.response.contains("You said 'next'."), "{next:?}");
    let mut sessions = server.sessions().await;
    let session = get_session(&mut sessions, "unread").await;
    assert_eq!(session.state(), SessionState::Idle);
    let messages = all_messages(&mut sessions, "unread", 0).await;
    let tools: Vec<_> = messages
        .iter()
        .filter(|m| m.role() == MessageRole::Tool)
        .map(|m| (m.content.as_str(), m.is_error))
        .collect();
    assert!(
        tools.is_empty() || tools == [(ABANDONED, true)],
        "{messages:?}"
    );
}
