//! contextd as an MCP client, against real MCP servers nobody here wrote: PyPI's
//! `mcp-server-time` and npm's `@modelcontextprotocol/server-everything` (both over stdio),
//! installed by this test's setup under `target/mcp-servers/` with pinned versions. Listing,
//! calling through `CallTool` and through the echo model's `/call`, structured and image
//! results, an error result, schema violations, a server killed and restarted, a server that
//! stays down or cannot start, and a call cancelled by a turn's deadline.

mod common;
mod mcp_support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use contextd::api::v1::{
    CallToolRequest, CreateSessionRequest, ListToolsRequest, ServerToolSelection,
};
use contextd::config::McpServerConfig;
use serde_json::json;
use tonic::Code;

/// The `mcp-server-time` program, installed once per test run.
fn time_server() -> PathBuf {
    mcp_support::time_server()
}

async fn start_with_time() -> TestServer {
    let program = time_server().to_string_lossy().into_owned();
    let mut config = test_config();
    let mut time = McpServerConfig::stdio("time", &program, &["--local-timezone", "UTC"]);
    time.startup_timeout_ms = 60_000;
    config.mcp_servers = vec![time];
    TestServer::start_with(config).await
}

fn call(name: &str, arguments: serde_json::Value) -> CallToolRequest {
    CallToolRequest {
        name: name.into(),
        arguments: Some(to_struct(&arguments)),
        session_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_of_a_stdio_server_are_listed_and_called() {
    let server = start_with_time().await;
    let mut tools = server.tools().await;
    let listed = tools
        .list_tools(ListToolsRequest::default())
        .await
        .expect("ListTools")
        .into_inner();
    let tool = listed
        .tools
        .iter()
        .find(|t| t.name == "time__get_current_time")
        .unwrap_or_else(|| {
            panic!(
                "listed: {:?}",
                listed.tools.iter().map(|t| &t.name).collect::<Vec<_>>()
            )
        });
    let schema = json_of(&tool.input_schema);
    assert!(schema["properties"]["timezone"].is_object(), "{schema}");

    let out = within(
        "CallTool",
        tools.call_tool(call(
            "time__get_current_time",
            json!({"timezone": "Europe/Paris"}),
        )),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!out.is_error, "{}", out.content);
    assert!(out.content.contains("Europe/Paris"), "{}", out.content);
    // The whole MCP result is kept.
    let structured = from_value(out.structured_content.as_ref().expect("structured"));
    assert_eq!(
        structured["content"][0]["type"],
        json!("text"),
        "{structured}"
    );

    // A schema violation never reaches the server.
    let out = within(
        "CallTool",
        tools.call_tool(call("time__get_current_time", json!({}))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(out.is_error);
    assert!(
        out.content.contains("did not run") && out.content.contains("timezone"),
        "{}",
        out.content
    );

    // A result the server marks as an error.
    let out = within(
        "CallTool",
        tools.call_tool(call(
            "time__get_current_time",
            json!({"timezone": "Nowhere/Atlantis"}),
        )),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(out.is_error, "{}", out.content);
    assert!(out.content.contains("Nowhere/Atlantis"), "{}", out.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_model_calls_a_selected_mcp_tool_in_a_turn() {
    let server = start_with_time().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    // Not offered by default.
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "default".into(),
            ..Default::default()
        },
    )
    .await;
    let reply = say(
        &mut interact,
        "default",
        r#"/call time__get_current_time {"timezone": "UTC"}"#,
        None,
    )
    .await;
    assert!(!reply.response.contains("returned"), "{}", reply.response);

    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "timely".into(),
            server_tools: Some(ServerToolSelection {
                patterns: vec!["time__*".into()],
            }),
            ..Default::default()
        },
    )
    .await;
    let reply = say(
        &mut interact,
        "timely",
        r#"/call time__get_current_time {"timezone": "Asia/Tokyo"}"#,
        None,
    )
    .await;
    assert!(
        reply
            .response
            .contains("Tool time__get_current_time returned")
            && reply.response.contains("Asia/Tokyo"),
        "{}",
        reply.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_leaves_contextd_serving() {
    let mut config = test_config();
    let mut broken = McpServerConfig::stdio("broken", "/nonexistent/mcp-server", &[]);
    broken.startup_timeout_ms = 5_000;
    config.mcp_servers = vec![broken];
    let server = TestServer::start_with(config).await;
    let mut tools = server.tools().await;
    let listed = tools
        .list_tools(ListToolsRequest::default())
        .await
        .expect("ListTools")
        .into_inner();
    assert!(listed.tools.iter().all(|t| !t.name.starts_with("broken__")));
    let mut sessions = server.sessions().await;
    let status = expect_code(
        sessions
            .create_session(CreateSessionRequest {
                session_id: "s".into(),
                server_tools: Some(ServerToolSelection {
                    patterns: vec!["broken__*".into()],
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("context_get"),
        "{}",
        status.message()
    );
}

/// The pids of this test process's children whose command line mentions `needle` (the MCP
/// servers contextd started for this test binary).
fn children_running(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Field 4, after the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(me) && String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_answers_errors_then_comes_back() {
    let program = time_server().to_string_lossy().into_owned();
    let mut config = test_config();
    // A marker argument tells this test's server apart from the other tests' (same binary).
    let mut time = McpServerConfig::stdio("time", &program, &["--local-timezone", "Africa/Accra"]);
    time.startup_timeout_ms = 60_000;
    config.mcp_servers = vec![time];
    let server = TestServer::start_with(config).await;
    let mut tools = server.tools().await;
    let ok = within(
        "CallTool",
        tools.call_tool(call("time__get_current_time", json!({"timezone": "UTC"}))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!ok.is_error, "{}", ok.content);

    let pids = children_running("Africa/Accra");
    assert_eq!(pids.len(), 1, "one server process: {pids:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    // Calls made meanwhile may answer is_error, never a status; the restarted server (a new
    // process) answers again.
    let mut back = false;
    for _ in 0..400 {
        let out = within(
            "CallTool",
            tools.call_tool(call("time__get_current_time", json!({"timezone": "UTC"}))),
        )
        .await
        .expect("CallTool while the server restarts")
        .into_inner();
        let restarted = children_running("Africa/Accra")
            .iter()
            .any(|p| !pids.contains(p));
        if !out.is_error && restarted {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(back, "the server must be restarted and answer again");
    let pids_after = children_running("Africa/Accra");
    assert_eq!(pids_after.len(), 1, "{pids_after:?}");
    assert_ne!(pids_after, pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stays_down_keeps_its_tools_listed_and_answers_why() {
    // Starts the real server once; every restart after that fails.
    let marker = tempfile_path("mcp-once");
    let script = format!(
        "if [ -e {m} ]; then echo 'refusing to start again' >&2; exit 1; fi; touch {m}; exec {p} --local-timezone America/Lima",
        m = marker.display(),
        p = time_server().display()
    );
    let mut config = test_config();
    let mut time = McpServerConfig::stdio("time", "sh", &["-c", &script]);
    time.startup_timeout_ms = 60_000;
    config.mcp_servers = vec![time];
    let server = TestServer::start_with(config).await;
    let mut tools = server.tools().await;
    let before = within(
        "CallTool",
        tools.call_tool(call("time__get_current_time", json!({"timezone": "UTC"}))),
    )
    .await
    .expect("CallTool before the kill")
    .into_inner();
    assert!(!before.is_error, "{}", before.content);
    let pids = children_running("America/Lima");
    assert_eq!(pids.len(), 1, "{pids:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    let mut answer = String::new();
    for _ in 0..400 {
        let out = within(
            "CallTool",
            tools.call_tool(call("time__get_current_time", json!({"timezone": "UTC"}))),
        )
        .await
        .expect("CallTool on a server that is down")
        .into_inner();
        assert!(
            out.is_error,
            "the killed server cannot answer: {}",
            out.content
        );
        if out.content.contains("is down") {
            answer = out.content;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(answer.contains("MCP server 'time' is down"), "{answer}");
    let listed = tools
        .list_tools(ListToolsRequest::default())
        .await
        .expect("ListTools")
        .into_inner();
    assert!(
        listed
            .tools
            .iter()
            .any(|t| t.name == "time__get_current_time")
    );
    // Its last known tools still count as known: a session may select them while it is down.
    let mut sessions = server.sessions().await;
    let created = within(
        "CreateSession selecting a down server's tools",
        sessions.create_session(CreateSessionRequest {
            session_id: "while-down".into(),
            server_tools: Some(ServerToolSelection {
                patterns: vec!["time__*".into()],
            }),
            ..Default::default()
        }),
    )
    .await
    .expect("a down server's last known tools can be selected");
    assert!(created.into_inner().session.is_some());
    let offered = tools
        .list_tools(ListToolsRequest {
            session_id: "while-down".into(),
        })
        .await
        .expect("ListTools")
        .into_inner()
        .offered_tools;
    assert_eq!(offered, ["time__get_current_time", "time__convert_time"]);
    let _ = std::fs::remove_file(&marker);
}

/// A path under `target/` unique to this run, for files a test creates.
fn tempfile_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mcp-servers");
    std::fs::create_dir_all(&dir).expect("target/mcp-servers");
    let path = dir.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

const EVERYTHING: &str = "@modelcontextprotocol/server-everything@2026.8.31";

/// The `server-everything` entry script, installed once per test run with npm.
fn everything_server() -> &'static PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let prefix =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mcp-servers/everything");
        std::fs::create_dir_all(&prefix).expect("target/mcp-servers/everything");
        let stamp = prefix.join(".installed");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(EVERYTHING) {
            let installed = Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(&prefix)
                .arg(EVERYTHING)
                .status()
                .expect("npm install");
            assert!(installed.success(), "npm install {EVERYTHING} failed");
            std::fs::write(&stamp, EVERYTHING).expect("stamp");
        }
        prefix.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
    })
}

fn everything_stdio() -> McpServerConfig {
    let script = everything_server().to_string_lossy().into_owned();
    let mut config = McpServerConfig::stdio("everything", "node", &[&script, "stdio"]);
    config.startup_timeout_ms = 60_000;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_and_image_results_of_server_everything() {
    let mut config = test_config();
    config.mcp_servers = vec![everything_stdio()];
    let server = TestServer::start_with(config).await;
    let mut tools = server.tools().await;

    let out = within(
        "CallTool",
        tools.call_tool(call(
            "everything__get-structured-content",
            json!({"location": "Chicago"}),
        )),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!out.is_error, "{}", out.content);
    let structured = from_value(out.structured_content.as_ref().expect("structured"));
    assert!(
        structured["structuredContent"]["temperature"].is_number(),
        "{structured}"
    );

    let out = within(
        "CallTool",
        tools.call_tool(call("everything__get-tiny-image", json!({}))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!out.is_error, "{}", out.content);
    let structured = from_value(out.structured_content.as_ref().expect("structured"));
    let parts = structured["content"].as_array().expect("content parts");
    // The text names the image's type and decoded size, which the test works out itself.
    let image = parts
        .iter()
        .find(|p| p["type"] == json!("image"))
        .expect("an image part");
    let decoded = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        image["data"].as_str().expect("image data"),
    )
    .expect("base64 image")
    .len();
    let size = if decoded < 1024 {
        format!("{decoded} B")
    } else {
        format!("{} KB", decoded / 1024)
    };
    let described = format!("[image image/png {size}]");
    assert!(
        out.content.contains(&described),
        "{} lacks {described}",
        out.content
    );
    assert!(
        parts
            .iter()
            .any(|p| p["type"] == json!("image") && p["data"].is_string())
    );

    // The enum in its schema is enforced before the call.
    let out = within(
        "CallTool",
        tools.call_tool(call(
            "everything__get-structured-content",
            json!({"location": "Paris"}),
        )),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(
        out.is_error && out.content.contains("did not run"),
        "{}",
        out.content
    );
}

/// A server's tool annotations are untrusted hints: contextd's `ListTools` lists them in the
/// tool's `annotations` (its description is the server's own); the MCP doors (`/mcp`
/// `tools/list`, the gRPC binding's `ListTools`, which also takes an `mcp-protocol-version`)
/// show them in the description and never relay them as contextd's own annotations, while
/// contextd's built-in tools carry annotations of its own there; and a tool that calls itself
/// read-only is still offered only where selected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_are_shown_as_hints_on_every_listing() {
    use contextd::api::mcp;
    use contextd::api::mcp::mcp_client::McpClient;

    let mut config = test_config();
    config.mcp_servers = vec![everything_stdio()];
    let server = TestServer::start_with(config).await;
    let is_hinted = |description: &str| {
        description.starts_with("Echoes back the input string\n(server hints: ")
            && description.contains("\"readOnlyHint\":true")
            && description.contains("\"destructiveHint\":false")
    };

    let mut tools = server.tools().await;
    let listed = within("ListTools", tools.list_tools(ListToolsRequest::default()))
        .await
        .expect("ListTools")
        .into_inner();
    let echo = listed
        .tools
        .iter()
        .find(|t| t.name == "everything__echo")
        .expect("everything__echo listed");
    assert_eq!(echo.description, "Echoes back the input string");
    let annotations = json_of(&echo.annotations);
    assert_eq!(annotations["readOnlyHint"], json!(true), "{annotations}");
    let context_get = listed
        .tools
        .iter()
        .find(|t| t.name == "context_get")
        .expect("context_get listed");
    let own = json_of(&context_get.annotations);
    assert_eq!(own["readOnlyHint"], json!(true), "{own}");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let reply = within(
        "POST /mcp",
        reqwest::Client::new()
            .post(format!("{}/mcp", server.url()))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
            .send(),
    )
    .await
    .expect("POST /mcp");
    let body: serde_json::Value = within("tools/list", reply.json()).await.expect("JSON");
    let echo = body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["name"] == "everything__echo")
        .unwrap_or_else(|| panic!("everything__echo in {body}"));
    assert!(
        is_hinted(echo["description"].as_str().unwrap_or_default()),
        "{echo}"
    );
    assert!(echo.get("annotations").is_none(), "{echo}");
    let context_get = body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["name"] == "context_get")
        .unwrap_or_else(|| panic!("context_get in {body}"));
    assert_eq!(
        context_get["annotations"]["readOnlyHint"],
        json!(true),
        "{context_get}"
    );

    let mut binding = McpClient::new(server.channel().await);
    let mut request = tonic::Request::new(mcp::ListToolsRequest::default());
    request
        .metadata_mut()
        .insert("mcp-protocol-version", "2025-11-25".parse().unwrap());
    let listed = within("binding ListTools", binding.list_tools(request))
        .await
        .expect("binding ListTools")
        .into_inner();
    let echo = listed
        .tools
        .iter()
        .find(|t| t.name == "everything__echo")
        .expect("everything__echo in the binding's ListTools");
    assert!(is_hinted(&echo.description), "{}", echo.description);
    assert_eq!(echo.annotations, None);
    let context_get = listed
        .tools
        .iter()
        .find(|t| t.name == "context_get")
        .expect("context_get in the binding's ListTools");
    let hints = context_get
        .annotations
        .as_ref()
        .expect("context_get's annotations");
    assert!(hints.read_only_hint && !hints.open_world_hint, "{hints:?}");

    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "hinted".into(),
            ..Default::default()
        },
    )
    .await;
    let offered = within(
        "ListTools",
        tools.list_tools(ListToolsRequest {
            session_id: "hinted".into(),
        }),
    )
    .await
    .expect("ListTools")
    .into_inner()
    .offered_tools;
    assert_eq!(offered, ["context_get", "context_set", "history_search"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_deadline_cancels_a_running_mcp_call() {
    let mut config = test_config();
    config.mcp_servers = vec![everything_stdio()];
    let server = TestServer::start_with(config).await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "slow".into(),
            server_tools: Some(ServerToolSelection {
                patterns: vec!["everything__*".into()],
            }),
            ..Default::default()
        },
    )
    .await;
    let mut interact = server.interact().await;
    let mut request = tonic::Request::new(interact_request(
        "slow",
        r#"/call everything__trigger-long-running-operation {"duration": 600, "steps": 600}"#,
        None,
    ));
    request.set_timeout(std::time::Duration::from_millis(1500));
    let status = within("Interact with a deadline", interact.interact(request))
        .await
        .expect_err("the deadline ends the turn");
    // The server's DEADLINE_EXCEEDED, or the client's own timer firing first (tonic reports
    // that as CANCELLED "Timeout expired"): either way the deadline ended the call.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // Nothing of the turn is stored, and the server still answers at once.
    assert_eq!(get_session(&mut sessions, "slow").await.message_count, 0);
    let reply = say(
        &mut interact,
        "slow",
        r#"/call everything__echo {"message": "still here"}"#,
        None,
    )
    .await;
    assert!(reply.response.contains("still here"), "{}", reply.response);
}

/// `server-everything` serving Streamable HTTP on a free port, stopped when dropped.
struct EverythingHttp {
    child: std::process::Child,
    url: String,
}

impl EverythingHttp {
    /// Starts it and waits (generously) until its port accepts connections.
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        let child = Command::new("node")
            .arg(everything_server())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("node server-everything streamableHttp");
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        };
        mcp_support::wait_for_port(port, "server-everything").await;
        server
    }
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_of_a_streamable_http_server_are_listed_and_called() {
    let everything = EverythingHttp::start().await;
    let mut remote = McpServerConfig::http("remote", &everything.url);
    remote.startup_timeout_ms = 60_000;
    let mut config = test_config();
    config.mcp_servers = vec![remote];
    let server = within(
        "start with an HTTP MCP server",
        TestServer::start_with(config),
    )
    .await;
    let mut tools = server.tools().await;
    let listed = tools
        .list_tools(ListToolsRequest::default())
        .await
        .expect("ListTools")
        .into_inner();
    assert!(
        listed.tools.iter().any(|t| t.name == "remote__echo"),
        "listed: {:?}",
        listed.tools.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    let out = within(
        "CallTool over HTTP",
        tools.call_tool(call("remote__echo", json!({"message": "over the wire"}))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(!out.is_error, "{}", out.content);
    assert!(out.content.contains("over the wire"), "{}", out.content);
}
