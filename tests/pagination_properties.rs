//! ListSessions paging while sessions are created between (and during) page fetches, on a
//! real server over the memory and SQLite stores: a walk never skips and never repeats a
//! session that existed for the whole walk, and never shows any session twice.
//!
//! Each generated case creates some sessions, then walks the pages with a generated page
//! size; before each page fetch it starts creating new sessions, with ids generated to sort
//! before, between and after the ones already listed, and does not wait for them, so some
//! commit while the next page is read. The server and its sessions persist across cases:
//! every earlier case's sessions exist for the whole of every later walk too.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use common::{TestServer, backend::Backend, test_config};
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::{CreateSessionRequest, ListSessionsRequest};
use contextd::config::Config;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use tonic::Code;
use tonic::transport::Channel;

/// Session ids from a small alphabet, so that new ones land on every side of the cursor.
fn session_id() -> impl Strategy<Value = String> {
    "[a-f]{1,5}"
}

/// One case: the sessions created before the walk, the page size, and the sessions created
/// before each page fetch.
#[derive(Debug, Clone)]
struct Walk {
    before: Vec<String>,
    page_size: u32,
    during: Vec<Vec<String>>,
}

fn walk() -> impl Strategy<Value = Walk> {
    (
        prop::collection::vec(session_id(), 1..30),
        1u32..8,
        prop::collection::vec(prop::collection::vec(session_id(), 0..4), 0..12),
    )
        .prop_map(|(before, page_size, during)| Walk {
            before,
            page_size,
            during,
        })
}

/// Creates `id`; true when this call created it (an id that exists already is refused).
async fn create(mut client: SessionServiceClient<Channel>, id: String) -> Result<bool, String> {
    match client
        .create_session(CreateSessionRequest {
            session_id: id.clone(),
            ..Default::default()
        })
        .await
    {
        Ok(_) => Ok(true),
        Err(status) if status.code() == Code::AlreadyExists => Ok(false),
        Err(status) => Err(format!("creating '{id}': {status}")),
    }
}

/// Runs one case against `client`; `existing` holds every session created so far.
async fn run_walk(
    client: &SessionServiceClient<Channel>,
    existing: &mut BTreeSet<String>,
    walk: Walk,
) -> Result<(), TestCaseError> {
    for id in walk.before {
        if create(client.clone(), id.clone())
            .await
            .map_err(TestCaseError::fail)?
        {
            existing.insert(id);
        }
    }
    let stable = existing.clone();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut token = String::new();
    let mut creations = Vec::new();
    let mut during = walk.during.into_iter();
    for page_number in 0.. {
        prop_assert!(page_number < 10_000, "the walk does not end");
        // Creations in flight while the page is read.
        for id in during.next().unwrap_or_default() {
            creations.push((id.clone(), tokio::spawn(create(client.clone(), id))));
        }
        let page = client
            .clone()
            .list_sessions(ListSessionsRequest {
                page_size: walk.page_size,
                page_token: token.clone(),
            })
            .await
            .map_err(|s| TestCaseError::fail(format!("ListSessions: {s}")))?
            .into_inner();
        prop_assert!(page.sessions.len() <= walk.page_size as usize);
        for session in page.sessions {
            *seen.entry(session.session_id).or_default() += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    for (id, creation) in creations {
        let created = creation
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .map_err(TestCaseError::fail)?;
        if created {
            existing.insert(id);
        }
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    prop_assert!(repeated.is_empty(), "sessions shown twice: {repeated:?}");
    let skipped: Vec<_> = stable.iter().filter(|id| !seen.contains_key(*id)).collect();
    prop_assert!(
        skipped.is_empty(),
        "sessions that existed for the whole walk were skipped: {skipped:?}"
    );
    Ok(())
}

/// Runs 16 generated walks against one server on `config`'s store.
fn check_paging(config: Config) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (server, client) = runtime.block_on(async {
        let server = TestServer::start_with(config).await;
        let client = server.sessions().await;
        (server, client)
    });
    // Every session created so far, across cases (the runner's closure is `Fn`).
    let existing = RefCell::new(BTreeSet::new());
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 16,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&walk(), |walk| {
        runtime.block_on(run_walk(&client, &mut existing.borrow_mut(), walk))
    });
    runtime.block_on(async { assert!(server.stop().await, "the server stopped cleanly") });
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn paging_never_skips_or_repeats_on_memory() {
    check_paging(test_config());
}

#[test]
fn paging_never_skips_or_repeats_on_sqlite() {
    let store = Backend::sqlite();
    check_paging(store.config());
}
