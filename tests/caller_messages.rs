//! What callers are told when something inside fails: a plain message that says what
//! happened and what to do, never the database's address, port, SQL or the OS's error text
//! (those go to the server log). Forced here by stopping the PostgreSQL server under a running
//! contextd.

mod common;

use common::postgres::Cluster;
use common::*;
use contextd::api::v1::{CreateSessionRequest, ListSessionsRequest};
use contextd::config::{Config, StorageConfig};
use tonic::Code;

/// Fails the test when `message` shows any internal detail.
fn assert_plain(message: &str, port: u16) {
    let lowered = message.to_lowercase();
    for internal in [
        "127.0.0.1",
        "localhost",
        &port.to_string(),
        "postgres://",
        "os error",
        "refused",
        "errno",
        "select ",
        "insert ",
        "/tmp",
        "sqlx",
    ] {
        assert!(
            !lowered.contains(internal),
            "the caller's message shows {internal:?}: {message}"
        );
    }
    assert!(!message.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_reported_without_internal_detail() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::start();
    let url = cluster.create_database();
    let server = TestServer::start_with(Config {
        store: url,
        storage: StorageConfig {
            connect_timeout_ms: 1000,
            ..StorageConfig::default()
        },
        ..test_config()
    })
    .await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "before".into(),
            ..Default::default()
        },
    )
    .await;

    cluster.stop_server();

    let status = within(
        "CreateSession on a stopped database",
        sessions.create_session(CreateSessionRequest {
            session_id: "after".into(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("the database is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_plain(status.message(), cluster.port);

    let status = within(
        "ListSessions on a stopped database",
        sessions.list_sessions(ListSessionsRequest::default()),
    )
    .await
    .expect_err("the database is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_plain(status.message(), cluster.port);

    // The JSON doors say the same.
    let response = within(
        "GET /v1/sessions on a stopped database",
        reqwest::Client::new()
            .get(format!("{}/v1/sessions", server.url()))
            .send(),
    )
    .await
    .expect("HTTP request");
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap();
    assert_plain(&body, cluster.port);
}
