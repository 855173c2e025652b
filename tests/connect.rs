//! The Connect protocol on the gRPC paths, byte by byte as the protocol document states it:
//! unary JSON and protobuf, GET for side-effect-free RPCs, enveloped server streams with their
//! end-of-stream message, Connect errors with their HTTP statuses, `Connect-Timeout-Ms` and
//! `Connect-Protocol-Version`. (Generated Connect clients — connect-node, `buf curl` — run in
//! the TypeScript client's suite.)

mod common;

use common::*;
use contextd::api::v1::stream_response_response::Event;
use contextd::api::v1::{InteractResponse, StreamResponseResponse};
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

const INTERACT: &str = "/contextd.v1.InteractService/Interact";
const STREAM: &str = "/contextd.v1.InteractService/StreamResponse";
const GET_SESSION: &str = "/contextd.v1.SessionService/GetSession";
const CREATE: &str = "/contextd.v1.SessionService/CreateSession";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("HTTP client")
}

/// A unary JSON call: status, content type and body.
async fn post_json(
    server: &TestServer,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, String, Value) {
    let mut request = client()
        .post(format!("{}{path}", server.url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if !headers
        .iter()
        .any(|(name, _)| *name == "connect-protocol-version")
    {
        request = request.header("connect-protocol-version", "1");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = within("a Connect call", request.send()).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, content_type, json)
}

/// Splits a Connect stream body into its message envelopes and its end-of-stream JSON.
fn envelopes(mut body: &[u8]) -> (Vec<Vec<u8>>, Value) {
    let mut messages = Vec::new();
    let mut end = None;
    while !body.is_empty() {
        let flags = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = body[5..5 + len].to_vec();
        body = &body[5 + len..];
        assert!(end.is_none(), "an envelope after the end of the stream");
        if flags & 0x02 != 0 {
            end = Some(serde_json::from_slice(&payload).expect("end-of-stream JSON"));
        } else {
            assert_eq!(flags, 0, "uncompressed messages");
            messages.push(payload);
        }
    }
    (messages, end.expect("an end-of-stream envelope"))
}

fn envelope(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A streaming call in `content_type` with `payload` enveloped.
async fn post_stream(
    server: &TestServer,
    path: &str,
    content_type: &str,
    payload: &[u8],
) -> (StatusCode, String, Vec<Vec<u8>>, Value) {
    let response = within(
        "a Connect stream",
        client()
            .post(format!("{}{path}", server.url()))
            .header("content-type", content_type)
            .header("connect-protocol-version", "1")
            .body(envelope(payload))
            .send(),
    )
    .await
    .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = within("a Connect stream body", response.bytes())
        .await
        .unwrap();
    let (messages, end) = envelopes(&body);
    (status, content_type, messages, end)
}

#[tokio::test]
async fn unary_json_and_proto() {
    let server = TestServer::start().await;
    let (status, content_type, reply) = post_json(
        &server,
        INTERACT,
        json!({"sessionId": "cx", "message": "hello over connect", "context": {"user": "Ann"}}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(content_type, "application/json");
    assert_eq!(reply["sessionId"], "cx");
    assert!(
        reply["response"]
            .as_str()
            .unwrap()
            .contains("hello over connect")
    );
    assert_eq!(reply["updatedContext"], json!({"user": "Ann"}));

    let response = client()
        .post(format!("{}{INTERACT}", server.url()))
        .header("content-type", "application/proto")
        .body(interact_request("cx", "and in protobuf", None).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/proto");
    let reply = InteractResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert!(reply.response.contains("and in protobuf"), "{reply:?}");
}

#[tokio::test]
async fn errors_are_connect_errors_with_the_connect_http_status() {
    let server = TestServer::start().await;
    let (status, content_type, body) =
        post_json(&server, GET_SESSION, json!({"sessionId": "missing"}), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/json");
    assert_eq!(body["code"], "not_found");
    assert!(body["message"].as_str().unwrap().contains("missing"));

    // Validation is the gRPC services' own.
    let (status, _, body) = post_json(
        &server,
        CREATE,
        json!({"sessionId": "bad id with spaces"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_argument");

    // An unknown field is named.
    let (status, _, body) = post_json(&server, GET_SESSION, json!({"sesionId": "x"}), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("sesionId"),
        "{body}"
    );
    // …also as a `google.rpc.BadRequest` detail, in Connect's `{type, value, debug}` form.
    let bad = detail(&body, "google.rpc.BadRequest");
    assert_eq!(bad["debug"]["fieldViolations"][0]["field"], "sesionId");
    let violations = tonic_types::pb::BadRequest::decode(detail_value(bad).as_slice())
        .expect("the value is a BadRequest")
        .field_violations;
    assert_eq!(violations[0].field, "sesionId");

    // Unknown methods, wrong protocol versions, bad deadlines, unary framing of a stream.
    let (status, _, body) =
        post_json(&server, "/contextd.v1.SessionService/Nope", json!({}), &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unimplemented"))
    );
    let (status, _, body) = post_json(
        &server,
        GET_SESSION,
        json!({"sessionId": "x"}),
        &[("connect-protocol-version", "2")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Connect-Protocol-Version")
    );
    let (status, _, body) = post_json(
        &server,
        GET_SESSION,
        json!({"sessionId": "x"}),
        &[("connect-timeout-ms", "soon")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Connect-Timeout-Ms")
    );
    let (status, _, body) = post_json(
        &server,
        STREAM,
        json!({"sessionId": "x", "message": "m"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("application/connect+json")
    );

    // gzip requests are served; other compressions are refused, saying so.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut gzip,
        br#"{"sessionId": "zipped", "message": "packed"}"#,
    )
    .unwrap();
    let response = client()
        .post(format!("{}{INTERACT}", server.url()))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["response"].as_str().unwrap().contains("packed"),
        "{body}"
    );
    let (status, _, body) = post_json(
        &server,
        GET_SESSION,
        json!({"sessionId": "x"}),
        &[("content-encoding", "br")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    assert_eq!(body["code"], "unimplemented");
}

/// The detail of type `name` in a Connect error body; fails the test when there is none.
fn detail<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["details"]
        .as_array()
        .and_then(|details| details.iter().find(|d| d["type"] == name))
        .unwrap_or_else(|| panic!("no {name} detail in {body}"))
}

/// A detail's `value`: base64 without padding, as the Connect protocol sends it.
fn detail_value(detail: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(detail["value"].as_str().expect("a value"))
        .expect("base64 without padding")
}

#[tokio::test]
async fn a_rate_refusal_carries_retry_info() {
    let server = TestServer::start_with(contextd::config::Config {
        limits: contextd::config::Limits {
            tenant_requests_per_second: 1,
            tenant_request_burst: 1,
            ..Default::default()
        },
        ..test_config()
    })
    .await;
    // The first call spends the burst; one of the next ones within the second is refused.
    let mut refused = None;
    for _ in 0..5 {
        let (status, _, body) =
            post_json(&server, GET_SESSION, json!({"sessionId": "x"}), &[]).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(body);
            break;
        }
    }
    let body = refused.expect("a refusal within five calls at one a second");
    assert_eq!(body["code"], "resource_exhausted");
    let retry = detail(&body, "google.rpc.RetryInfo");
    assert!(
        retry["debug"]["retryDelay"]
            .as_str()
            .unwrap()
            .ends_with('s'),
        "{retry}"
    );
    let delay = tonic_types::pb::RetryInfo::decode(detail_value(retry).as_slice())
        .expect("the value is a RetryInfo")
        .retry_delay
        .expect("a delay");
    assert!(delay.seconds > 0 || delay.nanos > 0, "{delay:?}");
}

#[tokio::test]
async fn unary_protobuf_reaches_other_packages_too() {
    let server = TestServer::start().await;
    let check = |service: &str| {
        tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        }
        .encode_to_vec()
    };
    let response = client()
        .post(format!("{}/grpc.health.v1.Health/Check", server.url()))
        .header("content-type", "application/proto")
        .body(check("contextd.v1.InteractService"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reply =
        tonic_health::pb::HealthCheckResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        reply.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let response = client()
        .post(format!("{}/grpc.health.v1.Health/Check", server.url()))
        .header("content-type", "application/proto")
        .body(check("no.such.Service"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    let response = client()
        .post(format!("{}/no.such.Service/Method", server.url()))
        .header("content-type", "application/proto")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unimplemented");
}

#[tokio::test]
async fn a_deadline_that_passes_is_deadline_exceeded() {
    let server = TestServer::start().await;
    // The echo model's `/delay` makes the turn outlive the deadline by far.
    let (status, _, body) = post_json(
        &server,
        INTERACT,
        json!({"sessionId": "late", "message": "/delay 10000 too slow"}),
        &[("connect-timeout-ms", "200")],
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["code"], "deadline_exceeded");
    let (status, _, _) = post_json(&server, GET_SESSION, json!({"sessionId": "late"}), &[]).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the cut-off turn stored nothing"
    );
}

#[tokio::test]
async fn get_serves_side_effect_free_rpcs_only() {
    let server = TestServer::start().await;
    let (status, _, _) = post_json(&server, CREATE, json!({"sessionId": "g1"}), &[]).await;
    assert_eq!(status, StatusCode::OK);

    let url = |path: &str, query: &str| format!("{}{path}?{query}", server.url());
    let message = percent_encoding::utf8_percent_encode(
        r#"{"sessionId":"g1"}"#,
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let response = client()
        .get(url(
            GET_SESSION,
            &format!("connect=v1&encoding=json&message={message}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["session"]["sessionId"], "g1");

    // base64url protobuf.
    use base64::Engine as _;
    let proto = contextd::api::v1::GetSessionRequest {
        session_id: "g1".into(),
    }
    .encode_to_vec();
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(proto);
    let response = client()
        .get(url(
            GET_SESSION,
            &format!("encoding=proto&base64=1&message={encoded}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/proto");

    // ListSessions with no message at all.
    let response = client()
        .get(url(
            "/contextd.v1.SessionService/ListSessions",
            "encoding=json",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Interact changes state: not with GET, and nothing runs.
    let message = percent_encoding::utf8_percent_encode(
        r#"{"sessionId":"g2","message":"x"}"#,
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let response = client()
        .get(url(INTERACT, &format!("encoding=json&message={message}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unimplemented");
    let (status, _, _) = post_json(&server, GET_SESSION, json!({"sessionId": "g2"}), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the GET ran no turn");

    let response = client()
        .get(url(GET_SESSION, "message=%7B%7D"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn server_streams_in_json_and_proto_envelopes() {
    let server = TestServer::start().await;
    let request = json!({"sessionId": "st", "message": "stream me"}).to_string();
    let (status, content_type, messages, end) = post_stream(
        &server,
        STREAM,
        "application/connect+json",
        request.as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/connect+json");
    assert_eq!(end, json!({}));
    let events: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_slice(m).unwrap())
        .collect();
    assert!(events[0].get("started").is_some(), "{events:?}");
    assert!(events.last().unwrap().get("completed").is_some());
    assert!(events.iter().filter(|e| e.get("delta").is_some()).count() > 1);

    let request = stream_request("st", "and in protobuf", None).encode_to_vec();
    let (status, content_type, messages, end) =
        post_stream(&server, STREAM, "application/connect+proto", &request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/connect+proto");
    assert_eq!(end, json!({}));
    let events: Vec<Event> = messages
        .iter()
        .map(|m| {
            StreamResponseResponse::decode(&m[..])
                .unwrap()
                .event
                .unwrap()
        })
        .collect();
    assert!(matches!(events.first(), Some(Event::Started(_))));
    assert!(stream_text(&events).contains("and in protobuf"));
}

#[tokio::test]
async fn stream_failures_end_the_stream_with_an_error() {
    let server = TestServer::start().await;
    // A turn the services refuse (an empty message with nothing to continue).
    for content_type in ["application/connect+json", "application/connect+proto"] {
        let payload = if content_type.ends_with("json") {
            json!({"sessionId": "bad id with spaces", "message": "m"})
                .to_string()
                .into_bytes()
        } else {
            stream_request("bad id with spaces", "m", None).encode_to_vec()
        };
        let (status, _, messages, end) = post_stream(&server, STREAM, content_type, &payload).await;
        assert_eq!(status, StatusCode::OK, "{content_type}");
        assert!(messages.is_empty());
        assert_eq!(
            end["error"]["code"], "invalid_argument",
            "{content_type}: {end}"
        );
    }
    // Stream framing of a unary RPC.
    let (status, _, _, end) = post_stream(
        &server,
        INTERACT,
        "application/connect+json",
        br#"{"sessionId":"x","message":"m"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        end["error"]["message"]
            .as_str()
            .unwrap()
            .contains("application/json"),
        "{end}"
    );
}

#[tokio::test]
async fn a_failure_mid_stream_names_the_request_id() {
    let server = TestServer::start().await;
    let payload = json!({"sessionId": "cx-late", "message": "/delay 3000 cut short"})
        .to_string()
        .into_bytes();
    let response = within(
        "a Connect stream",
        client()
            .post(format!("{}{STREAM}", server.url()))
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .header("connect-timeout-ms", "400")
            .header("x-request-id", "connect-late-1")
            .body(envelope(&payload))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["x-request-id"], "connect-late-1");
    let body = within("a Connect stream body", response.bytes())
        .await
        .unwrap();
    let (messages, end) = envelopes(&body);
    // The turn had started (its first event was sent) before its deadline cut it.
    assert!(!messages.is_empty(), "{end}");
    assert_eq!(end["error"]["code"], "deadline_exceeded", "{end}");
    let details = end["error"]["details"].as_array().expect("details");
    assert!(
        details.iter().any(|d| d["type"] == "google.rpc.RequestInfo"
            && d["debug"]["requestId"] == "connect-late-1"),
        "{end}"
    );
}
