//! contextd as an MCP client against `tests/mcp_toolbox.py`, a small server written with the
//! official Python SDK (`mcp` 2.3.0), over stdio and Streamable HTTP: a tool list that changes
//! while contextd runs (`notifications/tools/list_changed`), `allow_tools` / `deny_tools`, and
//! `headers` built from `${VAR}` environment references reaching the server, a turn's deadline
//! reaching the server as `notifications/cancelled`, and a stdio server's stderr in contextd's
//! log with the server's name, and a server that lists its tools in pages
//! (`tests/mcp_paged.py`, the same SDK's low-level server).
//!
//! Every wait is on an event or a bounded poll ([`eventually`]), never a fixed sleep.

mod common;
mod mcp_support;

use common::*;
use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::{
    CallToolRequest, ConverseCancel, CreateSessionRequest, FinishReason, ListToolsRequest,
    ServerToolSelection,
};
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

/// A turn that passes its deadline while a server-side MCP call runs drops the call, and the
/// server hears of it: the toolbox's `wait_for_cancel` sees its request cancelled (by
/// `notifications/cancelled`; the connection stays up) and leaves a marker file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_deadline_reaches_the_server_as_a_cancellation() {
    let server = start_with(vec![toolbox_stdio("box")]).await;
    let marker = std::env::temp_dir().join(format!(
        "contextd-cancel-marker-{}-{}",
        std::process::id(),
        line!()
    ));
    let _ = std::fs::remove_file(&marker);
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "waiting".into(),
            server_tools: Some(ServerToolSelection {
                patterns: vec!["box__*".into()],
            }),
            ..Default::default()
        },
    )
    .await;
    let pid = || async {
        within(
            "CallTool pid",
            server.tools().await.call_tool(call("box__pid", json!({}))),
        )
        .await
        .expect("CallTool pid")
        .into_inner()
        .content
    };
    let before = pid().await;
    let mut interact = server.interact().await;
    let line = format!(
        "/call box__wait_for_cancel {}",
        json!({"marker": marker.to_string_lossy()})
    );
    let mut request = tonic::Request::new(interact_request("waiting", &line, None));
    request.set_timeout(std::time::Duration::from_millis(1500));
    let status = within("Interact with a deadline", interact.interact(request))
        .await
        .expect_err("the deadline ends the turn");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    eventually("the server sees its call cancelled", || async {
        std::fs::read_to_string(&marker).is_ok_and(|text| text == "cancelled")
    })
    .await;
    let _ = std::fs::remove_file(&marker);
    // The same server process goes on answering: the cancel ended one request, not the
    // connection (a closed connection would also cancel the call, but end the process).
    assert_eq!(pid().await, before, "the server was not restarted");
}

/// A stdio server's stderr goes to contextd's log line by line, with the server's name: the
/// `contextd` binary, configured from a TOML file, logs the toolbox's start-up line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_servers_stderr_is_logged_with_its_name() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let (python, script) = mcp_support::toolbox_command();
    let config = std::env::temp_dir().join(format!(
        "contextd-stderr-{}-{}.toml",
        std::process::id(),
        line!()
    ));
    std::fs::write(
        &config,
        format!(
            "[[mcp_servers]]\nname = \"noisy\"\ntransport = \"stdio\"\ncommand = {}\nargs = [{}]\nstartup_timeout_ms = 60000\n",
            json!(python),
            json!(script)
        ),
    )
    .expect("config file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_contextd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("contextd serve");
    let stderr = child.stderr.take().expect("stderr");
    // A thread reads the log; the test waits for its answer with a bound, so a contextd that
    // never logs the line fails the test instead of hanging it.
    let (found, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("toolbox starting on stdio") {
                let _ = found.send(line);
                return;
            }
        }
    });
    let line = seen.recv_timeout(WAIT * 3);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&config);
    let line = line.expect("the toolbox's stderr line in contextd's log");
    assert!(line.contains("mcp_server=noisy"), "{line}");
}

/// A stdio server starts with the configured `env` and `cwd`, and a call longer than
/// `call_timeout_ms` answers `is_error` naming the setting, cancelled at the server too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_cwd_and_call_timeout_of_a_stdio_server() {
    let dir = std::env::temp_dir().join(format!("contextd-cwd-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).expect("a working directory");
    let dir = dir.canonicalize().expect("canonical directory");
    let mut boxed = toolbox_stdio("box");
    boxed
        .env
        .insert("TOOLBOX_GREETING".into(), "hello from the config".into());
    boxed.cwd = Some(dir.clone());
    boxed.call_timeout_ms = 1_000;
    let server = start_with(vec![boxed]).await;
    let mut tools = server.tools().await;
    let env = within(
        "CallTool environment",
        tools.call_tool(call(
            "box__environment",
            json!({"name": "TOOLBOX_GREETING"}),
        )),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert_eq!(env.content, "hello from the config");
    let cwd = within(
        "CallTool working_directory",
        tools.call_tool(call("box__working_directory", json!({}))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert_eq!(std::path::PathBuf::from(&cwd.content), dir);

    let marker = dir.join("cancelled");
    let slow = within(
        "CallTool past call_timeout_ms",
        tools.call_tool(call(
            "box__wait_for_cancel",
            json!({"marker": marker.to_string_lossy()}),
        )),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert!(slow.is_error, "{}", slow.content);
    assert!(slow.content.contains("call_timeout_ms"), "{}", slow.content);
    eventually("the server sees the timed-out call cancelled", || async {
        std::fs::read_to_string(&marker).is_ok_and(|text| text == "cancelled")
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two servers whose tools end up with one contextd name (`a` + `_x` and `a_` + `x` are both
/// `a___x`) stop start-up with a message naming both servers and the tool.
#[test]
fn a_name_offered_by_two_servers_stops_start_up_naming_both() {
    use std::process::{Command, Stdio};

    let (python, script) = mcp_support::toolbox_command();
    let entry = |name: &str, extra: &str| {
        format!(
            "[[mcp_servers]]\nname = {}\ntransport = \"stdio\"\ncommand = {}\nargs = [{}, \"--extra-tool\", {}]\nstartup_timeout_ms = 60000\n",
            json!(name),
            json!(python),
            json!(script),
            json!(extra)
        )
    };
    let config = std::env::temp_dir().join(format!(
        "contextd-collision-{}-{}.toml",
        std::process::id(),
        line!()
    ));
    std::fs::write(&config, entry("a", "_x") + &entry("a_", "x")).expect("config file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_contextd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("contextd serve");
    // Bounded: a contextd that starts anyway is killed and fails the test.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > WAIT * 3 {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    let _ = std::fs::remove_file(&config);
    let status = status.unwrap_or_else(|| panic!("contextd kept running: {stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"MCP servers "a" and "a_" both offer a tool named "a___x""#),
        "{stderr}"
    );
}

/// Discovery follows `nextCursor`: a server that lists its seven tools three at a time has
/// all seven listed and callable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_listed_in_pages_are_all_discovered() {
    let python = mcp_support::python_venv().join("bin/python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_paged.py");
    let mut paged = McpServerConfig::stdio(
        "paged",
        &python.to_string_lossy(),
        &[&script.to_string_lossy()],
    );
    paged.startup_timeout_ms = 60_000;
    let server = start_with(vec![paged]).await;
    let mut names = listed(&server).await;
    names.retain(|n| n.starts_with("paged__"));
    let expected: Vec<String> = (0..7).map(|n| format!("paged__page_tool_{n}")).collect();
    assert_eq!(names, expected);
    let last = within(
        "CallTool on the last page",
        server
            .tools()
            .await
            .call_tool(call("paged__page_tool_6", json!({}))),
    )
    .await
    .expect("CallTool")
    .into_inner();
    assert_eq!(last.content, "page_tool_6");
}

/// A Converse `cancel` frame sent while a server-side MCP call runs in the turn cancels that
/// call at the server, and the turn ends cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converse_cancel_reaches_the_server_as_a_cancellation() {
    let server = start_with(vec![toolbox_stdio("box")]).await;
    let marker = std::env::temp_dir().join(format!(
        "contextd-cancel-marker-{}-{}",
        std::process::id(),
        line!()
    ));
    let _ = std::fs::remove_file(&marker);
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "conversing".into(),
            server_tools: Some(ServerToolSelection {
                patterns: vec!["box__*".into()],
            }),
            ..Default::default()
        },
    )
    .await;
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("conversing").await;
    conversation
        .send_message(
            &format!(
                "/call box__wait_for_cancel {}",
                json!({"marker": marker.to_string_lossy()})
            ),
            None,
        )
        .await;
    eventually("the server runs the call", || async {
        std::fs::read_to_string(&marker).is_ok_and(|text| text == "waiting")
    })
    .await;
    conversation.send(Frame::Cancel(ConverseCancel {})).await;
    let events = conversation.until_end_of_turn().await;
    assert_eq!(
        converse_completed(&events).finish_reason(),
        FinishReason::Cancelled
    );
    eventually("the server sees its call cancelled", || async {
        std::fs::read_to_string(&marker).is_ok_and(|text| text == "cancelled")
    })
    .await;
    let _ = std::fs::remove_file(&marker);
}

/// A name a server adds at run time that an earlier server already offers (`a` + `_x` and
/// `a_` + `x` are both `a___x`) stays the earlier server's: listed once, and calls reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_added_later_that_another_server_offers_stays_the_first_servers() {
    let server = start_with(vec![toolbox_stdio("a"), toolbox_stdio("a_")]).await;
    let mut tools = server.tools().await;
    // The later server adds its tool first, so once the earlier one's is listed too, both
    // listings hold the name.
    for (adder, name) in [("a___add_tool", "x"), ("a__add_tool", "_x")] {
        let out = within(
            "CallTool add_tool",
            tools.call_tool(call(adder, json!({"name": name}))),
        )
        .await
        .expect("CallTool add_tool")
        .into_inner();
        assert!(!out.is_error, "{}", out.content);
        eventually("the added tool is listed", || async {
            listed(&server).await.contains(&"a___x".to_string())
        })
        .await;
    }
    // Both servers have listed again: each answers a second added tool of its own.
    for (adder, name, listed_as) in [("a___add_tool", "y", "a___y"), ("a__add_tool", "z", "a__z")] {
        within(
            "CallTool add_tool",
            tools.call_tool(call(adder, json!({"name": name}))),
        )
        .await
        .expect("CallTool add_tool");
        eventually("the second added tool is listed", || async {
            listed(&server).await.contains(&listed_as.to_string())
        })
        .await;
    }
    let names = listed(&server).await;
    assert_eq!(
        names.iter().filter(|n| *n == "a___x").count(),
        1,
        "{names:?}"
    );
    let out = within("CallTool a___x", tools.call_tool(call("a___x", json!({}))))
        .await
        .expect("CallTool a___x")
        .into_inner();
    assert_eq!(out.content, "_x", "the earlier server's tool answers");
}
