//! The bidirectional Converse stream: open, many turns on one stream, client-side tool round
//! trips, errors that leave the stream usable, frames before `open`, cancel, the end of the
//! request side, and shutdown of the server while a stream is open.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::converse_response::Event;
use contextd::api::v1::{
    ConverseCancel, ConverseOpen, ConverseResponse, CreateSessionRequest, FinishReason,
    MessageRole, SessionState,
};
use contextd::config::Config;
use serde_json::json;
use tonic::Code;

/// Checks the shape of a finished turn: `started` first, every event on the same turn id,
/// deltas that add up to the response, `completed` last. Returns the completion.
#[track_caller]
fn check_turn(events: &[ConverseResponse]) -> contextd::api::v1::InteractResponse {
    let Some(Event::Started(started)) = &events[0].event else {
        panic!("a turn starts with started, got {:?}", events[0]);
    };
    assert!(!started.turn_id.is_empty());
    for event in events {
        assert_eq!(
            event.turn_id, started.turn_id,
            "every event of the turn carries its id: {event:?}"
        );
    }
    let done = converse_completed(events);
    assert_eq!(done.turn_id, started.turn_id);
    assert_eq!(converse_text(events), done.response);
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_then_many_turns_on_one_stream() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    let mut conversation = Conversation::start(&mut interact).await;

    let opened = conversation.open("chat").await;
    assert!(opened.session_created);
    let session = opened.session.expect("opened.session");
    assert_eq!(session.session_id, "chat");
    assert_eq!(session.message_count, 0);

    let mut turn_ids = HashSet::new();
    let mut responses = Vec::new();
    for (i, message) in ["first", "second", "third"].into_iter().enumerate() {
        let context = json!({ format!("k{i}"): i });
        conversation.send_message(message, Some(context)).await;
        let events = conversation.until_end_of_turn().await;
        let deltas = events
            .iter()
            .filter(|e| matches!(e.event, Some(Event::Delta(_))))
            .count();
        assert!(deltas >= 2, "streamed in pieces");
        let done = check_turn(&events);
        assert_eq!(done.finish_reason(), FinishReason::Stop);
        assert!(
            done.response.starts_with(&format!("You said '{message}'.")),
            "{}",
            done.response
        );
        assert_eq!(json_of(&done.updated_context)[format!("k{i}")], json!(i));
        assert!(turn_ids.insert(done.turn_id.clone()), "turn ids differ");
        responses.push(done.response);
    }

    let stored = all_messages(&mut sessions, "chat", 0).await;
    assert_eq!(stored.len(), 6);
    assert_eq!(stored[5].content, responses[2]);
    assert_eq!(
        json_of(&get_session(&mut sessions, "chat").await.context),
        json!({"k0": 0, "k1": 1, "k2": 2})
    );

    // The client closes its side: the server ends the stream cleanly.
    conversation.close_requests();
    let end = conversation.next_raw().await;
    assert!(
        matches!(end, Ok(None)),
        "the stream ends with OK after the client is done: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_creates_a_session_with_the_given_fields() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    let mut conversation = Conversation::start(&mut interact).await;

    conversation
        .send(Frame::Open(ConverseOpen {
            session_id: "configured".into(),
            system_prompt: "Answer in French.".into(),
            context: ctx(json!({"user_id": "marie"})),
            model: "echo".into(),
            tools: vec![tool_def("lookup", "Looks things up.")],
            labels: HashMap::from([("env".to_string(), "test".to_string())]),
            max_context_tokens: 2048,
            expire_time: None,
            window: None,
            server_tools: None,
        }))
        .await;
    let event = conversation.next().await;
    assert!(event.turn_id.is_empty(), "opened is outside any turn");
    let Some(Event::Opened(opened)) = event.event else {
        panic!("expected opened, got {event:?}");
    };
    assert!(opened.session_created);
    let from_stream = opened.session.expect("session");
    let stored = get_session(&mut sessions, "configured").await;
    assert_eq!(from_stream, stored);
    assert_eq!(stored.system_prompt, "Answer in French.");
    assert_eq!(json_of(&stored.context), json!({"user_id": "marie"}));
    assert_eq!(stored.tools.len(), 1);
    assert_eq!(stored.labels["env"], "test");
    assert_eq!(stored.max_context_tokens, 2048);

    conversation.send_message("Bonjour", None).await;
    let done = check_turn(&conversation.until_end_of_turn().await);
    assert!(
        done.response.contains("User marie is active."),
        "{}",
        done.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_attaches_to_an_existing_session() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "existing".into(),
            system_prompt: "kept".into(),
            ..Default::default()
        },
    )
    .await;
    say(&mut interact, "existing", "earlier", None).await;

    let mut conversation = Conversation::start(&mut interact).await;
    conversation
        .send(Frame::Open(ConverseOpen {
            session_id: "existing".into(),
            system_prompt: "ignored for an existing session".into(),
            ..Default::default()
        }))
        .await;
    let Some(Event::Opened(opened)) = conversation.next().await.event else {
        panic!("expected opened");
    };
    assert!(!opened.session_created);
    let session = opened.session.expect("session");
    assert_eq!(session.system_prompt, "kept");
    assert_eq!(session.message_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_open_are_failed_precondition() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    let mut conversation = Conversation::start(&mut interact).await;

    conversation.send_message("too early", None).await;
    let event = conversation.next().await;
    let Some(Event::Error(error)) = &event.event else {
        panic!("expected an error event, got {event:?}");
    };
    assert_eq!(error.code, Code::FailedPrecondition as i32);
    assert!(!error.message.is_empty());

    // The stream is still usable.
    let opened = conversation.open("late-open").await;
    assert!(opened.session_created);
    conversation.send_message("now it works", None).await;
    let done = check_turn(&conversation.until_end_of_turn().await);
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert_eq!(
        get_session(&mut sessions, "late-open").await.message_count,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_open_is_an_error_event() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;

    conversation.send_open("not a valid id").await;
    let event = conversation.next().await;
    let Some(Event::Error(error)) = &event.event else {
        panic!("expected an error event, got {event:?}");
    };
    assert_eq!(
        error.code,
        Code::InvalidArgument as i32,
        "{}",
        error.message
    );

    let opened = conversation.open("valid-id").await;
    assert!(opened.session_created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tool_round_trip_on_one_stream() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation
        .send(Frame::Open(ConverseOpen {
            session_id: "tool-loop".into(),
            tools: vec![tool_def("lookup", "Looks things up.")],
            ..Default::default()
        }))
        .await;
    let Some(Event::Opened(_)) = conversation.next().await.event else {
        panic!("expected opened");
    };

    conversation
        .send_message(
            "/call lookup {\"q\": \"rust\"}\n/call lookup {\"q\": \"tonic\"}",
            None,
        )
        .await;
    let events = conversation.until_end_of_turn().await;
    let paused = check_turn(&events);
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::ToolCall(call)) => Some(call.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls, paused.tool_calls);
    assert_ne!(calls[0].tool_call_id, calls[1].tool_call_id);
    assert_eq!(
        get_session(&mut sessions, "tool-loop").await.state(),
        SessionState::AwaitingToolResults
    );

    conversation
        .send_results(vec![
            result(&calls[0].tool_call_id, "Rust is a language"),
            result(&calls[1].tool_call_id, "tonic is a gRPC library"),
        ])
        .await;
    let events = conversation.until_end_of_turn().await;
    let done = check_turn(&events);
    assert_eq!(done.turn_id, paused.turn_id, "the paused turn continues");
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert!(
        done.response
            .contains("Tool lookup returned: Rust is a language")
            && done
                .response
                .contains("Tool lookup returned: tonic is a gRPC library"),
        "{}",
        done.response
    );

    let session = get_session(&mut sessions, "tool-loop").await;
    assert_eq!(session.state(), SessionState::Idle);
    let roles: Vec<MessageRole> = all_messages(&mut sessions, "tool-loop", 0)
        .await
        .iter()
        .map(|m| m.role())
        .collect();
    assert_eq!(
        roles,
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Tool,
            MessageRole::Tool,
            MessageRole::Assistant
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_tool_on_the_stream() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("srv-tools").await;

    conversation
        .send_message(
            "/call context_set {\"patch\": {\"step\": 2}}",
            Some(json!({"step": 1})),
        )
        .await;
    let events = conversation.until_end_of_turn().await;
    let done = check_turn(&events);
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    let ran: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::ToolResult(r)) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].tool_call.as_ref().expect("call").name, "context_set");
    assert!(!ran[0].result.as_ref().expect("result").is_error);
    assert_eq!(json_of(&done.updated_context), json!({"step": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_turns_keep_the_stream_usable() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation
        .send(Frame::Open(ConverseOpen {
            session_id: "errors".into(),
            tools: vec![tool_def("lookup", "Looks things up.")],
            ..Default::default()
        }))
        .await;
    conversation.next().await;

    // A context that is too deep: INVALID_ARGUMENT, nothing stored.
    conversation
        .send_message("hello", Some(nested_object(33)))
        .await;
    let error = converse_error(&conversation.until_end_of_turn().await);
    assert_eq!(
        error.code,
        Code::InvalidArgument as i32,
        "{}",
        error.message
    );

    conversation.send_message("/call lookup {}", None).await;
    let paused = check_turn(&conversation.until_end_of_turn().await);
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    let call_id = paused.tool_calls[0].tool_call_id.clone();

    // A user message while the turn waits for results: FAILED_PRECONDITION naming the id.
    conversation.send_message("are you there?", None).await;
    let error = converse_error(&conversation.until_end_of_turn().await);
    assert_eq!(
        error.code,
        Code::FailedPrecondition as i32,
        "{}",
        error.message
    );
    assert!(error.message.contains(&call_id), "{}", error.message);

    // Results with an extra, unknown call id: INVALID_ARGUMENT.
    conversation
        .send_results(vec![result(&call_id, "ok"), result("bogus-id", "?")])
        .await;
    let error = converse_error(&conversation.until_end_of_turn().await);
    assert_eq!(
        error.code,
        Code::InvalidArgument as i32,
        "{}",
        error.message
    );

    assert_eq!(get_session(&mut sessions, "errors").await.message_count, 2);

    // The right results finish the turn; the next turn works as usual.
    conversation
        .send_results(vec![result(&call_id, "found it")])
        .await;
    let done = check_turn(&conversation.until_end_of_turn().await);
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert_eq!(done.turn_id, paused.turn_id);
    assert!(done.response.contains("found it"));

    conversation.send_message("and now?", None).await;
    let done = check_turn(&conversation.until_end_of_turn().await);
    assert!(done.response.starts_with("You said 'and now?'."));
    assert_eq!(get_session(&mut sessions, "errors").await.message_count, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_slow_turn_and_stores_nothing() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("cancellable").await;
    conversation.send_message("kept", None).await;
    check_turn(&conversation.until_end_of_turn().await);

    // About 100 deltas at 100 ms each if nothing stops it.
    let words = (0..100)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    conversation
        .send_message(&format!("/delay 100 {words}"), Some(json!({"tmp": 1})))
        .await;
    let mut turn_id = String::new();
    loop {
        let event = conversation.next().await;
        match event.event {
            Some(Event::Started(started)) => turn_id = started.turn_id,
            Some(Event::Delta(_)) => break,
            other => panic!("unexpected event before the first delta: {other:?}"),
        }
    }
    conversation.send(Frame::Cancel(ConverseCancel {})).await;

    let started = tokio::time::Instant::now();
    let events = conversation.until_end_of_turn().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "cancel acts at once, not after the turn"
    );
    let done = converse_completed(&events);
    assert_eq!(done.finish_reason(), FinishReason::Cancelled);
    assert_eq!(done.turn_id, turn_id);

    let session = get_session(&mut sessions, "cancellable").await;
    assert_eq!(session.message_count, 2, "nothing of the cancelled turn");
    assert_eq!(json_of(&session.context), json!({}));
    assert_eq!(session.state(), SessionState::Idle);

    conversation.send_message("after cancel", None).await;
    let done = check_turn(&conversation.until_end_of_turn().await);
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert_eq!(
        get_session(&mut sessions, "cancellable")
            .await
            .message_count,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_queue_behind_a_running_turn() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("queued").await;

    conversation.send_message("/delay 50 one two", None).await;
    conversation.send_message("three", None).await;
    let first = check_turn(&conversation.until_end_of_turn().await);
    let second = check_turn(&conversation.until_end_of_turn().await);
    assert!(
        first.response.starts_with("You said 'one two'."),
        "{}",
        first.response
    );
    assert!(
        second.response.starts_with("You said 'three'."),
        "{}",
        second.response
    );
    assert_ne!(first.turn_id, second.turn_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_after_grace_ends_open_streams_unavailable() {
    let config = Config {
        shutdown_grace_ms: 300,
        ..common::test_config()
    };
    let mut server = TestServer::start_with(config).await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("shutdown").await;

    // A turn that would take about 100 s.
    let words = (0..100)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    conversation
        .send_message(&format!("/delay 1000 {words}"), None)
        .await;
    let Some(Event::Started(_)) = conversation.next().await.event else {
        panic!("expected started");
    };
    let before = get_session(&mut sessions, "shutdown").await.message_count;
    assert_eq!(before, 0);

    server.trigger_shutdown();
    // Deltas (and possibly an event ending the cut turn) may come first; the stream must end
    // with UNAVAILABLE, not OK.
    let outcome = loop {
        match conversation.next_raw().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    match outcome {
        Err(status) => assert_eq!(
            status.code(),
            Code::Unavailable,
            "the stream ends UNAVAILABLE: {}",
            status.message()
        ),
        other => panic!("expected the stream to end with UNAVAILABLE, got {other:?}"),
    }
    assert!(server.stop().await, "serve returns Ok after shutdown");
}
