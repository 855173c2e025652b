//! Input limits: message size, context nesting depth and encoded size (on every path that
//! takes a context), tool argument limits, the request size limit, and that a refused request
//! changes nothing; the limits of stored fields (system prompt, tools, labels) on create,
//! update and Converse open; listing pages capped in bytes.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};

use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::{
    CallToolRequest, ConverseOpen, CreateSessionRequest, InteractRequest, ListSessionsRequest,
    ToolDefinitionList, UpdateSessionRequest,
};
use contextd::config::{Config, Limits};
use prost::Message as _;
use serde_json::json;
use tonic::{Code, Status};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_fields_are_limited_on_create_update_and_open() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let limits = Limits::default();
    let refused = |status: Status, key: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(key),
            "{key}: {}",
            status.message()
        );
    };

    let prompt = "p".repeat(limits.max_system_prompt_bytes + 1);
    let status = sessions
        .create_session(CreateSessionRequest {
            session_id: "big-prompt".into(),
            system_prompt: prompt.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(status, "limits.max_system_prompt_bytes");
    assert!(
        sessions
            .get_session(contextd::api::v1::GetSessionRequest {
                session_id: "big-prompt".into()
            })
            .await
            .is_err(),
        "nothing was stored"
    );

    let mut tool = tool_def("lookup", "");
    tool.description = "d".repeat(limits.max_tool_description_bytes + 1);
    let status = sessions
        .create_session(CreateSessionRequest {
            session_id: "big-tool".into(),
            tools: vec![tool],
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(status, "limits.max_tool_description_bytes");

    // A tool's annotations are bounded by the same limit, as compact JSON.
    let mut tool = tool_def("lookup", "");
    tool.annotations = ctx(serde_json::json!({
        "title": "t".repeat(limits.max_tool_description_bytes)
    }));
    let status = sessions
        .create_session(CreateSessionRequest {
            session_id: "big-annotations".into(),
            tools: vec![tool],
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(status, "limits.max_tool_description_bytes");

    let labels: HashMap<String, String> = (0..=limits.max_labels)
        .map(|i| (format!("k{i}"), "v".into()))
        .collect();
    let status = sessions
        .create_session(CreateSessionRequest {
            session_id: "many-labels".into(),
            labels: labels.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(status, "limits.max_labels");

    // Update: the prompt, a schema, and labels added to those already there.
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "fits".into(),
            system_prompt: "p".repeat(limits.max_system_prompt_bytes),
            labels: (0..limits.max_labels)
                .map(|i| (format!("k{i}"), "v".repeat(limits.max_label_value_bytes)))
                .collect(),
            ..Default::default()
        },
    )
    .await;
    let status = sessions
        .update_session(UpdateSessionRequest {
            session_id: "fits".into(),
            system_prompt: Some(prompt.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(status, "limits.max_system_prompt_bytes");
    let mut tool = tool_def("lookup", "");
    tool.input_schema = Some(to_struct(
        &json!({"description": "s".repeat(limits.max_tool_schema_bytes)}),
    ));
    let status = sessions
        .update_session(UpdateSessionRequest {
            session_id: "fits".into(),
            tools: Some(ToolDefinitionList { tools: vec![tool] }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(status, "limits.max_tool_schema_bytes");
    let status = sessions
        .update_session(UpdateSessionRequest {
            session_id: "fits".into(),
            labels: HashMap::from([("one-more".into(), "v".into())]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(status, "limits.max_labels");
    // Replacing a label keeps the count; removing always works.
    sessions
        .update_session(UpdateSessionRequest {
            session_id: "fits".into(),
            labels: HashMap::from([("k0".into(), "new".into())]),
            remove_labels: vec!["k1".into()],
            ..Default::default()
        })
        .await
        .expect("same number of labels");
    let status = sessions
        .update_session(UpdateSessionRequest {
            session_id: "fits".into(),
            labels: HashMap::from([("k".repeat(limits.max_label_key_bytes + 1), "v".into())]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(status, "limits.max_label_key_bytes");

    // Converse open creates through the same checks.
    let mut interact = server.interact().await;
    let mut converse = Conversation::start(&mut interact).await;
    converse
        .send(Frame::Open(ConverseOpen {
            session_id: "opened".into(),
            labels: HashMap::from([("k".into(), "v".repeat(limits.max_label_value_bytes + 1))]),
            ..Default::default()
        }))
        .await;
    let event = converse.next().await;
    let Some(contextd::api::v1::converse_response::Event::Error(error)) = event.event else {
        panic!("expected an error event, got {event:?}");
    };
    assert_eq!(error.code, Code::InvalidArgument as i32, "{error:?}");
    assert!(
        error.message.contains("limits.max_label_value_bytes"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_are_capped_in_bytes() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let max_page_bytes = Limits::default().max_page_bytes;
    let mut created = HashSet::new();
    for i in 0..20 {
        let id = format!("prompted-{i:02}");
        create_session(
            &mut sessions,
            CreateSessionRequest {
                session_id: id.clone(),
                system_prompt: format!("{i}").repeat(200_000 / format!("{i}").len()),
                ..Default::default()
            },
        )
        .await;
        created.insert(id);
    }
    let mut listed = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = sessions
            .list_sessions(ListSessionsRequest {
                page_size: 0,
                page_token: page_token.clone(),
            })
            .await
            .expect("ListSessions")
            .into_inner();
        pages += 1;
        let bytes = page.encoded_len();
        assert!(
            bytes <= max_page_bytes + 1024,
            "page {pages} is {bytes} bytes, over the {max_page_bytes}-byte cap"
        );
        assert!(!page.sessions.is_empty());
        listed.extend(page.sessions.into_iter().map(|s| s.session_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(pages >= 4, "20 × 200 KB in {pages} pages");
    assert_eq!(listed.len(), created.len(), "every session exactly once");
    assert_eq!(listed.iter().cloned().collect::<HashSet<_>>(), created);
}
