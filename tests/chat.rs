//! `contextd chat` as a process against a live server: streamed replies, a client-side tool
//! answered at the prompt (or abandoned with Ctrl-C), the slash commands, and the message when
//! no server answers.

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

/// `contextd chat` in a real terminal: a tmux session of its own (own server socket), driven
/// with `send-keys` and read with `capture-pane`. Every wait is for text to appear, never for
/// a length of time.
struct Terminal {
    socket: String,
}

impl Terminal {
    /// Starts `contextd chat` in a new terminal; when it exits, the terminal shows
    /// `exited <status>` on a line of its own.
    fn start(addr: &str, session: &str) -> Self {
        Self::start_with(addr, session, "")
    }

    /// [`Terminal::start`] with more arguments for `contextd chat`.
    fn start_with(addr: &str, session: &str, extra: &str) -> Self {
        let socket = format!("contextd-chat-{}", uuid::Uuid::new_v4().simple());
        let command = format!(
            "env NO_COLOR=1 {BINARY} chat --target {addr} --session {session} {extra}; echo \"exited $?\"; sleep 600"
        );
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "50",
                &command,
            ])
            .env_remove("CONTEXTD_TARGET")
            .status()
            .expect("tmux runs (CI installs it: apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        Self { socket }
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the screen satisfies `done`, and returns it.
    async fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waited for {what}; the screen is:\n{screen}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Waits for the `n`th prompt.
    async fn prompts(&self, n: usize) -> String {
        self.wait_for(&format!("prompt {n}"), |s| s.matches("you>").count() >= n)
            .await
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_a_terminal_ctrl_c_clears_the_line_and_twice_quits() {
    let server = TestServer::start().await;
    let term = Terminal::start(&server.addr.to_string(), "tty-ctrl-c");
    term.prompts(1).await;
    term.keys(&["half typed"]);
    term.wait_for("the typed text", |s| s.contains("you> half typed"))
        .await;
    term.keys(&["C-c"]);
    term.wait_for("the quit hint", |s| {
        s.contains("(Ctrl-C again or Ctrl-D to quit)")
    })
    .await;
    term.prompts(2).await;
    term.keys(&["hello", "Enter"]);
    let screen = term
        .wait_for("the reply", |s| s.contains("assistant: You said"))
        .await;
    assert!(screen.contains("assistant: You said 'hello'."), "{screen}");
    term.prompts(3).await;
    term.keys(&["C-c"]);
    term.prompts(4).await;
    term.keys(&["C-c"]);
    let screen = term
        .wait_for("the exit", |s| s.lines().any(|l| l.trim() == "exited 0"))
        .await;
    let mut sessions = server.sessions().await;
    let messages = all_messages(&mut sessions, "tty-ctrl-c", 0).await;
    let contents: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["hello", "You said 'hello'."], "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_a_terminal_ctrl_d_quits_with_a_newline() {
    let server = TestServer::start().await;
    let term = Terminal::start(&server.addr.to_string(), "tty-ctrl-d");
    term.prompts(1).await;
    term.keys(&["C-d"]);
    let screen = term.wait_for("the exit", |s| s.contains("exited")).await;
    // `exited` starts a line of its own: the chat ended the prompt's line.
    assert!(
        screen.lines().any(|l| l.trim_end() == "exited 0"),
        "{screen}"
    );
    assert!(!screen.contains("you> exited"), "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_a_terminal_refuses_unknown_commands_and_helps() {
    let server = TestServer::start().await;
    let term = Terminal::start(&server.addr.to_string(), "tty-commands");
    term.prompts(1).await;
    term.keys(&["/nope now", "Enter"]);
    let screen = term
        .wait_for("the refusal", |s| s.contains("unknown command /nope"))
        .await;
    assert!(
        screen.contains(
            "unknown command /nope; commands: /context, /history, /preview, /help, /quit"
        ),
        "{screen}"
    );
    term.prompts(2).await;
    term.keys(&["/help", "Enter"]);
    let screen = term
        .wait_for("the help", |s| s.contains("Ctrl-C twice or Ctrl-D quits"))
        .await;
    assert!(
        screen.contains("commands: /context (the session's context)"),
        "{screen}"
    );
    term.prompts(3).await;
    term.keys(&["//slash", "Enter"]);
    term.wait_for("the reply", |s| s.contains("assistant: You said '/slash'."))
        .await;
    term.prompts(4).await;
    term.keys(&["/quit", "Enter"]);
    term.wait_for("the exit", |s| s.lines().any(|l| l.trim() == "exited 0"))
        .await;
    let mut sessions = server.sessions().await;
    let messages = all_messages(&mut sessions, "tty-commands", 0).await;
    let contents: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["/slash", "You said '/slash'."]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_a_terminal_ctrl_c_at_the_tool_prompt_abandons_the_calls() {
    let server = TestServer::start().await;
    let term = Terminal::start_with(
        &server.addr.to_string(),
        "tty-abandon",
        "--tool get_weather",
    );
    term.prompts(1).await;
    term.keys(&["/call get_weather {\"city\": \"Paris\"}", "Enter"]);
    term.wait_for("the tool-result prompt", |s| {
        s.contains("result of get_weather (")
    })
    .await;
    term.keys(&["half an answer"]);
    term.wait_for("the typed answer", |s| s.contains("half an answer"))
        .await;
    term.keys(&["C-c"]);
    let screen = term
        .wait_for("the abandoned turn's end", |s| s.contains("[cancelled"))
        .await;
    assert!(screen.contains("(tool calls abandoned"), "{screen}");
    // Back at the idle prompt, not quitting: the next message is an ordinary turn.
    term.prompts(2).await;
    term.keys(&["hello", "Enter"]);
    term.wait_for("the reply", |s| s.contains("assistant: You said 'hello'."))
        .await;
    term.prompts(3).await;
    term.keys(&["/quit", "Enter"]);
    term.wait_for("the exit", |s| s.lines().any(|l| l.trim() == "exited 0"))
        .await;

    let mut sessions = server.sessions().await;
    let session = get_session(&mut sessions, "tty-abandon").await;
    assert!(session.pending_tool_calls.is_empty(), "{session:?}");
    let messages = all_messages(&mut sessions, "tty-abandon", 0).await;
    let call_id = &messages[1].tool_calls[0].tool_call_id;
    let tool = &messages[2];
    assert_eq!(tool.tool_call_id, *call_id, "{messages:?}");
    assert!(tool.is_error, "{messages:?}");
    assert_eq!(tool.content, "cancelled by the client");
    let contents: Vec<_> = messages[3..].iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["hello", "You said 'hello'."], "{messages:?}");
}
