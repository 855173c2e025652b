//! contextd as an MCP client against `tests/mcp_toolbox.py`, a small server written with the
//! official Python SDK (`mcp` 2.3.0), over stdio and Streamable HTTP: a tool list that changes
//! while contextd runs (`notifications/tools/list_changed`), `allow_tools` / `deny_tools`, and
//! `headers` built from `${VAR}` environment references reaching the server.
//!
//! Every wait is on an event or a bounded poll ([`eventually`]), never a fixed sleep.

mod common;
mod mcp_support;

use common::*;
use contextd::api::v1::{CallToolRequest, ListToolsRequest};
use contextd::config::McpServerConfig;
use mcp_support::{ToolboxHttp, toolbox_stdio};
use serde_json::json;
use tonic::Code;

fn call(name: &str, arguments: serde_json::Value) -> CallToolRequest {
    CallToolRequest {
        name: name.into(),
        arguments: Some(to_struct(&arguments)),
        session_id: String::new(),
    }
}

async fn start_with(servers: Vec<McpServerConfig>) -> TestServer {
    let mut config = test_config();
    config.mcp_servers = servers;
    within("start with the toolbox", TestServer::start_with(config)).await
}

/// The names `ListTools` answers now.
async fn listed(server: &TestServer) -> Vec<String> {
    let mut tools = server.tools().await;
    tools
        .list_tools(ListToolsRequest::default())
        .await
        .expect("ListTools")
        .into_inner()
        .tools
        .into_iter()
        .map(|t| t.name)
        .collect()
}

/// Calls `add_tool` on the toolbox named `prefix`, waits until contextd lists the new tool,
/// then calls it.
async fn a_tool_added_at_run_time_is_listed_and_callable(server: &TestServer, prefix: &str) {
    let mut tools = server.tools().await;
    let before = listed(server).await;
    let added = format!("{prefix}__late_tool");
    assert!(
        before.contains(&format!("{prefix}__add_tool")) && !before.contains(&added),
        "{before:?}"
    );
    let out = within(
        "CallTool add_tool",
        tools.call_tool(call(
            &format!("{prefix}__add_tool"),
            json!({"name": "late_tool"}),
        )),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!out.is_error, "{}", out.content);
    eventually("the added tool is listed without a restart", || async {
        listed(server).await.contains(&added)
    })
    .await;
    let out = within(
        "CallTool the added tool",
        tools.call_tool(call(&added, json!({}))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(out.content, "late_tool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tool_list_over_stdio_is_listed_again() {
    let server = start_with(vec![toolbox_stdio("toolbox")]).await;
    a_tool_added_at_run_time_is_listed_and_callable(&server, "toolbox").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tool_list_over_streamable_http_is_listed_again() {
    let toolbox = ToolboxHttp::start().await;
    let server = start_with(vec![toolbox.config("remote")]).await;
    a_tool_added_at_run_time_is_listed_and_callable(&server, "remote").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_tools_filter_the_listing_and_calls() {
    let mut filtered = toolbox_stdio("picky");
    filtered.allow_tools = vec!["*_me".into(), "add_tool".into(), "keep_*".into()];
    filtered.deny_tools = vec!["drop_*".into()];
    let server = start_with(vec![filtered]).await;
    let mut names = listed(&server).await;
    names.retain(|n| n.starts_with("picky__"));
    names.sort();
    assert_eq!(names, ["picky__add_tool", "picky__keep_me"]);

    // A denied tool does not exist for callers, and one outside allow_tools neither.
    for hidden in ["picky__drop_me", "picky__pid"] {
        let status = expect_code(
            server
                .tools()
                .await
                .call_tool(call(hidden, json!({})))
                .await,
            Code::NotFound,
        );
        assert!(status.message().contains(hidden), "{}", status.message());
    }

    // Tools the server adds later pass the same filters: the denied one is added first, so
    // once the kept one is listed, the list that held the denied one has been read too.
    let mut tools = server.tools().await;
    for name in ["drop_later", "keep_later"] {
        let out = within(
            "CallTool add_tool",
            tools.call_tool(call("picky__add_tool", json!({"name": name}))),
        )
        .await
        .expect("CallTool")
        .into_inner();
        assert!(!out.is_error, "{}", out.content);
    }
    eventually("the allowed late tool is listed", || async {
        listed(&server)
            .await
            .contains(&"picky__keep_later".to_string())
    })
    .await;
    assert!(
        !listed(&server)
            .await
            .contains(&"picky__drop_later".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_environment_references_reach_the_server() {
    let toolbox = ToolboxHttp::start().await;
    let mut remote = toolbox.config("remote");
    // Cargo sets CARGO_PKG_NAME for the test process it runs, so the reference resolves
    // without this test changing its own environment.
    remote.headers.insert(
        "X-Toolbox-Token".into(),
        "token-${CARGO_PKG_NAME}-end".into(),
    );
    let server = start_with(vec![remote]).await;
    let out = within(
        "CallTool echo_header",
        server.tools().await.call_tool(call(
            "remote__echo_header",
            json!({"name": "X-Toolbox-Token"}),
        )),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!out.is_error, "{}", out.content);
    assert_eq!(out.content, format!("token-{}-end", env!("CARGO_PKG_NAME")));
}
