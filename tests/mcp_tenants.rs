//! `[[mcp_servers]]` and tenants, with `auth.mode = "keys"` and two tenants: a server limited
//! by `tenants` does not exist for any other tenant on any door (ToolService, the tools a turn
//! offers, `server_tools` checks on create and update, `/mcp`, the MCP gRPC binding).
//!
//! The MCP server is `tests/mcp_toolbox.py` (official Python SDK) over stdio.

mod common;
mod mcp_support;

use std::path::{Path, PathBuf};

use common::daemon::run_to_exit;
use common::*;
use contextd::api::mcp;
use contextd::api::mcp::mcp_client::McpClient;
use contextd::api::v1::{
    CallToolRequest, CreateSessionRequest, ListToolsRequest, ServerToolSelection,
    UpdateSessionRequest,
};
use contextd::config::{AuthMode, Config};
use mcp_support::toolbox_stdio;
use serde_json::{Value, json};
use tonic::Code;

/// A directory removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("contextd-mcp-tenants-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A key of `tenant`, made offline with `contextd keys add` into `dir`'s keys file.
fn key_of(dir: &Path, tenant: &str) -> String {
    let config = dir.join("contextd.toml");
    std::fs::write(
        &config,
        format!("[auth]\nkeys_file = {:?}\n", dir.join("keys.toml")),
    )
    .unwrap();
    let args = [
        "keys",
        "add",
        "--tenant",
        tenant,
        "--config",
        config.to_str().unwrap(),
        "--store",
        "memory",
    ];
    let (status, stdout, stderr) = run_to_exit(&args);
    assert!(status.success(), "contextd {args:?}: {stderr}");
    stdout.trim().to_string()
}

/// Keys mode over `dir`'s keys file.
fn keys_mode(dir: &Path) -> Config {
    let mut config = test_config();
    config.auth.mode = AuthMode::Keys;
    config.auth.keys_file = Some(dir.join("keys.toml"));
    config
}

/// `message` sent with `key` as its bearer credential.
fn authed<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("an ASCII key"),
    );
    request
}

fn call(name: &str) -> CallToolRequest {
    CallToolRequest {
        name: name.into(),
        arguments: Some(to_struct(&json!({}))),
        session_id: String::new(),
    }
}

/// POSTs one JSON-RPC request to `/mcp` with `key`; answers the JSON reply.
async fn mcp_post(server: &TestServer, key: &str, method: &str, params: Value) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reply = within(
        "POST /mcp",
        reqwest::Client::new()
            .post(format!("{}/mcp", server.url()))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .bearer_auth(key)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send(),
    )
    .await
    .expect("POST /mcp");
    assert_eq!(reply.status(), 200);
    reply.json().await.expect("a JSON answer")
}

/// Two tenants; the toolbox is `private`, for `tenant-a` only.
struct Fixture {
    _dir: TempDir,
    server: TestServer,
    a: String,
    b: String,
}

async fn fixture() -> Fixture {
    let dir = TempDir::new();
    let a = key_of(&dir.0, "tenant-a");
    let b = key_of(&dir.0, "tenant-b");
    let mut config = keys_mode(&dir.0);
    let mut private = toolbox_stdio("private");
    private.tenants = vec!["tenant-a".into()];
    config.mcp_servers = vec![private];
    let server = within("start", TestServer::start_with(config)).await;
    Fixture {
        _dir: dir,
        server,
        a,
        b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_for_one_tenant_is_invisible_to_another_on_tool_service_and_sessions() {
    let f = fixture().await;
    let mut tools = f.server.tools().await;
    let names = |key: &str| {
        let mut tools = tools.clone();
        let request = authed(key, ListToolsRequest::default());
        async move {
            let listed = tools.list_tools(request).await.expect("ListTools");
            listed
                .into_inner()
                .tools
                .into_iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
        }
    };
    let listed_a = names(&f.a).await;
    let listed_b = names(&f.b).await;
    assert!(
        listed_a.contains(&"private__pid".to_string()),
        "{listed_a:?}"
    );
    assert!(
        listed_b.contains(&"context_get".to_string()),
        "{listed_b:?}"
    );
    assert!(
        !listed_b.iter().any(|n| n.starts_with("private__")),
        "{listed_b:?}"
    );

    // CallTool: tenant-a runs it; for tenant-b it does not exist, and the message lists only
    // what tenant-b may know.
    let out = within(
        "CallTool",
        tools.call_tool(authed(&f.a, call("private__pid"))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!out.is_error, "{}", out.content);
    assert!(out.content.parse::<u32>().is_ok(), "{}", out.content);
    let status = expect_code(
        tools.call_tool(authed(&f.b, call("private__pid"))).await,
        Code::NotFound,
    );
    assert!(
        status.message().contains("context_get") && !status.message().contains("private__add"),
        "{}",
        status.message()
    );

    // server_tools patterns are checked against the caller's tools, on create and update.
    let mut sessions = f.server.sessions().await;
    let selecting = |id: &str| CreateSessionRequest {
        session_id: id.into(),
        server_tools: Some(ServerToolSelection {
            patterns: vec!["private__*".into()],
        }),
        ..Default::default()
    };
    sessions
        .create_session(authed(&f.a, selecting("uses_private")))
        .await
        .expect("tenant-a selects its server's tools");
    let status = expect_code(
        sessions
            .create_session(authed(&f.b, selecting("uses_private")))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("matches no server-side tool")
            && status.message().contains("context_get")
            && !status.message().contains("private__pid"),
        "{}",
        status.message()
    );
    sessions
        .create_session(authed(
            &f.b,
            CreateSessionRequest {
                session_id: "b_plain".into(),
                server_tools: Some(ServerToolSelection {
                    patterns: vec!["*".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("tenant-b's own session");
    let status = expect_code(
        sessions
            .update_session(authed(
                &f.b,
                UpdateSessionRequest {
                    session_id: "b_plain".into(),
                    server_tools: Some(ServerToolSelection {
                        patterns: vec!["private__pid".into()],
                    }),
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        !status.message().contains("private__pid matches")
            && !status.message().contains("private__add"),
        "{}",
        status.message()
    );

    // A turn offers the model only the tenant's tools: `*` selects private__pid for
    // tenant-a and cannot for tenant-b.
    let mut interact = f.server.interact().await;
    let turn = |key: &str, session: &str| {
        authed(
            key,
            interact_request(session, "/call private__pid {}", None),
        )
    };
    let reply = within(
        "turn of tenant-a",
        interact.interact(turn(&f.a, "uses_private")),
    )
    .await
    .expect("Interact")
    .into_inner();
    assert!(
        reply.response.starts_with("Tool private__pid returned: "),
        "{}",
        reply.response
    );
    let reply = within("turn of tenant-b", interact.interact(turn(&f.b, "b_plain")))
        .await
        .expect("Interact")
        .into_inner();
    assert!(
        !reply.response.contains("returned:") && reply.response.contains("private__pid"),
        "{}",
        reply.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_for_one_tenant_is_invisible_to_another_on_mcp_doors() {
    let f = fixture().await;
    let listed = |answer: &Value| -> Vec<String> {
        answer["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };

    // /mcp
    let a = listed(&mcp_post(&f.server, &f.a, "tools/list", json!({})).await);
    let b = listed(&mcp_post(&f.server, &f.b, "tools/list", json!({})).await);
    assert!(a.contains(&"private__pid".to_string()), "{a:?}");
    assert!(b.contains(&"contextd_interact".to_string()), "{b:?}");
    assert!(!b.iter().any(|n| n.starts_with("private__")), "{b:?}");
    let params = json!({"name": "private__pid", "arguments": {}});
    let answer = mcp_post(&f.server, &f.a, "tools/call", params.clone()).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let answer = mcp_post(&f.server, &f.b, "tools/call", params).await;
    assert_eq!(answer["error"]["data"]["status"], "NOT_FOUND", "{answer}");
    assert!(
        !answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("private__add"),
        "{answer}"
    );

    // The MCP gRPC binding.
    let mut binding = McpClient::new(f.server.channel().await);
    let names = |key: &str| {
        let mut binding = binding.clone();
        let request = authed(key, mcp::ListToolsRequest::default());
        async move {
            binding
                .list_tools(request)
                .await
                .expect("ListTools")
                .into_inner()
                .tools
                .into_iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
        }
    };
    assert!(names(&f.a).await.contains(&"private__pid".to_string()));
    let b = names(&f.b).await;
    assert!(!b.iter().any(|n| n.starts_with("private__")), "{b:?}");
    let request = |key: &str| {
        authed(
            key,
            mcp::CallToolRequest {
                request: Some(mcp::call_tool_request::Request {
                    name: "private__pid".into(),
                    arguments: ctx(json!({})),
                }),
                ..Default::default()
            },
        )
    };
    let reply = within("binding CallTool", binding.call_tool(request(&f.a)))
        .await
        .expect("CallTool")
        .into_inner();
    assert!(!reply.is_error);
    expect_code(binding.call_tool(request(&f.b)).await, Code::NotFound);
}

/// The pid `tenant`'s call of `mine__pid` answers (or the error text).
async fn pid_for(server: &TestServer, key: &str) -> Result<u32, String> {
    let out = within(
        "CallTool mine__pid",
        server
            .tools()
            .await
            .call_tool(authed(key, call("mine__pid"))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    if out.is_error {
        return Err(out.content);
    }
    Ok(out
        .content
        .parse()
        .unwrap_or_else(|_| panic!("a pid: {}", out.content)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_tenant_starts_one_process_per_tenant_up_to_max_processes() {
    let dir = TempDir::new();
    let a = key_of(&dir.0, "tenant-a");
    let b = key_of(&dir.0, "tenant-b");
    let c = key_of(&dir.0, "tenant-c");
    let mut config = keys_mode(&dir.0);
    let mut mine = toolbox_stdio("mine");
    mine.scope = contextd::config::McpScope::Tenant;
    mine.max_processes = 2;
    config.mcp_servers = vec![mine];
    let server = within("start", TestServer::start_with(config)).await;

    // Listed for every tenant before any of them called it (the discovery process).
    for key in [&a, &b, &c] {
        let listed = server
            .tools()
            .await
            .list_tools(authed(key, ListToolsRequest::default()))
            .await
            .expect("ListTools")
            .into_inner();
        assert!(listed.tools.iter().any(|t| t.name == "mine__pid"));
    }

    let pid_a = pid_for(&server, &a).await.expect("tenant-a's process");
    let pid_b = pid_for(&server, &b).await.expect("tenant-b's process");
    assert_ne!(pid_a, pid_b, "two tenants share one process");
    assert_eq!(
        pid_for(&server, &a).await,
        Ok(pid_a),
        "tenant-a's process changed"
    );
    assert_ne!(pid_a, std::process::id());

    // A third tenant is past max_processes = 2: told so, and how to raise it.
    let refused = pid_for(&server, &c).await.expect_err("past the bound");
    assert!(
        refused.contains("max_processes") && refused.contains("2"),
        "{refused}"
    );

    // A tenant's process is supervised: killed, it is started again (a new pid).
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid_a.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    eventually("tenant-a's process is started again", || {
        let (server, a) = (&server, &a);
        async move { matches!(pid_for(server, a).await, Ok(pid) if pid != pid_a) }
    })
    .await;
    assert_eq!(
        pid_for(&server, &b).await,
        Ok(pid_b),
        "tenant-b's process changed"
    );
}

/// Whether process `pid` still exists (a zombie counts as gone: it has ended).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A tenant's process that no call used for `idle_timeout_ms` is stopped, which frees its
/// place under `max_processes` for another tenant; its tenant's next call starts a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tenant_process_is_stopped_and_frees_its_place() {
    let dir = TempDir::new();
    let a = key_of(&dir.0, "tenant-a");
    let b = key_of(&dir.0, "tenant-b");
    let mut config = keys_mode(&dir.0);
    let mut mine = toolbox_stdio("mine");
    mine.scope = contextd::config::McpScope::Tenant;
    mine.max_processes = 1;
    mine.idle_timeout_ms = 1_000;
    config.mcp_servers = vec![mine];
    let server = within("start", TestServer::start_with(config)).await;

    let pid_a = pid_for(&server, &a).await.expect("tenant-a's process");
    eventually("tenant-a's idle process is stopped", || async move {
        !process_alive(pid_a)
    })
    .await;

    // Its place is free: tenant-b is served although max_processes = 1.
    let pid_b = pid_for(&server, &b).await.expect("tenant-b's process");
    assert_ne!(pid_b, pid_a);
    eventually("tenant-b's idle process is stopped", || async move {
        !process_alive(pid_b)
    })
    .await;
    // And tenant-a's next call starts a process of its own again.
    let again = pid_for(&server, &a).await.expect("tenant-a's new process");
    assert!(again != pid_a && again != pid_b);
}
