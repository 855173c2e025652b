//! Optional smoke tests against real providers. Each runs only when its variable is set and
//! otherwise prints that it was skipped:
//!
//! - `OPENAI_API_KEY` (model `OPENAI_MODEL`, default `gpt-4o-mini`),
//! - `ANTHROPIC_API_KEY` (model `ANTHROPIC_MODEL`, default `claude-haiku-4-5`),
//! - `CONTEXTD_OLLAMA_URL`, e.g. `http://127.0.0.1:11434/v1` (model `CONTEXTD_OLLAMA_MODEL`,
//!   default `llama3.2`).

mod common;

use common::*;
use contextd::api::v1::{CreateSessionRequest, FinishReason};
use contextd::config::{BackendConfig, BackendKind, Config};

/// Runs a streamed turn and a tool turn on `model` of `backend`.
async fn smoke(backend: BackendConfig, model: &str) {
    let config = Config {
        backends: vec![backend],
        ..common::test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "live".into(),
            model: model.into(),
            system_prompt: "Answer in at most five words.".into(),
            ..Default::default()
        },
    )
    .await;
    let mut interact = server.interact().await;
    let events = stream_events(
        &mut interact,
        stream_request(
            "live",
            "Say hello.",
            Some(serde_json::json!({"user_id": "smoke"})),
        ),
    )
    .await;
    let text = stream_text(&events);
    assert!(!text.trim().is_empty(), "{events:?}");
    println!("{model}: {text:?}");

    let reply = say(
        &mut interact,
        "live",
        "Call the context_get tool with {\"key\": \"user_id\"}, then tell me the value.",
        None,
    )
    .await;
    assert_eq!(reply.finish_reason(), FinishReason::Stop, "{reply:?}");
    println!("{model} with a tool: {:?}", reply.response);
}

/// Says a test was skipped where `cargo test` shows it (the print macros' output of passing
/// tests is captured; a direct write to stderr is not).
fn skipped(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {reason}");
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_openai() {
    if env("OPENAI_API_KEY").is_none() {
        skipped("live_openai: OPENAI_API_KEY is not set");
        return;
    }
    let mut backend = BackendConfig::new("openai", BackendKind::Openai, "");
    backend.api_key_env = "OPENAI_API_KEY".into();
    backend.context_window = 128_000;
    let model = env("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o-mini".into());
    smoke(backend, &format!("openai/{model}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_anthropic() {
    if env("ANTHROPIC_API_KEY").is_none() {
        skipped("live_anthropic: ANTHROPIC_API_KEY is not set");
        return;
    }
    let mut backend = BackendConfig::new("anthropic", BackendKind::Anthropic, "");
    backend.api_key_env = "ANTHROPIC_API_KEY".into();
    backend.context_window = 200_000;
    let model = env("ANTHROPIC_MODEL").unwrap_or_else(|| "claude-haiku-4-5".into());
    smoke(backend, &format!("anthropic/{model}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ollama() {
    let Some(url) = env("CONTEXTD_OLLAMA_URL") else {
        skipped("live_ollama: CONTEXTD_OLLAMA_URL is not set");
        return;
    };
    let backend = BackendConfig::new("ollama", BackendKind::Openai, &url);
    let model = env("CONTEXTD_OLLAMA_MODEL").unwrap_or_else(|| "llama3.2".into());
    smoke(backend, &format!("ollama/{model}")).await;
}
