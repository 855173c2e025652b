//! Optional smoke tests against real providers. Each runs only when its variable is set and is
//! otherwise reported as ignored (not as passed), decided at run time:
//!
//! - `OPENAI_API_KEY` (model `OPENAI_MODEL`, default `gpt-4o-mini`),
//! - `ANTHROPIC_API_KEY` (model `ANTHROPIC_MODEL`, default `claude-haiku-4-5`),
//! - `CONTEXTD_OLLAMA_URL`, e.g. `http://127.0.0.1:11434/v1` (model `CONTEXTD_OLLAMA_MODEL`,
//!   default `llama3.2`).

mod common;

use common::*;
use contextd::api::v1::{CreateSessionRequest, FinishReason};
use contextd::config::{BackendConfig, BackendKind, Config};
use libtest_mimic::{Arguments, Trial};

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

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// One provider's smoke test: ignored unless `variable` is set.
fn live(name: &'static str, variable: &'static str, run: fn(String)) -> Trial {
    let value = env(variable);
    let ignored = value.is_none();
    Trial::test(name, move || {
        if let Some(value) = value {
            run(value);
        }
        Ok(())
    })
    .with_ignored_flag(ignored)
}

/// Runs `future` on a runtime of its own, as `#[tokio::test]` would.
fn block_on(future: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future);
}

fn main() {
    let trials = vec![
        live("live_openai", "OPENAI_API_KEY", |_| {
            let mut backend = BackendConfig::new("openai", BackendKind::Openai, "");
            backend.api_key_env = "OPENAI_API_KEY".into();
            backend.context_window = 128_000;
            let model = env("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o-mini".into());
            block_on(smoke(backend, &format!("openai/{model}")));
        }),
        live("live_anthropic", "ANTHROPIC_API_KEY", |_| {
            let mut backend = BackendConfig::new("anthropic", BackendKind::Anthropic, "");
            backend.api_key_env = "ANTHROPIC_API_KEY".into();
            backend.context_window = 200_000;
            let model = env("ANTHROPIC_MODEL").unwrap_or_else(|| "claude-haiku-4-5".into());
            block_on(smoke(backend, &format!("anthropic/{model}")));
        }),
        live("live_ollama", "CONTEXTD_OLLAMA_URL", |url| {
            let backend = BackendConfig::new("ollama", BackendKind::Openai, &url);
            let model = env("CONTEXTD_OLLAMA_MODEL").unwrap_or_else(|| "llama3.2".into());
            block_on(smoke(backend, &format!("ollama/{model}")));
        }),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}
