//! Which server-side tools a session offers (`server_tools`, `engine.default_server_tools`),
//! as ListTools, PreviewContext and the echo model see it, and every server-side tool call's
//! arguments checked against the tool's `input_schema` before it runs: in CallTool and in
//! turns alike.

mod common;

use common::backend::Backend;
use common::*;
use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::{
    CallToolRequest, ConverseOpen, CreateSessionRequest, ListToolsRequest, MessageRole,
    PreviewContextRequest, ServerToolSelection, UpdateSessionRequest,
};
use serde_json::json;
use tonic::Code;

const BUILTINS: [&str; 3] = ["context_get", "context_set", "history_search"];

fn selection(patterns: &[&str]) -> Option<ServerToolSelection> {
    Some(ServerToolSelection {
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
    })
}

fn new_session(id: &str, server_tools: Option<ServerToolSelection>) -> CreateSessionRequest {
    CreateSessionRequest {
        session_id: id.into(),
        tools: vec![tool_def("get_weather", "Weather for a city.")],
        server_tools,
        ..Default::default()
    }
}

async fn offered(server: &TestServer, session_id: &str) -> Vec<String> {
    let mut tools = server.tools().await;
    within(
        "ListTools",
        tools.list_tools(ListToolsRequest {
            session_id: session_id.into(),
        }),
    )
    .await
    .expect("ListTools")
    .into_inner()
    .offered_tools
}

async fn previewed(server: &TestServer, session_id: &str) -> Vec<String> {
    let mut sessions = server.sessions().await;
    within(
        "PreviewContext",
        sessions.preview_context(PreviewContextRequest {
            session_id: session_id.into(),
            ..Default::default()
        }),
    )
    .await
    .expect("PreviewContext")
    .into_inner()
    .tools
    .into_iter()
    .map(|t| t.name)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_offer_the_default_or_their_own_selection() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;

    // Unset: the server's default, the built-ins; then the client's own tools.
    let default = create_session(&mut sessions, new_session("default", None)).await;
    assert_eq!(default.server_tools, None);
    let expected: Vec<String> = BUILTINS
        .iter()
        .chain(&["get_weather"])
        .map(|s| s.to_string())
        .collect();
    assert_eq!(offered(&server, "default").await, expected);
    assert_eq!(previewed(&server, "default").await, expected);

    // A pattern and a name.
    let chosen = create_session(
        &mut sessions,
        new_session("chosen", selection(&["context_*"])),
    )
    .await;
    assert_eq!(chosen.server_tools, selection(&["context_*"]));
    assert_eq!(
        offered(&server, "chosen").await,
        ["context_get", "context_set", "get_weather"]
    );

    // Present with no patterns: no server-side tool at all.
    create_session(&mut sessions, new_session("none", selection(&[]))).await;
    assert_eq!(offered(&server, "none").await, ["get_weather"]);
    assert_eq!(previewed(&server, "none").await, ["get_weather"]);

    // Without a session nothing is named as offered.
    let mut tools = server.tools().await;
    let listed = tools
        .list_tools(ListToolsRequest::default())
        .await
        .expect("ListTools")
        .into_inner();
    assert!(listed.offered_tools.is_empty());
    assert_eq!(listed.tools.len(), BUILTINS.len());

    // UpdateSession replaces the selection; leaving it unset keeps it.
    let updated = within(
        "UpdateSession",
        sessions.update_session(UpdateSessionRequest {
            session_id: "none".into(),
            server_tools: selection(&["history_search"]),
            ..Default::default()
        }),
    )
    .await
    .expect("UpdateSession")
    .into_inner()
    .session
    .expect("session");
    assert_eq!(updated.server_tools, selection(&["history_search"]));
    within(
        "UpdateSession",
        sessions.update_session(UpdateSessionRequest {
            session_id: "none".into(),
            system_prompt: Some("Be brief.".into()),
            ..Default::default()
        }),
    )
    .await
    .expect("UpdateSession");
    assert_eq!(
        offered(&server, "none").await,
        ["history_search", "get_weather"]
    );
    assert_eq!(
        get_session(&mut sessions, "none").await.server_tools,
        selection(&["history_search"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_is_offered_only_the_selected_tools() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    create_session(
        &mut sessions,
        new_session("narrow", selection(&["context_get"])),
    )
    .await;

    // The echo model calls only tools it is offered: context_set is not among them.
    let reply = say(
        &mut interact,
        "narrow",
        r#"/call context_set {"patch": {"a": 1}}"#,
        None,
    )
    .await;
    assert!(
        reply.response.contains("context_set"),
        "reply: {}",
        reply.response
    );
    assert_eq!(json_of(&reply.updated_context), json!({}));

    let reply = say(&mut interact, "narrow", "/call context_get {}", None).await;
    assert!(
        reply.response.contains("Tool context_get returned"),
        "reply: {}",
        reply.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_that_matches_nothing_is_refused_naming_the_known_tools() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;

    let status = expect_code(
        sessions
            .create_session(new_session("bad", selection(&["context_get", "time__*"])))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("time__*"), "{}", status.message());
    for name in BUILTINS {
        assert!(status.message().contains(name), "{}", status.message());
    }
    expect_code(
        sessions
            .get_session(contextd::api::v1::GetSessionRequest {
                session_id: "bad".into(),
            })
            .await,
        Code::NotFound,
    );

    create_session(&mut sessions, new_session("good", None)).await;
    let status = expect_code(
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "good".into(),
                server_tools: selection(&["contex_get"]),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("contex_get") && status.message().contains("context_get"),
        "{}",
        status.message()
    );
    assert_eq!(get_session(&mut sessions, "good").await.server_tools, None);

    let status = expect_code(
        sessions
            .create_session(new_session("empty-pattern", selection(&[""])))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("pattern"), "{}", status.message());

    // A Converse open frame is checked the same way.
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation
        .send(Frame::Open(ConverseOpen {
            session_id: "opened".into(),
            server_tools: selection(&["nothing_like_this"]),
            ..Default::default()
        }))
        .await;
    let events = vec![conversation.next().await];
    let error = converse_error(&events);
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert!(
        error.message.contains("nothing_like_this") && error.message.contains("context_get"),
        "{}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_open_sets_the_selection_of_a_new_session() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation
        .send(Frame::Open(ConverseOpen {
            session_id: "by-open".into(),
            server_tools: selection(&["history_*"]),
            ..Default::default()
        }))
        .await;
    let event = conversation.next().await;
    let Some(contextd::api::v1::converse_response::Event::Opened(opened)) = event.event else {
        panic!("expected opened, got {event:?}");
    };
    assert_eq!(
        opened.session.expect("session").server_tools,
        selection(&["history_*"])
    );
    assert_eq!(offered(&server, "by-open").await, ["history_search"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_selection_is_configurable() {
    let mut config = test_config();
    config.engine.default_server_tools = vec!["context_get".into()];
    let server = TestServer::start_with(config).await;
    let mut sessions = server.sessions().await;
    create_session(&mut sessions, new_session("s", None)).await;
    assert_eq!(offered(&server, "s").await, ["context_get", "get_weather"]);
}

/// The message both doors give when `server_tools` and `reset_server_tools` come together.
const BOTH_SET: &str = "server_tools and reset_server_tools cannot both be set";

/// `reset_server_tools` puts a session back on `engine.default_server_tools` (its own
/// selection becomes unset, so it is not a copy of today's default), and is refused together
/// with `server_tools` without changing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_goes_back_to_the_default_selection() {
    let mut config = test_config();
    config.engine.default_server_tools = vec!["context_get".into()];
    let server = TestServer::start_with(config).await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        new_session("chosen", selection(&["history_*"])),
    )
    .await;
    assert_eq!(
        offered(&server, "chosen").await,
        ["history_search", "get_weather"]
    );

    let both = sessions
        .update_session(UpdateSessionRequest {
            session_id: "chosen".into(),
            server_tools: selection(&[]),
            reset_server_tools: true,
            ..Default::default()
        })
        .await;
    let status = expect_code(both, Code::InvalidArgument);
    assert!(status.message().contains(BOTH_SET), "{}", status.message());
    assert_eq!(
        get_session(&mut sessions, "chosen").await.server_tools,
        selection(&["history_*"]),
        "a refused update changes nothing"
    );

    let reset = within(
        "UpdateSession",
        sessions.update_session(UpdateSessionRequest {
            session_id: "chosen".into(),
            reset_server_tools: true,
            ..Default::default()
        }),
    )
    .await
    .expect("UpdateSession")
    .into_inner()
    .session
    .expect("session");
    assert_eq!(reset.server_tools, None);
    assert_eq!(
        get_session(&mut sessions, "chosen").await.server_tools,
        None
    );
    assert_eq!(
        offered(&server, "chosen").await,
        ["context_get", "get_weather"]
    );
    assert_eq!(
        previewed(&server, "chosen").await,
        ["context_get", "get_weather"]
    );

    // Resetting a session that never chose is allowed and leaves it on the default.
    create_session(&mut sessions, new_session("plain", None)).await;
    let again = sessions
        .update_session(UpdateSessionRequest {
            session_id: "plain".into(),
            reset_server_tools: true,
            ..Default::default()
        })
        .await
        .expect("UpdateSession");
    assert_eq!(
        again.into_inner().session.expect("session").server_tools,
        None
    );
}

/// HTTP/JSON's `PATCH /v1/sessions/{id}` with `resetServerTools` does what gRPC does: the
/// same session afterwards, and the same refusal (400 INVALID_ARGUMENT, same message) when
/// `serverTools` comes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_resets_as_grpc_does() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let http = reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("HTTP client");
    let patch = |id: &str, body: serde_json::Value| {
        http.patch(format!("{}/v1/sessions/{id}", server.url()))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    for id in ["over-grpc", "over-http"] {
        create_session(&mut sessions, new_session(id, selection(&["context_set"]))).await;
    }

    let by_grpc = sessions
        .update_session(UpdateSessionRequest {
            session_id: "over-grpc".into(),
            reset_server_tools: true,
            ..Default::default()
        })
        .await
        .expect("UpdateSession")
        .into_inner()
        .session
        .expect("session");
    let response = patch("over-http", json!({"resetServerTools": true}))
        .await
        .expect("PATCH");
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert!(body["session"].get("serverTools").is_none(), "{body}");
    let by_http = get_session(&mut sessions, "over-http").await;
    assert_eq!(by_http.server_tools, by_grpc.server_tools);
    assert_eq!(by_http.server_tools, None);
    assert_eq!(
        offered(&server, "over-http").await,
        offered(&server, "over-grpc").await
    );
    assert_eq!(
        offered(&server, "over-http").await,
        [
            "context_get",
            "context_set",
            "history_search",
            "get_weather"
        ]
    );

    let grpc_refusal = expect_code(
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "over-grpc".into(),
                server_tools: selection(&["context_get"]),
                reset_server_tools: true,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    let response = patch(
        "over-http",
        json!({"serverTools": {"patterns": ["context_get"]}, "resetServerTools": true}),
    )
    .await
    .expect("PATCH");
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
    assert_eq!(body["error"]["message"], grpc_refusal.message(), "{body}");
    assert_eq!(
        get_session(&mut sessions, "over-http").await.server_tools,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_tool_refuses_arguments_that_break_the_schema() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "checked".into(),
            context: ctx(json!({"city": "Lyon"})),
            ..Default::default()
        },
    )
    .await;
    let mut tools = server.tools().await;
    let call = |name: &str, arguments: serde_json::Value| CallToolRequest {
        name: name.into(),
        arguments: Some(to_struct(&arguments)),
        session_id: "checked".into(),
    };

    // context_get's schema says additionalProperties: false.
    let out = within(
        "CallTool",
        tools.call_tool(call("context_get", json!({"city": "Paris"}))),
    )
    .await
    .expect("a schema violation is a result, not a status")
    .into_inner();
    assert!(out.is_error);
    assert!(
        out.content.contains("input_schema") && out.content.contains("city"),
        "{}",
        out.content
    );

    // context_set with a patch that is not an object never runs: the context is unchanged.
    let out = within(
        "CallTool",
        tools.call_tool(call("context_set", json!({"patch": "city=Paris"}))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(out.is_error);
    assert!(out.content.contains("/patch"), "{}", out.content);
    let missing = within("CallTool", tools.call_tool(call("context_set", json!({}))))
        .await
        .expect("CallTool")
        .into_inner();
    assert!(missing.is_error);
    assert!(missing.content.contains("patch"), "{}", missing.content);
    assert_eq!(
        json_of(&get_session(&mut sessions, "checked").await.context),
        json!({"city": "Lyon"})
    );

    // Valid arguments run.
    let out = within(
        "CallTool",
        tools.call_tool(call("context_get", json!({"key": "city"}))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(out.content, "\"Lyon\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_gets_a_schema_violation_as_a_tool_error_and_goes_on() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    create_session(&mut sessions, new_session("turn", None)).await;

    let reply = say(
        &mut interact,
        "turn",
        r#"/call context_set {"patch": {"a": 1}, "extra": true}"#,
        None,
    )
    .await;
    assert_eq!(json_of(&reply.updated_context), json!({}));
    let messages = all_messages(&mut sessions, "turn", 0).await;
    let tool = messages
        .iter()
        .find(|m| m.role == MessageRole::Tool as i32)
        .expect("a tool message");
    assert!(tool.is_error);
    assert!(
        tool.content.contains("extra") && tool.content.contains("did not run"),
        "{}",
        tool.content
    );
    // The model saw the error and the turn ended normally.
    assert!(
        reply.response.contains("extra"),
        "reply: {}",
        reply.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_selection_survives_a_restart_on_sqlite() {
    let backend = Backend::sqlite();
    let server = TestServer::start_with(backend.config()).await;
    let mut sessions = server.sessions().await;
    let created = create_session(
        &mut sessions,
        new_session("kept", selection(&["context_get", "history_*"])),
    )
    .await;
    create_session(&mut sessions, new_session("plain", None)).await;
    assert!(server.stop().await);

    let server = TestServer::start_with(backend.config()).await;
    let mut sessions = server.sessions().await;
    assert_eq!(get_session(&mut sessions, "kept").await, created);
    assert_eq!(get_session(&mut sessions, "plain").await.server_tools, None);
    assert_eq!(
        offered(&server, "kept").await,
        ["context_get", "history_search", "get_weather"]
    );
}

/// The Rust wrapper reaches every new field: the selection on create, update and Converse's
/// open, and `offered_tools`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_sets_and_reads_the_selection() {
    use contextd::client::{Client, ConverseOptions, NewSession, SessionUpdate};
    let server = TestServer::start().await;
    let client = Client::connect(&server.addr.to_string())
        .await
        .expect("connect");
    let created = client
        .create_session(NewSession {
            server_tools: Some(vec!["context_*".into()]),
            ..NewSession::new("rust")
        })
        .await
        .expect("CreateSession");
    assert_eq!(created.server_tools, selection(&["context_*"]));
    let listed = client.list_tools(Some("rust")).await.expect("ListTools");
    assert_eq!(listed.offered_tools, ["context_get", "context_set"]);
    let updated = client
        .update_session(
            "rust",
            SessionUpdate {
                server_tools: Some(vec![]),
                ..SessionUpdate::default()
            },
        )
        .await
        .expect("UpdateSession");
    assert_eq!(updated.server_tools, selection(&[]));
    let refused = client
        .update_session(
            "rust",
            SessionUpdate {
                server_tools: Some(vec!["time__*".into()]),
                ..SessionUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let reset = client
        .update_session(
            "rust",
            SessionUpdate {
                reset_server_tools: true,
                ..SessionUpdate::default()
            },
        )
        .await
        .expect("UpdateSession");
    assert_eq!(reset.server_tools, None);
    let listed = client.list_tools(Some("rust")).await.expect("ListTools");
    assert_eq!(
        listed.offered_tools,
        ["context_get", "context_set", "history_search"]
    );
    let conversation = client
        .converse(ConverseOptions::new("rust-open").server_tools(["history_search"]))
        .await
        .expect("Converse");
    assert_eq!(
        conversation.session().server_tools,
        selection(&["history_search"])
    );
}
