//! The failure cases of gRPC's interoperability suite, run against contextd's own RPCs with a
//! real tonic client: a call cancelled after it began and after its first response, a deadline
//! on a server that is still working, status codes and messages (and the request id) coming
//! back as sent, messages at and over the size limits, unimplemented methods and services, a
//! half-closed Converse stream, and a shutdown with open streams and a paused turn.
//!
//! Each case also checks what the suite cannot see from the client: that nothing of a turn the
//! client gave up on is stored, and that the session is free for the next turn at once.

mod common;

use std::time::Duration;

use common::*;
use contextd::api::v1::converse_response::Event;
use contextd::api::v1::stream_response_response::Event as StreamEvent;
use contextd::api::v1::{FinishReason, GetSessionRequest, InteractRequest};
use futures_util::StreamExt;
use tonic::Code;

/// A message the echo model answers one word a minute: a turn that runs until it is stopped.
const SLEEPING: &str = "/delay 60000 one two three";

/// A message the echo model answers at once, streamed word by word.
const AWAKE: &str = "/delay 1 one two three four five";

/// Checks that `session_id` holds `messages` messages and takes a quick turn at once (within
/// [`WAIT`], far less than the sleeping turn would hold it).
async fn still_free(server: &TestServer, session_id: &str, messages: u64) {
    let mut sessions = server.sessions().await;
    assert_eq!(
        get_session(&mut sessions, session_id).await.message_count,
        messages,
        "nothing of the abandoned turn is stored"
    );
    let mut interact = server.interact().await;
    let reply = say(&mut interact, session_id, "quick", None).await;
    assert!(reply.response.contains("quick"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_begin() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    say(&mut interact, "cab", "first", None).await;
    // The call is sent, the turn starts sleeping, and the client drops it.
    let call = tokio::spawn(async move {
        let _ = interact
            .interact(interact_request("cab", SLEEPING, None))
            .await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.abort();
    let _ = call.await;
    still_free(&server, "cab", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_first_response() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    say(&mut interact, "cafr", "first", None).await;
    let mut events = within(
        "StreamResponse",
        interact.stream_response(stream_request(
            "cafr",
            "/delay 2000 one two three four",
            None,
        )),
    )
    .await
    .expect("stream")
    .into_inner();
    let first = within("the first event", events.next())
        .await
        .expect("an event")
        .expect("not an error");
    assert!(
        matches!(first.event, Some(StreamEvent::Started(_))),
        "{first:?}"
    );
    drop(events);
    still_free(&server, "cafr", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_on_sleeping_server() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    say(&mut interact, "tos", "first", None).await;
    // The deadline travels as `grpc-timeout` and only the server enforces it: over a tonic
    // `Channel`, the client's own timer for the same header races the server's answer and
    // may end the call first, as CANCELLED, proving nothing about the server.
    let mut interact = BareH2::connect(server.addr).await.interact(server.addr);
    let mut request = tonic::Request::new(interact_request("tos", SLEEPING, None));
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let status = expect_code(
        within("a call past its deadline", interact.interact(request)).await,
        Code::DeadlineExceeded,
    );
    assert!(!status.message().is_empty());
    // The same through a stream: the deadline ends it mid-turn.
    let mut request = tonic::Request::new(stream_request("tos", SLEEPING, None));
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let outcome = within("a stream past its deadline", async {
        match interact.stream_response(request).await {
            Err(status) => status.code(),
            Ok(response) => {
                let mut events = response.into_inner();
                loop {
                    match events.next().await {
                        Some(Ok(_)) => continue,
                        Some(Err(status)) => break status.code(),
                        None => break Code::Ok,
                    }
                }
            }
        }
    })
    .await;
    assert_eq!(outcome, Code::DeadlineExceeded);
    still_free(&server, "tos", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_code_and_message_and_request_id() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut request = tonic::Request::new(GetSessionRequest {
        session_id: "nobody".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "interop-42".parse().unwrap());
    let status = expect_code(
        within("GetSession", sessions.get_session(request)).await,
        Code::NotFound,
    );
    assert_eq!(status.message(), "session 'nobody' does not exist");
    assert_eq!(
        status
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap()),
        Some("interop-42"),
        "the caller's request id comes back with the status"
    );
    // A stream that fails before its first event reports the code the same way.
    let mut interact = server.interact().await;
    let status = stream_status(&mut interact, stream_request("bad id!", "hello", None)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("bad id!"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_unary_at_and_over_the_limits() {
    let limit = contextd::config::Limits::default().max_message_bytes;
    // A window that holds a mebibyte of text (the echo model offers the default size).
    let mut config = test_config();
    config.engine.default_max_context_tokens = 400_000;
    let server = TestServer::start_with(config).await;
    let mut interact = server.interact().await;
    // At the limit: the reply quotes all of it (more than a mebibyte back).
    let at = "x".repeat(limit);
    let reply = within(
        "a message at the limit",
        interact.interact(interact_request("large", &at, None)),
    )
    .await
    .expect("a message at the limit is served")
    .into_inner();
    assert!(reply.response.len() > limit, "{}", reply.response.len());
    // One byte over: refused, naming the limit.
    let status = expect_code(
        within(
            "a message over the limit",
            interact.interact(interact_request("large", &"x".repeat(limit + 1), None)),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("max_message_bytes"), "{status:?}");
    // Past the decoder's limit: refused before decoding.
    let huge = InteractRequest {
        context: ctx(serde_json::json!({ "blob": "y".repeat(5 << 20) })),
        ..interact_request("large", "hi", None)
    };
    let status = within("a request past the decoder limit", interact.interact(huge))
        .await
        .expect_err("refused");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    let mut sessions = server.sessions().await;
    assert_eq!(get_session(&mut sessions, "large").await.message_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unimplemented_method_and_service() {
    let server = TestServer::start().await;
    for path in [
        "/contextd.v1.SessionService/NoSuchMethod",
        "/contextd.v1.NoSuchService/Call",
    ] {
        let mut grpc = tonic::client::Grpc::new(server.channel().await);
        grpc.ready().await.expect("ready");
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let status = within(
            path,
            grpc.unary(
                tonic::Request::new(()),
                http::uri::PathAndQuery::from_static(path),
                codec,
            ),
        )
        .await
        .expect_err("no such method");
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_on_converse_finishes_the_running_turn() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("half").await;
    conversation.send_message(AWAKE, None).await;
    conversation.close_requests();
    let events = conversation.until_end_of_turn().await;
    assert_eq!(
        converse_completed(&events).finish_reason(),
        FinishReason::Stop
    );
    // Then the stream ends with OK, nothing more after the turn.
    let end = within("the end of the stream", conversation.next_raw()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    let mut sessions = server.sessions().await;
    assert_eq!(get_session(&mut sessions, "half").await.message_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_an_open_stream_and_a_paused_turn() {
    let data_dir = std::env::temp_dir().join(format!(
        "contextd-interop-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let config = contextd::config::Config {
        store: "sqlite".into(),
        data_dir: data_dir.clone(),
        ..test_config()
    };
    let mut server = TestServer::start_with(config.clone()).await;
    let mut interact = server.interact().await;
    // A turn paused for a client-side tool, and an idle Converse stream.
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        contextd::api::v1::CreateSessionRequest {
            session_id: "paused".into(),
            tools: vec![tool_def("lookup", "Looks a word up.")],
            ..Default::default()
        },
    )
    .await;
    let paused = say(&mut interact, "paused", "/call lookup {\"q\":\"x\"}", None).await;
    assert_eq!(paused.finish_reason(), FinishReason::ToolCalls);
    let call_id = paused.tool_calls[0].tool_call_id.clone();
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("streaming").await;

    server.trigger_shutdown();
    // The open stream ends, with a status, not a hang.
    let ended = within("the stream's end at shutdown", async {
        loop {
            match conversation.next_raw().await {
                Ok(Some(response)) if !matches!(response.event, Some(Event::Error(_))) => {
                    continue;
                }
                other => break other,
            }
        }
    })
    .await;
    assert!(
        !matches!(ended, Ok(Some(_))),
        "the stream ends at shutdown: {ended:?}"
    );
    assert!(server.stop().await, "serve returned Ok");

    // The paused turn is still paused after a restart, and its results finish it.
    let server = TestServer::start_with(config).await;
    let mut sessions = server.sessions().await;
    let session = get_session(&mut sessions, "paused").await;
    assert_eq!(session.pending_tool_calls.len(), 1, "{session:?}");
    let mut interact = server.interact().await;
    let done = send_results(&mut interact, "paused", vec![result(&call_id, "found")])
        .await
        .expect("the results finish the turn");
    assert_eq!(done.finish_reason(), FinishReason::Stop);
    drop(server);
    let _ = std::fs::remove_dir_all(data_dir);
}
