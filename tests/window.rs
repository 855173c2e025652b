//! Context windows: PreviewContext entry order and token accounting, the reserved output
//! budget, dropping the oldest history when a window is small, never separating a tool call
//! from its results, and messages that cannot fit.

mod common;

use common::*;
use contextd::api::v1::{
    ContextEntry, ContextEntryKind, CreateSessionRequest, MessageRole, PreviewContextRequest,
    PreviewContextResponse, UpdateSessionRequest,
};
use serde_json::{Value as Json, json};
use tonic::Code;
use tonic::transport::Channel;

type Sessions = contextd::api::v1::session_service_client::SessionServiceClient<Channel>;

async fn preview(
    sessions: &mut Sessions,
    session_id: &str,
    message: &str,
    context: Option<Json>,
) -> PreviewContextResponse {
    within(
        "PreviewContext",
        sessions.preview_context(PreviewContextRequest {
            session_id: session_id.to_string(),
            message: message.to_string(),
            context: context.map(|c| to_struct(&c)),
            summarize: false,
        }),
    )
    .await
    .unwrap_or_else(|s| panic!("PreviewContext failed: {:?} {}", s.code(), s.message()))
    .into_inner()
}

fn kinds(entries: &[ContextEntry]) -> Vec<ContextEntryKind> {
    entries.iter().map(|e| e.kind()).collect()
}

fn history(entries: &[ContextEntry]) -> Vec<&ContextEntry> {
    entries
        .iter()
        .filter(|e| e.kind() == ContextEntryKind::History)
        .collect()
}

/// The invariants every window keeps, whatever its size.
#[track_caller]
fn check_window(window: &PreviewContextResponse, message_count: u64) {
    let sum: u32 = window.entries.iter().map(|e| e.token_count).sum();
    assert_eq!(
        window.total_tokens, sum,
        "total_tokens is the sum of the entries"
    );
    assert!(
        window.total_tokens <= window.max_context_tokens - window.reserved_output_tokens,
        "the window fits: {} > {} - {}",
        window.total_tokens,
        window.max_context_tokens,
        window.reserved_output_tokens
    );
    assert!(window.entries.iter().all(|e| e.token_count > 0));

    // Pinned entries first, then history, then the user message.
    let order = |k: ContextEntryKind| match k {
        ContextEntryKind::SystemPrompt => 0,
        ContextEntryKind::Context => 1,
        ContextEntryKind::Summary | ContextEntryKind::PendingSummary => 2,
        ContextEntryKind::History => 3,
        ContextEntryKind::UserMessage => 4,
        ContextEntryKind::Unspecified => panic!("entry kind unspecified"),
    };
    let ranks: Vec<i32> = window.entries.iter().map(|e| order(e.kind())).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "order: {:?}",
        kinds(&window.entries)
    );
    for pinned in [
        ContextEntryKind::SystemPrompt,
        ContextEntryKind::Context,
        ContextEntryKind::UserMessage,
    ] {
        assert!(
            kinds(&window.entries)
                .iter()
                .filter(|k| **k == pinned)
                .count()
                <= 1
        );
    }

    // History: the newest contiguous messages; the oldest are the omitted ones.
    let history = history(&window.entries);
    let indexes: Vec<u64> = history
        .iter()
        .map(|e| {
            e.message_index
                .expect("history entries carry message_index")
        })
        .collect();
    assert_eq!(
        history.len() as u64 + window.omitted_messages,
        message_count,
        "every message is either in the window or omitted"
    );
    let expected: Vec<u64> = (window.omitted_messages..message_count).collect();
    assert_eq!(
        indexes, expected,
        "the oldest messages are the omitted ones"
    );

    // A tool call is never separated from its results.
    if let Some(first) = history.first() {
        assert_ne!(
            first.role(),
            MessageRole::Tool,
            "a tool result never comes first"
        );
    }
    for (i, entry) in history.iter().enumerate() {
        if entry.role() == MessageRole::Assistant && !entry.tool_calls.is_empty() {
            let ids: Vec<&str> = entry
                .tool_calls
                .iter()
                .map(|c| c.tool_call_id.as_str())
                .collect();
            let follow: Vec<&str> = history[i + 1..]
                .iter()
                .take_while(|e| e.role() == MessageRole::Tool)
                .map(|e| e.tool_call_id.as_str())
                .collect();
            assert_eq!(follow.len(), ids.len(), "each call's result follows it");
            for id in ids {
                assert!(follow.contains(&id), "result of {id} follows its call");
            }
        }
        if entry.role() == MessageRole::Tool {
            assert!(i > 0, "a tool result never comes first");
            assert!(
                matches!(
                    history[i - 1].role(),
                    MessageRole::Assistant | MessageRole::Tool
                ),
                "a tool result follows its call"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_orders_pinned_history_and_message() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "preview".into(),
            system_prompt: "Be concise.".into(),
            context: ctx(json!({"k": "v"})),
            tools: vec![tool_def("client_tool", "Runs on the client.")],
            ..Default::default()
        },
    )
    .await;
    let one = say(&mut interact, "preview", "first question", None).await;
    say(&mut interact, "preview", "second question", None).await;

    let window = preview(&mut sessions, "preview", "next question", None).await;
    assert_eq!(
        kinds(&window.entries),
        [
            ContextEntryKind::SystemPrompt,
            ContextEntryKind::Context,
            ContextEntryKind::History,
            ContextEntryKind::History,
            ContextEntryKind::History,
            ContextEntryKind::History,
            ContextEntryKind::UserMessage,
        ]
    );
    check_window(&window, 4);
    assert_eq!(window.omitted_messages, 0);
    assert_eq!(window.max_context_tokens, 8192);
    assert_eq!(window.reserved_output_tokens, 1024);
    assert_eq!(window.model, "echo");

    let entries = &window.entries;
    assert!(entries[0].content.contains("Be concise."));
    assert!(entries[1].content.contains("\"k\"") && entries[1].content.contains("\"v\""));
    assert_eq!(entries[2].role(), MessageRole::User);
    assert_eq!(entries[2].content, "first question");
    assert_eq!(entries[3].role(), MessageRole::Assistant);
    assert_eq!(entries[3].content, one.response);
    assert_eq!(entries[6].role(), MessageRole::User);
    assert!(entries[6].content.contains("next question"));

    let tool_names: Vec<&str> = window.tools.iter().map(|t| t.name.as_str()).collect();
    for name in [
        "client_tool",
        "context_get",
        "context_set",
        "history_search",
    ] {
        assert!(tool_names.contains(&name), "{name} offered: {tool_names:?}");
    }

    // Previewing changes nothing.
    assert_eq!(get_session(&mut sessions, "preview").await.message_count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_leaves_out_empty_parts_and_applies_nothing() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "bare".into(),
            ..Default::default()
        },
    )
    .await;

    let empty = preview(&mut sessions, "bare", "", None).await;
    assert!(empty.entries.is_empty(), "{:?}", kinds(&empty.entries));
    assert_eq!(empty.total_tokens, 0);

    let only_message = preview(&mut sessions, "bare", "hello", None).await;
    assert_eq!(
        kinds(&only_message.entries),
        [ContextEntryKind::UserMessage]
    );

    // A context patch shows in the preview but is not applied.
    let patched = preview(
        &mut sessions,
        "bare",
        "hello",
        Some(json!({"city": "Oslo"})),
    )
    .await;
    assert_eq!(
        kinds(&patched.entries),
        [ContextEntryKind::Context, ContextEntryKind::UserMessage]
    );
    assert!(patched.entries[0].content.contains("Oslo"));
    assert_eq!(
        json_of(&get_session(&mut sessions, "bare").await.context),
        json!({})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_matches_the_window_of_the_next_turn() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "exact".into(),
            system_prompt: "You are a test.".into(),
            context: ctx(json!({"user_id": "x"})),
            ..Default::default()
        },
    )
    .await;
    say(&mut interact, "exact", "warm up", None).await;

    let window = preview(&mut sessions, "exact", "what now?", Some(json!({"n": 1}))).await;
    let reply = say(&mut interact, "exact", "what now?", Some(json!({"n": 1}))).await;
    assert_eq!(
        reply.usage.expect("usage").context_tokens,
        u64::from(window.total_tokens),
        "the turn's window is the one PreviewContext showed"
    );
}

/// A session with a small window and a long history.
async fn long_small_session(server: &TestServer, session_id: &str, turns: usize) -> Sessions {
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: session_id.into(),
            max_context_tokens: 300,
            ..Default::default()
        },
    )
    .await;
    for i in 0..turns {
        say(
            &mut interact,
            session_id,
            &format!("turn {i}: a few words about nothing in particular"),
            None,
        )
        .await;
    }
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_windows_omit_the_oldest_messages() {
    let server = TestServer::start().await;
    let mut sessions = long_small_session(&server, "small", 20).await;

    let window = preview(&mut sessions, "small", "latest", None).await;
    assert_eq!(window.max_context_tokens, 300);
    assert_eq!(window.reserved_output_tokens, 75, "min(1024, 300 / 4)");
    check_window(&window, 40);
    assert!(
        window.omitted_messages > 0,
        "20 turns do not fit in 225 tokens"
    );
    assert!(
        !history(&window.entries).is_empty(),
        "recent history still fits"
    );
    assert_eq!(
        window.entries.last().map(|e| e.kind()),
        Some(ContextEntryKind::UserMessage)
    );

    // The whole history is still stored.
    let stored = all_messages(&mut sessions, "small", 0).await;
    assert_eq!(stored.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_stay_with_their_results_at_every_window_size() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "units".into(),
            tools: vec![tool_def("lookup", "Looks things up.")],
            context: ctx(json!({"color": "red"})),
            ..Default::default()
        },
    )
    .await;
    // Plain turns, server-side tool turns (one and two calls) and a client-side round trip.
    say(&mut interact, "units", "hello there", None).await;
    say(
        &mut interact,
        "units",
        "/call context_get {\"key\": \"color\"}",
        None,
    )
    .await;
    say(&mut interact, "units", "another plain message", None).await;
    say(
        &mut interact,
        "units",
        "/call context_get {\"key\": \"color\"}\n/call history_search {\"query\": \"hello\"}",
        None,
    )
    .await;
    let paused = say(&mut interact, "units", "/call lookup {\"q\": 1}", None).await;
    send_results(
        &mut interact,
        "units",
        vec![result(&paused.tool_calls[0].tool_call_id, "looked up")],
    )
    .await
    .expect("tool results");
    say(&mut interact, "units", "last plain message", None).await;

    let count = get_session(&mut sessions, "units").await.message_count;
    assert_eq!(count, 2 + 4 + 2 + 5 + 4 + 2);

    let full = preview(&mut sessions, "units", "probe", None).await;
    check_window(&full, count);
    assert_eq!(full.omitted_messages, 0);

    // Shrink the window step by step: every cut point must keep calls with their results.
    let mut omitted_seen = std::collections::BTreeSet::new();
    let mut size = 64;
    while size <= 1200 {
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "units".into(),
                max_context_tokens: Some(size),
                ..Default::default()
            })
            .await
            .expect("UpdateSession");
        match sessions
            .preview_context(PreviewContextRequest {
                session_id: "units".into(),
                message: "probe".into(),
                context: None,
                summarize: false,
            })
            .await
        {
            Ok(window) => {
                let window = window.into_inner();
                assert_eq!(window.max_context_tokens, size);
                check_window(&window, count);
                omitted_seen.insert(window.omitted_messages);
            }
            Err(status) => {
                // Only a window too small for the pinned context and the message may fail.
                assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
                assert!(
                    size < 200,
                    "a {size}-token window fails: {}",
                    status.message()
                );
            }
        }
        size += 9;
    }
    assert!(
        omitted_seen.len() >= 4,
        "the sweep cut the history at several places: {omitted_seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_fit_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "tight".into(),
            max_context_tokens: 300,
            context: ctx(json!({"keep": true})),
            ..Default::default()
        },
    )
    .await;
    say(&mut interact, "tight", "short", None).await;

    let huge = "lorem ipsum dolor sit amet ".repeat(100);
    let status = expect_code(
        sessions
            .preview_context(PreviewContextRequest {
                session_id: "tight".into(),
                message: huge.clone(),
                context: None,
                summarize: false,
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("token") && status.message().chars().any(|c| c.is_ascii_digit()),
        "says by how many tokens: {}",
        status.message()
    );

    let status = expect_code(
        interact
            .interact(interact_request(
                "tight",
                &huge,
                Some(json!({"changed": 1})),
            ))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("token"), "{}", status.message());
    let status = stream_status(&mut interact, stream_request("tight", &huge, None)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());

    let session = get_session(&mut sessions, "tight").await;
    assert_eq!(session.message_count, 2, "nothing stored");
    assert_eq!(
        json_of(&session.context),
        json!({"keep": true}),
        "patch not applied"
    );
}
