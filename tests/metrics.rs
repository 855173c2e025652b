//! Metrics, request ids and their log lines, against the real binary (so that the counts
//! are its own): a short load on gRPC, HTTP/JSON and the Converse WebSocket, then a scrape
//! of `GET /metrics` whose counters must add up to exactly the requests sent.

mod common;

use std::collections::BTreeMap;

use common::daemon::Daemon;
use common::*;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::{CreateSessionRequest, GetSessionRequest};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

/// One sample of the exposition: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus's text format (the subset contextd writes: no escaped quotes).
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once("=\"").expect("label");
                (key.to_owned(), value.trim_end_matches('"').to_owned())
            })
            .collect();
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

/// The sum of `name`'s samples whose labels include `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(http: &reqwest::Client, daemon: &Daemon) -> Vec<Sample> {
    let response = within(
        "GET /metrics",
        http.get(format!("http://{}/metrics", daemon.addr)).send(),
    )
    .await
    .expect("scrape");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    parse(&response.text().await.expect("metrics text"))
}

/// Scrapes until `ready` holds (a call is counted once its response has ended, which a client
/// may see a moment before the server's side finishes).
async fn scrape_until(
    http: &reqwest::Client,
    daemon: &Daemon,
    ready: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let samples = scrape(http, daemon).await;
        if ready(&samples) {
            return samples;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the metrics never got there: {samples:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

const GET: &str = "contextd.v1.SessionService/GetSession";
const CREATE: &str = "contextd.v1.SessionService/CreateSession";
const INTERACT: &str = "contextd.v1.InteractService/Interact";
const CONVERSE: &str = "contextd.v1.InteractService/Converse";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_add_up_to_the_requests_sent_and_request_ids_are_everywhere() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let daemon = Daemon::start();
    let channel = connect(daemon.addr).await;
    let mut sessions = SessionServiceClient::new(channel.clone());
    let mut interact = InteractServiceClient::new(channel);
    let http = reqwest::Client::new();

    // gRPC: 1 CreateSession, 5 Interact (one with the caller's request id), 3 GetSession
    // NOT_FOUND.
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "m1".into(),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..4 {
        say(&mut interact, "m1", "hi", None).await;
    }
    let mut request = tonic::Request::new(interact_request("m1", "hi", None));
    request
        .metadata_mut()
        .insert("x-request-id", "req-grpc-1".parse().unwrap());
    let reply = within("Interact", interact.interact(request))
        .await
        .expect("Interact");
    assert_eq!(reply.metadata().get("x-request-id").unwrap(), "req-grpc-1");
    for i in 0..3 {
        let status = expect_code(
            within(
                "GetSession",
                sessions.get_session(GetSessionRequest {
                    session_id: format!("missing-{i}"),
                }),
            )
            .await,
            Code::NotFound,
        );
        // An id was made for the caller that sent none, and returned.
        let id = status.metadata().get("x-request-id").expect("a request id");
        assert_eq!(id.len(), 32, "{id:?}");
    }

    // HTTP/JSON: 4 GetSession OK, 1 NOT_FOUND (with an id that is not sane, so replaced),
    // 1 NOT_FOUND with the caller's id, 2 Interact.
    for _ in 0..4 {
        let response = http
            .get(format!("http://{}/v1/sessions/m1", daemon.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("x-request-id"));
    }
    let response = http
        .get(format!("http://{}/v1/sessions/nope", daemon.addr))
        .header("x-request-id", "has spaces in it")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let replaced = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(replaced, "has spaces in it");
    let response = http
        .get(format!("http://{}/v1/sessions/nope", daemon.addr))
        .header("x-request-id", "req-http-404")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "req-http-404");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND", "{body}");
    let details = body["error"]["details"].as_array().expect("details");
    assert!(
        details.iter().any(
            |d| d["@type"] == "type.googleapis.com/google.rpc.RequestInfo"
                && d["requestId"] == "req-http-404"
        ),
        "{body}"
    );
    for _ in 0..2 {
        let response = http
            .post(format!("http://{}/v1/sessions/m1:interact", daemon.addr))
            .json(&json!({"message": "hello"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }

    // One Converse over the WebSocket: one turn, then a normal close.
    let url = format!("ws://{}/v1/sessions/m1:converse", daemon.addr);
    let (mut socket, _) = within("WebSocket", tokio_tungstenite::connect_async(url))
        .await
        .expect("WebSocket handshake");
    socket
        .send(Message::text(json!({"open": {}}).to_string()))
        .await
        .unwrap();
    socket
        .send(Message::text(
            json!({"userMessage": {"message": "over the socket"}}).to_string(),
        ))
        .await
        .unwrap();
    loop {
        match within("a Converse event", socket.next()).await {
            Some(Ok(Message::Text(text))) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                assert!(event.get("error").is_none(), "{event}");
                if event.get("completed").is_some() {
                    break;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the socket ended early: {other:?}"),
        }
    }
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = within("the close", socket.next()).await {}

    // The WebSocket door counts its call once the socket is closed on its side too.
    let samples = scrape_until(&http, &daemon, |samples| {
        sum(
            samples,
            "contextd_rpc_requests_total",
            &[("method", CONVERSE)],
        ) >= 1.0
    })
    .await;
    let requests = |method: &str, code: &str| {
        sum(
            &samples,
            "contextd_rpc_requests_total",
            &[("method", method), ("code", code)],
        )
    };
    assert_eq!(requests(CREATE, "OK"), 1.0);
    assert_eq!(requests(INTERACT, "OK"), 7.0);
    assert_eq!(requests(GET, "OK"), 4.0);
    assert_eq!(requests(GET, "NOT_FOUND"), 5.0);
    assert_eq!(requests(CONVERSE, "OK"), 1.0);
    assert_eq!(
        sum(&samples, "contextd_rpc_requests_total", &[]),
        18.0,
        "nothing else was counted: {samples:?}"
    );
    let count = |method: &str| {
        sum(
            &samples,
            "contextd_rpc_duration_seconds_count",
            &[("method", method)],
        )
    };
    assert_eq!(count(INTERACT), 7.0);
    assert_eq!(count(GET), 9.0);
    assert_eq!(count(CONVERSE), 1.0);
    // Every observation is in the +Inf bucket.
    assert_eq!(
        sum(
            &samples,
            "contextd_rpc_duration_seconds_bucket",
            &[("method", INTERACT), ("le", "+Inf")]
        ),
        7.0
    );
    assert_eq!(
        sum(
            &samples,
            "contextd_turns_total",
            &[("model", "echo"), ("finish_reason", "stop")]
        ),
        8.0
    );
    assert_eq!(sum(&samples, "contextd_turns_in_flight", &[]), 0.0);
    assert_eq!(
        sum(
            &samples,
            "contextd_model_request_duration_seconds_count",
            &[("backend", "echo")]
        ),
        8.0
    );
    assert!(
        sum(
            &samples,
            "contextd_model_tokens_total",
            &[("backend", "echo"), ("direction", "output")]
        ) > 0.0
    );
    assert!(
        sum(
            &samples,
            "contextd_store_operation_duration_seconds_count",
            &[("store", "memory"), ("operation", "commit")]
        ) >= 9.0
    );
    assert_eq!(
        sum(&samples, "contextd_streams_open", &[("kind", "websocket")]),
        0.0
    );

    // The caller's request id is in the log line of its call.
    eventually("the request ids reach the log", || {
        let logs = daemon.stderr();
        async move {
            logs.lines()
                .any(|l| l.contains("request_id=req-grpc-1") && l.contains("rpc done"))
                && logs
                    .lines()
                    .any(|l| l.contains("request_id=req-http-404") && l.contains("NOT_FOUND"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_listener_serves_only_metrics() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = Daemon::start_with(&["--metrics-listen".into(), format!("127.0.0.1:{port}")]);
    let channel = connect(daemon.addr).await;
    let mut sessions = SessionServiceClient::new(channel);
    expect_code(
        within(
            "GetSession",
            sessions.get_session(GetSessionRequest {
                session_id: "none".into(),
            }),
        )
        .await,
        Code::NotFound,
    );
    let http = reqwest::Client::new();
    // The metrics listener is bound while the server starts, just after the startup line.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let response = loop {
        match http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            Ok(response) => break response,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(response.status(), 200);
    let samples = parse(&response.text().await.unwrap());
    assert_eq!(
        sum(
            &samples,
            "contextd_rpc_requests_total",
            &[("method", GET), ("code", "NOT_FOUND")]
        ),
        1.0
    );
    let other = http
        .get(format!("http://127.0.0.1:{port}/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// `metrics.enabled = false`: nothing is recorded and `/metrics` says they are off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let dir = std::env::temp_dir().join(format!("contextd-metrics-off-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("contextd.toml");
    std::fs::write(&config, "[metrics]\nenabled = false\n").unwrap();
    let daemon = common::daemon::Daemon::spawn(common::daemon::contextd_command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ]));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(format!("http://{}/metrics", daemon.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body = response.text().await.unwrap();
    assert!(body.contains("metrics.enabled = false"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The recorder keeps every histogram observation until its upkeep folds them into buckets;
/// with nothing scraping `/metrics`, a thread must do that, or memory grows with every call
/// (the soak run found about 170 bytes per model step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_are_folded_without_a_scrape() {
    let server = TestServer::start().await;
    // Once a call is answered, the server has installed its recorder.
    let mut sessions = server.sessions().await;
    let _ = within(
        "a call",
        sessions.get_session(contextd::api::v1::GetSessionRequest {
            session_id: "nobody".into(),
        }),
    )
    .await;
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    assert!(
        names.iter().any(|name| name == "metrics-upkeep"),
        "no upkeep thread among {names:?}"
    );
}
