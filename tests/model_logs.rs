//! API keys never reach the logs: the `contextd` binary, configured from a TOML file with a
//! backend whose key comes from the environment, runs a good turn, a retried one and a
//! refused one against a fake provider at debug log level; its whole log output (stderr) and
//! every status message are searched for the key.

mod common;
mod fake_providers;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use contextd::api::v1::CreateSessionRequest;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use fake_providers::*;
use tonic::Code;

const BINARY: &str = env!("CARGO_BIN_EXE_contextd");
/// Arguments of every launch (a store flag would join them here).
const SERVE_ARGS: &[&str] = &["serve", "--listen", "127.0.0.1:0", "--store", "memory"];
const KEY_VARIABLE: &str = "CONTEXTD_TEST_PROVIDER_KEY";
const KEY: &str = "sk-proj-T3stK3y-9c41e0d2-must-not-leak";
const PROCESS_WAIT: Duration = Duration::from_secs(30);

struct Daemon {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(config_file: &std::path::Path) -> Self {
        let mut child = Command::new(BINARY)
            .args(SERVE_ARGS)
            .arg("--config")
            .arg(config_file)
            .env_remove("CONTEXTD_LISTEN")
            .env(KEY_VARIABLE, KEY)
            .env("CONTEXTD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn contextd");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr lock")
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(PROCESS_WAIT) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                panic!(
                    "no startup line ({other:?}); stderr:\n{}",
                    stderr.lock().expect("stderr lock")
                );
            }
        };
        let addr = line
            .strip_prefix("contextd listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
        Self {
            child,
            addr,
            stderr,
        }
    }

    /// Stops the process (SIGTERM) and returns everything it logged.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + PROCESS_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Let the reader thread take the last bytes.
        std::thread::sleep(Duration::from_millis(200));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_logs_or_statuses() {
    let fake = FakeProvider::start().await;
    fake.script([
        Reply::sse(openai_text(&["Hello"], (5, 1))),
        Reply::status(503, r#"{"error":{"message":"busy","type":"server_error"}}"#)
            .with_header("retry-after", "0"),
        Reply::sse(openai_text(&["Again"], (5, 1))),
        Reply::status(401, &openai_invalid_key(KEY)),
        Reply::sse(vec![openai_stream_error(&format!(
            "internal error while using key {KEY}"
        ))]),
    ]);
    let config_file =
        std::env::temp_dir().join(format!("contextd-model-logs-{}.toml", std::process::id()));
    std::fs::write(
        &config_file,
        format!(
            r#"
[[backends]]
name = "local"
kind = "openai"
base_url = "{}"
api_key_env = "{KEY_VARIABLE}"
context_window = 8192
retry_base_ms = 10
"#,
            fake.base_url()
        ),
    )
    .expect("write config");
    let daemon = Daemon::start(&config_file);
    let channel = connect(daemon.addr).await;
    let mut sessions = SessionServiceClient::new(channel.clone());
    let mut interact = InteractServiceClient::new(channel);
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "s".into(),
            model: "local/llama3.2".into(),
            ..Default::default()
        },
    )
    .await;

    assert_eq!(say(&mut interact, "s", "Hi", None).await.response, "Hello");
    assert_eq!(say(&mut interact, "s", "Hi", None).await.response, "Again");
    let refused = expect_code(
        within(
            "Interact",
            interact.interact(interact_request("s", "Hi", None)),
        )
        .await,
        Code::Unavailable,
    );
    assert!(refused.message().contains("local"), "{}", refused.message());
    assert!(
        refused
            .message()
            .contains("rejected contextd's credentials"),
        "{}",
        refused.message()
    );
    assert!(
        !refused.message().contains(KEY_VARIABLE),
        "where the key comes from is for the log only: {}",
        refused.message()
    );
    let failed = expect_code(
        within(
            "Interact",
            interact.interact(interact_request("s", "Hi", None)),
        )
        .await,
        Code::Unavailable,
    );
    for status in [&refused, &failed] {
        assert!(!status.message().contains(KEY), "{}", status.message());
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 5);
    assert!(
        requests
            .iter()
            .all(|r| r.headers["authorization"] == format!("Bearer {KEY}")),
        "the key is sent to the provider"
    );

    let logs = daemon.stop();
    let _ = std::fs::remove_file(&config_file);
    assert!(
        logs.contains("model backend configured"),
        "debug logs were captured:\n{logs}"
    );
    assert!(logs.contains("retrying"), "the retry was logged:\n{logs}");
    assert!(
        logs.contains(KEY_VARIABLE),
        "the log names where the refused key comes from:\n{logs}"
    );
    assert!(!logs.contains(KEY), "the key leaked into the logs:\n{logs}");
    assert!(!logs.contains("T3stK3y"), "part of the key leaked:\n{logs}");
}
