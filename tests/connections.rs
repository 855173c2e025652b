//! Connection hygiene: silent connections are closed after the handshake timeout and do not
//! lock real clients out, connections beyond `limits.max_connections` are refused, and idle
//! connections are closed while a quiet Converse stream (kept alive by pings) lives on.

mod common;

use std::time::Duration;

use common::{Conversation, TestServer, test_config, within};
use contextd::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits for the server to close `stream` (end of file or an error).
async fn closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let _ = within(
        "the server to close the connection",
        stream.read_to_end(&mut rest),
    )
    .await;
}

fn config(change: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config();
    change(&mut config);
    config
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let server = TestServer::start_with(config(|c| c.limits.handshake_timeout_ms = 300)).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Nothing is sent: the server closes it (bounded by WAIT, not timed more tightly).
    closed(&mut silent).await;
    // A connection that names its protocol in time is served.
    let mut health = server.health().await;
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health over a prompt connection");
    assert!(server.stop().await);
}

#[tokio::test]
async fn five_hundred_silent_connections_do_not_lock_out_a_real_client() {
    // The test process holds both ends of every connection.
    contextd::server::connections::raise_open_files_limit();
    let server = TestServer::start().await;
    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let mut interact = server.interact().await;
    let reply = common::say(&mut interact, "beside-the-silent", "hello", None).await;
    assert!(!reply.response.is_empty());
    drop(silent);
    assert!(server.stop().await);
}

#[tokio::test]
async fn connections_beyond_max_connections_are_told_why_and_closed() {
    let server = TestServer::start_with(config(|c| c.limits.max_connections = 2)).await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let second = TcpStream::connect(server.addr).await.unwrap();
    // Both places are taken (by connections still in their handshake): the third is closed
    // without waiting for the handshake timeout (10 s by default, well past this wait).
    // It is told why in its own protocol: HTTP/1 gets a 503 with Retry-After …
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the connection beyond the limit was kept open"
    );
    let reply = String::from_utf8_lossy(&rest);
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    assert!(reply.contains("retry-after: 1"), "{reply}");
    assert!(reply.contains("limits.max_connections"), "{reply}");
    // … and gRPC (HTTP/2) a GOAWAY (ENHANCE_YOUR_CALM), which gRPC clients report as
    // RESOURCE_EXHAUSTED with the reason.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect_lazy();
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect_err("a connection beyond the limit is refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        format!("{status:?}").contains("limits.max_connections"),
        "{status:?}"
    );
    // A silent connection beyond the limit is closed within the answer's time.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    closed(&mut silent).await;
    // Once the places are free again, a real client is served.
    drop(first);
    drop(second);
    common::eventually("a real client to be served again", || async {
        match tonic::transport::Endpoint::from_shared(server.url())
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(server.stop().await);
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_a_quiet_converse_stream_lives_on() {
    let server = TestServer::start_with(config(|c| {
        c.limits.idle_connection_timeout_ms = 300;
        c.limits.keepalive_interval_ms = 100;
        c.limits.keepalive_timeout_ms = 10_000;
    }))
    .await;

    // A Converse stream on its own connection, opened and then left quiet.
    let mut interact = server.interact().await;
    let mut conversation = Conversation::start(&mut interact).await;
    conversation.open("quiet-stream").await;

    // An HTTP/2 connection that makes one call and then sits idle is closed by the server.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("HTTP/2 handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::get(format!("{}/v1/models", server.url()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("a call");
    drop(response);
    within("the idle connection to be closed", driver)
        .await
        .expect("connection task")
        .ok();

    // The quiet stream has outlived the idle timeout and still answers.
    conversation.send_message("still there?", None).await;
    let events = within("the turn", conversation.until_end_of_turn()).await;
    assert!(!common::converse_text(&events).is_empty());
    assert!(server.stop().await);
}
