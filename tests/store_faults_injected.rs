//! Store failures injected by plan under a real server (memory and SQLite stores): each one
//! reaches the caller as its documented status, nothing of a failed turn is stored, the
//! engine keeps no state ahead of the store (the next turn succeeds on the stored history),
//! and a turn that was written but reported failed is not run twice by an idempotent retry.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use contextd::api::v1::InteractRequest;
use contextd::config::Config;
use contextd::store_faults::{Fault, Faults, Op, Rule, StoreError};
use tonic::Code;

/// A directory removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("contextd-faults-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The stores every case runs on: memory, and SQLite in a fresh directory.
fn stores() -> Vec<(&'static str, Config, Option<TempDir>)> {
    let dir = TempDir::new();
    let sqlite = Config {
        store: "sqlite".into(),
        data_dir: dir.0.clone(),
        ..test_config()
    };
    vec![
        ("memory", test_config(), None),
        ("sqlite", sqlite, Some(dir)),
    ]
}

fn unavailable(reason: &str) -> StoreError {
    StoreError::Unavailable(reason.into())
}

fn keyed(session_id: &str, message: &str, key: &str) -> InteractRequest {
    InteractRequest {
        idempotency_key: key.into(),
        ..interact_request(session_id, message, None)
    }
}

/// The contents of a session's history, in order.
async fn history(server: &TestServer, session_id: &str) -> Vec<String> {
    let mut sessions = server.sessions().await;
    all_messages(&mut sessions, session_id, 100)
        .await
        .into_iter()
        .map(|m| m.content)
        .collect()
}

/// A commit that fails before it is written: UNAVAILABLE saying why, the session and its
/// history exactly as before, and the next turn runs on the stored history.
#[tokio::test]
async fn a_failed_commit_is_unavailable_and_changes_nothing() {
    for (store, config, _dir) in stores() {
        let faults = Faults::new();
        let server = TestServer::start_with_faults(config, faults.clone()).await;
        let mut interact = server.interact().await;
        let mut sessions = server.sessions().await;
        say(&mut interact, "s", "one", None).await;
        let before = get_session(&mut sessions, "s").await;
        let history_before = history(&server, "s").await;

        faults.inject(Rule::next(
            Op::Commit,
            1,
            Fault::Fail(unavailable("the disk is full")),
        ));
        let status = expect_code(
            within(
                "Interact",
                interact.interact(interact_request("s", "two", None)),
            )
            .await,
            Code::Unavailable,
        );
        assert!(
            status.message().contains("session store is unavailable")
                && status.message().contains("the disk is full"),
            "{store}: {}",
            status.message()
        );
        assert_eq!(faults.hits(Op::Commit), 1, "{store}");
        assert_eq!(get_session(&mut sessions, "s").await, before, "{store}");
        assert_eq!(history(&server, "s").await, history_before, "{store}");

        // Nothing of the failed turn is held anywhere: the next turn continues the stored
        // history.
        say(&mut interact, "s", "three", None).await;
        let after = history(&server, "s").await;
        assert_eq!(after.len(), history_before.len() + 2, "{store}: {after:?}");
        assert_eq!(after[..history_before.len()], history_before[..], "{store}");
        assert_eq!(after[history_before.len()], "three", "{store}");
        assert!(!after.iter().any(|m| m == "two"), "{store}: {after:?}");
        assert!(server.stop().await, "{store}");
    }
}

/// A commit refused as concurrent is ABORTED (the caller re-reads and retries), and leaves
/// nothing behind.
#[tokio::test]
async fn a_conflicting_commit_is_aborted_and_changes_nothing() {
    for (store, config, _dir) in stores() {
        let faults = Faults::new();
        let server = TestServer::start_with_faults(config, faults.clone()).await;
        let mut interact = server.interact().await;
        let mut sessions = server.sessions().await;
        say(&mut interact, "s", "one", None).await;
        let before = get_session(&mut sessions, "s").await;

        faults.inject(Rule::next(
            Op::Commit,
            1,
            Fault::Fail(StoreError::Conflict("s".into())),
        ));
        let status = expect_code(
            within(
                "Interact",
                interact.interact(interact_request("s", "two", None)),
            )
            .await,
            Code::Aborted,
        );
        assert!(
            status.message().contains('s'),
            "{store}: {}",
            status.message()
        );
        assert_eq!(get_session(&mut sessions, "s").await, before, "{store}");
        say(&mut interact, "s", "three", None).await;
        assert_eq!(history(&server, "s").await.len(), 4, "{store}");
        assert!(server.stop().await, "{store}");
    }
}

/// Only the planned call fails: the third commit of four turns.
#[tokio::test]
async fn only_the_third_commit_fails() {
    for (store, config, _dir) in stores() {
        let faults = Faults::new();
        let server = TestServer::start_with_faults(config, faults.clone()).await;
        let mut interact = server.interact().await;
        faults.inject(Rule::nth(Op::Commit, 3, Fault::Fail(unavailable("flaky"))));
        let mut codes = Vec::new();
        for message in ["m1", "m2", "m3", "m4"] {
            let result = within(
                "Interact",
                interact.interact(interact_request("s", message, None)),
            )
            .await;
            codes.push(result.map(|_| Code::Ok).unwrap_or_else(|s| s.code()));
        }
        assert_eq!(
            codes,
            [Code::Ok, Code::Ok, Code::Unavailable, Code::Ok],
            "{store}"
        );
        let stored = history(&server, "s").await;
        let users: Vec<_> = stored.iter().step_by(2).cloned().collect();
        assert_eq!(users, ["m1", "m2", "m4"], "{store}: {stored:?}");
        assert_eq!(stored.len(), 6, "{store}: {stored:?}");
        assert!(server.stop().await, "{store}");
    }
}

/// A turn written but reported failed (the acknowledgement lost): the idempotent retry gets
/// the stored turn instead of running it again, and the session goes on from there.
#[tokio::test]
async fn a_written_turn_reported_failed_is_not_run_twice_by_a_retry() {
    for (store, config, _dir) in stores() {
        let faults = Faults::new();
        let server = TestServer::start_with_faults(config, faults.clone()).await;
        let mut interact = server.interact().await;
        faults.inject(Rule::next(
            Op::Commit,
            1,
            Fault::FailAfter(unavailable("connection lost")),
        ));
        expect_code(
            within("Interact", interact.interact(keyed("r", "hello", "k1"))).await,
            Code::Unavailable,
        );
        assert_eq!(
            history(&server, "r").await.len(),
            2,
            "{store}: it was written"
        );

        let retry = within("Interact", interact.interact(keyed("r", "hello", "k1")))
            .await
            .unwrap_or_else(|s| panic!("{store}: retry: {:?} {}", s.code(), s.message()))
            .into_inner();
        let again = within("Interact", interact.interact(keyed("r", "hello", "k1")))
            .await
            .unwrap_or_else(|s| panic!("{store}: retry: {:?} {}", s.code(), s.message()))
            .into_inner();
        assert_eq!(retry, again, "{store}");
        let stored = history(&server, "r").await;
        assert_eq!(
            stored.len(),
            2,
            "{store}: the retry ran the turn again: {stored:?}"
        );

        say(&mut interact, "r", "next", None).await;
        assert_eq!(history(&server, "r").await.len(), 4, "{store}");
        assert!(server.stop().await, "{store}");
    }
}

/// Without a key, a turn written but reported failed does not wedge the session: the engine
/// holds nothing ahead of the store, so the next turn runs on the stored history.
#[tokio::test]
async fn a_written_turn_reported_failed_does_not_wedge_the_session() {
    for (store, config, _dir) in stores() {
        let faults = Faults::new();
        let server = TestServer::start_with_faults(config, faults.clone()).await;
        let mut interact = server.interact().await;
        say(&mut interact, "w", "one", None).await;
        faults.inject(Rule::next(
            Op::Commit,
            1,
            Fault::FailAfter(unavailable("connection lost")),
        ));
        expect_code(
            within(
                "Interact",
                interact.interact(interact_request("w", "two", None)),
            )
            .await,
            Code::Unavailable,
        );
        say(&mut interact, "w", "three", None).await;
        let stored = history(&server, "w").await;
        let users: Vec<_> = stored.iter().step_by(2).cloned().collect();
        assert_eq!(users, ["one", "two", "three"], "{store}: {stored:?}");
        assert!(server.stop().await, "{store}");
    }
}

/// A store read that fails is UNAVAILABLE on a read RPC too, with the reason and no internals.
#[tokio::test]
async fn a_failed_read_is_unavailable() {
    for (store, config, _dir) in stores() {
        let faults = Faults::new();
        let server = TestServer::start_with_faults(config, faults.clone()).await;
        let mut interact = server.interact().await;
        let mut sessions = server.sessions().await;
        say(&mut interact, "s", "one", None).await;
        faults.inject(Rule::next(
            Op::GetSession,
            1,
            Fault::Fail(unavailable("replica down")),
        ));
        let status = expect_code(
            within(
                "GetSession",
                sessions.get_session(contextd::api::v1::GetSessionRequest {
                    session_id: "s".into(),
                }),
            )
            .await,
            Code::Unavailable,
        );
        assert!(
            status.message().contains("replica down"),
            "{store}: {}",
            status.message()
        );
        assert!(
            !status.message().contains("sqlite"),
            "{store}: {}",
            status.message()
        );
        get_session(&mut sessions, "s").await;
        assert!(server.stop().await, "{store}");
    }
}

/// A store that stalls longer than the caller's deadline: the caller gets its deadline, not a
/// hang, nothing of the turn is stored, and the session is usable once the store is back.
#[tokio::test]
async fn a_stalled_store_meets_the_callers_deadline() {
    for (store, config, _dir) in stores() {
        let faults = Faults::new();
        let server = TestServer::start_with_faults(config, faults.clone()).await;
        let mut interact = server.interact().await;
        say(&mut interact, "d", "one", None).await;
        faults.inject(Rule::next(
            Op::Commit,
            1,
            Fault::Delay(Duration::from_secs(3)),
        ));
        let mut request = tonic::Request::new(interact_request("d", "two", None));
        request.set_timeout(Duration::from_millis(300));
        let status = within("Interact", interact.interact(request))
            .await
            .expect_err("the deadline passes while the store stalls");
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{store}: {:?} {}",
            status.code(),
            status.message()
        );
        // Whatever the stalled commit did, the session's history is whole and usable.
        say(&mut interact, "d", "three", None).await;
        let stored = history(&server, "d").await;
        assert_eq!(stored.len() % 2, 0, "{store}: {stored:?}");
        assert_eq!(stored[stored.len() - 2], "three", "{store}: {stored:?}");
        assert!(server.stop().await, "{store}");
    }
}
