//! Configuration precedence on the real binary: built-in defaults < the TOML file <
//! `CONTEXTD_*` environment variables < flags, observed through the message size limit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use contextd::api::v1::InteractRequest;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use tonic::Code;

const BINARY: &str = env!("CARGO_BIN_EXE_contextd");

/// A `contextd serve` child process, killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args` and `env`, returning it and its address.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Process, String) {
    let mut command = Command::new(BINARY);
    command
        .arg("serve")
        .args(args)
        .env_remove("CONTEXTD_LISTEN")
        .env_remove("CONTEXTD_CONFIG")
        .env_remove("CONTEXTD_MAX_MESSAGE_BYTES")
        .env("CONTEXTD_STORE", "memory")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn contextd");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the startup line");
    let addr = line
        .trim()
        .strip_prefix("contextd listening on ")
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
        .to_string();
    (Process(child), addr)
}

/// The status of an Interact with a message of `size` bytes (OK or the error code).
async fn send_message_of(addr: &str, size: usize) -> Code {
    let mut client = InteractServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let request = InteractRequest {
        session_id: format!("size-{size}"),
        message: "x".repeat(size),
        ..Default::default()
    };
    match client.interact(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_then_environment_then_flags() {
    let dir = std::env::temp_dir().join(format!("contextd-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("contextd.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n[limits]\nmax_message_bytes = 10\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    // The file lowers the limit to 10 bytes (and supplies the listen address).
    let (_p, addr) = start(&["--config", file], &[]);
    assert_eq!(send_message_of(&addr, 10).await, Code::Ok);
    assert_eq!(send_message_of(&addr, 15).await, Code::InvalidArgument);

    // The environment beats the file (the file also comes from the environment here).
    let (_p, addr) = start(
        &[],
        &[
            ("CONTEXTD_CONFIG", file),
            ("CONTEXTD_MAX_MESSAGE_BYTES", "20"),
        ],
    );
    assert_eq!(send_message_of(&addr, 15).await, Code::Ok);
    assert_eq!(send_message_of(&addr, 25).await, Code::InvalidArgument);

    // A flag beats the environment.
    let (_p, addr) = start(
        &["--config", file, "--max-message-bytes", "12"],
        &[("CONTEXTD_MAX_MESSAGE_BYTES", "20")],
    );
    assert_eq!(send_message_of(&addr, 12).await, Code::Ok);
    assert_eq!(send_message_of(&addr, 15).await, Code::InvalidArgument);

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_config_file_is_refused_with_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("contextd-badconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "lisen = \"127.0.0.1:0\"\n").unwrap();
    let output = Command::new(BINARY)
        .args(["serve", "--config", file.to_str().unwrap()])
        .env_remove("CONTEXTD_LISTEN")
        .output()
        .expect("run contextd");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("lisen"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
