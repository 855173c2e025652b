//! The `contextd::client` wrapper against a live server: every operation, typed events,
//! the tool handler of a conversation, and errors carrying their status codes.

mod common;

use common::*;
use contextd::api::v1::{FinishReason, SessionState};
use contextd::client::{
    Client, ConnectOptions, ConverseEvent, ConverseOptions, NewSession, SessionUpdate, StreamEvent,
    context_json, tool_definition, tool_result, value_json,
};
use futures_util::StreamExt;
use serde_json::json;
use tonic::Code;

async fn client(server: &TestServer) -> Client {
    Client::connect_with(
        &server.addr.to_string(),
        ConnectOptions::default().bearer_token("token-1"),
    )
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_turns_and_tools() {
    let server = TestServer::start().await;
    let client = client(&server).await;

    let mut new = NewSession::new("alpha");
    new.context = Some(json!({"user_id": "john_doe"}));
    new.tools = vec![tool_definition("get_weather", "Weather", json!({"type": "object"})).unwrap()];
    let created = client.create_session(new).await.unwrap();
    assert_eq!(created.session_id, "alpha");
    let err = client
        .create_session(NewSession::new("alpha"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let reply = client
        .interact("alpha", "Hello", Some(json!({"topic": "environment"})))
        .await
        .unwrap();
    assert!(
        reply.response.contains("User john_doe is active."),
        "{}",
        reply.response
    );
    assert_eq!(
        context_json(reply.updated_context.as_ref()).unwrap(),
        json!({"user_id": "john_doe", "topic": "environment"})
    );

    // A client-side tool round trip through Interact.
    let paused = client
        .interact("alpha", r#"/call get_weather {"city": "Paris"}"#, None)
        .await
        .unwrap();
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    let session = client.get_session("alpha").await.unwrap();
    assert_eq!(session.state(), SessionState::AwaitingToolResults);
    let done = client
        .submit_tool_results("alpha", vec![tool_result(&paused.tool_calls[0], "sunny")])
        .await
        .unwrap();
    assert_eq!(done.response, "Tool get_weather returned: sunny");

    // Streaming yields typed events whose deltas add up to the reply.
    let mut events = client
        .stream_response("alpha", "streamed", None)
        .await
        .unwrap();
    let mut text = String::new();
    let mut last = None;
    while let Some(event) = events.next().await {
        match event.unwrap() {
            StreamEvent::Delta(d) => text.push_str(&d.text),
            StreamEvent::Completed(c) => last = Some(c),
            _ => {}
        }
    }
    assert_eq!(last.expect("completed").response, text);

    let updated = client
        .update_session(
            "alpha",
            SessionUpdate {
                context: Some(json!({"topic": null})),
                system_prompt: Some("Be brief.".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.system_prompt, "Be brief.");
    assert_eq!(
        context_json(updated.context.as_ref()).unwrap(),
        json!({"user_id": "john_doe"})
    );

    let history = client.history("alpha").await.unwrap();
    assert_eq!(history.len() as u64, updated.message_count);
    let preview = client.preview_context("alpha", "next", None).await.unwrap();
    assert!(preview.total_tokens > 0);
    let page = client.list_sessions(0, "").await.unwrap();
    assert_eq!(page.sessions.len(), 1);

    let tools = client.list_tools(Some("alpha")).await.unwrap();
    assert_eq!(tools.session_tools.len(), 1);
    let called = client
        .call_tool("context_get", json!({"key": "user_id"}), Some("alpha"))
        .await
        .unwrap();
    assert!(!called.is_error);
    assert_eq!(
        value_json(called.structured_content.as_ref()).unwrap(),
        json!("john_doe")
    );
    let err = client
        .call_tool("context_get", json!([1]), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    assert_eq!(
        client.delete_session("alpha").await.unwrap(),
        history.len() as u64
    );
    let err = client.get_session("alpha").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_answer_tool_calls_with_the_handler() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let mut conversation = client
        .converse(
            ConverseOptions::new("conv")
                .tool(tool_definition("get_weather", "Weather", json!({})).unwrap())
                .context(json!({"user_id": "jane_doe"})),
        )
        .await
        .unwrap();
    assert!(conversation.session_created());
    assert_eq!(conversation.session_id(), "conv");

    let done = conversation.turn("Hi", None).await.unwrap();
    assert!(done.response.contains("jane_doe"), "{}", done.response);

    conversation.set_tool_handler(|call| {
        let args = context_json(call.arguments.as_ref()).unwrap();
        Ok(format!("sunny in {}", args["city"].as_str().unwrap_or("?")))
    });
    let done = conversation
        .turn(r#"/call get_weather {"city": "Oslo"}"#, None)
        .await
        .unwrap();
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    assert_eq!(done.response, "Tool get_weather returned: sunny in Oslo");

    // Without a handler a pause is returned as it is; a refused frame is a typed error.
    conversation.clear_tool_handler();
    let paused = conversation
        .turn(r#"/call get_weather {"city": "Rome"}"#, None)
        .await
        .unwrap();
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    let err = conversation.turn("too early", None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    conversation
        .send_tool_results(vec![tool_result(&paused.tool_calls[0], "rain")])
        .await
        .unwrap();
    let done = conversation.until_end_of_turn().await.unwrap();
    assert_eq!(done.response, "Tool get_weather returned: rain");

    conversation.close();
    assert!(matches!(conversation.next_event().await, Ok(None)));
}

#[tokio::test]
async fn unreachable_servers_are_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::connect(&addr.to_string()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_a_converse_turn_early_cancels_it() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let mut conversation = client
        .converse(ConverseOptions::new("leave-early"))
        .await
        .unwrap();
    let slow = format!(
        "/delay 1000 {}",
        (0..20)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Read the turn's first delta and stop reading.
    conversation.send_message(&slow, None).await.unwrap();
    loop {
        match conversation.next_event().await.unwrap() {
            Some(ConverseEvent::Delta(_)) => break,
            Some(_) => {}
            None => panic!("the stream ended"),
        }
    }
    for word in ["one", "two"] {
        let done = conversation.turn(word, None).await.unwrap();
        assert_eq!(done.response, format!("You said '{word}'."));
    }
    // A whole turn future dropped after its first delta.
    let dropped = tokio::time::timeout(
        std::time::Duration::from_millis(1500),
        conversation.turn(&slow, None),
    )
    .await;
    assert!(dropped.is_err(), "the slow turn finished: {dropped:?}");
    let done = conversation.turn("three", None).await.unwrap();
    assert_eq!(done.response, "You said 'three'.");

    let stored = client.history("leave-early").await.unwrap();
    let contents: Vec<_> = stored.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        contents,
        [
            "one",
            "You said 'one'.",
            "two",
            "You said 'two'.",
            "three",
            "You said 'three'."
        ]
    );

    let models = client.list_models().await.unwrap();
    assert_eq!(models.default_model, "echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_through_the_wrapper() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let first = client
        .interact_idempotent("keyed", "only once", None, "k-1")
        .await
        .unwrap();
    let again = client
        .interact_idempotent("keyed", "only once", None, "k-1")
        .await
        .unwrap();
    assert_eq!(again, first);
    let mut events = client
        .stream_response_idempotent("keyed", "only once", None, "k-1")
        .await
        .unwrap();
    let mut last = None;
    while let Some(event) = events.next().await {
        last = Some(event.unwrap());
    }
    assert!(format!("{last:?}").contains(&first.turn_id), "{last:?}");
    let mut conversation = client
        .converse(ConverseOptions::new("keyed"))
        .await
        .unwrap();
    conversation
        .send_message_idempotent("only once", None, "k-1")
        .await
        .unwrap();
    assert_eq!(
        conversation.until_end_of_turn().await.unwrap().turn_id,
        first.turn_id
    );
    let err = client
        .interact_idempotent("keyed", "another", None, "k-1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("different request"), "{err}");
    assert_eq!(client.history("keyed").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_a_pending_summary_and_writes_it_when_asked() {
    use contextd::api::v1::{ContextEntryKind, WindowSettings, WindowStrategy};
    let server = TestServer::start().await;
    let client = client(&server).await;
    let mut new = NewSession::new("folding");
    new.max_context_tokens = 600;
    new.window = Some(WindowSettings {
        strategy: WindowStrategy::Summarize as i32,
        ..Default::default()
    });
    client.create_session(new).await.unwrap();
    let message = "the quick brown fox jumps over the lazy dog, and counts another turn";
    let pending = |preview: &contextd::api::v1::PreviewContextResponse| {
        preview
            .entries
            .iter()
            .any(|e| e.kind() == ContextEntryKind::PendingSummary)
    };
    let mut turns = 0;
    while !pending(
        &client
            .preview_context("folding", message, None)
            .await
            .unwrap(),
    ) {
        client.interact("folding", message, None).await.unwrap();
        turns += 1;
        assert!(turns < 60, "the window never reached the threshold");
    }
    assert!(
        client
            .get_session("folding")
            .await
            .unwrap()
            .summary
            .is_none()
    );

    // The echo model summarizes too: the summary is written now and kept.
    let written = client
        .preview_context_summarized("folding", message, None)
        .await
        .unwrap();
    assert!(written.summary_kept, "{written:?}");
    assert!(!pending(&written));
    let summary = client
        .get_session("folding")
        .await
        .unwrap()
        .summary
        .expect("the summary is stored");
    let shown = written
        .entries
        .iter()
        .find(|e| e.kind() == ContextEntryKind::Summary)
        .expect("the summary is shown");
    assert_eq!(shown.content, summary.text);
}
