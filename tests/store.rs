//! The durable-store suite: one set of tests, run on SQLite and on PostgreSQL, through real
//! servers and clients. Restarts, concurrency, replicas, pending tool calls, expiry and schema
//! checks.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use common::backend::Backend;
use common::*;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::{
    CreateSessionRequest, DeleteSessionRequest, FinishReason, GetSessionRequest,
    ListSessionsRequest, Message, MessageRole, PreviewContextRequest, SessionState,
    UpdateSessionRequest, WindowSettings, WindowStrategy,
};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

/// Generates one test per body and backend: `sqlite::<name>` (with the session cache),
/// `sqlite_uncached::<name>`, `postgres::<name>` (with it) and `postgres_uncached::<name>`.
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::sqlite()).await;
                }
            )*
        }
        mod sqlite_uncached {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::sqlite_uncached()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::postgres()).await;
                }
            )*
        }
        mod postgres_uncached {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::postgres_uncached()).await;
                }
            )*
        }
    };
}

store_suite!(
    history_survives_restart_and_pages_by_key,
    concurrent_interacts_count_exactly,
    replicas_interleave_turns_on_one_session,
    pending_tool_calls_survive_restart,
    fixed_expiry_removes_session,
    idle_ttl_follows_activity,
    newer_schema_is_refused,
    turn_receipts_survive_restart_and_go_with_their_session,
    reads_follow_every_write,
    every_turn_sends_the_window_its_store_gives,
);

/// Every turn sends the model the window the stored session gives — the one PreviewContext
/// shows just before it — while the session slides past its window, is updated, is deleted
/// and created again, and (where the store is shared) takes turns on two replicas, each of
/// which keeps its own last window.
async fn every_turn_sends_the_window_its_store_gives(backend: Backend) {
    let first = TestServer::start_with(backend.config()).await;
    let second = match backend.shared_by_replicas() {
        true => Some(TestServer::start_with(backend.config()).await),
        false => None,
    };
    let servers: Vec<&TestServer> = std::iter::once(&first).chain(second.as_ref()).collect();
    let create = |sessions: &mut SessionServiceClient<Channel>| {
        let mut sessions = sessions.clone();
        async move {
            create_session(
                &mut sessions,
                CreateSessionRequest {
                    session_id: "sliding".into(),
                    max_context_tokens: 400,
                    ..Default::default()
                },
            )
            .await
        }
    };
    create(&mut first.sessions().await).await;
    for turn in 0..16usize {
        let server = servers[turn % servers.len()];
        let mut sessions = server.sessions().await;
        let other = servers[(turn + 1) % servers.len()];
        match turn {
            6 => {
                within(
                    "UpdateSession",
                    other.sessions().await.update_session(UpdateSessionRequest {
                        session_id: "sliding".into(),
                        context: ctx(json!({"plan": "gold", "notes": "x ".repeat(40)})),
                        ..Default::default()
                    }),
                )
                .await
                .expect("UpdateSession");
            }
            11 => {
                within(
                    "DeleteSession",
                    other.sessions().await.delete_session(DeleteSessionRequest {
                        session_id: "sliding".into(),
                        ..Default::default()
                    }),
                )
                .await
                .expect("DeleteSession");
                create(&mut other.sessions().await).await;
            }
            _ => {}
        }
        let message = format!("turn {turn}: {}", "words of a turn ".repeat(3 + turn % 5));
        let preview = within(
            "PreviewContext",
            sessions.preview_context(PreviewContextRequest {
                session_id: "sliding".into(),
                message: message.clone(),
                context: None,
                summarize: false,
            }),
        )
        .await
        .expect("PreviewContext")
        .into_inner();
        let reply = say(&mut server.interact().await, "sliding", &message, None).await;
        let usage = reply.usage.expect("InteractResponse.usage");
        assert_eq!(
            usage.context_tokens,
            u64::from(preview.total_tokens),
            "turn {turn}: the window sent is the one the store gives"
        );
        if turn == 10 {
            assert!(preview.omitted_messages > 0, "the window slides");
        }
    }
}

/// What every read shows follows every write, on a warm session: its row (GetSession), its
/// history (ListMessages) and the window a turn would send (PreviewContext), through an
/// update, a delete and the id's reuse — with the session cache as without it.
async fn reads_follow_every_write(backend: Backend) {
    let server = TestServer::start_with(backend.config()).await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    let window = |sessions: &mut SessionServiceClient<Channel>| {
        let mut sessions = sessions.clone();
        async move {
            within(
                "PreviewContext",
                sessions.preview_context(PreviewContextRequest {
                    session_id: "warm".into(),
                    message: "next".into(),
                    context: None,
                    summarize: false,
                }),
            )
            .await
            .expect("PreviewContext")
            .into_inner()
            .entries
            .into_iter()
            .filter(|e| e.message_index.is_some())
            .map(|e| e.content)
            .collect::<Vec<_>>()
        }
    };
    for turn in 0..3 {
        say(&mut interact, "warm", &format!("old {turn}"), None).await;
    }
    assert_eq!(get_session(&mut sessions, "warm").await.message_count, 6);
    assert_eq!(window(&mut sessions).await.len(), 6);
    within(
        "UpdateSession",
        sessions.update_session(UpdateSessionRequest {
            session_id: "warm".into(),
            context: ctx(json!({"plan": "gold"})),
            ..Default::default()
        }),
    )
    .await
    .expect("UpdateSession");
    let updated = get_session(&mut sessions, "warm").await;
    assert_eq!(json_of(&updated.context), json!({"plan": "gold"}));

    within(
        "DeleteSession",
        sessions.delete_session(DeleteSessionRequest {
            session_id: "warm".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("DeleteSession");
    expect_code(
        sessions
            .get_session(GetSessionRequest {
                session_id: "warm".into(),
            })
            .await,
        Code::NotFound,
    );
    // The id again: nothing of the deleted session's row or history shows.
    let reply = say(&mut interact, "warm", "new 0", None).await;
    assert!(reply.session_created);
    let again = get_session(&mut sessions, "warm").await;
    assert_eq!(again.message_count, 2);
    assert_eq!(json_of(&again.context), json!({}));
    let history: Vec<String> = all_messages(&mut sessions, "warm", 100)
        .await
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(
        history,
        vec!["new 0".to_string(), "You said 'new 0'.".to_string()]
    );
    assert_eq!(window(&mut sessions).await, history);
}

/// Checks a history: indexes 0.., and every turn's messages together, starting with the user
/// message and ending with an assistant reply.
fn assert_whole_turns(messages: &[Message]) {
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.index, i as u64, "message indexes run 0, 1, 2, …");
    }
    let mut seen = HashSet::new();
    for turn in messages.chunk_by(|a, b| a.turn_id == b.turn_id) {
        assert!(
            seen.insert(turn[0].turn_id.clone()),
            "turn {} is split by another turn",
            turn[0].turn_id
        );
        assert_eq!(
            turn[0].role,
            MessageRole::User as i32,
            "a turn starts with the user"
        );
        assert_eq!(
            turn.last().map(|m| m.role),
            Some(MessageRole::Assistant as i32),
            "turn {} has no reply",
            turn[0].turn_id
        );
    }
}

async fn turn_receipts_survive_restart_and_go_with_their_session(backend: Backend) {
    let keyed = |message: &str| contextd::api::v1::InteractRequest {
        idempotency_key: "retry-safe".into(),
        ..interact_request("receipts", message, None)
    };
    let server = TestServer::start_with(backend.config()).await;
    let mut interact = server.interact().await;
    let first = interact.interact(keyed("once")).await.unwrap().into_inner();
    drop(interact);
    assert!(server.stop().await);

    let server = TestServer::start_with(backend.config()).await;
    let mut interact = server.interact().await;
    let again = interact.interact(keyed("once")).await.unwrap().into_inner();
    assert_eq!(again, first, "the stored outcome, after a restart");
    expect_code(
        interact.interact(keyed("twice")).await,
        Code::InvalidArgument,
    );
    let mut sessions = server.sessions().await;
    assert_eq!(
        get_session(&mut sessions, "receipts").await.message_count,
        2
    );

    // A deleted session takes its receipts along: the key is free on a new session.
    sessions
        .delete_session(contextd::api::v1::DeleteSessionRequest {
            session_id: "receipts".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let fresh = interact
        .interact(keyed("twice"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(fresh.turn_id, first.turn_id);
    assert!(fresh.session_created);
    assert!(server.stop().await);
}

async fn history_survives_restart_and_pages_by_key(backend: Backend) {
    let server = TestServer::start_with(backend.config()).await;
    let mut interact = server.interact().await;
    for i in 0..30 {
        let context = (i == 0).then(|| json!({"user_id": "john_doe", "prefs": {"lang": "en"}}));
        say(&mut interact, "durable", &format!("message {i}"), context).await;
    }
    assert!(server.stop().await, "first server stops cleanly");

    let server = TestServer::start_with(backend.config()).await;
    let mut sessions = server.sessions().await;
    let session = get_session(&mut sessions, "durable").await;
    assert_eq!(session.message_count, 60);
    assert_eq!(
        json_of(&session.context),
        json!({"user_id": "john_doe", "prefs": {"lang": "en"}})
    );
    let messages = all_messages(&mut sessions, "durable", 7).await;
    assert_eq!(messages.len(), 60);
    assert_whole_turns(&messages);
    assert_eq!(messages[58].content, "message 29");

    // The history continues where it stopped.
    let mut interact = server.interact().await;
    let reply = say(&mut interact, "durable", "after restart", None).await;
    assert!(
        reply.response.contains("after restart"),
        "{}",
        reply.response
    );
    assert_eq!(
        get_session(&mut sessions, "durable").await.message_count,
        62
    );

    // Delete removes the session, its messages and pending calls together.
    let deleted = sessions
        .delete_session(DeleteSessionRequest {
            session_id: "durable".into(),
            ..Default::default()
        })
        .await
        .expect("DeleteSession")
        .into_inner();
    assert_eq!(deleted.deleted_messages, 62);
    assert_eq!(backend.count_rows("messages", Some("durable")).await, 0);
    assert_eq!(backend.count_rows("sessions", Some("durable")).await, 0);
    expect_code(
        sessions
            .get_session(GetSessionRequest {
                session_id: "durable".into(),
            })
            .await,
        Code::NotFound,
    );
    // The id can be used again, from an empty history.
    let reply = say(&mut interact, "durable", "fresh", None).await;
    assert!(reply.session_created);
    assert_eq!(get_session(&mut sessions, "durable").await.message_count, 2);
}

async fn concurrent_interacts_count_exactly(backend: Backend) {
    // On PostgreSQL the requests are spread over two replicas.
    let first = TestServer::start_with(backend.config()).await;
    let second = if backend.shared_by_replicas() {
        Some(TestServer::start_with(backend.config()).await)
    } else {
        None
    };
    let mut clients = vec![first.interact().await];
    if let Some(second) = &second {
        clients.push(second.interact().await);
    }
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let session = format!("busy-{}", i % 20);
            say(&mut client, &session, &format!("turn {i}"), None).await
        }));
    }
    for task in tasks {
        task.await.expect("turn task");
    }
    let mut sessions = first.sessions().await;
    for s in 0..20 {
        let id = format!("busy-{s}");
        let messages = all_messages(&mut sessions, &id, 100).await;
        assert_eq!(
            messages.len(),
            20,
            "session {id}: 10 turns, 2 messages each"
        );
        assert_whole_turns(&messages);
        assert_eq!(get_session(&mut sessions, &id).await.message_count, 20);
    }
    assert_eq!(backend.count_rows("messages", None).await, 400);
}

async fn replicas_interleave_turns_on_one_session(backend: Backend) {
    if !backend.shared_by_replicas() {
        // One process owns an SQLite data directory: a second one is refused, clearly.
        let owner = TestServer::start_with(backend.config()).await;
        // Once it answers, it has opened the directory.
        say(&mut owner.interact().await, "owned", "hello", None).await;
        let error = match contextd::server::open(&backend.config()).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a second open of an SQLite data directory succeeded"),
        };
        assert!(
            error.contains("is in use by another contextd"),
            "unexpected error: {error}"
        );
        return;
    }
    let a = TestServer::start_with(backend.config()).await;
    let b = TestServer::start_with(backend.config()).await;
    let mut tasks = Vec::new();
    for (name, server) in [("a", &a), ("b", &b)] {
        for worker in 0..4 {
            let mut client = server.interact().await;
            tasks.push(tokio::spawn(async move {
                let mut turns = Vec::new();
                for i in 0..5 {
                    let reply =
                        say(&mut client, "shared", &format!("{name}{worker}-{i}"), None).await;
                    turns.push(reply.turn_id);
                }
                turns
            }));
        }
    }
    let mut acknowledged = HashSet::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("worker"));
    }
    assert_eq!(acknowledged.len(), 40, "every turn has its own id");
    let mut sessions = b.sessions().await;
    let messages = all_messages(&mut sessions, "shared", 50).await;
    assert_eq!(
        messages.len(),
        80,
        "40 turns from two replicas, none lost or doubled"
    );
    assert_whole_turns(&messages);
    let stored: HashSet<String> = messages.iter().map(|m| m.turn_id.clone()).collect();
    assert_eq!(stored, acknowledged);
    // Both replicas see the same session.
    let mut other = a.sessions().await;
    assert_eq!(get_session(&mut other, "shared").await.message_count, 80);
}

async fn pending_tool_calls_survive_restart(backend: Backend) {
    let server = TestServer::start_with(backend.config()).await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "paused".into(),
            tools: vec![tool_def("get_weather", "Weather for a city.")],
            ..Default::default()
        },
    )
    .await;
    let mut interact = server.interact().await;
    let reply = say(
        &mut interact,
        "paused",
        "/call get_weather {\"city\": \"Paris\"}\n/call get_weather {\"city\": \"Oslo\"}",
        None,
    )
    .await;
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls as i32);
    assert_eq!(reply.tool_calls.len(), 2);
    assert!(server.stop().await);

    let server = TestServer::start_with(backend.config()).await;
    let mut sessions = server.sessions().await;
    let session = get_session(&mut sessions, "paused").await;
    assert_eq!(session.state, SessionState::AwaitingToolResults as i32);
    let pending: Vec<(String, String)> = session
        .pending_tool_calls
        .iter()
        .map(|c| (c.tool_call_id.clone(), c.name.clone()))
        .collect();
    let asked: Vec<(String, String)> = reply
        .tool_calls
        .iter()
        .map(|c| (c.tool_call_id.clone(), c.name.clone()))
        .collect();
    assert_eq!(
        pending, asked,
        "the same calls, in order, are still pending"
    );
    assert_eq!(
        json_of(&session.pending_tool_calls[1].arguments),
        json!({"city": "Oslo"})
    );
    assert_eq!(
        backend
            .count_rows("pending_tool_calls", Some("paused"))
            .await,
        2
    );

    let mut interact = server.interact().await;
    let done = send_results(
        &mut interact,
        "paused",
        vec![
            result(&reply.tool_calls[0].tool_call_id, "sunny"),
            result(&reply.tool_calls[1].tool_call_id, "snow"),
        ],
    )
    .await
    .expect("results complete the turn");
    assert_eq!(done.finish_reason, FinishReason::Stop as i32);
    assert_eq!(done.turn_id, reply.turn_id);
    let session = get_session(&mut sessions, "paused").await;
    assert_eq!(session.state, SessionState::Idle as i32);
    assert!(session.pending_tool_calls.is_empty());
    assert_eq!(
        backend
            .count_rows("pending_tool_calls", Some("paused"))
            .await,
        0
    );
    let messages = all_messages(&mut sessions, "paused", 10).await;
    assert_whole_turns(&messages);
}

async fn fixed_expiry_removes_session(backend: Backend) {
    let mut config = backend.config();
    config.storage.sweep_interval_ms = 100;
    let server = TestServer::start_with(config).await;
    let mut sessions = server.sessions().await;
    let expire = SystemTime::now() + Duration::from_millis(1500);
    let created = create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "brief".into(),
            expire_time: Some(expire.into()),
            ..Default::default()
        },
    )
    .await;
    // Times are kept to the microsecond.
    let mut expected: prost_types::Timestamp = expire.into();
    expected.nanos -= expected.nanos % 1000;
    assert_eq!(created.expire_time, Some(expected));
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "lasting".into(),
            ..Default::default()
        },
    )
    .await;
    let mut interact = server.interact().await;
    say(&mut interact, "brief", "hello", None).await;

    // A past expiry is refused.
    let status = expect_code(
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "lasting".into(),
                expire_time: Some((SystemTime::now() - Duration::from_secs(1)).into()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("expire_time is in the past"));

    let left = expire.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    expect_code(
        sessions
            .get_session(GetSessionRequest {
                session_id: "brief".into(),
            })
            .await,
        Code::NotFound,
    );
    let listed = sessions
        .list_sessions(ListSessionsRequest::default())
        .await
        .expect("ListSessions")
        .into_inner();
    let ids: Vec<&str> = listed
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    assert_eq!(ids, ["lasting"]);
    // The sweep deletes the rows.
    let mut rows = -1;
    for _ in 0..100 {
        rows = backend.count_rows("messages", Some("brief")).await
            + backend.count_rows("sessions", Some("brief")).await;
        if rows == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows, 0,
        "the sweep removed the expired session and its messages"
    );
    // The id starts over.
    let reply = say(&mut interact, "brief", "again", None).await;
    assert!(reply.session_created);
}

async fn idle_ttl_follows_activity(backend: Backend) {
    let mut config = backend.config();
    config.session_ttl = Some("1s".into());
    config.storage.sweep_interval_ms = 100;
    let server = TestServer::start_with(config).await;
    let mut interact = server.interact().await;
    let mut sessions = server.sessions().await;
    say(&mut interact, "idle", "first", None).await;
    let first = get_session(&mut sessions, "idle").await;
    let first_expiry: SystemTime = first
        .expire_time
        .expect("an idle TTL sets expire_time")
        .try_into()
        .expect("valid timestamp");
    // Activity keeps it alive well past one TTL.
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        say(&mut interact, "idle", &format!("still here {i}"), None).await;
    }
    let later = get_session(&mut sessions, "idle").await;
    let later_expiry: SystemTime = later.expire_time.unwrap().try_into().unwrap();
    assert!(later_expiry > first_expiry + Duration::from_millis(1500));
    assert_eq!(later.message_count, 12);
    // Idle for longer than the TTL: gone.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    expect_code(
        sessions
            .get_session(GetSessionRequest {
                session_id: "idle".into(),
            })
            .await,
        Code::NotFound,
    );
}

async fn newer_schema_is_refused(backend: Backend) {
    let config = backend.config();
    let store = contextd::server::open(&config)
        .await
        .expect("first open migrates");
    store.close().await;
    drop(store);
    let insert =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                  VALUES (20991231000000, 'from the future', TRUE, $1, 0)";
    match &backend {
        Backend::Sqlite { data_dir, .. } => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(data_dir.path().join("contextd.db"));
            let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
            sqlx::query(insert)
                .bind(vec![0u8; 48])
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Backend::Postgres { url, .. } => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
                .await
                .unwrap();
            sqlx::query(insert)
                .bind(vec![0u8; 48])
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    let error = match contextd::server::open(&config).await {
        Ok(_) => panic!("a database with a newer schema was opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("schema version 20991231000000") && error.contains("run a newer contextd"),
        "unexpected error: {error}"
    );
}

/// Every field of a session, window settings included, reads back as written after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_session_field() {
    let backend = Backend::sqlite();
    let server = TestServer::start_with(backend.config()).await;
    let mut sessions = server.sessions().await;
    let labels: HashMap<String, String> = [("team".to_string(), "search".to_string())].into();
    let created = create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "full".into(),
            system_prompt: "Be brief.".into(),
            context: ctx(json!({"a": [1, 2, {"b": null}], "n": 1.5})),
            tools: vec![tool_def("get_weather", "Weather.")],
            labels,
            max_context_tokens: 4000,
            window: Some(WindowSettings {
                strategy: WindowStrategy::Disabled as i32,
                summarize_threshold_percent: 80,
                summarizer_model: "echo".into(),
            }),
            ..Default::default()
        },
    )
    .await;
    assert!(server.stop().await);
    let server = TestServer::start_with(backend.config()).await;
    let mut sessions = server.sessions().await;
    let read = get_session(&mut sessions, "full").await;
    assert_eq!(read, created);
}
