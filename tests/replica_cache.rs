//! The session cache on PostgreSQL, where several replicas write the same rows: each replica
//! uses its cached window only under its own lease, once the row read under that lease shows
//! nobody else changed the session. Two replicas (two stores on one database, each with its
//! cache) interleave turns, delete and recreate a session, and read outside leases; every read
//! is compared with the history as written.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::postgres::Cluster;
use common::test_config;
use contextd::SessionStore;
use contextd::domain::TenantId;
use contextd::domain::session::{Message, Role, Session, SharedMessage, Usage};

/// Two replicas' stores on a new database of the shared cluster, with the database's name.
async fn two_replicas() -> (
    &'static Cluster,
    String,
    Arc<dyn SessionStore>,
    Arc<dyn SessionStore>,
) {
    let cluster = Cluster::shared();
    let url = cluster.create_database();
    let database = url.rsplit('/').next().expect("a database name").to_string();
    let (a, b) = (replica(&url).await, replica(&url).await);
    (cluster, database, a, b)
}

/// One replica's store, with the session cache of the default configuration.
async fn replica(url: &str) -> Arc<dyn SessionStore> {
    let mut config = test_config();
    config.store = url.to_string();
    assert!(config.storage.cache_bytes > 0, "the cache is on by default");
    contextd::server::open(&config)
        .await
        .expect("open the PostgreSQL store")
        .store
}

fn message(index: u64, role: Role, content: &str, turn: u64) -> SharedMessage {
    Arc::new(Message {
        index,
        role,
        token_count: 8,
        content: content.to_string(),
        tool_calls: Vec::new(),
        tool_call_id: String::new(),
        tool_name: String::new(),
        is_error: false,
        create_time: SystemTime::now(),
        turn_id: format!("t-{turn}"),
    })
}

fn new_session(id: &str, created: SystemTime) -> Session {
    Session {
        id: id.to_string(),
        system_prompt: String::new(),
        context: Default::default(),
        model: "echo".to_string(),
        tools: Vec::new(),
        labels: Default::default(),
        create_time: created,
        update_time: created,
        message_count: 0,
        pending: None,
        usage: Usage::default(),
        max_context_tokens: 8192,
        version: 1,
        expire_time: None,
        idle_ttl: None,
        window: Default::default(),
        server_tools: None,
    }
}

/// Stores a new empty session `id`, created now.
async fn create(store: &dyn SessionStore, tenant: &TenantId, id: &str) {
    store
        .commit(tenant, &new_session(id, SystemTime::now()), None, &[], None)
        .await
        .expect("create the session");
}

/// Every stored message before the end, read the way a window is: newest first, in pages.
async fn read_back(store: &dyn SessionStore, tenant: &TenantId, id: &str, end: u64) -> Vec<String> {
    let mut newest_first = Vec::new();
    let mut before = end;
    while before > 0 {
        let page = store
            .list_messages_before(tenant, id, before, 16)
            .await
            .expect("list_messages_before");
        let Some(oldest) = page.last() else { break };
        before = oldest.index;
        newest_first.extend(page.iter().map(|m| m.content.clone()));
    }
    newest_first.reverse();
    newest_first
}

/// One turn as the engine runs it: lease, read the row and the whole window, check the
/// window is exactly `written`, commit two messages, release.
async fn turn(
    store: &dyn SessionStore,
    tenant: &TenantId,
    id: &str,
    written: &mut Vec<String>,
    label: &str,
) {
    let lease = store.lease_session(tenant, id).await.expect("lease");
    turn_under_lease(store, tenant, id, written, label).await;
    drop(lease);
}

/// [`turn`] for a caller that holds the session's lease.
async fn turn_under_lease(
    store: &dyn SessionStore,
    tenant: &TenantId,
    id: &str,
    written: &mut Vec<String>,
    label: &str,
) {
    let mut session = store
        .get_session(tenant, id)
        .await
        .expect("get_session")
        .expect("the session exists");
    assert_eq!(session.message_count, written.len() as u64, "{label}: row");
    let window = read_back(store, tenant, id, session.message_count).await;
    assert_eq!(
        &window, written,
        "{label}: the window is the history as written"
    );
    let first = session.message_count;
    let turn_number = first / 2 + 1;
    let question = format!("{label} asks");
    let answer = format!("{label} answered");
    let messages = [
        message(first, Role::User, &question, turn_number),
        message(first + 1, Role::Assistant, &answer, turn_number),
    ];
    let expected = session.version;
    session.version += 1;
    session.message_count += 2;
    store
        .commit(tenant, &session, Some(expected), &messages, None)
        .await
        .unwrap_or_else(|e| panic!("{label}: commit: {e}"));
    written.extend([question, answer]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_use_their_caches_only_under_a_confirmed_lease() {
    let (cluster, database, a, b) = two_replicas().await;
    let tenant = TenantId::default();
    let id = "shared";

    create(a.as_ref(), &tenant, id).await;
    let mut written = Vec::new();
    // Runs of turns on one replica, then the other: a cached window that missed the other
    // replica's turns would differ from what was written.
    for (i, on_a) in [
        true, true, false, true, false, false, false, true, true, false,
    ]
    .into_iter()
    .enumerate()
    {
        let (store, name) = if on_a { (&a, "a") } else { (&b, "b") };
        turn(
            store.as_ref(),
            &tenant,
            id,
            &mut written,
            &format!("{name}{i}"),
        )
        .await;
    }

    // Under a confirmed lease, `a` reads its window from memory: read once (which fills the
    // cache from the database), then with a stored message changed behind its back…
    turn(a.as_ref(), &tenant, id, &mut written, "a-warm").await;
    let lease = a.lease_session(&tenant, id).await.expect("lease");
    let session = a.get_session(&tenant, id).await.unwrap().unwrap();
    assert_eq!(
        read_back(a.as_ref(), &tenant, id, session.message_count).await,
        written
    );
    cluster.psql(
        &database,
        "UPDATE messages SET content = 'changed behind the cache' WHERE idx = 0",
    );
    assert_eq!(
        read_back(a.as_ref(), &tenant, id, session.message_count).await,
        written,
        "a confirmed lease reads its window from the cache"
    );
    // The row too: the lease confirmed it, so it is not read again.
    cluster.psql(
        &database,
        "UPDATE sessions SET update_time = 0 WHERE session_id = 'shared'",
    );
    let under_lease = a.get_session(&tenant, id).await.unwrap().unwrap();
    assert_eq!(
        under_lease.update_time, session.update_time,
        "a confirmed lease reads the session's row from the cache"
    );
    drop(lease);
    // …and without a lease every read goes to the database.
    let outside = a.get_session(&tenant, id).await.unwrap().unwrap();
    assert_eq!(outside.update_time, SystemTime::UNIX_EPOCH);
    let stored_update_time = session
        .update_time
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_micros();
    cluster.psql(
        &database,
        &format!(
            "UPDATE sessions SET update_time = {stored_update_time} WHERE session_id = 'shared'"
        ),
    );
    let outside = read_back(a.as_ref(), &tenant, id, session.message_count).await;
    assert_eq!(outside[0], "changed behind the cache");
    cluster.psql(
        &database,
        &format!(
            "UPDATE messages SET content = '{}' WHERE idx = 0",
            written[0]
        ),
    );

    // `b` deletes the session and makes a new one with the same id, the same number of
    // messages and so the same version: `a`'s cached entry is of the old session (only the
    // creation time tells them apart), and must not be used for the new one.
    b.delete_session(&tenant, id).await.expect("delete");
    tokio::time::sleep(Duration::from_millis(2)).await;
    create(b.as_ref(), &tenant, id).await;
    let mut recreated = Vec::new();
    while recreated.len() < written.len() {
        turn(b.as_ref(), &tenant, id, &mut recreated, "new").await;
    }
    assert_eq!(
        read_back(a.as_ref(), &tenant, id, recreated.len() as u64).await,
        recreated,
        "outside a lease, the new session's history"
    );
    turn(a.as_ref(), &tenant, id, &mut recreated, "a-after").await;
    turn(a.as_ref(), &tenant, id, &mut recreated, "a-again").await;
    turn(b.as_ref(), &tenant, id, &mut recreated, "b-after").await;
}

/// A replica waiting for a lease another one holds checks its cache against the row as it is
/// once the lock is granted, not as it was when the wait began: the holder's turn, committed
/// meanwhile, is in the window the waiter reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lease_sees_what_the_holder_committed() {
    let (cluster, database, a, b) = two_replicas().await;
    let tenant = TenantId::default();
    let id = "waited-for";

    create(a.as_ref(), &tenant, id).await;
    let mut written = Vec::new();
    // `a` caches the session with its own turns.
    turn(a.as_ref(), &tenant, id, &mut written, "a0").await;
    turn(a.as_ref(), &tenant, id, &mut written, "a1").await;

    let held = b.lease_session(&tenant, id).await.expect("b's lease");
    let waiter = {
        let (a, tenant) = (a.clone(), tenant.clone());
        tokio::spawn(async move { a.lease_session(&tenant, id).await.expect("a's lease") })
    };
    common::eventually("a waits for the lease b holds", || {
        let waiting = cluster.psql(
            &database,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        );
        async move { waiting == "1" }
    })
    .await;
    turn_under_lease(b.as_ref(), &tenant, id, &mut written, "b-while-a-waits").await;
    drop(held);

    let lease = waiter.await.expect("the waiting lease");
    turn_under_lease(a.as_ref(), &tenant, id, &mut written, "a-after-waiting").await;
    drop(lease);
    turn(b.as_ref(), &tenant, id, &mut written, "b-last").await;
    assert_eq!(written.len(), 10, "five turns, two messages each");
}
