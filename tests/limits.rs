//! Input limits: message size, context nesting depth and encoded size (on every path that
//! takes a context), tool argument limits, the request size limit, and that a refused request
//! changes nothing.

mod common;

use common::*;
use contextd::api::v1::{
    CallToolRequest, CreateSessionRequest, InteractRequest, UpdateSessionRequest,
};
use contextd::config::{Config, Limits};
use serde_json::json;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_the_default_limit_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    say(&mut interact, "big", "small first", None).await;

    let huge = "a".repeat((1 << 20) + 1);
    expect_code(
        interact
            .interact(interact_request("big", &huge, None))
            .await,
        Code::InvalidArgument,
    );
    let status = stream_status(&mut interact, stream_request("big", &huge, None)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert_eq!(get_session(&mut sessions, "big").await.message_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_limit_is_exact() {
    let config = Config {
        limits: Limits {
            max_message_bytes: 64,
            ..Limits::default()
        },
        ..common::test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    // Multi-byte characters: the limit is in bytes of UTF-8.
    let at_limit = "é".repeat(32);
    assert_eq!(at_limit.len(), 64);
    say(&mut interact, "exact", &at_limit, None).await;

    let over = format!("{at_limit}x");
    let status = expect_code(
        interact
            .interact(interact_request("exact", &over, Some(json!({"x": 1}))))
            .await,
        Code::InvalidArgument,
    );
    assert!(!status.message().is_empty());
    let session = get_session(&mut sessions, "exact").await;
    assert_eq!(session.message_count, 2);
    assert_eq!(
        json_of(&session.context),
        json!({}),
        "the patch was not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_nested_deeper_than_32_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    let too_deep = nested_object(33);
    let deepest_allowed = nested_object(32);

    // Interact and StreamResponse.
    say(&mut interact, "deep", "hi", Some(json!({"ok": 1}))).await;
    expect_code(
        interact
            .interact(interact_request("deep", "hi", Some(too_deep.clone())))
            .await,
        Code::InvalidArgument,
    );
    let status = stream_status(
        &mut interact,
        stream_request("deep", "hi", Some(too_deep.clone())),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    let session = get_session(&mut sessions, "deep").await;
    assert_eq!(session.message_count, 2);
    assert_eq!(json_of(&session.context), json!({"ok": 1}));

    // CreateSession and UpdateSession.
    expect_code(
        sessions
            .create_session(CreateSessionRequest {
                session_id: "deep2".into(),
                context: Some(to_struct(&too_deep)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "deep".into(),
                context: Some(to_struct(&too_deep)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );

    // Exactly 32 levels is allowed.
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "deep3".into(),
            context: Some(to_struct(&deepest_allowed)),
            ..Default::default()
        },
    )
    .await;
    let reply = say(&mut interact, "deep4", "hi", Some(deepest_allowed.clone())).await;
    assert_eq!(json_of(&reply.updated_context), deepest_allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_over_one_mebibyte_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    say(&mut interact, "wide", "hi", None).await;

    let big = json!({"blob": "x".repeat(1 << 20)});
    expect_code(
        interact
            .interact(interact_request("wide", "hi", Some(big.clone())))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "wide".into(),
                context: Some(to_struct(&big)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        sessions
            .create_session(CreateSessionRequest {
                session_id: "wide2".into(),
                context: Some(to_struct(&big)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    let session = get_session(&mut sessions, "wide").await;
    assert_eq!(session.message_count, 2);
    assert_eq!(json_of(&session.context), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_context_size_is_limited() {
    let config = Config {
        limits: Limits {
            max_context_bytes: 200,
            ..Limits::default()
        },
        ..common::test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;

    // Each patch is small; together they are over the limit.
    say(
        &mut interact,
        "grow",
        "one",
        Some(json!({"a": "x".repeat(120)})),
    )
    .await;
    expect_code(
        interact
            .interact(interact_request(
                "grow",
                "two",
                Some(json!({"b": "y".repeat(120)})),
            ))
            .await,
        Code::InvalidArgument,
    );
    let session = get_session(&mut sessions, "grow").await;
    assert_eq!(session.message_count, 2);
    assert_eq!(json_of(&session.context), json!({"a": "x".repeat(120)}));

    // A context_set inside a turn cannot grow it past the limit either: the tool fails.
    let reply = say(
        &mut interact,
        "grow",
        &format!(
            "/call context_set {{\"patch\": {{\"c\": \"{}\"}}}}",
            "z".repeat(120)
        ),
        None,
    )
    .await;
    assert!(reply.response.contains("context_set"), "{}", reply.response);
    assert_eq!(
        json_of(&get_session(&mut sessions, "grow").await.context),
        json!({"a": "x".repeat(120)})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_arguments_are_limited_like_contexts() {
    let server = TestServer::start().await;
    let mut tools = server.tools().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "args".into(),
            ..Default::default()
        },
    )
    .await;

    expect_code(
        tools
            .call_tool(CallToolRequest {
                name: "context_set".into(),
                arguments: Some(to_struct(&json!({ "patch": nested_object(32) }))),
                session_id: "args".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        json_of(&get_session(&mut sessions, "args").await.context),
        json!({})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_by_the_decoder() {
    let config = Config {
        limits: Limits {
            max_request_bytes: 16 * 1024,
            ..Limits::default()
        },
        ..common::test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut interact = server.interact().await;

    let request = InteractRequest {
        session_id: "decoder".into(),
        message: "m".repeat(32 * 1024),
        context: None,
        ..Default::default()
    };
    let status = within("an oversized Interact", interact.interact(request))
        .await
        .expect_err("a request over max_request_bytes is refused");
    assert_eq!(status.code(), Code::OutOfRange, "{}", status.message());

    // The server is fine afterwards.
    say(&mut interact, "decoder", "small", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_past_the_decoder_limit_is_invalid_argument_with_an_explanation() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    say(&mut interact, "deeper", "hi", None).await;

    // 40 JSON levels is 120 protobuf levels: prost refuses it before contextd sees it.
    let status = expect_code(
        interact
            .interact(interact_request("deeper", "hi", Some(nested_object(40))))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status
            .message()
            .contains("nested more than 100 protobuf levels"),
        "{}",
        status.message()
    );
    assert_eq!(get_session(&mut sessions, "deeper").await.message_count, 2);

    // On Converse the frame cannot be read at all, so the stream ends with that status.
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("deeper").await;
    conversation
        .send_message("hello", Some(nested_object(40)))
        .await;
    let status = conversation
        .next_raw()
        .await
        .expect_err("an undecodable frame ends the stream");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert_eq!(get_session(&mut sessions, "deeper").await.message_count, 2);
}
