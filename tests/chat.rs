//! `contextd chat` as a process against a live server: streamed replies, a client-side tool
//! answered at the prompt, the slash commands, and the message when no server answers.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_contextd");

/// Runs `contextd chat ARGS` with `input` on stdin and waits for it to exit.
async fn run_chat(args: Vec<String>, input: &'static str) -> Output {
    let task = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BINARY)
            .arg("chat")
            .args(&args)
            .env_remove("CONTEXTD_TARGET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn contextd chat");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait for contextd chat")
    });
    within("contextd chat to exit", task).await.expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_answers_tools_and_commands() {
    let server = TestServer::start().await;
    let args = vec![
        "--target".to_string(),
        server.addr.to_string(),
        "--session".to_string(),
        "chat-test".to_string(),
        "--tool".to_string(),
        "get_weather".to_string(),
    ];
    let input = "Hello there\n\
/call get_weather {\"city\": \"Paris\"}\n\
sunny and 21C\n\
/call context_set {\"patch\": {\"user_id\": \"john_doe\"}}\n\
/context\n\
/history\n\
/preview\n\
/quit\n\
never sent\n";
    let output = run_chat(args, input).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        !stdout.contains('\x1b'),
        "no colours when stdout is a pipe:\n{stdout}"
    );
    for expected in [
        "new session chat-test · model echo",
        "assistant: You said 'Hello there'.",
        "tool call get_weather {\"city\":\"Paris\"}",
        "result of get_weather (",
        "assistant: Tool get_weather returned: sunny and 21C",
        "tool context_set returned:",
        "\"user_id\": \"john_doe\"",
        "#0 user: Hello there",
        "#1 assistant: You said 'Hello there'.",
        "calls get_weather {\"city\":\"Paris\"}",
        "tool get_weather (",
        "context (",
        "of 8192 tokens (1024 kept for the reply)",
        "model echo",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("never sent"), "{stdout}");

    // What the chat did is stored: two user turns and the tool round trip.
    let mut sessions = server.sessions().await;
    let session = get_session(&mut sessions, "chat-test").await;
    assert_eq!(json_of(&session.context), json!({"user_id": "john_doe"}));
    assert_eq!(session.tools.len(), 1);
    let messages = all_messages(&mut sessions, "chat-test", 0).await;
    assert!(
        messages.iter().any(|m| m.content == "sunny and 21C"),
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_without_a_server_says_how_to_start_one() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let output = run_chat(vec!["--target".into(), addr.to_string()], "hello\n").await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        format!("no contextd at {addr} — start one with `contextd serve`")
    );
}
