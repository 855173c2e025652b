//! The `contextd` binary as a process: the startup line, graceful shutdown on SIGTERM and
//! SIGINT (a running turn finishes, open streams end UNAVAILABLE, exit code 0), and startup
//! errors (an impossible port, an address already in use).

mod common;

use common::daemon::*;
use common::*;
use contextd::api::v1::FinishReason;
use contextd::api::v1::converse_response::Event;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_turn_finish_then_exits_zero() {
    let mut daemon = Daemon::start();
    let channel = connect(daemon.addr).await;
    let mut interact = InteractServiceClient::new(channel);
    let mut conversation = Conversation::start(&mut interact).await;
    let opened = conversation.open("graceful").await;
    assert!(opened.session_created);

    conversation.send_message("/delay 200 a b c", None).await;
    let first = conversation.next().await;
    let Some(Event::Started(started)) = first.event else {
        panic!("expected started, got {first:?}");
    };

    daemon.signal("TERM");

    // The running turn completes normally.
    let events = conversation.until_end_of_turn().await;
    let done = converse_completed(&events);
    assert_eq!(done.finish_reason(), FinishReason::Stop, "{done:?}");
    assert_eq!(done.turn_id, started.turn_id);
    assert!(done.response.contains("a b c"), "{}", done.response);
    assert_eq!(converse_text(&events), done.response);

    // Then the stream ends with UNAVAILABLE.
    match conversation.next_raw().await {
        Err(status) => assert_eq!(
            status.code(),
            Code::Unavailable,
            "the stream ends UNAVAILABLE: {}",
            status.message()
        ),
        other => panic!("expected the stream to end with UNAVAILABLE, got {other:?}"),
    }

    let status = daemon.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "exit code after SIGTERM; stderr:\n{}",
        daemon.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_zero() {
    let mut daemon = Daemon::start();
    let mut health = tonic_health::pb::health_client::HealthClient::new(connect(daemon.addr).await);
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
    // A plain turn works on the real binary too.
    let mut interact = InteractServiceClient::new(connect(daemon.addr).await);
    let reply = say(&mut interact, "bin", "hello binary", None).await;
    assert_eq!(reply.response, "You said 'hello binary'.");

    daemon.signal("INT");
    let status = daemon.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "exit code after SIGINT; stderr:\n{}",
        daemon.stderr()
    );
}

#[test]
fn impossible_port_exits_two_with_a_suggestion() {
    let (status, _stdout, stderr) = run_to_exit(&["serve", "--listen", "127.0.0.1:619009"]);
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("invalid port 619009: TCP ports are 1-65535 (did you mean 61900?)"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn address_in_use_fails_and_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let (status, stdout, stderr) = run_to_exit(&["serve", "--listen", &addr]);
    assert!(!status.success(), "contextd must not start on {addr}");
    assert_ne!(status.code(), Some(0));
    assert!(stderr.contains(&addr), "stderr names {addr}:\n{stderr}");
    assert!(
        !stdout.contains("listening"),
        "no startup line when the bind fails: {stdout}"
    );
    drop(taken);
}
