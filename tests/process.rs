//! The `contextd` binary as a process: the startup line, graceful shutdown on SIGTERM and
//! SIGINT (a running turn finishes, open streams end UNAVAILABLE, exit code 0), and startup
//! errors (an impossible port, an address already in use).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use contextd::api::v1::FinishReason;
use contextd::api::v1::converse_response::Event;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

const BINARY: &str = env!("CARGO_BIN_EXE_contextd");

/// How long the process may take to start, exit or print; generous for loaded machines.
const PROCESS_WAIT: Duration = Duration::from_secs(30);

/// A running `contextd` process, killed when dropped if it is still running.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `contextd serve --listen 127.0.0.1:0` and waits for its startup line.
    fn start() -> Self {
        let mut child = contextd_command(&["serve", "--listen", "127.0.0.1:0"])
            .spawn()
            .expect("spawn contextd");
        let stderr = drain(child.stderr.take().expect("stderr"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep reading so the process never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(PROCESS_WAIT) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                panic!(
                    "no startup line from contextd ({other:?}); stderr:\n{}",
                    stderr.lock().expect("stderr lock")
                );
            }
        };
        let addr: SocketAddr = line
            .strip_prefix("contextd listening on ")
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("startup line {line:?} has no address: {e}"));
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_ne!(addr.port(), 0, "the real port is printed");
        Self {
            child,
            addr,
            stderr,
        }
    }

    /// Sends a signal with `kill -<signal> <pid>`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit.
    fn wait(&mut self) -> ExitStatus {
        wait_for_exit(&mut self.child).unwrap_or_else(|| {
            panic!(
                "contextd did not exit within {PROCESS_WAIT:?}; stderr:\n{}",
                self.stderr.lock().expect("stderr lock")
            )
        })
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn contextd_command(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_remove("CONTEXTD_CONFIG")
        .env_remove("CONTEXTD_LISTEN")
        .env("CONTEXTD_STORE", "memory")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Reads a pipe to its end on a thread, collecting the text.
fn drain(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .expect("pipe lock")
                    .push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
    });
    text
}

/// Polls for the child's exit for up to [`PROCESS_WAIT`].
fn wait_for_exit(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + PROCESS_WAIT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs contextd with `args` to its exit; returns the exit status, stdout and stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = contextd_command(args).spawn().expect("spawn contextd");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let Some(status) = wait_for_exit(&mut child) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "contextd {args:?} kept running; stderr:\n{}",
            stderr.lock().expect("stderr lock")
        );
    };
    // The pipes close at exit; give the reader threads a moment to finish.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&stderr) > 1 || Arc::strong_count(&stdout) > 1 {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = stdout.lock().expect("stdout lock").clone();
    let err = stderr.lock().expect("stderr lock").clone();
    (status, out, err)
}

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
