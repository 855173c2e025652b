//! Windows kept between turns choose exactly what the store's history gives: two engines run
//! the same random conversations (plain turns, parallel tool calls paused and answered,
//! abandoned calls, session updates, budgets from tiny to roomy, the sliding and the
//! disabled strategy), one keeping windows and one reading every window from its store, and
//! every model step of the two must see the same messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{Config, StoreKind};
use crate::domain::Scope;
use crate::domain::session::{Role, ToolResult, ToolSpec, WindowStrategy};
use crate::model::echo::EchoModel;
use crate::model::{ModelError, ModelEvent, ModelRequest, ModelStream};
use crate::store::memory::MemoryStore;
use crate::store::open::open_store;

/// A message as a model step saw it.
type Shown = (u64, Role, String, u32, String);

/// The echo model, recording every window it is given; tool call ids are numbered in order
/// so that two engines running the same conversation get the same ones.
struct Recording {
    echo: EchoModel,
    windows: Mutex<Vec<Vec<Shown>>>,
    calls: Arc<AtomicU64>,
}

impl ModelBackend for Recording {
    fn models(&self) -> Vec<ModelInfo> {
        self.echo.models()
    }

    fn stream(&self, request: &ModelRequest) -> Result<ModelStream, ModelError> {
        let shown = request
            .messages
            .iter()
            .map(|m| {
                (
                    m.index,
                    m.role,
                    m.content.clone(),
                    m.token_count,
                    m.tool_call_id.clone(),
                )
            })
            .collect();
        self.windows.lock().unwrap().push(shown);
        let calls = self.calls.clone();
        let events = self.echo.stream(request)?.map(move |event| match event {
            Ok(ModelEvent::ToolCall(mut call)) => {
                call.id = format!("call_{}", calls.fetch_add(1, Ordering::Relaxed));
                Ok(ModelEvent::ToolCall(call))
            }
            other => other,
        });
        Ok(Box::pin(events))
    }
}

fn engine(store: Arc<dyn SessionStore>, window_cache_bytes: usize) -> (Engine, Arc<Recording>) {
    let mut config = Config::default();
    config.engine.window_cache_bytes = window_cache_bytes;
    let recording = Arc::new(Recording {
        echo: EchoModel::new(config.engine.default_max_context_tokens),
        windows: Mutex::new(Vec::new()),
        calls: Arc::new(AtomicU64::new(0)),
    });
    let mut models = ModelRegistry::new();
    models.register(recording.clone());
    let engine = Engine::new(
        store,
        models,
        ToolRegistry::new(),
        config.engine,
        config.limits,
    );
    (engine, recording)
}

/// One step of a conversation.
#[derive(Debug, Clone)]
enum Op {
    /// A message of this many words.
    Say(usize),
    /// A message asking for this many parallel tool calls, then their results of this many
    /// words each.
    Tools(usize, usize),
    /// A tool call, then the paused turn abandoned.
    Abandon,
    /// An update that leaves the history alone (the session's version moves).
    Relabel,
    /// A new window size.
    Resize(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..90).prop_map(Op::Say),
        3 => (1usize..4, 1usize..60).prop_map(|(calls, words)| Op::Tools(calls, words)),
        1 => Just(Op::Abandon),
        1 => Just(Op::Relabel),
        1 => (256u32..3000).prop_map(Op::Resize),
    ]
}

/// `count` words of mixed token costs, different for each `seed`.
fn words(seed: usize, count: usize) -> String {
    const VOCABULARY: [&str; 12] = [
        "the",
        "window",
        "assembly",
        "unbelievably",
        "42",
        "tokenization",
        "x",
        "Grüße",
        "контекст",
        "窗口",
        "{\"k\": 1}",
        "run-of-the-mill",
    ];
    (0..count)
        .map(|i| VOCABULARY[(seed * 7 + i * 5 + i / 3) % VOCABULARY.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a step's turns ended with, comparable across engines.
type Ended = Vec<Result<(String, String), String>>;

fn request(id: &str, message: String) -> TurnRequest {
    TurnRequest {
        session_id: id.into(),
        message,
        context_patch: None,
        tool_results: Vec::new(),
        create: None,
        idempotency_key: String::new(),
        abandon_tool_calls: false,
    }
}

/// Runs a turn and records how it ended; returns whether it succeeded.
async fn turn(engine: &Engine, scope: &Scope, request: TurnRequest, ended: &mut Ended) -> bool {
    let outcome = engine
        .run_turn(scope, request, &mut NoSink, &CancellationToken::new())
        .await;
    let ok = outcome.is_ok();
    ended.push(
        outcome
            .map(|o| (o.response, format!("{:?} {:?}", o.finish, o.tool_calls)))
            .map_err(|e| format!("{:?}: {e}", e.kind())),
    );
    ok
}

/// Updates a session outside a turn and records how that ended.
async fn update_session(
    engine: &Engine,
    scope: &Scope,
    id: &str,
    update: SessionUpdate,
    ended: &mut Ended,
) {
    let result = engine.update_session(scope, id, update, None).await;
    ended.push(
        result
            .map(|_| Default::default())
            .map_err(|e| e.to_string()),
    );
}

/// Runs `ops` on a session of `engine` (created with `max_context_tokens` and `strategy`);
/// returns how every turn ended, and how many turns must have found a kept window (a
/// successful turn right after another one of the session, with no update between).
async fn converse(
    engine: &Engine,
    max_context_tokens: u32,
    strategy: WindowStrategy,
    ops: &[Op],
) -> (Ended, u64) {
    let scope = Scope::tenant("t");
    let id = "s";
    let mut ended = Vec::new();
    let mut first = request(id, words(0, 3));
    first.create = Some(NewSession {
        session_id: id.into(),
        max_context_tokens,
        tools: vec![ToolSpec {
            name: "lookup".into(),
            description: "Looks something up.".into(),
            input_schema: serde_json::json!({"type": "object"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            annotations: Default::default(),
        }],
        window: WindowSettings {
            strategy,
            ..WindowSettings::default()
        },
        ..NewSession::default()
    });
    let mut warm = turn(engine, &scope, first, &mut ended).await;
    let mut must_find = 0;
    let mut found = |warm: bool, ok: bool| {
        must_find += u64::from(warm && ok);
        ok
    };
    let ok = turn(engine, &scope, request(id, words(1, 4)), &mut ended).await;
    warm = found(warm, ok);
    for (seed, op) in ops.iter().enumerate() {
        match op {
            Op::Say(count) => {
                let ok = turn(engine, &scope, request(id, words(seed, *count)), &mut ended).await;
                warm = found(warm, ok);
            }
            Op::Tools(calls, count) => {
                let message = (0..*calls)
                    .map(|i| format!("/call lookup {{\"q\": {i}}}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let paused = engine
                    .run_turn(
                        &scope,
                        request(id, message),
                        &mut NoSink,
                        &CancellationToken::new(),
                    )
                    .await;
                let Ok(paused) = paused else {
                    ended.push(Err(format!("{:?}", paused.err().map(|e| e.kind()))));
                    warm = false;
                    continue;
                };
                found(warm, true);
                let mut answer = request(id, String::new());
                answer.tool_results = paused
                    .tool_calls
                    .iter()
                    .enumerate()
                    .map(|(i, call)| ToolResult {
                        tool_call_id: call.id.clone(),
                        content: words(seed + i, *count),
                        is_error: i == 1,
                    })
                    .collect();
                ended.push(Ok((paused.response, format!("{:?}", paused.tool_calls))));
                let ok = turn(engine, &scope, answer, &mut ended).await;
                warm = found(true, ok);
            }
            Op::Abandon => {
                turn(
                    engine,
                    &scope,
                    request(id, "/call lookup {}".into()),
                    &mut ended,
                )
                .await;
                let mut abandon = request(id, String::new());
                abandon.abandon_tool_calls = true;
                turn(engine, &scope, abandon, &mut ended).await;
                warm = false;
            }
            Op::Relabel => {
                let mut update = SessionUpdate::default();
                update.set_labels.insert("step".into(), seed.to_string());
                update_session(engine, &scope, id, update, &mut ended).await;
                warm = false;
            }
            Op::Resize(tokens) => {
                let update = SessionUpdate {
                    max_context_tokens: Some(*tokens),
                    ..SessionUpdate::default()
                };
                update_session(engine, &scope, id, update, &mut ended).await;
                warm = false;
            }
        }
    }
    (ended, must_find)
}

/// Runs `ops` on an engine keeping windows over `kept_store` and on one reading every window
/// from a memory store, and compares what every model step saw.
async fn same_windows(
    kept_store: Arc<dyn SessionStore>,
    max_context_tokens: u32,
    strategy: WindowStrategy,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let (kept, kept_model) = engine(kept_store, 64 << 20);
    let (read, read_model) = engine(Arc::new(MemoryStore::new()), 0);
    let (kept_ended, must_find) = converse(&kept, max_context_tokens, strategy, ops).await;
    let (read_ended, _) = converse(&read, max_context_tokens, strategy, ops).await;
    prop_assert_eq!(&kept_ended, &read_ended);
    let kept_windows = kept_model.windows.lock().unwrap().clone();
    let read_windows = read_model.windows.lock().unwrap().clone();
    prop_assert_eq!(kept_windows.len(), read_windows.len());
    for (step, (k, r)) in kept_windows.iter().zip(&read_windows).enumerate() {
        prop_assert_eq!(k, r, "model step {}", step);
    }
    // Every turn that follows another of its session finds that one's window.
    prop_assert!(must_find >= 1);
    prop_assert!(
        kept.kept.hits() >= must_find,
        "{} turns found a kept window, {} should have",
        kept.kept.hits(),
        must_find
    );
    prop_assert_eq!(read.kept.hits(), 0);
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn strategy() -> impl Strategy<Value = WindowStrategy> {
    prop_oneof![
        4 => Just(WindowStrategy::SlidingWindow),
        1 => Just(WindowStrategy::Disabled),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_kept_window_is_the_one_the_store_gives(
        max_context_tokens in 256u32..3000,
        strategy in strategy(),
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        runtime().block_on(same_windows(
            Arc::new(MemoryStore::new()),
            max_context_tokens,
            strategy,
            &ops,
        ))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// The same on SQLite, whose store keeps creation times in microseconds and has a cache
    /// of its own.
    #[test]
    fn a_kept_window_on_sqlite_is_the_one_the_store_gives(
        max_context_tokens in 256u32..3000,
        ops in proptest::collection::vec(op(), 10..40),
    ) {
        runtime().block_on(async {
            let dir = super::tests::TempDir::new();
            let store = open_store(&StoreKind::Sqlite, &dir.0, &Config::default().storage)
                .await
                .expect("open SQLite");
            same_windows(store.store.clone(), max_context_tokens, WindowStrategy::SlidingWindow, &ops).await
        })?;
    }
}

/// A long conversation keeps only about a window's worth of history, and a deleted session
/// nothing.
#[tokio::test]
async fn what_is_kept_is_about_a_window_and_goes_with_its_session() {
    let (engine, _) = engine(Arc::new(MemoryStore::new()), 64 << 20);
    let scope = Scope::tenant("t");
    let mut ended = Vec::new();
    for i in 0..200 {
        turn(&engine, &scope, request("long", words(i, 40)), &mut ended).await;
    }
    assert!(ended.iter().all(Result::is_ok));
    let window_bytes = engine.kept.bytes();
    // 8,192 tokens of about 60-token messages: a few hundred messages, not 400.
    assert!(window_bytes > 0);
    let (kept, totals) = engine
        .kept
        .take(
            &scope.tenant,
            &engine.get_session(&scope, "long").await.unwrap(),
            400,
            0,
        )
        .expect("kept");
    let tokens: u32 = kept.iter().map(|m| m.token_count).sum();
    assert_eq!(u64::from(tokens), totals.tokens);
    assert!(tokens > 7168 && tokens < 7168 + 200, "{tokens} tokens kept");
    assert!(kept.len() < 400);
    turn(&engine, &scope, request("long", words(0, 3)), &mut ended).await;
    assert!(engine.kept.bytes() > 0);
    engine.delete_session(&scope, "long", None).await.unwrap();
    assert_eq!(engine.kept.bytes(), 0);
}
