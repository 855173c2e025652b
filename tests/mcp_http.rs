//! `/mcp` over plain HTTP on a real server: stateless (no MCP session, no `initialize`
//! needed), the same sessions as the gRPC doors, DNS-rebinding protection with the `[mcp]`
//! allow lists, bodies bounded by `limits.max_request_bytes`, and `notifications/cancelled`
//! stopping a running call (sent raw, and by the official Python SDK abandoning a call,
//! `tests/mcp_host_cancel.py`). The MCP SDK's own client, the conformance suite and the
//! Inspector test the protocol itself (clients/python/tests/test_mcp_server.py,
//! tests/mcp_hosts.sh).

mod common;
mod mcp_support;

use common::*;
use serde_json::{Value, json};

fn call(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

async fn post(
    server: &TestServer,
    body: &Value,
    headers: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
    // reqwest is built without a default TLS provider; the requests here are plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let mut request = client
        .post(format!("{}/mcp", server.url()))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = within("POST /mcp", request.send())
        .await
        .expect("POST /mcp");
    let status = reply.status();
    let headers = reply.headers().clone();
    let text = within("the answer", reply.text()).await.expect("body");
    (status, headers, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_need_no_session_and_see_the_grpc_doors_sessions() {
    let server = TestServer::start().await;
    let mut sessions = server.interact().await;
    say(
        &mut sessions,
        "mcp_http_1",
        "hello",
        Some(json!({"user": "ann"})),
    )
    .await;

    // No initialize, no session id: every request stands alone.
    let (status, headers, body) = post(
        &server,
        &call(
            1,
            "tools/call",
            json!({"name": "context_get", "arguments": {"session_id": "mcp_http_1", "key": "user"}}),
        ),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("mcp-session-id").is_none(), "{headers:?}");
    let answer: Value = serde_json::from_str(&body).expect("one JSON answer");
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert_eq!(answer["result"]["content"][0]["text"], "\"ann\"");

    let (_, _, body) = post(
        &server,
        &call(
            2,
            "resources/read",
            json!({"uri": "contextd://sessions/mcp_http_1"}),
        ),
        &[],
    )
    .await;
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    let document: Value =
        serde_json::from_str(answer["result"]["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(document["context"], json!({"user": "ann"}));
    assert_eq!(document["history"][0]["content"], "hello");

    // Arguments that break the tool's schema are a tool error the host's model can read
    // (MCP treats input validation as a tool execution error), and the tool does not run.
    let (_, _, body) = post(
        &server,
        &call(
            4,
            "tools/call",
            json!({"name": "context_get", "arguments": {"session_id": "mcp_http_1", "city": "Paris"}}),
        ),
        &[],
    )
    .await;
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("did not run") && text.contains("city"),
        "{answer}"
    );

    let (_, _, body) = post(
        &server,
        &call(3, "tools/call", json!({"name": "nope"})),
        &[],
    )
    .await;
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert_eq!(answer["error"]["data"]["status"], "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused_unless_configured() {
    let mut config = test_config();
    config.mcp.allowed_hosts = vec!["contextd.internal".into()];
    config.mcp.allowed_origins = vec!["https://console.example.com".into()];
    let server = TestServer::start_with(config).await;
    let ping = call(1, "ping", json!({}));

    for headers in [
        [("origin", "http://evil.example")],
        [("host", "evil.example")],
    ] {
        let (status, _, body) = post(&server, &ping, &headers).await;
        assert_eq!(status, 403, "{headers:?}: {body}");
    }
    let port = server.addr.port().to_string();
    let loopback = format!("http://localhost:{port}");
    for headers in [
        [("origin", loopback.as_str())],
        [("origin", "https://console.example.com")],
        [("host", "contextd.internal")],
    ] {
        let (status, _, body) = post(&server, &ping, &headers).await;
        assert_eq!(status, 200, "{headers:?}: {body}");
    }
}

/// Every `/mcp` request logs an `rpc done` line in a span naming its request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_name_the_request_id() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut command = common::daemon::contextd_command(&["serve", "--listen", "127.0.0.1:0"]);
    command.env("CONTEXTD_LOG", "info");
    let daemon = common::daemon::Daemon::spawn(command);
    let reply = reqwest::Client::new()
        .post(format!("http://{}/mcp", daemon.addr))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("x-request-id", "mcp-log-42")
        .json(&call(1, "tools/list", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert!(reply.text().await.unwrap().contains("contextd_interact"));
    let line = daemon
        .log_line(|l| l.contains("rpc done") && l.contains("door=mcp"))
        .await;
    assert!(line.contains("request_id=mcp-log-42"), "{line}");
    assert!(
        line.contains("model_context_protocol.Mcp/ListTools"),
        "{line}"
    );
}

/// A host's `notifications/cancelled` stops the `tools/call` it names: the turn ends at once
/// (instead of after the echo model's minute of `/delay`) and is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_notification_stops_the_running_call() {
    let server = TestServer::start().await;
    let request = call(
        41,
        "tools/call",
        json!({"name": "contextd_interact",
               "arguments": {"session_id": "mcp_cancel_1", "message": "/delay 60000 too late"}}),
    );
    let running = {
        let url = server.url();
        tokio::spawn(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let reply = reqwest::Client::new()
                .post(format!("{url}/mcp"))
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-11-25")
                .json(&request)
                .send()
                .await
                .expect("POST tools/call");
            reply.text().await.expect("its answer")
        })
    };
    tokio::pin!(running);
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": 41, "reason": "the user pressed stop"}});
    // A page on a foreign origin is refused before its cancel is acted on.
    let (status, _, body) = post(&server, &cancel, &[("origin", "http://evil.example")]).await;
    assert_eq!(status, 403, "{body}");
    // The call may not have reached its handler when the first cancel arrives (a cancel for
    // no call in flight is ignored), so the host's cancel is repeated until the call ends.
    let deadline = tokio::time::Instant::now() + WAIT;
    let answer = loop {
        let (status, _, body) = post(&server, &cancel, &[]).await;
        assert_eq!(status, 202, "{body}");
        if let Ok(done) =
            tokio::time::timeout(std::time::Duration::from_millis(250), &mut running).await
        {
            break done.expect("the call's task");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call still runs {WAIT:?} after the host cancelled it"
        );
    };
    assert!(!answer.contains("too late"), "{answer}");
    let mut sessions = server.sessions().await;
    expect_code(
        sessions
            .get_session(contextd::api::v1::GetSessionRequest {
                session_id: "mcp_cancel_1".into(),
            })
            .await,
        tonic::Code::NotFound,
    );
}

/// `/mcp` bodies are bounded by `limits.max_request_bytes`: above it, 413 saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_request_bound_is_refused_with_413() {
    let mut config = test_config();
    config.limits.max_request_bytes = 64 * 1024;
    let server = TestServer::start_with(config).await;
    let big = call(
        1,
        "tools/call",
        json!({"name": "contextd_interact",
               "arguments": {"session_id": "mcp_big", "message": "x".repeat(100 * 1024)}}),
    );
    let (status, _, body) = post(&server, &big, &[]).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("65536") && body.contains("max_request_bytes"),
        "{body}"
    );
    let (status, _, body) = post(&server, &call(2, "ping", json!({})), &[]).await;
    assert_eq!(status, 200, "{body}");
}

/// The official Python SDK as the host: a call it abandons (its read timeout) is cancelled
/// by the `notifications/cancelled` the SDK sends, so the next message to the same session
/// runs at once instead of waiting for the abandoned minute-long turn, which is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_abandoning_a_call_stops_its_turn() {
    let server = TestServer::start().await;
    let python = mcp_support::python_venv().join("bin/python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_host_cancel.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("{}/mcp", server.url()))
        .arg("py_cancel")
        .output();
    // The script's own bounds (2 s, then 30 s) end it long before this one.
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the host script ended")
        .expect("python ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["abandoned"], true, "{seen}");
    assert_eq!(seen["second_text"], "You said 'after'.", "{seen}");
    // Only the second turn is stored: the abandoned one left nothing.
    let mut sessions = server.sessions().await;
    let history = all_messages(&mut sessions, "py_cancel", 100).await;
    let texts: Vec<&str> = history.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["after", "You said 'after'."], "{seen}");
}
