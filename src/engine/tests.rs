//! Engine-level tests of what every door relies on: tenants kept apart by the key, and
//! conditional writes by etag, on the memory store and on the SQL store (SQLite).

use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::sessions::Page;
use super::*;
use crate::config::{Config, StoreKind};
use crate::domain::Scope;
use crate::domain::session::{Context, Session, SharedMessage};
use crate::model::echo::EchoModel;
use crate::store::memory::MemoryStore;
use crate::store::open::{OpenStore, open_store};

fn engine_over(store: Arc<dyn SessionStore>) -> Engine {
    engine_with_limits(store, Config::default().limits)
}

fn engine_with_limits(store: Arc<dyn SessionStore>, limits: crate::config::Limits) -> Engine {
    let config = Config::default();
    let mut models = ModelRegistry::new();
    models.register(Arc::new(EchoModel::new(
        config.engine.default_max_context_tokens,
    )));
    Engine::new(
        store,
        models,
        ToolRegistry::new(),
        config.engine.clone(),
        limits,
    )
}

/// An SQLite store in a fresh directory (removed when the returned guard drops).
async fn sqlite() -> (OpenStore, TempDir) {
    let dir = TempDir::new();
    let store = open_store(&StoreKind::Sqlite, &dir.0, &Config::default().storage)
        .await
        .expect("open SQLite");
    (store, dir)
}

/// A fresh directory, removed on drop.
pub(super) struct TempDir(pub(super) std::path::PathBuf);

impl TempDir {
    pub(super) fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "contextd-engine-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn context(value: serde_json::Value) -> Context {
    value.as_object().cloned().unwrap_or_default()
}

fn new_session(id: &str, ctx: serde_json::Value) -> NewSession {
    NewSession {
        session_id: id.into(),
        context: context(ctx),
        ..NewSession::default()
    }
}

async fn tenants_stay_apart(engine: &Engine) {
    let alpha = Scope::tenant("alpha");
    let beta = Scope::tenant("beta");
    engine
        .create_session(&alpha, new_session("shared", json!({"owner": "alpha"})))
        .await
        .unwrap();
    // The same id is free in another tenant.
    engine
        .create_session(&beta, new_session("shared", json!({"owner": "beta"})))
        .await
        .unwrap();
    engine
        .create_session(&alpha, new_session("alpha-only", json!({})))
        .await
        .unwrap();

    let seen = engine.get_session(&alpha, "shared").await.unwrap();
    assert_eq!(seen.context["owner"], "alpha");
    let seen = engine.get_session(&beta, "shared").await.unwrap();
    assert_eq!(seen.context["owner"], "beta");

    // A session of another tenant does not exist for the caller.
    let err = engine.get_session(&beta, "alpha-only").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = engine
        .delete_session(&beta, "alpha-only", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = engine
        .update_session(&beta, "alpha-only", SessionUpdate::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // Listings hold only the caller's sessions.
    let ids = |page: Page<Session, String>| -> Vec<String> {
        page.items.into_iter().map(|s| s.id).collect()
    };
    let listed = ids(engine
        .list_sessions(&alpha, None, 0, Session::clone, |_| 0)
        .await
        .unwrap());
    assert_eq!(listed, ["alpha-only", "shared"]);
    let listed = ids(engine
        .list_sessions(&beta, None, 0, Session::clone, |_| 0)
        .await
        .unwrap());
    assert_eq!(listed, ["shared"]);

    // A turn in one tenant leaves the other's session of the same id alone.
    let turn = TurnRequest {
        session_id: "shared".into(),
        message: "hello".into(),
        ..TurnRequest::default()
    };
    engine
        .run_turn(&alpha, turn, &mut NoSink, &CancellationToken::new())
        .await
        .unwrap();
    let alpha_messages = engine
        .list_messages(&alpha, "shared", 0, 0, SharedMessage::clone, |_| 0)
        .await
        .unwrap();
    assert_eq!(alpha_messages.items.len(), 2);
    let beta_messages = engine
        .list_messages(&beta, "shared", 0, 0, SharedMessage::clone, |_| 0)
        .await
        .unwrap();
    assert!(beta_messages.items.is_empty());

    // Deleting in one tenant keeps the other's.
    engine.delete_session(&beta, "shared", None).await.unwrap();
    assert!(engine.get_session(&alpha, "shared").await.is_ok());
    assert_eq!(
        engine
            .get_session(&beta, "shared")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

async fn etags_guard_changes(engine: &Engine) {
    let scope = Scope::default();
    let created = engine
        .create_session(&scope, new_session("tagged", json!({"n": 0})))
        .await
        .unwrap();
    let first = created.etag();
    let patch = |n: i64| SessionUpdate {
        context_patch: Some(context(json!({ "n": n }))),
        ..SessionUpdate::default()
    };

    // The current etag: applied, and the etag moves on.
    let updated = engine
        .update_session(&scope, "tagged", patch(1), Some(&first))
        .await
        .unwrap();
    let second = updated.etag();
    assert_ne!(first, second);
    assert_eq!(
        engine.get_session(&scope, "tagged").await.unwrap().etag(),
        second
    );

    // The old one: refused, nothing changes.
    let err = engine
        .update_session(&scope, "tagged", patch(2), Some(&first))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Aborted, "{err}");
    assert!(err.to_string().contains("read it again"), "{err}");
    let now = engine.get_session(&scope, "tagged").await.unwrap();
    assert_eq!(now.context["n"], 1);
    assert_eq!(now.etag(), second);

    // A turn is a write too: the etag read before it is stale after it.
    let turn = TurnRequest {
        session_id: "tagged".into(),
        message: "hi".into(),
        ..TurnRequest::default()
    };
    engine
        .run_turn(&scope, turn, &mut NoSink, &CancellationToken::new())
        .await
        .unwrap();
    let err = engine
        .delete_session(&scope, "tagged", Some(&second))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Aborted, "{err}");
    let current = engine.get_session(&scope, "tagged").await.unwrap().etag();

    // Without an etag, or with the current one, the change applies.
    engine
        .update_session(&scope, "tagged", patch(3), None)
        .await
        .unwrap();
    let current_after = engine.get_session(&scope, "tagged").await.unwrap().etag();
    assert_ne!(current, current_after);
    assert_eq!(
        engine
            .delete_session(&scope, "tagged", Some(&current_after))
            .await
            .unwrap(),
        2
    );

    // A session created again under the same id has a new etag, not the first one again.
    let again = engine
        .create_session(&scope, new_session("tagged", json!({})))
        .await
        .unwrap();
    assert_ne!(again.etag(), first);
}

#[tokio::test]
async fn tenants_stay_apart_in_memory() {
    tenants_stay_apart(&engine_over(Arc::new(MemoryStore::new()))).await;
}

#[tokio::test]
async fn tenants_stay_apart_in_sqlite() {
    let (store, _dir) = sqlite().await;
    tenants_stay_apart(&engine_over(store.store.clone())).await;
    store.close().await;
}

#[tokio::test]
async fn etags_guard_changes_in_memory() {
    etags_guard_changes(&engine_over(Arc::new(MemoryStore::new()))).await;
}

#[tokio::test]
async fn etags_guard_changes_in_sqlite() {
    let (store, _dir) = sqlite().await;
    etags_guard_changes(&engine_over(store.store.clone())).await;
    store.close().await;
}

/// A commit whose messages do not continue the history (a gap) is a lost race, ABORTED,
/// in every store alike.
async fn history_gaps_are_aborted(store: Arc<dyn SessionStore>) {
    let engine = engine_over(store.clone());
    let scope = Scope::tenant("gaps");
    let turn = TurnRequest {
        session_id: "g".into(),
        message: "hi".into(),
        ..TurnRequest::default()
    };
    engine
        .run_turn(&scope, turn, &mut NoSink, &CancellationToken::new())
        .await
        .unwrap();
    let mut session = engine.get_session(&scope, "g").await.unwrap();
    let gap = Arc::new(crate::domain::session::Message {
        index: session.message_count + 1,
        role: crate::domain::session::Role::User,
        content: "after a gap".into(),
        tool_calls: Vec::new(),
        tool_call_id: String::new(),
        tool_name: String::new(),
        is_error: false,
        create_time: crate::domain::session::now(),
        token_count: 3,
        turn_id: "t-gap".into(),
    });
    let expected = session.version;
    session.version += 1;
    session.message_count += 2;
    let err = EngineError::from(
        store
            .commit(&scope.tenant, &session, Some(expected), &[gap], None)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.kind(), ErrorKind::Aborted, "{err}");
}

#[tokio::test]
async fn history_gaps_are_aborted_in_memory() {
    history_gaps_are_aborted(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn history_gaps_are_aborted_in_sqlite() {
    let (store, _dir) = sqlite().await;
    history_gaps_are_aborted(store.store.clone()).await;
    store.close().await;
}

/// Pages end early once their items' encoded bytes reach `limits.max_page_bytes`; an item
/// over the bound goes out alone; every session is listed exactly once.
#[tokio::test]
async fn pages_are_capped_in_bytes() {
    let limits = crate::config::Limits {
        max_page_bytes: 1000,
        ..crate::config::Limits::default()
    };
    let engine = engine_with_limits(Arc::new(MemoryStore::new()), limits);
    let scope = Scope::default();
    for i in 0..7 {
        let new = NewSession {
            session_id: format!("s{i}"),
            system_prompt: if i == 3 {
                "p".repeat(5000)
            } else {
                "p".repeat(400)
            },
            ..NewSession::default()
        };
        engine.create_session(&scope, new).await.unwrap();
    }
    let size = |s: &Session| s.system_prompt.len();
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let page = engine
            .list_sessions(&scope, after.as_deref(), 100, Session::clone, size)
            .await
            .unwrap();
        let total: usize = page.items.iter().map(size).sum();
        assert!(total <= 1000 || page.items.len() == 1, "{total}");
        pages.push(page.items.iter().map(|s| s.id.clone()).collect::<Vec<_>>());
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [
            vec!["s0", "s1"],
            vec!["s2"],
            vec!["s3"],
            vec!["s4", "s5"],
            vec!["s6"]
        ]
    );
}
