//! Every door behaves alike: one table of Interact cases runs over gRPC, HTTP/JSON (the
//! contract's route and the classic `/api/mcp/interact`) and the JSON-lines socket, each door
//! on its own fresh server with the same configuration, and the outcomes — reply text or
//! status name and message — must be identical.

mod common;

use common::*;
use contextd::api::v1::InteractRequest;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::transport::Channel;

/// What a door answered: the reply text, or the status name and message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Reply(String),
    Failed { status: String, message: String },
}

/// The doors under test.
#[derive(Debug, Clone, Copy)]
enum Door {
    Grpc,
    HttpRoute,
    HttpClassic,
    JsonLines,
}

/// The cases, in order (later ones see the sessions earlier ones made).
fn cases() -> Vec<(&'static str, Value)> {
    vec![
        (
            "a first turn",
            json!({"sessionId": "d1", "message": "hello", "context": {"user_id": "ann"}}),
        ),
        (
            "a second turn",
            json!({"sessionId": "d1", "message": "again", "context": {"topic": "tests"}}),
        ),
        (
            "an empty session id",
            json!({"sessionId": "", "message": "hello"}),
        ),
        (
            "an invalid session id",
            json!({"sessionId": "no spaces", "message": "hello"}),
        ),
        (
            "an empty message",
            json!({"sessionId": "d1", "message": ""}),
        ),
        (
            "a message over the limit",
            json!({"sessionId": "d1", "message": "x".repeat(300)}),
        ),
        (
            "a context too deep",
            json!({"sessionId": "d1", "message": "deep", "context": {"a": {"b": {"c": {"d": 1}}}}}),
        ),
        (
            "tool results nothing waits for",
            json!({"sessionId": "d1", "toolResults": [{"toolCallId": "c1", "content": "x"}]}),
        ),
        (
            "a paused turn",
            json!({"sessionId": "d2", "message": "/call context_get {}\n/call nothing_here {}"}),
        ),
        (
            "a server-side tool round trip",
            json!({"sessionId": "d3", "message": "/call context_get {}", "context": {"k": "v"}}),
        ),
        (
            "an invalid idempotency key",
            json!({"sessionId": "d4", "message": "keyed", "idempotencyKey": "has space"}),
        ),
        (
            "a keyed turn",
            json!({"sessionId": "d4", "message": "keyed", "idempotencyKey": "k1"}),
        ),
        (
            "its repeat",
            json!({"sessionId": "d4", "message": "keyed", "idempotencyKey": "k1"}),
        ),
        (
            "its key on another request",
            json!({"sessionId": "d4", "message": "other", "idempotencyKey": "k1"}),
        ),
        (
            "a turn paused for a client-side tool",
            json!({"sessionId": "d5", "message": "/call get_weather {\"city\": \"Oslo\"}"}),
        ),
        (
            "abandoning with a message",
            json!({"sessionId": "d5", "message": "instead", "abandonToolCalls": true}),
        ),
        (
            "abandoning the paused turn",
            json!({"sessionId": "d5", "abandonToolCalls": true}),
        ),
        (
            "abandoning with nothing pending",
            json!({"sessionId": "d5", "abandonToolCalls": true}),
        ),
        (
            "a turn after the abandon",
            json!({"sessionId": "d5", "message": "after"}),
        ),
    ]
}

fn config() -> contextd::config::Config {
    let mut config = test_config();
    config.limits.max_message_bytes = 256;
    config.limits.max_context_depth = 3;
    config
}

/// Runs every case on one door of a fresh server.
async fn run(door: Door) -> Vec<Outcome> {
    let server = TestServer::start_with(config()).await;
    // The session of the abandon cases declares a client-side tool.
    let mut sessions = server.sessions().await;
    let create = contextd::api::v1::CreateSessionRequest {
        session_id: "d5".into(),
        tools: vec![tool_def("get_weather", "Current weather for a city.")],
        ..Default::default()
    };
    create_session(&mut sessions, create).await;
    let mut grpc = InteractServiceClient::new(server.channel().await);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let mut lines = match door {
        Door::JsonLines => {
            let stream = TcpStream::connect(server.addr).await.unwrap();
            Some(BufReader::new(stream))
        }
        _ => None,
    };
    let mut outcomes = Vec::new();
    for (what, request) in cases() {
        let outcome = match door {
            Door::Grpc => over_grpc(&mut grpc, &request).await,
            Door::HttpRoute | Door::HttpClassic => {
                let url = match door {
                    Door::HttpRoute if request["sessionId"] != "" => format!(
                        "{}/v1/sessions/{}:interact",
                        server.url(),
                        request["sessionId"].as_str().unwrap().replace(' ', "%20")
                    ),
                    _ => format!("{}/api/mcp/interact", server.url()),
                };
                let response = http.post(url).json(&request).send().await.unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap();
                if status.is_success() {
                    outcome_of(&body)
                } else {
                    assert_eq!(body["error"]["code"], status.as_u16(), "{what}: {body}");
                    outcome_of(&body)
                }
            }
            Door::JsonLines => {
                let stream = lines.as_mut().unwrap();
                stream
                    .get_mut()
                    .write_all(format!("{request}\n").as_bytes())
                    .await
                    .unwrap();
                let mut line = String::new();
                within("an answer line", stream.read_line(&mut line))
                    .await
                    .unwrap();
                outcome_of(&serde_json::from_str(&line).unwrap())
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// The outcome of a JSON answer (an InteractResponse or an AIP-193 error).
fn outcome_of(body: &Value) -> Outcome {
    match body.get("error") {
        Some(error) => Outcome::Failed {
            status: error["status"].as_str().unwrap().to_owned(),
            message: without_turn_ids(error["message"].as_str().unwrap()),
        },
        None => Outcome::Reply(format!(
            "{} [{}] {}",
            body["response"].as_str().unwrap(),
            body["finishReason"].as_str().unwrap(),
            body["updatedContext"]
        )),
    }
}

async fn over_grpc(client: &mut InteractServiceClient<Channel>, request: &Value) -> Outcome {
    // The JSON request in its gRPC form, field by field.
    let message = InteractRequest {
        session_id: request["sessionId"].as_str().unwrap_or_default().to_owned(),
        message: request["message"].as_str().unwrap_or_default().to_owned(),
        context: request.get("context").map(to_struct),
        tool_results: request
            .get("toolResults")
            .and_then(Value::as_array)
            .map(|results| {
                results
                    .iter()
                    .map(|r| {
                        result(
                            r["toolCallId"].as_str().unwrap(),
                            r["content"].as_str().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        idempotency_key: request["idempotencyKey"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        abandon_tool_calls: request["abandonToolCalls"].as_bool().unwrap_or_default(),
    };
    match client.interact(message).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            Outcome::Reply(format!(
                "{} [{}] {}",
                reply.response,
                reply.finish_reason().as_str_name(),
                json_of(&reply.updated_context)
            ))
        }
        Err(status) => Outcome::Failed {
            status: contextd::api::code_name(status.code()).to_owned(),
            message: without_turn_ids(status.message()),
        },
    }
}

/// `text` with every turn id (`t-` and 32 hex digits) as `t-…`: each door's server makes its
/// own.
fn without_turn_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("t-") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let hex = after.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex == 32 {
            out.push_str("t-…");
            rest = &after[32..];
        } else {
            out.push_str("t-");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_gives_the_same_outcomes() {
    let grpc = run(Door::Grpc).await;
    // The table means something: replies, and failures with several different messages.
    let failures: std::collections::HashSet<_> = grpc
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed { message, .. } => Some(message.clone()),
            Outcome::Reply(_) => None,
        })
        .collect();
    assert!(failures.len() >= 5, "{grpc:#?}");
    assert!(
        grpc.iter()
            .filter(|o| matches!(o, Outcome::Reply(_)))
            .count()
            >= 3,
        "{grpc:#?}"
    );
    let abandoned = cases()
        .iter()
        .position(|(what, _)| *what == "abandoning the paused turn")
        .unwrap();
    assert!(
        matches!(&grpc[abandoned], Outcome::Reply(r) if r.contains("[FINISH_REASON_CANCELLED]")),
        "{grpc:#?}"
    );
    assert!(
        matches!(&grpc[abandoned + 1], Outcome::Failed { status, .. } if status == "INVALID_ARGUMENT"),
        "{grpc:#?}"
    );
    for door in [Door::HttpRoute, Door::HttpClassic, Door::JsonLines] {
        let outcomes = run(door).await;
        for (i, (what, _)) in cases().iter().enumerate() {
            assert_eq!(outcomes[i], grpc[i], "{what} over {door:?}");
        }
    }
}
