//! SessionService end to end: create/get/delete, id validation, unknown models, keyset
//! pagination of ListSessions and ListMessages, and UpdateSession (RFC 7386 context merge,
//! system prompt, tools, labels).

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use contextd::api::v1::{
    CreateSessionRequest, DeleteSessionRequest, GetSessionRequest, ListMessagesRequest,
    ListSessionsRequest, MessageRole, PreviewContextRequest, SessionState, ToolDefinitionList,
    UpdateSessionRequest,
};
use serde_json::json;
use tonic::Code;

fn create_request(session_id: &str) -> CreateSessionRequest {
    CreateSessionRequest {
        session_id: session_id.to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_delete_round_trip() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;

    let labels: HashMap<String, String> = [("team".to_string(), "search".to_string())].into();
    let created = create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "Alpha.1:x-y_z".into(),
            system_prompt: "You are terse.".into(),
            context: ctx(json!({"user_id": "john_doe", "prefs": {"lang": "en"}})),
            model: String::new(),
            tools: vec![tool_def("get_weather", "Weather for a city.")],
            labels: labels.clone(),
            max_context_tokens: 4000,
            expire_time: None,
            window: None,
            server_tools: None,
        },
    )
    .await;

    assert_eq!(created.session_id, "Alpha.1:x-y_z");
    assert_eq!(created.system_prompt, "You are terse.");
    assert_eq!(
        json_of(&created.context),
        json!({"user_id": "john_doe", "prefs": {"lang": "en"}})
    );
    assert_eq!(created.model, "echo", "the default model is echo");
    assert_eq!(created.tools.len(), 1);
    assert_eq!(created.tools[0].name, "get_weather");
    assert_eq!(created.tools[0].description, "Weather for a city.");
    assert_eq!(created.labels, labels);
    assert_eq!(created.state(), SessionState::Idle);
    assert!(created.pending_tool_calls.is_empty());
    assert_eq!(created.message_count, 0);
    assert_eq!(created.max_context_tokens, 4000);
    let create_time = created.create_time.expect("create_time is set");
    let update_time = created.update_time.expect("update_time is set");
    assert!(create_time.seconds > 1_600_000_000, "a real timestamp");
    assert!(
        (update_time.seconds, update_time.nanos) >= (create_time.seconds, create_time.nanos),
        "update_time is not before create_time"
    );

    let fetched = get_session(&mut sessions, "Alpha.1:x-y_z").await;
    assert_eq!(
        fetched, created,
        "GetSession returns the session as created"
    );

    let deleted = sessions
        .delete_session(DeleteSessionRequest {
            session_id: "Alpha.1:x-y_z".into(),
            ..Default::default()
        })
        .await
        .expect("DeleteSession")
        .into_inner();
    assert_eq!(deleted.deleted_messages, 0);

    expect_code(
        sessions
            .get_session(GetSessionRequest {
                session_id: "Alpha.1:x-y_z".into(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        sessions
            .delete_session(DeleteSessionRequest {
                session_id: "Alpha.1:x-y_z".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_window_size_applies_when_zero() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let created = create_session(&mut sessions, create_request("default-window")).await;
    assert_eq!(created.max_context_tokens, 8192);
    assert!(created.system_prompt.is_empty());
    assert!(created.tools.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_id_generates_a_valid_unique_id() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;

    let first = create_session(&mut sessions, create_request("")).await;
    let second = create_session(&mut sessions, create_request("")).await;
    for id in [&first.session_id, &second.session_id] {
        assert!(!id.is_empty() && id.len() <= 128, "generated id {id:?}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)),
            "generated id {id:?} uses only the allowed characters"
        );
    }
    assert_ne!(first.session_id, second.session_id);
    let fetched = get_session(&mut sessions, &first.session_id).await;
    assert_eq!(fetched.session_id, first.session_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_session_ids_are_rejected() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;

    let too_long = "a".repeat(129);
    for bad in [
        "has space",
        "slash/id",
        "semi;colon",
        "ünïcode",
        "tab\tid",
        "new\nline",
        too_long.as_str(),
    ] {
        let status = expect_code(
            sessions.create_session(create_request(bad)).await,
            Code::InvalidArgument,
        );
        assert!(!status.message().is_empty(), "the error explains itself");
        expect_code(
            sessions
                .get_session(GetSessionRequest {
                    session_id: bad.to_string(),
                })
                .await,
            Code::InvalidArgument,
        );
    }
    // Required ids may not be empty.
    expect_code(
        sessions
            .get_session(GetSessionRequest {
                session_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        sessions
            .delete_session(DeleteSessionRequest {
                session_id: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );

    // The longest allowed id and every allowed character work.
    let longest = "b".repeat(128);
    create_session(&mut sessions, create_request(&longest)).await;
    create_session(&mut sessions, create_request("AZaz09._:-")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_id_is_already_exists() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    create_session(&mut sessions, create_request("taken")).await;
    expect_code(
        sessions.create_session(create_request("taken")).await,
        Code::AlreadyExists,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_lists_known_models() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let status = expect_code(
        sessions
            .create_session(CreateSessionRequest {
                session_id: "m1".into(),
                model: "gpt-imaginary".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("echo"),
        "message lists the known models: {}",
        status.message()
    );
    // Nothing was created.
    expect_code(
        sessions
            .get_session(GetSessionRequest {
                session_id: "m1".into(),
            })
            .await,
        Code::NotFound,
    );

    create_session(&mut sessions, create_request("m2")).await;
    let status = expect_code(
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "m2".into(),
                model: Some("gpt-imaginary".into()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("echo"), "{}", status.message());
    assert_eq!(get_session(&mut sessions, "m2").await.model, "echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_is_not_found_everywhere() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let ghost = || "ghost".to_string();

    expect_code(
        sessions
            .get_session(GetSessionRequest {
                session_id: ghost(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        sessions
            .update_session(UpdateSessionRequest {
                session_id: ghost(),
                system_prompt: Some("x".into()),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        sessions
            .delete_session(DeleteSessionRequest {
                session_id: ghost(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        sessions
            .list_messages(ListMessagesRequest {
                session_id: ghost(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        sessions
            .preview_context(PreviewContextRequest {
                session_id: ghost(),
                message: "hi".into(),
                context: None,
                summarize: false,
            })
            .await,
        Code::NotFound,
    );
}

/// Reads every page of ListSessions with `page_size`, returning the pages' ids.
async fn list_pages(server: &TestServer, page_size: u32) -> Vec<Vec<String>> {
    let mut sessions = server.sessions().await;
    let mut pages = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let page = sessions
            .list_sessions(ListSessionsRequest {
                page_size,
                page_token: token.clone(),
            })
            .await
            .expect("ListSessions")
            .into_inner();
        pages.push(page.sessions.iter().map(|s| s.session_id.clone()).collect());
        if page.next_page_token.is_empty() {
            return pages;
        }
        token = page.next_page_token;
    }
    panic!("ListSessions never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sessions_pages_in_id_order() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    // Created out of order, with ids whose byte order differs from their "natural" order.
    let ids = [
        "s07", "B", "s01", "a", "s10", "Z", "s03", "s-2", "s.9", "s:5",
    ];
    for id in ids {
        create_session(&mut sessions, create_request(id)).await;
    }
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort(); // byte order

    let pages = list_pages(&server, 3).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert!(
        pages.iter().all(|p| p.len() <= 3),
        "no page exceeds page_size: {sizes:?}"
    );
    assert!(
        pages.iter().take(pages.len() - 1).all(|p| p.len() == 3),
        "every page but the last is full: {sizes:?}"
    );
    let listed: Vec<String> = pages.concat();
    assert_eq!(listed, expected, "all sessions, ascending, none twice");

    // page_size 0 means the default (50): everything in one page.
    let one_page = list_pages(&server, 0).await;
    assert_eq!(one_page.len(), 1);
    assert_eq!(one_page[0], expected);

    // A page size above the maximum is clamped, not refused.
    let big = list_pages(&server, 100_000).await;
    assert_eq!(big.concat(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sessions_is_keyset_paginated() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    for i in 0..10 {
        create_session(&mut sessions, create_request(&format!("s{i:02}"))).await;
    }

    let first = sessions
        .list_sessions(ListSessionsRequest {
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .expect("ListSessions")
        .into_inner();
    let mut seen: Vec<String> = first
        .sessions
        .iter()
        .map(|s| s.session_id.clone())
        .collect();
    assert_eq!(seen, ["s00", "s01", "s02"]);
    assert!(!first.next_page_token.is_empty());

    // Sessions appear before the cursor and disappear after it while the listing runs.
    create_session(&mut sessions, create_request("a-early")).await;
    create_session(&mut sessions, create_request("s00a")).await;
    sessions
        .delete_session(DeleteSessionRequest {
            session_id: "s05".into(),
            ..Default::default()
        })
        .await
        .expect("DeleteSession");

    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = sessions
            .list_sessions(ListSessionsRequest {
                page_size: 3,
                page_token: token,
            })
            .await
            .expect("ListSessions")
            .into_inner();
        seen.extend(page.sessions.iter().map(|s| s.session_id.clone()));
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        [
            "s00", "s01", "s02", "s03", "s04", "s06", "s07", "s08", "s09"
        ],
        "no session that existed throughout is skipped or repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_page_tokens_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    create_session(&mut sessions, create_request("p1")).await;

    for bad in ["%%%garbage%%%", "\u{1F600}", "!"] {
        expect_code(
            sessions
                .list_sessions(ListSessionsRequest {
                    page_size: 3,
                    page_token: bad.to_string(),
                })
                .await,
            Code::InvalidArgument,
        );
        expect_code(
            sessions
                .list_messages(ListMessagesRequest {
                    session_id: "p1".into(),
                    page_size: 3,
                    page_token: bad.to_string(),
                })
                .await,
            Code::InvalidArgument,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_messages_pages_oldest_first() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    let mut replies = Vec::new();
    for i in 0..5 {
        replies.push(
            say(
                &mut interact,
                "history",
                &format!("message number {i}"),
                None,
            )
            .await,
        );
    }

    let paged = all_messages(&mut sessions, "history", 3).await;
    assert_eq!(paged.len(), 10);
    for (i, message) in paged.iter().enumerate() {
        assert_eq!(message.index, i as u64, "indexes run 0, 1, 2, ...");
        let turn = &replies[i / 2];
        assert_eq!(message.turn_id, turn.turn_id);
        if i % 2 == 0 {
            assert_eq!(message.role(), MessageRole::User);
            assert_eq!(message.content, format!("message number {}", i / 2));
        } else {
            assert_eq!(message.role(), MessageRole::Assistant);
            assert_eq!(message.content, turn.response);
        }
        assert!(message.create_time.is_some());
        assert!(message.token_count > 0);
    }

    // The default page size covers all ten in one page; the result is the same.
    let unpaged = all_messages(&mut sessions, "history", 0).await;
    assert_eq!(unpaged, paged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_session_merges_context_as_merge_patch() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "patch".into(),
            context: ctx(json!({
                "user": {"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}},
                "theme": "dark",
                "drop_me": 1,
                "list": [1, 2, 3]
            })),
            ..Default::default()
        },
    )
    .await;

    let updated = sessions
        .update_session(UpdateSessionRequest {
            session_id: "patch".into(),
            context: ctx(json!({
                "user": {"age": 37, "address": {"zip": null, "street": "Main"}},
                "drop_me": null,
                "list": [4],
                "new": {"flag": true}
            })),
            ..Default::default()
        })
        .await
        .expect("UpdateSession")
        .into_inner()
        .session
        .expect("session");
    let expected = json!({
        "user": {"name": "Ada", "age": 37, "address": {"city": "London", "street": "Main"}},
        "theme": "dark",
        "list": [4],
        "new": {"flag": true}
    });
    assert_eq!(json_of(&updated.context), expected);
    assert_eq!(
        json_of(&get_session(&mut sessions, "patch").await.context),
        expected
    );

    // A patch that replaces an object with a scalar, and one that deletes a missing key.
    let updated = sessions
        .update_session(UpdateSessionRequest {
            session_id: "patch".into(),
            context: ctx(json!({"user": "anonymous", "never_there": null})),
            ..Default::default()
        })
        .await
        .expect("UpdateSession")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(
        json_of(&updated.context),
        json!({"user": "anonymous", "theme": "dark", "list": [4], "new": {"flag": true}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_session_replaces_fields_that_are_set() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let created = create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "upd".into(),
            system_prompt: "old prompt".into(),
            context: ctx(json!({"k": "v"})),
            tools: vec![tool_def("old_tool", "old")],
            labels: [("a", "1"), ("c", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
    )
    .await;

    let updated = sessions
        .update_session(UpdateSessionRequest {
            session_id: "upd".into(),
            system_prompt: Some("new prompt".into()),
            tools: Some(ToolDefinitionList {
                tools: vec![
                    tool_def("lookup", "Looks things up."),
                    tool_def("fetch", ""),
                ],
            }),
            labels: [
                ("b".to_string(), "2".to_string()),
                ("c".to_string(), "30".to_string()),
            ]
            .into(),
            remove_labels: vec!["a".into(), "not-there".into()],
            max_context_tokens: Some(5000),
            ..Default::default()
        })
        .await
        .expect("UpdateSession")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(updated.system_prompt, "new prompt");
    let names: Vec<&str> = updated.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["lookup", "fetch"]);
    let expected_labels: HashMap<String, String> = [
        ("b".to_string(), "2".to_string()),
        ("c".to_string(), "30".to_string()),
    ]
    .into();
    assert_eq!(updated.labels, expected_labels);
    assert_eq!(updated.max_context_tokens, 5000);
    assert_eq!(
        json_of(&updated.context),
        json!({"k": "v"}),
        "context untouched"
    );
    assert_eq!(updated.create_time, created.create_time);
    let (before, after) = (
        created.update_time.expect("update_time"),
        updated.update_time.expect("update_time"),
    );
    assert!((after.seconds, after.nanos) >= (before.seconds, before.nanos));

    // Nothing set: nothing changes.
    let same = sessions
        .update_session(UpdateSessionRequest {
            session_id: "upd".into(),
            ..Default::default()
        })
        .await
        .expect("UpdateSession")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(same.system_prompt, "new prompt");
    assert_eq!(same.tools.len(), 2);
    assert_eq!(same.labels, expected_labels);

    // An empty list removes every tool; an empty prompt clears it.
    let cleared = sessions
        .update_session(UpdateSessionRequest {
            session_id: "upd".into(),
            system_prompt: Some(String::new()),
            tools: Some(ToolDefinitionList { tools: vec![] }),
            ..Default::default()
        })
        .await
        .expect("UpdateSession")
        .into_inner()
        .session
        .expect("session");
    assert!(cleared.tools.is_empty());
    assert!(cleared.system_prompt.is_empty());
    assert_eq!(get_session(&mut sessions, "upd").await, cleared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tracks_turns_usage_and_deletion_counts() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    let created = create_session(&mut sessions, create_request("usage")).await;

    let first = say(&mut interact, "usage", "first question", None).await;
    let second = say(&mut interact, "usage", "second, longer question here", None).await;

    let session = get_session(&mut sessions, "usage").await;
    assert_eq!(session.message_count, 4);
    assert_eq!(session.state(), SessionState::Idle);
    let usage = session.usage.expect("usage");
    let (u1, u2) = (
        first.usage.expect("turn usage"),
        second.usage.expect("turn usage"),
    );
    assert!(u1.input_tokens > 0 && u1.output_tokens > 0);
    assert_eq!(usage.input_tokens, u1.input_tokens + u2.input_tokens);
    assert_eq!(usage.output_tokens, u1.output_tokens + u2.output_tokens);
    assert_eq!(
        usage.context_tokens, u2.context_tokens,
        "the last turn's window"
    );
    assert!(
        u2.context_tokens > u1.context_tokens,
        "the second window includes the first turn"
    );
    let (created_at, updated_at) = (
        created.update_time.expect("update_time"),
        session.update_time.expect("update_time"),
    );
    assert!((updated_at.seconds, updated_at.nanos) > (created_at.seconds, created_at.nanos));

    let deleted = sessions
        .delete_session(DeleteSessionRequest {
            session_id: "usage".into(),
            ..Default::default()
        })
        .await
        .expect("DeleteSession")
        .into_inner();
    assert_eq!(deleted.deleted_messages, 4);
    expect_code(
        sessions
            .list_messages(ListMessagesRequest {
                session_id: "usage".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );

    // The id is free again, with an empty history.
    let again = create_session(&mut sessions, create_request("usage")).await;
    assert_eq!(again.message_count, 0);
    let ids: BTreeSet<String> = all_messages(&mut sessions, "usage", 0)
        .await
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert!(ids.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_waits_for_a_running_turn() {
    use contextd::api::v1::stream_response_response::Event;

    let server = TestServer::start().await;
    let mut interact = server.interact().await;
    create_session(&mut server.sessions().await, create_request("locked")).await;

    let mut stream = interact
        .stream_response(stream_request(
            "locked",
            "/delay 100 a b c d e f",
            Some(json!({"turn": 1})),
        ))
        .await
        .expect("StreamResponse")
        .into_inner();
    // Wait until the turn is running.
    loop {
        let event = within("the first delta", stream.message())
            .await
            .expect("stream item")
            .expect("stream open")
            .event;
        if matches!(event, Some(Event::Delta(_))) {
            break;
        }
    }

    let mut sessions = server.sessions().await;
    let update = tokio::spawn(async move {
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "locked".into(),
                context: ctx(json!({"update": 2})),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    });

    let mut completed = None;
    while let Some(item) = within("the turn", stream.message())
        .await
        .expect("stream item")
    {
        if let Some(Event::Completed(done)) = item.event {
            completed = Some(done);
        }
    }
    let completed = completed.expect("the turn completes");
    assert_eq!(
        json_of(&completed.updated_context),
        json!({"turn": 1}),
        "the update did not run in the middle of the turn"
    );
    let updated = within("UpdateSession", update)
        .await
        .expect("task")
        .expect("UpdateSession")
        .session
        .expect("session");
    assert_eq!(
        json_of(&updated.context),
        json!({"turn": 1, "update": 2}),
        "neither write is lost"
    );
    assert_eq!(updated.message_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_cannot_change_while_results_are_pending() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;
    create_session(
        &mut sessions,
        CreateSessionRequest {
            session_id: "pending".into(),
            tools: vec![tool_def("lookup", "Looks things up.")],
            ..Default::default()
        },
    )
    .await;
    let paused = say(&mut interact, "pending", "/call lookup {}", None).await;
    assert_eq!(paused.tool_calls.len(), 1);

    expect_code(
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "pending".into(),
                tools: Some(ToolDefinitionList { tools: vec![] }),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    let session = get_session(&mut sessions, "pending").await;
    assert_eq!(session.tools.len(), 1);
    assert_eq!(session.state(), SessionState::AwaitingToolResults);

    // Other fields may change meanwhile.
    let updated = sessions
        .update_session(UpdateSessionRequest {
            session_id: "pending".into(),
            system_prompt: Some("still fine".into()),
            ..Default::default()
        })
        .await
        .expect("UpdateSession")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(updated.system_prompt, "still fine");
    assert_eq!(updated.state(), SessionState::AwaitingToolResults);
}

/// Conditional writes (AIP-154): the etag changes with every write (an update, a turn), and
/// UpdateSession and DeleteSession naming a stale one are ABORTED and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_conflicts_are_aborted() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    let mut interact = server.interact().await;

    let created = create_session(
        &mut sessions,
        CreateSessionRequest {
            context: ctx(json!({"n": 0})),
            ..create_request("tagged")
        },
    )
    .await;
    assert!(!created.etag.is_empty());
    assert_eq!(
        get_session(&mut sessions, "tagged").await.etag,
        created.etag
    );

    // The current etag: the update applies and the etag moves on.
    let updated = sessions
        .update_session(UpdateSessionRequest {
            session_id: "tagged".into(),
            context: ctx(json!({"n": 1})),
            etag: created.etag.clone(),
            ..Default::default()
        })
        .await
        .expect("UpdateSession with the current etag")
        .into_inner()
        .session
        .expect("session");
    assert_ne!(updated.etag, created.etag);

    // A stale etag: ABORTED, with a message that says to read the session again.
    let status = expect_code(
        sessions
            .update_session(UpdateSessionRequest {
                session_id: "tagged".into(),
                context: ctx(json!({"n": 2})),
                etag: created.etag.clone(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
    assert!(status.message().contains("GetSession"), "{status:?}");
    let unchanged = get_session(&mut sessions, "tagged").await;
    assert_eq!(json_of(&unchanged.context), json!({"n": 1}));
    assert_eq!(unchanged.etag, updated.etag);

    // A turn is a write: the etag read before it no longer deletes.
    say(&mut interact, "tagged", "hello", None).await;
    let after_turn = get_session(&mut sessions, "tagged").await;
    assert_ne!(after_turn.etag, updated.etag);
    expect_code(
        sessions
            .delete_session(DeleteSessionRequest {
                session_id: "tagged".into(),
                etag: updated.etag.clone(),
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(get_session(&mut sessions, "tagged").await.message_count, 2);

    // The current etag deletes.
    let deleted = sessions
        .delete_session(DeleteSessionRequest {
            session_id: "tagged".into(),
            etag: after_turn.etag.clone(),
        })
        .await
        .expect("DeleteSession with the current etag")
        .into_inner();
    assert_eq!(deleted.deleted_messages, 2);
    expect_code(
        sessions
            .get_session(GetSessionRequest {
                session_id: "tagged".into(),
            })
            .await,
        Code::NotFound,
    );
}

/// An expiry a protobuf Timestamp cannot hold is refused, naming the range — never accepted
/// and then stored as something else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_times_out_of_range_are_refused() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions().await;
    for (seconds, nanos) in [
        (1_i64 << 62, 0),
        (10_i64.pow(13), 0),
        (253_402_300_800, 0), // 10000-01-01
        (-62_135_596_801, 0), // before year 1
        (2_000_000_000, 1_000_000_000),
    ] {
        let status = expect_code(
            sessions
                .create_session(contextd::api::v1::CreateSessionRequest {
                    session_id: "far".into(),
                    expire_time: Some(prost_types::Timestamp { seconds, nanos }),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().contains("9999-12-31T23:59:59Z"),
            "{seconds}: {status:?}"
        );
    }
    // Nothing was created by any of them.
    expect_code(
        sessions
            .get_session(contextd::api::v1::GetSessionRequest {
                session_id: "far".into(),
            })
            .await,
        Code::NotFound,
    );
}
