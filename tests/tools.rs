//! ToolService end to end: ListTools (server-side tools and a session's declared tools) and
//! CallTool on the built-in session tools, with the gRPC errors for malformed calls and
//! `is_error` results for tools that run and fail.

mod common;

use common::*;
use contextd::api::v1::{
    CallToolRequest, CallToolResponse, CreateSessionRequest, FinishReason, ListToolsRequest,
    MessageRole,
};
use serde_json::{Value as Json, json};
use tonic::Code;

fn call(name: &str, session_id: &str, arguments: Option<Json>) -> CallToolRequest {
    CallToolRequest {
        name: name.to_string(),
        arguments: arguments.map(|a| to_struct(&a)),
        session_id: session_id.to_string(),
    }
}

async fn call_ok(
    client: &mut contextd::api::v1::tool_service_client::ToolServiceClient<
        tonic::transport::Channel,
    >,
    request: CallToolRequest,
) -> CallToolResponse {
    let name = request.name.clone();
    within("CallTool", client.call_tool(request))
        .await
        .unwrap_or_else(|s| panic!("CallTool {name} failed: {:?} {}", s.code(), s.message()))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tools_describes_the_builtin_tools() {
    let server = TestServer::start().await;
    let mut tools = server.tools().await;
    let listed = tools
        .list_tools(ListToolsRequest::default())
        .await
        .expect("ListTools")
        .into_inner();
    assert!(listed.session_tools.is_empty());
    for name in ["context_get", "context_set", "history_search"] {
        let tool = listed
            .tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} is listed"));
        assert!(!tool.description.is_empty(), "{name} has a description");
        let schema = json_of(&tool.input_schema);
        assert_eq!(schema["type"], json!("object"), "{name} schema: {schema}");
        assert!(schema["properties"].is_object(), "{name} schema: {schema}");
    }
    let schema = |name: &str| {
        json_of(
            &listed
                .tools
                .iter()
                .find(|t| t.name == name)
                .expect("listed")
                .input_schema,
        )
    };
    assert!(schema("context_get")["properties"]["key"].is_object());
    assert!(schema("context_set")["properties"]["patch"].is_object());
    assert!(schema("history_search")["properties"]["query"].is_object());
    // Their annotations say what is true of them: only context_set changes anything.
    let hints = |name: &str| {
        json_of(
            &listed
                .tools
                .iter()
                .find(|t| t.name == name)
                .expect("listed")
                .annotations,
        )
    };
    assert_eq!(hints("context_get")["readOnlyHint"], json!(true));
    assert_eq!(hints("history_search")["readOnlyHint"], json!(true));
    assert_eq!(hints("context_set")["readOnlyHint"], json!(false));
    for name in ["context_get", "context_set", "history_search"] {
        assert_eq!(hints(name)["openWorldHint"], json!(false), "{name}");
        assert!(hints(name)["title"].is_string(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tools_with_a_session_lists_its_declared_tools() {
    let server = TestServer::start().await;
    let mut tools = server.tools().await;
    let mut sessions = server.sessions().await;
    let mut annotated = tool_def("get_time", "Local time for a city.");
    annotated.annotations = ctx(json!({"title": "Local time", "readOnlyHint": true}));
    let declared = vec![
        tool_def("get_weather", "Current weather for a city."),
        annotated,
    ];
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "declared".into(),
            tools: declared.clone(),
            ..Default::default()
        },
    )
    .await;

    let listed = tools
        .list_tools(ListToolsRequest {
            session_id: "declared".into(),
        })
        .await
        .expect("ListTools")
        .into_inner();
    // As declared, annotations included (stored with the session).
    assert_eq!(listed.session_tools, declared);
    assert!(listed.tools.iter().any(|t| t.name == "context_get"));
    assert!(
        !listed.tools.iter().any(|t| t.name == "get_weather"),
        "declared tools are not server-side tools"
    );

    expect_code(
        tools
            .list_tools(ListToolsRequest {
                session_id: "ghost".into(),
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_set_then_context_get() {
    let server = TestServer::start().await;
    let mut tools = server.tools().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "ctx".into(),
            context: ctx(json!({"a": 1, "profile": {"name": "Ada"}})),
            ..Default::default()
        },
    )
    .await;

    let set = call_ok(
        &mut tools,
        call(
            "context_set",
            "ctx",
            Some(json!({"patch": {"a": null, "profile": {"lang": "en"}, "b": [1, 2]}})),
        ),
    )
    .await;
    assert!(!set.is_error, "{}", set.content);
    let expected = json!({"profile": {"name": "Ada", "lang": "en"}, "b": [1, 2]});
    assert_eq!(
        json_of(&get_session(&mut sessions, "ctx").await.context),
        expected
    );

    let got = call_ok(
        &mut tools,
        call("context_get", "ctx", Some(json!({"key": "profile"}))),
    )
    .await;
    assert!(!got.is_error, "{}", got.content);
    assert!(
        got.content.contains("Ada") && got.content.contains("en"),
        "{}",
        got.content
    );
    if let Some(structured) = &got.structured_content {
        assert_eq!(from_value(structured), json!({"name": "Ada", "lang": "en"}));
    }

    let got = call_ok(
        &mut tools,
        call("context_get", "ctx", Some(json!({"key": "b"}))),
    )
    .await;
    assert!(!got.is_error);
    assert!(
        got.content.contains('1') && got.content.contains('2'),
        "{}",
        got.content
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_search_over_rpc() {
    let server = TestServer::start().await;
    let mut tools = server.tools().await;
    let mut interact = server.interact().await;
    say(&mut interact, "hist", "Remember the Blue Whale", None).await;
    say(&mut interact, "hist", "Something unrelated", None).await;

    let found = call_ok(
        &mut tools,
        call(
            "history_search",
            "hist",
            Some(json!({"query": "blue whale", "limit": 10})),
        ),
    )
    .await;
    assert!(!found.is_error, "{}", found.content);
    assert!(found.content.contains("Blue Whale"), "{}", found.content);
    assert!(!found.content.contains("unrelated"), "{}", found.content);

    let none = call_ok(
        &mut tools,
        call("history_search", "hist", Some(json!({"query": "zebra"}))),
    )
    .await;
    assert!(!none.content.contains("Blue Whale"), "{}", none.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_calls_are_grpc_errors() {
    let server = TestServer::start().await;
    let mut tools = server.tools().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "calls".into(),
            tools: vec![tool_def("client_only", "A tool the client runs.")],
            ..Default::default()
        },
    )
    .await;

    // No such server-side tool (a session's declared tool is not one either).
    expect_code(
        tools.call_tool(call("no_such_tool", "calls", None)).await,
        Code::NotFound,
    );
    expect_code(
        tools.call_tool(call("client_only", "calls", None)).await,
        Code::NotFound,
    );
    // A session tool needs a session.
    expect_code(
        tools
            .call_tool(call("context_get", "", Some(json!({"key": "a"}))))
            .await,
        Code::InvalidArgument,
    );
    // An unknown session.
    expect_code(
        tools
            .call_tool(call("context_get", "ghost", Some(json!({"key": "a"}))))
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tool_is_is_error_not_a_status() {
    let server = TestServer::start().await;
    let mut tools = server.tools().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "fails".into(),
            context: ctx(json!({"present": 1})),
            ..Default::default()
        },
    )
    .await;

    let missing = call_ok(
        &mut tools,
        call("context_get", "fails", Some(json!({"key": "absent"}))),
    )
    .await;
    assert!(missing.is_error);
    assert!(!missing.content.is_empty(), "the failure says why");

    // context_set with a patch that is not an object runs and fails; nothing changes.
    let bad_patch = call_ok(
        &mut tools,
        call(
            "context_set",
            "fails",
            Some(json!({"patch": "not an object"})),
        ),
    )
    .await;
    assert!(bad_patch.is_error, "{}", bad_patch.content);
    assert_eq!(
        json_of(&get_session(&mut sessions, "fails").await.context),
        json!({"present": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_arguments_are_an_empty_object() {
    let server = TestServer::start().await;
    let mut tools = server.tools().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "noargs".into(),
            context: ctx(json!({"k": "v"})),
            ..Default::default()
        },
    )
    .await;

    let absent = call_ok(&mut tools, call("context_get", "noargs", None)).await;
    let empty = call_ok(&mut tools, call("context_get", "noargs", Some(json!({})))).await;
    assert_eq!(absent, empty, "absent arguments behave as {{}}");
}

/// Tool results are bounded before the model sees them: a server-side tool's long output and
/// a client's oversized result are cut with a marker, and the turn goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_output_is_bounded_with_a_marker() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    // Long messages, so that searching them returns far more than a quarter of the window.
    for i in 0..6 {
        say(
            &mut interact,
            "long",
            &format!("a{i} {}", "alpha ".repeat(1000)),
            None,
        )
        .await;
    }
    let reply = say(
        &mut interact,
        "long",
        r#"/call history_search {"query": "a"}"#,
        None,
    )
    .await;
    assert_eq!(reply.finish_reason(), FinishReason::Stop, "{reply:?}");
    let stored = all_messages(&mut sessions, "long", 100).await;
    let tool = stored
        .iter()
        .rfind(|m| m.role == MessageRole::Tool as i32)
        .expect("the tool's message");
    assert!(
        tool.content.contains("[truncated: "),
        "{}",
        tool.content.len()
    );
    assert!(tool.token_count <= 8192 / 4, "{}", tool.token_count);

    // A client's result over limits.max_tool_result_bytes (256 KiB) is cut the same way.
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "client-tool".into(),
            tools: vec![tool_def("dump", "Returns a lot")],
            max_context_tokens: 200_000,
            ..Default::default()
        },
    )
    .await;
    let paused = say(&mut interact, "client-tool", "/call dump {}", None).await;
    let call = &paused.tool_calls[0];
    let reply = send_results(
        &mut interact,
        "client-tool",
        vec![result(&call.tool_call_id, &"x".repeat(400 * 1024))],
    )
    .await
    .unwrap();
    assert_eq!(reply.finish_reason(), FinishReason::Stop);
    let stored = all_messages(&mut sessions, "client-tool", 100).await;
    let tool = stored
        .iter()
        .find(|m| m.role == MessageRole::Tool as i32)
        .unwrap();
    assert!(tool.content.len() <= 256 * 1024, "{}", tool.content.len());
    assert!(tool.content.ends_with("more bytes]"), "marker at the end");
}

/// `history_search` works on a session's first turn (nothing stored yet) and sees the running
/// turn's own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_search_sees_the_running_turn() {
    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    let reply = say(
        &mut interact,
        "first-turn",
        r#"/call history_search {"query": "needle"}"#,
        None,
    )
    .await;
    assert_eq!(reply.finish_reason(), FinishReason::Stop, "{reply:?}");
    let stored = all_messages(&mut sessions, "first-turn", 100).await;
    let tool = stored
        .iter()
        .find(|m| m.role == MessageRole::Tool as i32)
        .expect("the tool's message");
    assert!(!tool.is_error, "{}", tool.content);
    assert!(
        tool.content.contains("#0 user:") && tool.content.contains("needle"),
        "the turn's own user message is found: {}",
        tool.content
    );
}
