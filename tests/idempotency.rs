//! Retries never double a turn: a request with an idempotency key runs once per session
//! within `limits.idempotency_window`; its repeats get the stored outcome (on every door, and
//! after a restart), a first attempt that failed leaves nothing behind, and the same key with
//! a different request is refused.

mod common;

use std::time::Duration;

use common::*;
use contextd::api::v1::stream_response_response::Event as StreamEvent;
use contextd::api::v1::{FinishReason, InteractRequest, StreamResponseRequest};
use contextd::config::Config;
use serde_json::json;
use tonic::Code;

fn keyed(session_id: &str, message: &str, key: &str) -> InteractRequest {
    InteractRequest {
        idempotency_key: key.into(),
        ..interact_request(session_id, message, Some(json!({"n": 1})))
    }
}

async fn stored_count(server: &TestServer, session_id: &str) -> usize {
    let mut sessions = server.sessions().await;
    all_messages(&mut sessions, session_id, 100).await.len()
}

#[tokio::test]
async fn a_repeat_gets_the_stored_outcome_and_runs_nothing() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let first = interact
        .interact(keyed("s", "hello", "key-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.session_created);
    let again = interact
        .interact(keyed("s", "hello", "key-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "the same outcome, session_created included");
    assert_eq!(stored_count(&server, "s").await, 2);

    // A new key is a new turn.
    let next = interact
        .interact(keyed("s", "hello", "key-2"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(next.turn_id, first.turn_id);
    assert_eq!(stored_count(&server, "s").await, 4);

    // The same key with another request is a client bug, not a retry.
    let status = expect_code(
        interact
            .interact(keyed("s", "something else", "key-1"))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("different request"), "{status:?}");
    assert!(status.message().contains(&first.turn_id), "{status:?}");

    // Keys are per session.
    let other = interact
        .interact(keyed("t", "hello", "key-1"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.turn_id, first.turn_id);

    let status = expect_code(
        interact.interact(keyed("s", "hello", "has space")).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("printable ASCII"), "{status:?}");
}

#[tokio::test]
async fn concurrent_repeats_wait_for_the_running_turn() {
    let server = TestServer::start().await;
    let mut a = server.interact().await;
    let mut b = server.interact().await;
    // A slow turn, so that the repeat arrives while it runs.
    let request = keyed("slow", "/delay 20 one two three four five six", "k");
    let (first, second) = tokio::join!(a.interact(request.clone()), b.interact(request));
    let (first, second) = (first.unwrap().into_inner(), second.unwrap().into_inner());
    assert_eq!(first.turn_id, second.turn_id);
    assert_eq!(stored_count(&server, "slow").await, 2);
}

#[tokio::test]
async fn a_retry_after_a_deadline_runs_once() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    // The first attempt's deadline passes mid-turn: it is cancelled and leaves nothing.
    let mut request = tonic::Request::new(keyed("late", "/delay 200 a b c d e f g h", "k"));
    request.set_timeout(Duration::from_millis(300));
    let status = interact.interact(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // Its retry runs (once), and a second retry gets that outcome.
    let retry = keyed("late", "/delay 200 a b c d e f g h", "k");
    let ran = interact.interact(retry.clone()).await.unwrap().into_inner();
    let repeat = interact.interact(retry).await.unwrap().into_inner();
    assert_eq!(repeat.turn_id, ran.turn_id);
    assert_eq!(stored_count(&server, "late").await, 2);
}

#[tokio::test]
async fn a_stream_repeat_replays_the_stored_turn() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let first = interact
        .interact(keyed("st", "stream me", "k"))
        .await
        .unwrap()
        .into_inner();
    let events = stream_events(
        &mut interact,
        StreamResponseRequest {
            idempotency_key: "k".into(),
            ..stream_request("st", "stream me", Some(json!({"n": 1})))
        },
    )
    .await;
    assert!(matches!(&events[0], StreamEvent::Started(s) if s.turn_id == first.turn_id));
    assert_eq!(stream_text(&events), first.response);
    match events.last() {
        Some(StreamEvent::Completed(done)) => assert_eq!(done, &first),
        other => panic!("expected completed, got {other:?}"),
    }
    assert_eq!(stored_count(&server, "st").await, 2);
}

#[tokio::test]
async fn a_paused_turn_repeats_its_tool_calls() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        contextd::api::v1::CreateSessionRequest {
            session_id: "tools".into(),
            tools: vec![tool_def("lookup", "Looks something up")],
            ..Default::default()
        },
    )
    .await;
    let request = keyed("tools", "/call lookup {\"q\": \"x\"}", "k");
    let first = interact
        .interact(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.finish_reason(), FinishReason::ToolCalls);
    let again = interact.interact(request).await.unwrap().into_inner();
    assert_eq!(again, first);
}

#[tokio::test]
async fn converse_messages_take_keys_too() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("conv").await;
    let message = |key: &str| {
        contextd::api::v1::converse_request::Frame::UserMessage(
            contextd::api::v1::ConverseUserMessage {
                message: "over the stream".into(),
                idempotency_key: key.into(),
                ..Default::default()
            },
        )
    };
    conversation.send(message("k")).await;
    let first = converse_completed(&conversation.until_end_of_turn().await);
    conversation.send(message("k")).await;
    let again = converse_completed(&conversation.until_end_of_turn().await);
    assert_eq!(again.turn_id, first.turn_id);
    assert_eq!(stored_count(&server, "conv").await, 2);
}

#[tokio::test]
async fn the_http_header_sets_the_key() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let post = |key: &'static str| {
        http.post(format!("{}/v1/sessions/h:interact", server.url()))
            .header("Idempotency-Key", key)
            .json(&json!({"message": "over http"}))
            .send()
    };
    let first: serde_json::Value = post("k").await.unwrap().json().await.unwrap();
    let again: serde_json::Value = post("k").await.unwrap().json().await.unwrap();
    assert_eq!(first["turnId"], again["turnId"], "{first} {again}");
    assert_eq!(stored_count(&server, "h").await, 2);

    // The classic route too.
    let classic = |key: &'static str| {
        http.post(format!("{}/api/mcp/interact", server.url()))
            .header("Idempotency-Key", key)
            .json(&json!({"sessionId": "h", "message": "classic"}))
            .send()
    };
    let a: serde_json::Value = classic("c").await.unwrap().json().await.unwrap();
    let b: serde_json::Value = classic("c").await.unwrap().json().await.unwrap();
    assert_eq!(a["turnId"], b["turnId"]);

    // Not a turn: refused, saying where the header applies.
    let response = http
        .get(format!("{}/v1/sessions/h", server.url()))
        .header("Idempotency-Key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("applies to turns"), "{body}");
}

#[tokio::test]
async fn receipts_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!(
        "contextd-idempotency-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let config = || Config {
        store: "sqlite".into(),
        data_dir: dir.clone(),
        ..test_config()
    };
    let server = TestServer::start_with(config()).await;
    let mut interact = server.interact().await;
    let first = interact
        .interact(keyed("durable", "remember me", "k"))
        .await
        .unwrap()
        .into_inner();
    drop(interact);
    assert!(server.stop().await);

    let server = TestServer::start_with(config()).await;
    let mut interact = server.interact().await;
    let again = interact
        .interact(keyed("durable", "remember me", "k"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(stored_count(&server, "durable").await, 2);
    drop(interact);
    assert!(server.stop().await);
    let _ = std::fs::remove_dir_all(&dir);
}
