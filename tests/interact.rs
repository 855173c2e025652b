//! Interact and StreamResponse end to end with the built-in `echo` model: session creation on
//! first use, context merging, stored history, streaming (stream equals unary), client-side
//! and server-side tool round trips and their errors, deadlines, cancellation and concurrent
//! turns on one session.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use contextd::api::v1::stream_response_response::Event as StreamEvent;
use contextd::api::v1::{
    CreateSessionRequest, FinishReason, InteractRequest, MessageRole, SessionState,
    StreamResponseRequest, ToolResult,
};
use serde_json::json;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interact_creates_the_session_and_echoes_with_context() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    let reply = say(
        &mut interact,
        "climate",
        "Tell me about climate change.",
        Some(json!({"user_id": "john_doe", "topic": "environment"})),
    )
    .await;
    assert!(
        reply.session_created,
        "the first request creates the session"
    );
    assert_eq!(reply.session_id, "climate");
    assert_eq!(
        reply.response,
        "You said 'Tell me about climate change.'. User john_doe is active. Current topic: environment."
    );
    assert_eq!(reply.finish_reason(), FinishReason::Stop);
    assert!(reply.tool_calls.is_empty());
    assert!(!reply.turn_id.is_empty());
    assert_eq!(
        json_of(&reply.updated_context),
        json!({"user_id": "john_doe", "topic": "environment"})
    );
    let usage = reply.usage.expect("usage");
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0 && usage.context_tokens > 0);

    let session = get_session(&mut sessions, "climate").await;
    assert_eq!(session.model, "echo");
    assert_eq!(session.message_count, 2);
    assert_eq!(session.state(), SessionState::Idle);

    let again = say(&mut interact, "climate", "And now?", None).await;
    assert!(!again.session_created);
    assert_ne!(again.turn_id, reply.turn_id, "every turn has its own id");
    assert!(again.response.starts_with("You said 'And now?'."));
    assert!(
        again.response.contains("User john_doe is active.")
            && again.response.contains("Current topic: environment."),
        "the stored context is used: {}",
        again.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_lists_other_context_keys_sorted() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let reply = say(
        &mut interact,
        "keys",
        "hi",
        Some(json!({"zeta": "last", "alpha": "x", "count": 2, "obj": {"d": true}, "topic": "t"})),
    )
    .await;
    assert!(reply.response.starts_with("You said 'hi'."));
    assert!(reply.response.contains(" Current topic: t."));
    assert!(
        reply
            .response
            .ends_with(" Context: alpha=x, count=2, obj={\"d\":true}, zeta=last."),
        "{}",
        reply.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_patches_merge_across_turns() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    let first = say(
        &mut interact,
        "merge",
        "one",
        Some(json!({"a": 1, "nested": {"x": 1, "y": {"deep": true}}})),
    )
    .await;
    assert_eq!(
        json_of(&first.updated_context),
        json!({"a": 1, "nested": {"x": 1, "y": {"deep": true}}})
    );

    let second = say(
        &mut interact,
        "merge",
        "two",
        Some(json!({"a": null, "nested": {"y": null, "z": "new"}, "b": [1, "two"]})),
    )
    .await;
    let expected = json!({"nested": {"x": 1, "z": "new"}, "b": [1, "two"]});
    assert_eq!(json_of(&second.updated_context), expected);
    assert_eq!(
        json_of(&get_session(&mut sessions, "merge").await.context),
        expected
    );

    // No patch: the context stays.
    let third = say(&mut interact, "merge", "three", None).await;
    assert_eq!(json_of(&third.updated_context), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_turn_stores_user_and_assistant_messages() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    let one = say(&mut interact, "store", "first", None).await;
    let two = say(&mut interact, "store", "second", None).await;
    let messages = all_messages(&mut sessions, "store", 0).await;
    let summary: Vec<(u64, MessageRole, &str, &str)> = messages
        .iter()
        .map(|m| (m.index, m.role(), m.content.as_str(), m.turn_id.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (0, MessageRole::User, "first", one.turn_id.as_str()),
            (
                1,
                MessageRole::Assistant,
                one.response.as_str(),
                one.turn_id.as_str()
            ),
            (2, MessageRole::User, "second", two.turn_id.as_str()),
            (
                3,
                MessageRole::Assistant,
                two.response.as_str(),
                two.turn_id.as_str()
            ),
        ]
    );
    assert!(messages.iter().all(|m| m.token_count > 0));
    assert!(messages.iter().all(|m| m.tool_calls.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_id_is_required_and_validated() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;

    expect_code(
        interact.interact(interact_request("", "hello", None)).await,
        Code::InvalidArgument,
    );
    expect_code(
        interact
            .interact(interact_request("bad id!", "hello", None))
            .await,
        Code::InvalidArgument,
    );
    let status = stream_status(&mut interact, stream_request("", "hello", None)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());

    // An empty message without tool results is not a turn.
    expect_code(
        interact.interact(interact_request("empty", "", None)).await,
        Code::InvalidArgument,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_response_streams_started_deltas_completed() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    let events = stream_events(
        &mut interact,
        stream_request(
            "streamed",
            "Tell me about climate change.",
            Some(json!({"user_id": "john_doe", "topic": "environment"})),
        ),
    )
    .await;

    let StreamEvent::Started(started) = &events[0] else {
        panic!("the first event is started, got {:?}", events[0]);
    };
    assert!(started.session_created);
    assert_eq!(started.session_id, "streamed");
    assert!(!started.turn_id.is_empty());

    let Some(StreamEvent::Completed(done)) = events.last() else {
        panic!("the last event is completed, got {:?}", events.last());
    };
    let deltas = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Delta(_)))
        .count();
    assert!(deltas >= 3, "the reply is streamed in pieces, got {deltas}");
    assert_eq!(
        events.len(),
        deltas + 2,
        "only started, deltas and completed"
    );
    assert_eq!(stream_text(&events), done.response);
    assert_eq!(
        done.response,
        "You said 'Tell me about climate change.'. User john_doe is active. Current topic: environment."
    );
    assert_eq!(done.turn_id, started.turn_id);
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert!(done.session_created);
    assert_eq!(
        json_of(&done.updated_context),
        json!({"user_id": "john_doe", "topic": "environment"})
    );

    let session = get_session(&mut sessions, "streamed").await;
    assert_eq!(session.message_count, 2);
    let messages = all_messages(&mut sessions, "streamed", 0).await;
    assert_eq!(messages[1].content, done.response);

    // A second streamed turn on the same session does not create it.
    let events = stream_events(&mut interact, stream_request("streamed", "more", None)).await;
    let StreamEvent::Started(started) = &events[0] else {
        panic!("first event is started");
    };
    assert!(!started.session_created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_equals_unary() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let context = json!({
        "user_id": "u-42",
        "topic": "oceans",
        "depth": {"max": 11034, "unit": "m"},
        "tags": ["salt", "water"],
        "ratio": 0.5
    });
    for message in [
        "What lives at the bottom of the Mariana Trench?",
        "multi\nline   spaced\ttext",
        "ünïcödé ✓ and emoji 🐟",
    ] {
        let unary = say(&mut interact, "unary", message, Some(context.clone())).await;
        let events = stream_events(
            &mut interact,
            stream_request("stream", message, Some(context.clone())),
        )
        .await;
        let Some(StreamEvent::Completed(done)) = events.last() else {
            panic!("stream ends with completed");
        };
        assert_eq!(stream_text(&events), unary.response, "for {message:?}");
        assert_eq!(done.response, unary.response);
        assert_eq!(done.finish_reason(), unary.finish_reason());
        assert_eq!(done.updated_context, unary.updated_context);
        // Fresh sessions for the next message, so both see the same history.
        let mut sessions = server.sessions().await;
        for id in ["unary", "stream"] {
            sessions
                .delete_session(contextd::api::v1::DeleteSessionRequest {
                    session_id: id.into(),
                    ..Default::default()
                })
                .await
                .expect("DeleteSession");
        }
    }
}

async fn session_with_tools(server: &TestServer, session_id: &str) {
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: session_id.into(),
            tools: vec![
                tool_def("get_weather", "Current weather for a city."),
                tool_def("get_time", "Local time for a city."),
            ],
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tool_round_trip() {
    let server = TestServer::start().await;
    session_with_tools(&server, "weather").await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    let paused = say(
        &mut interact,
        "weather",
        "/call get_weather {\"city\": \"Paris\"}",
        None,
    )
    .await;
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    assert_eq!(paused.tool_calls.len(), 1);
    let call = &paused.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert!(!call.tool_call_id.is_empty());
    assert_eq!(json_of(&call.arguments), json!({"city": "Paris"}));

    let session = get_session(&mut sessions, "weather").await;
    assert_eq!(session.state(), SessionState::AwaitingToolResults);
    assert_eq!(session.pending_tool_calls, paused.tool_calls);
    let stored = all_messages(&mut sessions, "weather", 0).await;
    assert_eq!(
        stored.len(),
        2,
        "user message and the assistant's tool call"
    );
    assert_eq!(stored[0].role(), MessageRole::User);
    assert_eq!(stored[1].role(), MessageRole::Assistant);
    assert_eq!(stored[1].tool_calls, paused.tool_calls);
    assert_eq!(session.message_count, 2);

    let done = send_results(
        &mut interact,
        "weather",
        vec![result(&call.tool_call_id, "sunny, 21C")],
    )
    .await
    .expect("tool results accepted");
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert!(
        done.response
            .contains("Tool get_weather returned: sunny, 21C"),
        "{}",
        done.response
    );
    assert_eq!(done.turn_id, paused.turn_id, "the paused turn continues");
    assert!(done.tool_calls.is_empty());

    let session = get_session(&mut sessions, "weather").await;
    assert_eq!(session.state(), SessionState::Idle);
    assert!(session.pending_tool_calls.is_empty());
    let stored = all_messages(&mut sessions, "weather", 0).await;
    let roles: Vec<MessageRole> = stored.iter().map(|m| m.role()).collect();
    assert_eq!(
        roles,
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Tool,
            MessageRole::Assistant
        ]
    );
    assert_eq!(stored[2].tool_call_id, call.tool_call_id);
    assert_eq!(stored[2].tool_name, "get_weather");
    assert_eq!(stored[2].content, "sunny, 21C");
    assert!(!stored[2].is_error);
    assert_eq!(stored[3].content, done.response);
    assert!(stored.iter().all(|m| m.turn_id == paused.turn_id));

    // The session takes ordinary messages again.
    let next = say(&mut interact, "weather", "thanks", None).await;
    assert_eq!(next.finish_reason(), FinishReason::Stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_client_tool_calls_need_every_result() {
    let server = TestServer::start().await;
    session_with_tools(&server, "parallel").await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    let paused = say(
        &mut interact,
        "parallel",
        "/call get_weather {\"city\": \"Oslo\"}\n/call get_time {\"city\": \"Lima\"}",
        None,
    )
    .await;
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    let names: Vec<&str> = paused.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["get_weather", "get_time"],
        "calls in the order made"
    );
    let ids: HashSet<&str> = paused
        .tool_calls
        .iter()
        .map(|c| c.tool_call_id.as_str())
        .collect();
    assert_eq!(ids.len(), 2, "tool call ids are unique");
    let (weather, time) = (&paused.tool_calls[0], &paused.tool_calls[1]);

    // Only one result: FAILED_PRECONDITION naming the missing id.
    let status = expect_code(
        send_results(
            &mut interact,
            "parallel",
            vec![result(&weather.tool_call_id, "rain")],
        )
        .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains(&time.tool_call_id),
        "names the missing id {}: {}",
        time.tool_call_id,
        status.message()
    );

    // A new message instead of results: FAILED_PRECONDITION naming both ids.
    let status = expect_code(
        interact
            .interact(interact_request("parallel", "hello?", None))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains(&weather.tool_call_id)
            && status.message().contains(&time.tool_call_id),
        "{}",
        status.message()
    );

    // Every result plus one for a call that does not exist: INVALID_ARGUMENT.
    expect_code(
        send_results(
            &mut interact,
            "parallel",
            vec![
                result(&weather.tool_call_id, "rain"),
                result(&time.tool_call_id, "noon"),
                result("call-that-never-was", "??"),
            ],
        )
        .await,
        Code::InvalidArgument,
    );

    // None of the failures changed the session.
    let session = get_session(&mut sessions, "parallel").await;
    assert_eq!(session.state(), SessionState::AwaitingToolResults);
    assert_eq!(session.pending_tool_calls, paused.tool_calls);
    assert_eq!(session.message_count, 2);

    // Both results, in either order, with an empty message: the turn finishes.
    let done = send_results(
        &mut interact,
        "parallel",
        vec![
            result(&time.tool_call_id, "noon"),
            ToolResult {
                tool_call_id: weather.tool_call_id.clone(),
                content: "service down".into(),
                is_error: true,
            },
        ],
    )
    .await
    .expect("both results accepted");
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert!(done.response.contains("noon"), "{}", done.response);
    assert!(done.response.contains("service down"), "{}", done.response);
    assert_eq!(done.turn_id, paused.turn_id);

    let stored = all_messages(&mut sessions, "parallel", 0).await;
    assert_eq!(
        stored.len(),
        5,
        "user, assistant(2 calls), tool, tool, assistant"
    );
    let tool_messages: Vec<_> = stored
        .iter()
        .filter(|m| m.role() == MessageRole::Tool)
        .collect();
    assert_eq!(tool_messages.len(), 2);
    let answered: HashSet<&str> = tool_messages
        .iter()
        .map(|m| m.tool_call_id.as_str())
        .collect();
    assert_eq!(answered, ids);
    let failed = tool_messages
        .iter()
        .find(|m| m.tool_call_id == weather.tool_call_id)
        .expect("weather result stored");
    assert!(failed.is_error);
    assert_eq!(
        get_session(&mut sessions, "parallel").await.state(),
        SessionState::Idle
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_results_without_a_pending_call_are_invalid() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    say(&mut interact, "idle", "hello", None).await;

    expect_code(
        send_results(&mut interact, "idle", vec![result("call-1", "x")]).await,
        Code::InvalidArgument,
    );
    assert_eq!(get_session(&mut sessions, "idle").await.message_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tool_round_trip_streamed() {
    let server = TestServer::start().await;
    session_with_tools(&server, "streamed-tools").await;
    let mut interact = server.interact().await;

    let events = stream_events(
        &mut interact,
        stream_request(
            "streamed-tools",
            "/call get_time {\"city\": \"Rome\"}",
            None,
        ),
    )
    .await;
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCall(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let Some(StreamEvent::Completed(paused)) = events.last() else {
        panic!("ends with completed");
    };
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    assert_eq!(calls, paused.tool_calls, "a tool_call event for each call");
    assert_eq!(calls.len(), 1);
    assert_eq!(json_of(&calls[0].arguments), json!({"city": "Rome"}));

    let events = stream_events(
        &mut interact,
        StreamResponseRequest {
            session_id: "streamed-tools".into(),
            message: String::new(),
            context: None,
            tool_results: vec![result(&calls[0].tool_call_id, "14:05")],
            ..Default::default()
        },
    )
    .await;
    let StreamEvent::Started(started) = &events[0] else {
        panic!("starts with started");
    };
    assert_eq!(started.turn_id, paused.turn_id);
    let Some(StreamEvent::Completed(done)) = events.last() else {
        panic!("ends with completed");
    };
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert_eq!(stream_text(&events), done.response);
    assert!(done.response.contains("Tool get_time returned: 14:05"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_context_get_runs_inside_the_turn() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "srv".into(),
            context: ctx(json!({"favorite_color": "teal", "other": 1})),
            ..Default::default()
        },
    )
    .await;

    let events = stream_events(
        &mut interact,
        stream_request(
            "srv",
            "/call context_get {\"key\": \"favorite_color\"}",
            None,
        ),
    )
    .await;
    assert!(matches!(events[0], StreamEvent::Started(_)));
    let tool_results: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolResult(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        tool_results.len(),
        1,
        "one server-side tool ran: {events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, StreamEvent::ToolCall(_))),
        "server-side calls are not handed to the client"
    );
    let ran = &tool_results[0];
    let call = ran.tool_call.as_ref().expect("tool_call");
    let outcome = ran.result.as_ref().expect("result");
    assert_eq!(call.name, "context_get");
    assert_eq!(json_of(&call.arguments), json!({"key": "favorite_color"}));
    assert_eq!(outcome.tool_call_id, call.tool_call_id);
    assert!(!outcome.is_error);
    assert!(outcome.content.contains("teal"), "{}", outcome.content);

    let position = |pred: fn(&StreamEvent) -> bool| events.iter().position(pred);
    let result_at = position(|e| matches!(e, StreamEvent::ToolResult(_))).expect("tool_result");
    let first_delta = position(|e| matches!(e, StreamEvent::Delta(_))).expect("deltas");
    assert!(
        result_at < first_delta,
        "the tool runs before the reply streams"
    );

    let Some(StreamEvent::Completed(done)) = events.last() else {
        panic!("ends with completed");
    };
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert!(done.tool_calls.is_empty());
    assert_eq!(stream_text(&events), done.response);
    assert!(
        done.response.contains("Tool context_get returned:") && done.response.contains("teal"),
        "{}",
        done.response
    );

    let session = get_session(&mut sessions, "srv").await;
    assert_eq!(session.state(), SessionState::Idle);
    let stored = all_messages(&mut sessions, "srv", 0).await;
    let roles: Vec<MessageRole> = stored.iter().map(|m| m.role()).collect();
    assert_eq!(
        roles,
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Tool,
            MessageRole::Assistant
        ]
    );
    assert_eq!(stored[1].tool_calls.len(), 1);
    assert_eq!(stored[1].tool_calls[0].tool_call_id, call.tool_call_id);
    assert_eq!(stored[2].tool_call_id, call.tool_call_id);
    assert_eq!(stored[2].tool_name, "context_get");
    assert_eq!(stored[3].content, done.response);
    assert_eq!(session.message_count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_context_set_updates_the_context() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    let reply = say(
        &mut interact,
        "setter",
        "/call context_set {\"patch\": {\"mood\": \"happy\", \"drop\": null}}",
        Some(json!({"a": 1, "drop": "me"})),
    )
    .await;
    assert_eq!(reply.finish_reason(), FinishReason::Stop);
    assert!(reply.tool_calls.is_empty());
    assert!(
        reply.response.contains("Tool context_set returned:"),
        "{}",
        reply.response
    );
    assert_eq!(
        json_of(&reply.updated_context),
        json!({"a": 1, "mood": "happy"}),
        "the request patch and then the tool's patch"
    );
    assert_eq!(
        json_of(&get_session(&mut sessions, "setter").await.context),
        json!({"a": 1, "mood": "happy"})
    );
    assert_eq!(all_messages(&mut sessions, "setter", 0).await.len(), 4);

    // The next turn sees the context the tool wrote.
    let next = say(&mut interact, "setter", "how am I?", None).await;
    assert!(next.response.contains("mood=happy"), "{}", next.response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_history_search_finds_earlier_messages() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    say(
        &mut interact,
        "search",
        "I really like Pineapple pizza",
        None,
    )
    .await;
    say(&mut interact, "search", "The weather is fine", None).await;

    let reply = say(
        &mut interact,
        "search",
        "/call history_search {\"query\": \"PINEAPPLE\", \"limit\": 5}",
        None,
    )
    .await;
    assert_eq!(reply.finish_reason(), FinishReason::Stop);
    assert!(reply.response.contains("Tool history_search returned:"));
    assert!(
        reply.response.contains("Pineapple pizza"),
        "case-insensitive search finds the earlier message: {}",
        reply.response
    );
    assert!(
        !reply.response.contains("The weather is fine"),
        "{}",
        reply.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tool_gets_a_plain_reply() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    let reply = say(&mut interact, "unknown", "/call no_such_tool {}", None).await;
    assert_eq!(reply.finish_reason(), FinishReason::Stop);
    assert!(reply.tool_calls.is_empty());
    assert!(
        reply.response.contains("no_such_tool"),
        "{}",
        reply.response
    );
    let session = get_session(&mut sessions, "unknown").await;
    assert_eq!(session.state(), SessionState::Idle);
    assert_eq!(session.message_count, 2);
    let stored = all_messages(&mut sessions, "unknown", 0).await;
    assert!(stored.iter().all(|m| m.tool_calls.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_deadline_is_deadline_exceeded_and_stores_nothing() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    say(
        &mut interact,
        "deadline",
        "before",
        Some(json!({"keep": 1})),
    )
    .await;

    // A transport that leaves the deadline to the server, so the status is the server's.
    let mut bare = BareH2::connect(server.addr).await.interact(server.addr);
    let mut request = tonic::Request::new(interact_request(
        "deadline",
        "/delay 200 a b c d e",
        Some(json!({"tmp": true})),
    ));
    request.set_timeout(Duration::from_millis(300));
    let outcome = within("Interact past its deadline", bare.interact(request)).await;
    expect_code(outcome, Code::DeadlineExceeded);

    // The next turn waits for the session's lock; had the timed-out turn kept running it
    // would be stored first and there would be 6 messages.
    let after = say(&mut interact, "deadline", "after", None).await;
    assert_eq!(after.finish_reason(), FinishReason::Stop);
    assert_eq!(json_of(&after.updated_context), json!({"keep": 1}));
    let session = get_session(&mut sessions, "deadline").await;
    assert_eq!(session.message_count, 4);
    assert_eq!(json_of(&session.context), json!({"keep": 1}));
    let contents: Vec<String> = all_messages(&mut sessions, "deadline", 0)
        .await
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert!(
        !contents.iter().any(|c| c.contains("a b c")),
        "{contents:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_timeout_leaves_the_session_unchanged() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    say(&mut interact, "timeout", "before", None).await;

    let mut request = tonic::Request::new(interact_request(
        "timeout",
        "/delay 200 a b c d e",
        Some(json!({"tmp": true})),
    ));
    request.set_timeout(Duration::from_millis(300));
    let status = within("Interact past its deadline", interact.interact(request))
        .await
        .expect_err("the turn cannot finish within 300 ms");
    // tonic's channel enforces the deadline itself and reports CANCELLED when its own timer
    // fires first; a server that answers first says DEADLINE_EXCEEDED.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{:?}: {}",
        status.code(),
        status.message()
    );

    let after = within(
        "the next turn",
        interact.interact(interact_request("timeout", "after", None)),
    )
    .await
    .expect("the session is usable after a timed-out turn")
    .into_inner();
    assert_eq!(after.finish_reason(), FinishReason::Stop);
    let session = get_session(&mut sessions, "timeout").await;
    assert_eq!(session.message_count, 4, "nothing of the timed-out turn");
    assert_eq!(json_of(&session.context), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_cancels_the_turn() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "cancel".into(),
            ..Default::default()
        },
    )
    .await;

    // About 100 deltas at 100 ms each: ten seconds if nobody cancels it.
    let words = (0..100)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut stream = interact
        .stream_response(stream_request(
            "cancel",
            &format!("/delay 100 {words}"),
            Some(json!({"tmp": 1})),
        ))
        .await
        .expect("StreamResponse")
        .into_inner();
    let mut saw_delta = false;
    while !saw_delta {
        let event = within("the first delta", stream.message())
            .await
            .expect("stream item")
            .expect("stream not ended yet")
            .event
            .expect("event");
        saw_delta = matches!(event, StreamEvent::Delta(_));
    }
    drop(stream);

    // The session's lock is released quickly: this turn is served well before the cancelled
    // one would have ended.
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        interact.interact(interact_request("cancel", "next", None)),
    )
    .await
    .expect("a turn after the cancelled one runs within 5 s")
    .expect("Interact after cancel")
    .into_inner();
    assert_eq!(next.finish_reason(), FinishReason::Stop);

    let session = get_session(&mut sessions, "cancel").await;
    assert_eq!(
        session.message_count, 2,
        "only the turn after the cancel is stored"
    );
    assert_eq!(json_of(&session.context), json!({}));
    let stored = all_messages(&mut sessions, "cancel", 0).await;
    assert_eq!(stored[0].content, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_turns_on_one_session_are_serialized() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "busy".into(),
            ..Default::default()
        },
    )
    .await;

    const N: usize = 20;
    let mut tasks = Vec::new();
    for i in 0..N {
        let mut client =
            contextd::api::v1::interact_service_client::InteractServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let request = InteractRequest {
                session_id: "busy".into(),
                message: format!("message {i}"),
                context: ctx(json!({ format!("key{i}"): i })),
                ..Default::default()
            };
            client.interact(request).await.map(|r| r.into_inner())
        }));
    }
    let mut turn_ids = HashSet::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = within("a concurrent turn", task)
            .await
            .expect("task")
            .unwrap_or_else(|s| panic!("turn {i} failed: {:?} {}", s.code(), s.message()));
        let context = json_of(&reply.updated_context);
        assert_eq!(
            context[format!("key{i}")],
            json!(i),
            "turn {i} sees its own patch"
        );
        assert!(turn_ids.insert(reply.turn_id));
    }

    let session = get_session(&mut sessions, "busy").await;
    assert_eq!(session.message_count, (2 * N) as u64);
    let context = json_of(&session.context);
    for i in 0..N {
        assert_eq!(context[format!("key{i}")], json!(i), "key{i} kept");
    }
    let stored = all_messages(&mut sessions, "busy", 7).await;
    assert_eq!(stored.len(), 2 * N);
    for pair in stored.chunks(2) {
        assert_eq!(pair[0].role(), MessageRole::User);
        assert_eq!(pair[1].role(), MessageRole::Assistant);
        assert_eq!(pair[0].turn_id, pair[1].turn_id, "turns do not interleave");
        let quoted = format!("You said '{}'.", pair[0].content);
        assert!(pair[1].content.starts_with(&quoted), "{}", pair[1].content);
    }
}
