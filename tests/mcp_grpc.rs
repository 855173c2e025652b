//! Google's MCP gRPC binding (`model_context_protocol.Mcp`) on a real server: what a client
//! generated from the binding sees, the limits that bound it (`[mcp]`), and reflection.
//! The Python client's suite runs the binding's own published stubs against the same door.

mod common;

use common::backend::Backend;
use common::*;
use contextd::api::mcp::mcp_client::McpClient;
use contextd::api::mcp::{self, call_tool_response::Content};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

async fn client(server: &TestServer) -> McpClient<Channel> {
    McpClient::new(server.channel().await)
}

async fn call(
    client: &mut McpClient<Channel>,
    name: &str,
    arguments: serde_json::Value,
) -> Result<mcp::CallToolResponse, tonic::Status> {
    within(
        "CallTool",
        client.call_tool(mcp::CallToolRequest {
            request: Some(mcp::call_tool_request::Request {
                name: name.into(),
                arguments: ctx(arguments),
            }),
            ..Default::default()
        }),
    )
    .await
    .map(|r| r.into_inner())
}

fn text(response: &mcp::CallToolResponse) -> String {
    response
        .content
        .iter()
        .filter_map(|c: &Content| c.text.as_ref().map(|t| t.text.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_list_only_the_newest_sessions_and_reads_are_capped() {
    newest_sessions_listed_and_reads_capped(test_config()).await;
}

/// The newest sessions come from one store query on SQLite (an index over tenant and update
/// time) and give the same answer as the in-memory store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_list_the_newest_sessions_on_sqlite() {
    let backend = Backend::sqlite();
    newest_sessions_listed_and_reads_capped(backend.config()).await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_list_the_newest_sessions_on_postgres() {
    let backend = Backend::postgres();
    newest_sessions_listed_and_reads_capped(backend.config()).await;
}

async fn newest_sessions_listed_and_reads_capped(mut config: contextd::config::Config) {
    config.mcp.max_listed_resources = 2;
    config.mcp.max_resource_bytes = 2048;
    let server = TestServer::start_with(config).await;
    let mut mcp = client(&server).await;
    for id in ["mcp_a", "mcp_b", "mcp_c"] {
        let reply = call(
            &mut mcp,
            "contextd_interact",
            json!({"session_id": id, "message": "x".repeat(300)}),
        )
        .await
        .expect("contextd_interact");
        assert!(!reply.is_error, "{}", text(&reply));
    }
    // Three more turns on mcp_a: it becomes the newest, and its history outgrows the cap.
    for _ in 0..3 {
        call(
            &mut mcp,
            "contextd_interact",
            json!({"session_id": "mcp_a", "message": "y".repeat(300)}),
        )
        .await
        .expect("contextd_interact");
    }

    let listed = within(
        "ListResources",
        mcp.list_resources(mcp::ListResourcesRequest::default()),
    )
    .await
    .expect("ListResources")
    .into_inner();
    let uris: Vec<&str> = listed.resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        uris,
        ["contextd://sessions/mcp_a", "contextd://sessions/mcp_c"]
    );

    let read = within(
        "ReadResource",
        mcp.read_resource(mcp::ReadResourceRequest {
            uri: "contextd://sessions/mcp_a".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("ReadResource")
    .into_inner();
    let body = &read.resource[0];
    assert_eq!(body.mime_type, "application/json");
    assert!(body.text.len() <= 2048, "{} bytes", body.text.len());
    let document: serde_json::Value = serde_json::from_str(&body.text).expect("JSON");
    assert_eq!(document["message_count"], 8);
    let history = document["history"].as_array().expect("history");
    assert!(!history.is_empty() && history.len() < 8, "{document}");
    assert_eq!(history.last().unwrap()["index"], 7, "the newest is kept");
    let omitted = document["truncated"]["omitted_messages"].as_u64().unwrap();
    assert_eq!(omitted as usize + history.len(), 8);
    assert!(
        document["truncated"]["note"]
            .as_str()
            .unwrap()
            .contains("ListMessages")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_changes_the_session_and_errors_say_what_to_fix() {
    let server = TestServer::start().await;
    let mut mcp = client(&server).await;
    let tools = within(
        "ListTools",
        mcp.list_tools(mcp::ListToolsRequest::default()),
    )
    .await
    .expect("ListTools")
    .into_inner();
    let names: Vec<&str> = tools.tools.iter().map(|t| t.name.as_str()).collect();
    for name in [
        "context_get",
        "context_set",
        "history_search",
        "contextd_interact",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    let set = call(
        &mut mcp,
        "context_set",
        json!({"session_id": "mcp_tools", "patch": {"city": "Paris"}}),
    )
    .await
    .expect("context_set");
    // The session does not exist yet: a tool error the caller can read, not a status.
    assert!(set.is_error, "{set:?}");
    assert!(text(&set).contains("mcp_tools"), "{}", text(&set));

    let turn = call(
        &mut mcp,
        "contextd_interact",
        json!({"session_id": "mcp_tools", "message": "hello", "context": {"user": "ann"}}),
    )
    .await
    .expect("contextd_interact");
    assert!(!turn.is_error, "{}", text(&turn));
    let set = call(
        &mut mcp,
        "context_set",
        json!({"session_id": "mcp_tools", "patch": {"city": "Paris"}}),
    )
    .await
    .expect("context_set");
    assert!(!set.is_error, "{}", text(&set));
    let got = call(&mut mcp, "context_get", json!({"session_id": "mcp_tools"}))
        .await
        .expect("context_get");
    assert_eq!(
        json_of(&got.structured_content),
        json!({"user": "ann", "city": "Paris"})
    );

    // Arguments that break the schema: a tool error saying what is wrong; nothing runs.
    let refused = call(
        &mut mcp,
        "context_set",
        json!({"session_id": "mcp_tools", "patch": {"city": "Lyon"}, "city": "Lyon"}),
    )
    .await
    .expect("context_set with an extra argument");
    assert!(refused.is_error, "{refused:?}");
    assert!(
        text(&refused).contains("did not run") && text(&refused).contains("city"),
        "{}",
        text(&refused)
    );
    let got = call(&mut mcp, "context_get", json!({"session_id": "mcp_tools"}))
        .await
        .expect("context_get");
    assert_eq!(json_of(&got.structured_content)["city"], "Paris");

    let status = expect_code(call(&mut mcp, "", json!({})).await, Code::InvalidArgument);
    assert!(status.message().contains("name"), "{status:?}");
    let status = expect_code(call(&mut mcp, "nope", json!({})).await, Code::NotFound);
    assert!(status.message().contains("contextd_interact"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_binding() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("model_context_protocol.Mcp".into()),
    ]
    .map(|request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut stream = within(
        "ServerReflectionInfo",
        reflection.server_reflection_info(tokio_stream::iter(requests)),
    )
    .await
    .expect("reflection")
    .into_inner();
    let mut answers = Vec::new();
    while let Some(answer) = within("a reflection answer", stream.message())
        .await
        .expect("reflection stream")
    {
        answers.push(answer.message_response);
    }
    let Some(MessageResponse::ListServicesResponse(list)) = &answers[0] else {
        panic!("expected a service list, got {:?}", answers[0]);
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "model_context_protocol.Mcp"),
        "{list:?}"
    );
    let Some(MessageResponse::FileDescriptorResponse(files)) = &answers[1] else {
        panic!("expected descriptors, got {:?}", answers[1]);
    };
    assert!(!files.file_descriptor_proto.is_empty());
}
