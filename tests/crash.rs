//! Crash safety of the durable stores, tested on real processes: contextd is killed with
//! SIGKILL while turns are running, and what clients were told must be what is stored.
//! Also the database faults: unusable at start (clear error, non-zero exit), lost while
//! running (UNAVAILABLE, no panic), and back again (the service recovers).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::backend::{Backend, TempDir};
use common::daemon::*;
use common::postgres::Cluster;
use common::*;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::{
    CreateSessionRequest, FinishReason, InteractResponse, Message, MessageRole, SessionState,
};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;

/// Turns acknowledged to clients: (session, turn id).
type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// Runs turns on `session` until one fails (the server died) or `stop` is set; records each
/// acknowledged turn. Every third turn is slow, so some are always in flight.
fn worker(
    mut client: InteractServiceClient<Channel>,
    session: String,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let mut failures = 0;
        for i in 0.. {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let message = if i % 3 == 0 {
                format!("/delay 20 slow turn {i}")
            } else {
                format!("turn {i}")
            };
            let request = interact_request(&session, &message, None);
            match tokio::time::timeout(WAIT, client.interact(request)).await {
                Ok(Ok(reply)) => acked
                    .lock()
                    .unwrap()
                    .push((session.clone(), reply.into_inner().turn_id)),
                _ => {
                    failures += 1;
                    break;
                }
            }
        }
        failures
    })
}

/// Pauses a turn of a new session `id` on a client-side tool call; returns the response.
async fn pause_on_tool(
    sessions: &mut SessionServiceClient<Channel>,
    interact: &mut InteractServiceClient<Channel>,
    id: &str,
) -> InteractResponse {
    create_session(
        sessions,
        CreateSessionRequest {
            session_id: id.into(),
            tools: vec![tool_def("get_weather", "Weather for a city.")],
            ..Default::default()
        },
    )
    .await;
    let reply = say(interact, id, "/call get_weather {\"city\": \"Lima\"}", None).await;
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls as i32);
    reply
}

/// Every turn in `messages` is whole: contiguous, from a user message to an assistant one.
fn assert_no_half_turns(session: &str, messages: &[Message]) {
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.index, i as u64, "{session}: indexes have no gaps");
    }
    let mut seen = HashSet::new();
    for turn in messages.chunk_by(|a, b| a.turn_id == b.turn_id) {
        let id = &turn[0].turn_id;
        assert!(seen.insert(id.clone()), "{session}: turn {id} is split");
        assert_eq!(
            turn[0].role,
            MessageRole::User as i32,
            "{session}: turn {id}"
        );
        assert_eq!(
            turn.last().unwrap().role,
            MessageRole::Assistant as i32,
            "{session}: turn {id} is half there (no reply)"
        );
    }
}

/// Checks after the crash: every acknowledged turn stored, no half turn, and the paused
/// session still paused and completable.
async fn check_after_crash(
    addr: std::net::SocketAddr,
    acked: &Acked,
    sessions_ids: &[String],
    paused: &InteractResponse,
) {
    let channel = connect(addr).await;
    let mut sessions = SessionServiceClient::new(channel.clone());
    let mut interact = InteractServiceClient::new(channel);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "the load ran: {} turns acknowledged",
        acked.len()
    );
    for id in sessions_ids {
        let messages = all_messages(&mut sessions, id, 200).await;
        assert_no_half_turns(id, &messages);
        let stored: HashSet<&str> = messages.iter().map(|m| m.turn_id.as_str()).collect();
        for (session, turn) in acked.iter().filter(|(s, _)| s == id) {
            assert!(
                stored.contains(turn.as_str()),
                "{session}: acknowledged turn {turn} was lost"
            );
        }
    }
    let session = get_session(&mut sessions, "paused").await;
    assert_eq!(session.state, SessionState::AwaitingToolResults as i32);
    assert_eq!(session.pending_tool_calls.len(), 1);
    assert_eq!(
        session.pending_tool_calls[0].tool_call_id,
        paused.tool_calls[0].tool_call_id
    );
    let done = send_results(
        &mut interact,
        "paused",
        vec![result(&paused.tool_calls[0].tool_call_id, "warm")],
    )
    .await
    .expect("the pending call can still be answered");
    assert_eq!(done.finish_reason, FinishReason::Stop as i32);
    assert_eq!(done.turn_id, paused.turn_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_mid_turn_keeps_every_acknowledged_turn() {
    let backend = Backend::sqlite();
    let mut daemon = Daemon::start_with(&backend.args());
    let channel = connect(daemon.addr).await;
    let mut sessions = SessionServiceClient::new(channel.clone());
    let mut interact = InteractServiceClient::new(channel.clone());
    let paused = pause_on_tool(&mut sessions, &mut interact, "paused").await;

    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 32 sessions at once, so the kill lands among group commits of many turns; the first
    // four have two clients each, so turns also queue behind each other on one session.
    let ids: Vec<String> = (0..32).map(|i| format!("crash-{i}")).collect();
    for id in &ids {
        // Created first, so every one exists for the checks whether or not a turn of it
        // was acknowledged before the kill.
        create_session(
            &mut sessions,
            CreateSessionRequest {
                session_id: id.clone(),
                ..Default::default()
            },
        )
        .await;
    }
    let mut workers = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for _ in 0..if i < 4 { 2 } else { 1 } {
            let client = InteractServiceClient::new(connect(daemon.addr).await);
            workers.push(worker(client, id.clone(), acked.clone(), stop.clone()));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.child.kill().expect("SIGKILL contextd");
    daemon.child.wait().expect("reap contextd");
    for w in workers {
        w.await.expect("worker");
    }

    let restarted = Daemon::start_with(&backend.args());
    check_after_crash(restarted.addr, &acked, &ids, &paused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_killed_mid_turn_while_another_keeps_serving() {
    let backend = Backend::postgres();
    let mut a = Daemon::start_with(&backend.args());
    let b = Daemon::start_with(&backend.args());
    let channel = connect(a.addr).await;
    let mut sessions = SessionServiceClient::new(channel.clone());
    let mut interact = InteractServiceClient::new(channel);
    let paused = pause_on_tool(&mut sessions, &mut interact, "paused").await;

    let acked: Acked = Arc::default();
    let stop_a = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_b = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ids: Vec<String> = (0..4).map(|i| format!("crash-{i}")).collect();
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for id in &ids {
        let client = InteractServiceClient::new(connect(a.addr).await);
        on_a.push(worker(client, id.clone(), acked.clone(), stop_a.clone()));
        let client = InteractServiceClient::new(connect(b.addr).await);
        on_b.push(worker(client, id.clone(), acked.clone(), stop_b.clone()));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.child.kill().expect("SIGKILL replica a");
    a.child.wait().expect("reap replica a");
    for w in on_a {
        w.await.expect("worker on a");
    }
    // Replica b keeps serving the same sessions, including those a held a turn lease on.
    let before = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_b.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in on_b {
        assert_eq!(
            w.await.expect("worker on b"),
            0,
            "no turn failed on the surviving replica"
        );
    }
    assert!(
        acked.lock().unwrap().len() > before + 4,
        "replica b went on serving after a died"
    );
    check_after_crash(b.addr, &acked, &ids, &paused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_mid_run_gives_unavailable_then_recovers() {
    let cluster = Cluster::start();
    let url = cluster.create_database();
    let mut config = test_config();
    config.store = url;
    config.storage.connect_timeout_ms = 1000;
    let server = TestServer::start_with(config).await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    say(&mut interact, "steady", "before", None).await;

    cluster.stop_server();
    let status = expect_code(
        within(
            "Interact while the database is down",
            interact.interact(interact_request("steady", "during", None)),
        )
        .await,
        Code::Unavailable,
    );
    assert!(
        status.message().contains("unavailable"),
        "the message says what failed: {}",
        status.message()
    );
    expect_code(
        within(
            "GetSession while the database is down",
            sessions.get_session(contextd::api::v1::GetSessionRequest {
                session_id: "steady".into(),
            }),
        )
        .await,
        Code::Unavailable,
    );

    cluster.start_server();
    eventually("the service recovers with the database", || {
        let mut interact = interact.clone();
        async move {
            interact
                .interact(interact_request("steady", "after", None))
                .await
                .is_ok()
        }
    })
    .await;
    let messages = all_messages(&mut sessions, "steady", 10).await;
    assert_no_half_turns("steady", &messages);
    assert_eq!(messages[0].content, "before");
    assert_eq!(messages.last().unwrap().role, MessageRole::Assistant as i32);
}

#[test]
fn unreachable_database_at_start_exits_with_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:secret@127.0.0.1:{port}/contextd");
    let (status, _, stderr) = run_to_exit(&["serve", "--listen", "127.0.0.1:0", "--store", &url]);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "cannot connect to the database at postgres://app@127.0.0.1:{port}/contextd"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password is not printed: {stderr}"
    );
}

#[test]
fn corrupt_sqlite_file_is_refused_by_name() {
    let dir = TempDir::new("corrupt");
    let file = dir.path().join("contextd.db");
    std::fs::write(&file, vec![0x42u8; 8192]).unwrap();
    let (status, _, stderr) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "sqlite",
        "--data-dir",
        &dir.path().display().to_string(),
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "{} is not a usable SQLite database",
            file.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        vec![0x42u8; 8192],
        "the file is left as it was"
    );
}

#[test]
fn second_process_on_a_data_directory_is_refused() {
    let backend = Backend::sqlite();
    let _first = Daemon::start_with(&backend.args());
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    let extra = backend.args();
    args.extend(extra.iter().map(String::as_str));
    let (status, _, stderr) = run_to_exit(&args);
    assert!(!status.success());
    assert!(stderr.contains("is in use by another contextd"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_store_is_sqlite_in_the_data_directory() {
    let dir = TempDir::new("default");
    let mut command = contextd_command(&["serve", "--listen", "127.0.0.1:0"]);
    command
        .env_remove("CONTEXTD_STORE")
        .env_remove("CONTEXTD_DATA_DIR")
        .current_dir(dir.path());
    let mut daemon = Daemon::spawn(command);
    assert!(
        dir.path()
            .join("contextd-data")
            .join("contextd.db")
            .exists(),
        "./contextd-data/contextd.db is created on first start; stderr: {}",
        daemon.stderr()
    );
    // Served, and (once it answers) ready for signals.
    let mut interact = InteractServiceClient::new(connect(daemon.addr).await);
    say(&mut interact, "kept", "hello", None).await;
    daemon.signal("TERM");
    assert!(daemon.wait().success());
}
