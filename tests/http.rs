//! The HTTP/JSON door end to end: every route of the contract's `google.api.http` rules with
//! its errors, proto3 JSON edge cases, Server-Sent Events (parsed by a real SSE parser),
//! deadlines, gzip, the classic `/api/mcp/interact` and `/health`, and the JSON-lines socket
//! door — against a real server on port 0 with real HTTP clients.

mod common;

use std::io::{Read as _, Write as _};

use common::*;
use contextd::api::v1::ListMessagesRequest;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A plain-HTTP client (reqwest is built without a default TLS provider; one must be chosen
/// even though these tests never use TLS).
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("HTTP client")
}

/// A plain HTTP client of one server.
struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &TestServer) -> Self {
        Self {
            client: http_client(),
            base: server.url(),
        }
    }

    /// Sends a request and returns the status and the JSON body.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status();
        let text = response.text().await.expect("HTTP body");
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, json)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send("POST", path, Some(body)).await
    }

    /// Sends raw bytes with a content type.
    async fn raw(
        &self,
        path: &str,
        content_type: &str,
        body: &'static [u8],
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("HTTP request");
        let status = response.status();
        (status, response.json().await.expect("JSON error body"))
    }
}

/// Asserts an AIP-193 error body with `status` and `code`, returning its message.
fn expect_error(reply: &(StatusCode, Value), status: u16, code: &str) -> String {
    let (http, body) = reply;
    assert_eq!(http.as_u16(), status, "HTTP status of {body}");
    assert_eq!(body["error"]["code"], status, "{body}");
    assert_eq!(body["error"]["status"], code, "{body}");
    assert!(body["error"]["details"].is_array(), "{body}");
    body["error"]["message"]
        .as_str()
        .expect("error message")
        .to_owned()
}

/// The classic guide's four calls, with the replies and merged contexts they must get.
fn classic_session() -> Vec<(Value, &'static str, Value)> {
    vec![
        (
            json!({"sessionId": "session_alpha", "message": "Tell me about climate change.", "context": {"user_id": "john_doe", "topic": "environment"}}),
            "You said 'Tell me about climate change.'. User john_doe is active. Current topic: environment.",
            json!({"user_id": "john_doe", "topic": "environment"}),
        ),
        (
            json!({"sessionId": "session_alpha", "message": "What are the main causes?", "context": {"mood": "curious"}}),
            "You said 'What are the main causes?'. User john_doe is active. Current topic: environment. Context: mood=curious.",
            json!({"user_id": "john_doe", "topic": "environment", "mood": "curious"}),
        ),
        (
            json!({"sessionId": "session_beta", "message": "Hello there.", "context": {"user_id": "jane_smith", "topic": "technology"}}),
            "You said 'Hello there.'. User jane_smith is active. Current topic: technology.",
            json!({"user_id": "jane_smith", "topic": "technology"}),
        ),
        (
            json!({"sessionId": "session_alpha", "message": "What can I do?", "context": {"topic": "climate action", "mood": null}}),
            "You said 'What can I do?'. User john_doe is active. Current topic: climate action.",
            json!({"user_id": "john_doe", "topic": "climate action"}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_guides_session_over_http() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for (i, (request, reply, context)) in classic_session().into_iter().enumerate() {
        let (status, body) = http.post("/api/mcp/interact", request.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["sessionId"], request["sessionId"]);
        assert_eq!(body["response"], reply);
        assert_eq!(body["updatedContext"], context);
        assert_eq!(body["finishReason"], "FINISH_REASON_STOP");
        assert_eq!(body["sessionCreated"], i == 0 || i == 2);
        // 64-bit counts are strings in proto3 JSON.
        assert!(body["usage"]["inputTokens"].is_string(), "{body}");
    }
    let (_, alpha) = http.get("/v1/sessions/session_alpha").await;
    assert_eq!(alpha["session"]["messageCount"], "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_guides_session_over_a_json_lines_socket() {
    let server = TestServer::start().await;
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    for (i, (request, reply, context)) in classic_session().into_iter().enumerate() {
        write
            .write_all(format!("{request}\n").as_bytes())
            .await
            .unwrap();
        let line = within("an answer line", lines.next_line())
            .await
            .unwrap()
            .expect("a line");
        let body: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(body["response"], reply, "call {i}");
        assert_eq!(body["updatedContext"], context, "call {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_answer_in_order_and_survive_bad_lines() {
    let mut config = test_config();
    config.limits.max_request_bytes = 4096;
    let server = TestServer::start_with(config).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // The guide's Node client greets first; then three requests in one write, one too long.
    let long = "x".repeat(5000);
    let batch = format!(
        "MCP_INIT: SESSION_ID=101\n{}\n{}\n\n{}\r\n[1, 2]\n{}\n",
        json!({"sessionId": "lines", "message": "one"}),
        json!({"sessionId": "lines", "message": long}),
        json!({"sessionId": "lines", "message": "two"}),
        json!({"sessionId": "lines", "mesage": "typo"}),
    );
    stream.write_all(batch.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut next = async || -> Value {
        let line = within("an answer line", lines.next_line())
            .await
            .unwrap()
            .expect("a line");
        serde_json::from_str(&line).unwrap()
    };
    let greeting = next().await;
    assert_eq!(greeting["error"]["status"], "INVALID_ARGUMENT");
    assert!(
        greeting["error"]["message"]
            .as_str()
            .unwrap()
            .contains("one JSON object")
    );
    assert_eq!(next().await["response"], "You said 'one'.");
    let too_long = next().await;
    assert_eq!(too_long["error"]["code"], 413, "{too_long}");
    assert!(
        too_long["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_request_bytes (4096 bytes)")
    );
    assert_eq!(next().await["response"], "You said 'two'.");
    assert_eq!(next().await["error"]["status"], "INVALID_ARGUMENT");
    let typo = next().await;
    assert!(
        typo["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field 'mesage'"),
        "{typo}"
    );
    // Only the two good lines ran.
    let mut sessions = server.sessions().await;
    assert_eq!(get_session(&mut sessions, "lines").await.message_count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_unknown_paths() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    for path in ["/health", "/healthz"] {
        let (status, body) = http.get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "SERVING"}));
    }
    let (status, body) = http.get("/api/mcp/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["store"], "memory");
    assert_eq!(body["models"], json!(["echo"]));
    assert_eq!(body["sessions"], 0);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptimeSeconds"].is_u64());
    http.post(
        "/api/mcp/interact",
        json!({"sessionId": "st", "message": "hi"}),
    )
    .await;
    assert_eq!(http.get("/api/mcp/status").await.1["sessions"], 1);
    let (status, openapi) = http.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(openapi["openapi"], "3.0.3");
    assert!(openapi["paths"]["/v1/sessions/{sessionId}:interact"]["post"].is_object());
    let message = expect_error(&http.get("/nothing/here").await, 404, "NOT_FOUND");
    assert!(message.contains("/nothing/here"), "{message}");
    expect_error(&http.get("/v1/sessions/a/b/c").await, 404, "NOT_FOUND");
    let reply = http.send("POST", "/health", Some(json!({}))).await;
    expect_error(&reply, 405, "UNIMPLEMENTED");
    let reply = http.send("PUT", "/v1/sessions/a", Some(json!({}))).await;
    let message = expect_error(&reply, 405, "UNIMPLEMENTED");
    assert!(
        message.contains("GET") && message.contains("PATCH"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_routes_and_their_errors() {
    let server = TestServer::start().await;
    let http = Http::new(&server);

    // Create: enum names in, 64-bit integers out as strings, defaults emitted.
    let (status, created) = http
        .post(
            "/v1/sessions",
            json!({
                "sessionId": "s:1",
                "system_prompt": "Be brief.",
                "context": {"user": "Alice", "n": 1, "deep": {"list": [true, null]}},
                "labels": {"team": "docs"},
                "window": {"strategy": "WINDOW_STRATEGY_SUMMARIZE", "summarizeThresholdPercent": 80},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let session = &created["session"];
    assert_eq!(session["sessionId"], "s:1");
    assert_eq!(session["systemPrompt"], "Be brief.");
    assert_eq!(session["context"]["deep"]["list"], json!([true, null]));
    assert_eq!(session["window"]["strategy"], "WINDOW_STRATEGY_SUMMARIZE");
    assert_eq!(session["messageCount"], "0");
    assert_eq!(session["state"], "SESSION_STATE_IDLE");
    assert_eq!(session["tools"], json!([]));
    assert!(session["createTime"].as_str().unwrap().ends_with('Z'));

    let message = expect_error(
        &http.post("/v1/sessions", json!({"sessionId": "s:1"})).await,
        409,
        "ALREADY_EXISTS",
    );
    assert!(message.contains("already exists"), "{message}");
    expect_error(
        &http
            .post("/v1/sessions", json!({"model": "no-such-model"}))
            .await,
        400,
        "INVALID_ARGUMENT",
    );

    // An id holding ':' is sent as %3A; a raw ':' also works where no verb follows.
    for path in ["/v1/sessions/s%3A1", "/v1/sessions/s:1"] {
        let (status, got) = http.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {got}");
        assert_eq!(got["session"]["sessionId"], "s:1");
    }
    expect_error(&http.get("/v1/sessions/nobody").await, 404, "NOT_FOUND");

    // Update: a merge patch on the context, labels, and the path winning over the body.
    let (status, updated) = http
        .send(
            "PATCH",
            "/v1/sessions/s%3A1",
            Some(json!({"context": {"n": null, "city": "Paris"}, "labels": {"tier": "1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        updated["session"]["context"],
        json!({"user": "Alice", "city": "Paris", "deep": {"list": [true, null]}})
    );
    assert_eq!(
        updated["session"]["labels"],
        json!({"team": "docs", "tier": "1"})
    );
    let message = expect_error(
        &http
            .send(
                "PATCH",
                "/v1/sessions/s%3A1",
                Some(json!({"sessionId": "other"})),
            )
            .await,
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message.contains("'other'"), "{message}");

    // List: query parameters in either name form; page tokens round trip.
    for id in ["s2", "s3"] {
        http.post("/v1/sessions", json!({"sessionId": id})).await;
    }
    let (_, page) = http.get("/v1/sessions?pageSize=2").await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 2);
    let token = page["nextPageToken"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());
    let (_, rest) = http
        .get(&format!("/v1/sessions?page_size=2&page_token={token}"))
        .await;
    // Byte order: `:` sorts after the digits.
    assert_eq!(page["sessions"][1]["sessionId"], "s3");
    assert_eq!(rest["sessions"][0]["sessionId"], "s:1");
    assert_eq!(rest["nextPageToken"], "");
    let message = expect_error(
        &http.get("/v1/sessions?pageSize=lots").await,
        400,
        "INVALID_ARGUMENT",
    );
    assert!(message.contains("'lots'"), "{message}");
    let (_, body) = http.get("/v1/sessions?limit=2").await;
    assert_eq!(
        body["error"]["details"][0]["fieldViolations"][0]["field"],
        "limit"
    );

    // Messages and preview.
    http.post("/v1/sessions/s%3A1:interact", json!({"message": "hello"}))
        .await;
    let (status, messages) = http.get("/v1/sessions/s%3A1/messages?pageSize=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(messages["messages"][0]["role"], "MESSAGE_ROLE_USER");
    assert_eq!(messages["messages"][0]["index"], "0");
    let (status, preview) = http
        .post("/v1/sessions/s%3A1:preview", json!({"message": "next"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let kinds: Vec<_> = preview["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("CONTEXT_ENTRY_KIND_SYSTEM_PROMPT")
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("CONTEXT_ENTRY_KIND_USER_MESSAGE")
    );

    // Conditional writes: a stale etag is 409 ABORTED and changes nothing.
    let (_, current) = http.get("/v1/sessions/s%3A1").await;
    let etag = current["session"]["etag"].as_str().unwrap().to_owned();
    assert!(!etag.is_empty());
    let (status, changed) = http
        .send(
            "PATCH",
            "/v1/sessions/s%3A1",
            Some(json!({"etag": etag, "systemPrompt": "Be kind."})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_ne!(changed["session"]["etag"], etag);
    let reply = http
        .send(
            "PATCH",
            "/v1/sessions/s%3A1",
            Some(json!({"etag": etag, "systemPrompt": "Be rude."})),
        )
        .await;
    expect_error(&reply, 409, "ABORTED");
    expect_error(
        &http
            .send("DELETE", &format!("/v1/sessions/s%3A1?etag={etag}"), None)
            .await,
        409,
        "ABORTED",
    );
    let (_, after) = http.get("/v1/sessions/s%3A1").await;
    assert_eq!(after["session"]["systemPrompt"], "Be kind.");

    // Delete, then it is gone.
    let (status, deleted) = http.send("DELETE", "/v1/sessions/s%3A1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["deletedMessages"], "2");
    expect_error(&http.get("/v1/sessions/s%3A1").await, 404, "NOT_FOUND");
    expect_error(
        &http.send("DELETE", "/v1/sessions/s%3A1", None).await,
        404,
        "NOT_FOUND",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_the_contract_are_refused() {
    let mut config = test_config();
    config.limits.max_request_bytes = 1024;
    let server = TestServer::start_with(config).await;
    let http = Http::new(&server);

    let reply = http
        .post(
            "/v1/sessions/b:interact",
            json!({"message": "hi", "mesage": "typo"}),
        )
        .await;
    let message = expect_error(&reply, 400, "INVALID_ARGUMENT");
    assert!(message.contains("unknown field 'mesage'"), "{message}");
    assert_eq!(
        reply.1["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );

    let reply = http
        .raw(
            "/v1/sessions/b:interact",
            "application/json",
            b"{\n  \"message\": \"hi\",\n}",
        )
        .await;
    let message = expect_error(&reply, 400, "INVALID_ARGUMENT");
    assert!(message.contains("line 3 column 1"), "{message}");

    let reply = http
        .post(
            "/v1/sessions/b:interact",
            json!({"message": "x".repeat(2000)}),
        )
        .await;
    let message = expect_error(&reply, 413, "RESOURCE_EXHAUSTED");
    assert!(message.contains("limits.max_request_bytes"), "{message}");

    let reply = http
        .raw("/v1/sessions/b:interact", "text/plain", b"{}")
        .await;
    expect_error(&reply, 415, "INVALID_ARGUMENT");

    // A gRPC path in a content type no door serves: 415, and nothing runs.
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let reply = http
            .raw(
                "/contextd.v1.InteractService/Interact",
                content_type,
                b"\x00\x00\x00\x00\x05\x0a\x03gho",
            )
            .await;
        let message = expect_error(&reply, 415, "INVALID_ARGUMENT");
        assert!(message.contains("application/grpc"), "{message}");
    }
    let response = http_client()
        .post(format!(
            "{}/contextd.v1.InteractService/Interact",
            server.url()
        ))
        .body("\x00\x00\x00\x00\x05\x0a\x03gho")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut sessions = server.sessions().await;
    let listed = sessions
        .list_sessions(contextd::api::v1::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.sessions.is_empty(), "nothing ran: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_models_routes() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let (status, models) = http.get("/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["models"][0]["name"], "echo");

    let (status, tools) = http.get("/v1/tools").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"context_get"), "{names:?}");

    http.post(
        "/v1/sessions",
        json!({"sessionId": "t1", "context": {"city": "Paris"}, "tools": [{"name": "lookup", "description": "Looks up."}]}),
    )
    .await;
    let (_, with_session) = http.get("/v1/tools?sessionId=t1").await;
    assert_eq!(with_session["sessionTools"][0]["name"], "lookup");

    let (status, called) = http
        .post(
            "/v1/tools/context_get:call",
            json!({"arguments": {}, "sessionId": "t1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{called}");
    assert_eq!(called["isError"], false);
    assert_eq!(called["structuredContent"]["city"], "Paris");
    let message = expect_error(
        &http.post("/v1/tools/no_such_tool:call", json!({})).await,
        404,
        "NOT_FOUND",
    );
    assert!(message.contains("no_such_tool"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interact_routes_run_turns_and_client_tools() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    http.post(
        "/v1/sessions",
        json!({"sessionId": "i1", "tools": [{"name": "lookup", "description": "Looks up."}]}),
    )
    .await;
    let (status, paused) = http
        .post(
            "/v1/sessions/i1:interact",
            json!({"message": "/call lookup {\"q\": 1}"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["finishReason"], "FINISH_REASON_TOOL_CALLS");
    let call_id = paused["toolCalls"][0]["toolCallId"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = expect_error(
        &http
            .post("/v1/sessions/i1:interact", json!({"message": "again"}))
            .await,
        400,
        "FAILED_PRECONDITION",
    );
    assert!(message.contains(&call_id), "{message}");
    let (status, done) = http
        .post(
            "/v1/sessions/i1:interact",
            json!({"toolResults": [{"toolCallId": call_id, "content": "found it"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["finishReason"], "FINISH_REASON_STOP");
    assert_eq!(done["turnId"], paused["turnId"]);
}

/// Reads a whole SSE response with a real SSE parser: (event, data) pairs.
async fn sse_events(response: reqwest::Response) -> Vec<(String, Value)> {
    let mut events = response.bytes_stream().eventsource();
    let mut out = Vec::new();
    while let Some(event) = within("the next event", events.next()).await {
        let event = event.expect("well-formed SSE");
        out.push((event.event, serde_json::from_str(&event.data).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_turns_are_server_sent_events() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let response = http
        .client
        .post(format!("{}/v1/sessions/e1:stream", http.base))
        .json(&json!({"message": "three small words", "context": {"user_id": "ann"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = sse_events(response).await;
    let names: Vec<_> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"started"));
    assert_eq!(names.last(), Some(&"completed"));
    assert!(
        names[1..names.len() - 1].iter().all(|n| *n == "delta"),
        "{names:?}"
    );
    // `data` is the whole StreamResponseResponse; its one member is the event's name.
    for (name, data) in &events {
        let keys: Vec<_> = data.as_object().unwrap().keys().collect();
        assert_eq!(keys, [name], "{data}");
    }
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    let completed = &events.last().unwrap().1["completed"];
    assert_eq!(completed["response"], text);
    assert_eq!(completed["sessionId"], "e1");
    assert_eq!(events[0].1["started"]["sessionCreated"], true);

    // Client-side tool calls come as `toolCall` events.
    http.post(
        "/v1/sessions",
        json!({"sessionId": "e2", "tools": [{"name": "lookup", "description": "Looks up."}]}),
    )
    .await;
    let response = http
        .client
        .post(format!("{}/v1/sessions/e2:stream", http.base))
        .json(&json!({"message": "/call lookup {}"}))
        .send()
        .await
        .unwrap();
    let names: Vec<_> = sse_events(response)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["started", "toolCall", "completed"]);

    // A failure before the first event is an ordinary HTTP error.
    let reply = http
        .post("/v1/sessions/e2:stream", json!({"message": "not yet"}))
        .await;
    expect_error(&reply, 400, "FAILED_PRECONDITION");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_streams_get_keep_alives_and_a_client_that_leaves_stores_nothing() {
    let mut config = test_config();
    config.http.sse_keep_alive_ms = 50;
    let server = TestServer::start_with(config).await;
    let http = Http::new(&server);
    http.post("/v1/sessions/k1:interact", json!({"message": "first"}))
        .await;

    let response = http
        .client
        .post(format!("{}/v1/sessions/k1:stream", http.base))
        .json(&json!({"message": "/delay 400 slow words here"}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains(": keep-alive\n\n") {
        let chunk = within("a keep-alive comment", body.next())
            .await
            .expect("the stream goes on")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("event: started\ndata: {"), "{seen}");
    drop(body);

    // The turn was cancelled with the connection: only the first turn is stored.
    let mut sessions = server.sessions().await;
    eventually("the cancelled turn is released", || {
        let mut sessions = sessions.clone();
        async move {
            let page = sessions
                .list_messages(ListMessagesRequest {
                    session_id: "k1".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            page.messages.len() == 2
        }
    })
    .await;
    let after = http
        .post("/v1/sessions/k1:interact", json!({"message": "next"}))
        .await;
    assert_eq!(after.0, StatusCode::OK);
    assert_eq!(get_session(&mut sessions, "k1").await.message_count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_answer_504_and_store_nothing() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let response = http
        .client
        .post(format!("{}/v1/sessions/d1:interact", http.base))
        .header("x-request-timeout", "0.2")
        .json(&json!({"message": "/delay 500 too slow"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    expect_error(&(status, body), 504, "DEADLINE_EXCEEDED");
    expect_error(&http.get("/v1/sessions/d1").await, 404, "NOT_FOUND");

    let response = http
        .client
        .post(format!("{}/v1/sessions/d1:interact", http.base))
        .header("x-request-timeout", "soon")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // The configured default applies without the header.
    let mut config = test_config();
    config.http.default_timeout_ms = 200;
    let server = TestServer::start_with(config).await;
    let http = Http::new(&server);
    let reply = http
        .post(
            "/v1/sessions/d2:interact",
            json!({"message": "/delay 500 too slow"}),
        )
        .await;
    expect_error(&reply, 504, "DEADLINE_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_both_ways() {
    let server = TestServer::start().await;
    let client = http_client();
    let body = json!({"sessionId": "z1", "message": "compressed ".repeat(50)}).to_string();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body.as_bytes()).unwrap();
    let compressed = encoder.finish().unwrap();
    let response = client
        .post(format!("{}/api/mcp/interact", server.url()))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("accept-encoding", "gzip")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let bytes = response.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert!(
        reply["response"]
            .as_str()
            .unwrap()
            .starts_with("You said 'compressed")
    );

    // gRPC: grpc-encoding gzip on requests and responses.
    use contextd::api::v1::interact_service_client::InteractServiceClient;
    use tonic::codec::CompressionEncoding;
    let mut grpc = InteractServiceClient::new(server.channel().await)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let reply = grpc
        .interact(interact_request("z1", "and over gRPC", None))
        .await
        .expect("gzip gRPC call");
    assert_eq!(
        reply
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    assert!(
        reply
            .into_inner()
            .response
            .starts_with("You said 'and over gRPC'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_every_door() {
    let mut server = TestServer::start().await;
    let http = Http::new(&server);
    // A slow turn over SSE and an open JSON-lines connection.
    let response = http
        .client
        .post(format!("{}/v1/sessions/sd:stream", http.base))
        .json(&json!({"message": "/delay 100 finishing during shutdown"}))
        .send()
        .await
        .unwrap();
    let mut lines_conn = TcpStream::connect(server.addr).await.unwrap();
    lines_conn
        .write_all(b"{\"sessionId\": \"sd2\", \"message\": \"hi\"}\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(lines_conn).lines();
    assert!(within("a line", lines.next_line()).await.unwrap().is_some());

    server.trigger_shutdown();
    // The running turn finishes within the grace period and its stream completes.
    let events = sse_events(response).await;
    assert_eq!(events.last().unwrap().0, "completed");
    // The idle JSON-lines connection is closed.
    assert_eq!(within("the close", lines.next_line()).await.unwrap(), None);
    assert!(server.stop().await, "serve returned Ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_first_event_is_an_error_event() {
    let mut config = test_config();
    config.shutdown_grace_ms = 100;
    let mut server = TestServer::start_with(config).await;
    let http = Http::new(&server);
    let response = http
        .client
        .post(format!("{}/v1/sessions/f1:stream", http.base))
        .header("x-request-id", "sse-late-1")
        .json(&json!({"message": "/delay 300 a turn cut short by shutdown"}))
        .send()
        .await
        .unwrap();
    let mut events = response.bytes_stream().eventsource();
    let first = within("the first event", events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.event, "started");
    // The grace period ends before the turn does: the turn is cancelled mid-stream.
    server.trigger_shutdown();
    let mut last = None;
    while let Some(event) = within("the next event", events.next()).await {
        last = Some(event.expect("well-formed SSE"));
    }
    let last = last.expect("an event after `started`");
    assert_eq!(last.event, "error");
    let error: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(error["error"]["status"], "UNAVAILABLE", "{error}");
    assert_eq!(error["error"]["code"], 503);
    // Sent after the handler returned, the event still names the call's request id.
    let details = error["error"]["details"].as_array().expect("details");
    assert!(
        details.iter().any(
            |d| d["@type"] == "type.googleapis.com/google.rpc.RequestInfo"
                && d["requestId"] == "sse-late-1"
        ),
        "{error}"
    );
    assert!(server.stop().await);
}
