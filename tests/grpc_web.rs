//! gRPC-Web and CORS, as a browser sends them: `application/grpc-web(+proto)` and
//! `application/grpc-web-text` over HTTP/1.1 and HTTP/2, statuses in the body's trailer frame,
//! preflights answered for configured origins only. (Generated clients — connect-node's
//! gRPC-Web transport, `buf curl --protocol grpcweb` — run in the TypeScript client's suite.)

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use contextd::api::v1::stream_response_response::Event;
use contextd::api::v1::{
    CreateSessionRequest, CreateSessionResponse, GetSessionRequest, InteractResponse,
    StreamResponseResponse,
};
use prost::Message;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};

const INTERACT: &str = "/contextd.v1.InteractService/Interact";
const STREAM: &str = "/contextd.v1.InteractService/StreamResponse";
const CREATE: &str = "/contextd.v1.SessionService/CreateSession";
const GET: &str = "/contextd.v1.SessionService/GetSession";

/// One HTTP version of the client.
#[derive(Clone, Copy, Debug)]
enum Version {
    Http1,
    Http2,
}

fn client(version: Version) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder().timeout(WAIT);
    match version {
        Version::Http1 => builder.http1_only(),
        Version::Http2 => builder.http2_prior_knowledge(),
    }
    .build()
    .expect("HTTP client")
}

/// One length-prefixed gRPC(-Web) frame.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// What a gRPC-Web response holds: its messages and the trailers of its last frame (or, for
/// a call that fails before any message, the "trailers-only" headers).
#[derive(Debug)]
struct WebReply {
    content_type: String,
    messages: Vec<Vec<u8>>,
    trailers: Vec<(String, String)>,
}

impl WebReply {
    fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Takes the status from `headers` when the body had no trailer frame (trailers-only).
    fn with_headers(mut self, headers: &HeaderMap) -> Self {
        if self.trailers.is_empty() && self.messages.is_empty() {
            for name in ["grpc-status", "grpc-message"] {
                if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                    let value = percent_decode(value);
                    self.trailers.push((name.to_owned(), value));
                }
            }
        }
        self
    }
}

/// `grpc-message` is percent-encoded.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = value
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a (decoded) gRPC-Web body into frames.
fn parse_body(content_type: String, mut body: &[u8]) -> WebReply {
    let mut messages = Vec::new();
    let mut trailers = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated frame header: {body:?}");
        let flag = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 != 0 {
            assert!(trailers.is_empty(), "two trailer frames");
            for line in String::from_utf8(payload.to_vec()).unwrap().split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    trailers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
        } else {
            assert!(trailers.is_empty(), "a message after the trailers");
            messages.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    WebReply {
        content_type,
        messages,
        trailers,
    }
}

/// Sends one gRPC-Web call of `request` in `content_type` (the `-text` types base64-encode
/// the body both ways).
async fn call(
    server: &TestServer,
    version: Version,
    content_type: &str,
    path: &str,
    request: &impl Message,
) -> WebReply {
    let text = content_type.starts_with("application/grpc-web-text");
    let mut body = frame(0, &request.encode_to_vec());
    if text {
        body = STANDARD.encode(&body).into_bytes();
    }
    let response = within(
        "a gRPC-Web call",
        client(version)
            .post(format!("{}{path}", server.url()))
            .header("content-type", content_type)
            .header("x-grpc-web", "1")
            // As browsers' gRPC-Web clients do: the text types are asked for by `accept`.
            .header("accept", content_type)
            .body(body)
            .send(),
    )
    .await
    .expect("gRPC-Web request");
    assert_eq!(response.status(), StatusCode::OK, "{path} over {version:?}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let headers = response.headers().clone();
    let bytes = within("a gRPC-Web body", response.bytes())
        .await
        .expect("gRPC-Web body");
    let bytes = if text {
        // Each frame may be its own base64 chunk, with its own padding.
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let mut decoded = Vec::new();
        for chunk in text.split_inclusive('=').filter(|c| !c.trim().is_empty()) {
            let chunk = chunk.trim_start_matches('=');
            if chunk.is_empty() {
                continue;
            }
            let padded = format!("{chunk}{}", "=".repeat((4 - chunk.len() % 4) % 4));
            decoded.extend(STANDARD.decode(padded).expect("base64 body"));
        }
        decoded
    } else {
        bytes.to_vec()
    };
    parse_body(content_type, &bytes).with_headers(&headers)
}

#[tokio::test]
async fn unary_and_streaming_calls_in_every_grpc_web_content_type_over_http1_and_http2() {
    let server = TestServer::start().await;
    let cases = [
        ("application/grpc-web", "application/grpc-web+proto"),
        ("application/grpc-web+proto", "application/grpc-web+proto"),
        (
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ),
        (
            "application/grpc-web-text+proto",
            "application/grpc-web-text+proto",
        ),
    ];
    for version in [Version::Http1, Version::Http2] {
        for (sent, answered) in cases {
            let sid = format!("web-{version:?}-{}", sent.replace(['/', '+'], "-"));
            let reply = call(
                &server,
                version,
                sent,
                INTERACT,
                &interact_request(&sid, "hello from a page", None),
            )
            .await;
            assert_eq!(reply.content_type, answered, "{sent} over {version:?}");
            assert_eq!(reply.trailer("grpc-status"), Some("0"), "{reply:?}");
            assert_eq!(reply.messages.len(), 1);
            let response = InteractResponse::decode(&reply.messages[0][..]).unwrap();
            assert_eq!(response.session_id, sid);
            assert!(
                response.response.contains("hello from a page"),
                "{response:?}"
            );

            let reply = call(
                &server,
                version,
                sent,
                STREAM,
                &stream_request(&sid, "stream it back", None),
            )
            .await;
            assert_eq!(reply.trailer("grpc-status"), Some("0"), "{reply:?}");
            let events: Vec<Event> = reply
                .messages
                .iter()
                .map(|m| {
                    StreamResponseResponse::decode(&m[..])
                        .unwrap()
                        .event
                        .unwrap()
                })
                .collect();
            assert!(
                matches!(events.first(), Some(Event::Started(_))),
                "{events:?}"
            );
            assert!(
                matches!(events.last(), Some(Event::Completed(_))),
                "{events:?}"
            );
            assert!(
                events
                    .iter()
                    .filter(|e| matches!(e, Event::Delta(_)))
                    .count()
                    > 1,
                "the reply is streamed in several deltas: {events:?}"
            );
            assert!(stream_text(&events).contains("stream it back"));
        }
    }
}

#[tokio::test]
async fn errors_are_trailers_in_the_body() {
    let server = TestServer::start().await;
    for version in [Version::Http1, Version::Http2] {
        let reply = call(
            &server,
            version,
            "application/grpc-web+proto",
            GET,
            &GetSessionRequest {
                session_id: "no-such-session".into(),
            },
        )
        .await;
        assert!(reply.messages.is_empty(), "{reply:?}");
        assert_eq!(reply.trailer("grpc-status"), Some("5"), "{reply:?}");
        assert!(
            reply
                .trailer("grpc-message")
                .is_some_and(|m| m.contains("no-such-session")),
            "{reply:?}"
        );

        // A request the services refuse: INVALID_ARGUMENT, with a message saying what to fix.
        let reply = call(
            &server,
            version,
            "application/grpc-web",
            CREATE,
            &CreateSessionRequest {
                session_id: "bad id with spaces".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(reply.trailer("grpc-status"), Some("3"), "{reply:?}");
    }

    // A created session reads back over gRPC-Web.
    let reply = call(
        &server,
        Version::Http1,
        "application/grpc-web",
        CREATE,
        &CreateSessionRequest {
            session_id: "web-created".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(reply.trailer("grpc-status"), Some("0"), "{reply:?}");
    let created = CreateSessionResponse::decode(&reply.messages[0][..]).unwrap();
    assert_eq!(created.session.unwrap().session_id, "web-created");
}

#[tokio::test]
async fn a_grpc_web_call_that_is_not_a_post_is_refused() {
    let server = TestServer::start().await;
    let response = client(Version::Http1)
        .get(format!("{}{INTERACT}", server.url()))
        .header("content-type", "application/grpc-web")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// A preflight for a gRPC-Web call from `origin`.
async fn preflight(server: &TestServer, origin: &str) -> (StatusCode, HeaderMap) {
    let response = client(Version::Http1)
        .request(
            reqwest::Method::OPTIONS,
            format!("{}{INTERACT}", server.url()),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,grpc-timeout,connect-protocol-version",
        )
        .send()
        .await
        .unwrap();
    (response.status(), response.headers().clone())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let server = TestServer::start().await;
    let (_, headers) = preflight(&server, "https://app.example.com").await;
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "{headers:?}"
    );
    let response = client(Version::Http1)
        .get(format!("{}/health", server.url()))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn configured_origins_get_preflights_and_readable_statuses() {
    let mut config = test_config();
    config.http.cors_origins = vec!["https://app.example.com".into()];
    let server = TestServer::start_with(config).await;

    let (status, headers) = preflight(&server, "https://app.example.com").await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(&headers, "access-control-allow-methods").contains("POST"));
    let allowed = header(&headers, "access-control-allow-headers");
    for name in [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "connect-protocol-version",
    ] {
        assert!(allowed.contains(name), "{name} in {allowed}");
    }

    // Another origin gets no grant.
    let (_, headers) = preflight(&server, "https://evil.example.net").await;
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "{headers:?}"
    );

    // The call itself: the page may read the status headers.
    let response = client(Version::Http1)
        .post(format!("{}{INTERACT}", server.url()))
        .header("origin", "https://app.example.com")
        .header("content-type", "application/grpc-web+proto")
        .body(frame(
            0,
            &interact_request("cors", "hi", None).encode_to_vec(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        "https://app.example.com"
    );
    let exposed = header(response.headers(), "access-control-expose-headers").to_owned();
    for name in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
    ] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    let content_type = header(response.headers(), "content-type").to_owned();
    let body = response.bytes().await.unwrap();
    let reply = parse_body(content_type, &body);
    assert_eq!(reply.trailer("grpc-status"), Some("0"), "{reply:?}");
}

#[tokio::test]
async fn a_wildcard_allows_every_origin() {
    let mut config = test_config();
    config.http.cors_origins = vec!["*".into()];
    let server = TestServer::start_with(config).await;
    let (status, headers) = preflight(&server, "http://localhost:5173").await;
    assert!(status.is_success(), "{status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");
}

#[test]
fn origins_are_checked_when_the_configuration_is_read() {
    let check = |origins: &[&str]| {
        let mut config = test_config();
        config.http.cors_origins = origins.iter().map(|o| o.to_string()).collect();
        config.validate()
    };
    assert!(check(&[]).is_ok());
    assert!(check(&["*"]).is_ok());
    assert!(check(&["https://app.example.com", "http://localhost:5173"]).is_ok());
    for bad in [
        &["https://app.example.com/"][..],
        &["app.example.com"],
        &["*", "https://app.example.com"],
        &["https://app.example.com/path"],
    ] {
        let error = check(bad).unwrap_err().to_string();
        assert!(error.contains("http.cors_origins"), "{error}");
    }
}
