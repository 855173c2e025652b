//! The many-sessions scenario: unary turns on sessions picked at random among many stored
//! ones, to show how a turn's cost grows with the size of the store rather than of one
//! session's history.
//!
//! [`seed`] writes the sessions straight through contextd's store, opened on a data
//! directory the way `contextd serve --data-dir` opens it (the SQLite file, its migrations
//! and group commit), with many commits in flight at once so the writer takes them in its
//! largest batches. The server is then started on that directory and [`run`] sends the
//! turns. Every session looks like one the unary workload made itself: the same context, and
//! a history of [`workload::MESSAGE`] and the echo model's reply, repeated.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::config::{Config, StorageConfig};
use contextd::domain::scope::TenantId;
use contextd::domain::session::{Message, Role, Session, SharedMessage, Usage};
use contextd::domain::tokens::TokenCounter;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::ClosedLoop;
use super::unary::request_on;
use crate::load::{self, OpResult, Worker, round1, round3};
use crate::probe::ServerProbe;
use crate::workload;

/// The model of the seeded sessions: the echo model every benchmark server runs.
const MODEL: &str = "echo";

/// The id of stored session `index`. Always the same length, so every turn carries the same
/// bytes whichever session it picks.
pub fn session_id(index: u64) -> String {
    format!("many-{index:08}")
}

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedParams {
    /// The server's data directory (`contextd serve --data-dir`).
    pub data_dir: PathBuf,
    /// How many sessions.
    pub sessions: u64,
    /// Messages in each session's history (user and assistant, alternating).
    pub messages: u64,
    /// Each session's window size in tokens.
    pub max_context_tokens: u32,
    /// Commits in flight at once, and the most the store's writer takes into one
    /// transaction (`storage.commit_batch_max_turns`).
    pub batch: usize,
}

/// Writes `params.sessions` sessions into the store of `params.data_dir`, unless it holds
/// exactly that many already (a later round on the same directory). Refuses a directory that
/// holds some other number of sessions.
pub async fn seed(params: SeedParams) -> Result<Value, String> {
    let config = Config {
        store: "sqlite".to_string(),
        data_dir: params.data_dir.clone(),
        storage: StorageConfig {
            commit_batch_max_turns: params.batch.max(1),
            // Nothing here reads a session back: a cache would only hold memory.
            cache_bytes: 0,
            ..StorageConfig::default()
        },
        ..Config::default()
    };
    let opened = contextd::server::open(&config).await.map_err(|e| {
        format!(
            "cannot open the store in {}: {e}",
            params.data_dir.display()
        )
    })?;
    let store = opened.store.clone();
    let tenant = TenantId::default();
    let existing = store
        .count_sessions(&tenant, SystemTime::now())
        .await
        .map_err(|e| format!("cannot count the stored sessions: {e}"))?;
    let started = Instant::now();
    let seeded = if existing == params.sessions {
        0
    } else if existing == 0 {
        let template = Template::new(params.messages, params.max_context_tokens);
        let mut commits = futures_util::stream::iter(0..params.sessions)
            .map(|index| {
                let (session, messages) = template.session(index);
                let store = store.clone();
                let tenant = tenant.clone();
                async move {
                    store
                        .commit(&tenant, &session, None, &messages, None)
                        .await
                        .map_err(|e| format!("cannot store session {}: {e}", session.id))
                }
            })
            .buffer_unordered(params.batch.max(1));
        let mut done = 0u64;
        while let Some(outcome) = commits.next().await {
            outcome?;
            done += 1;
            if done.is_multiple_of(100_000) {
                eprintln!(
                    "seed-sessions: {done} of {} stored in {:.1} s",
                    params.sessions,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        done
    } else {
        return Err(format!(
            "{} holds {existing} sessions, not 0 or {}: give seed-sessions an empty data directory",
            params.data_dir.display(),
            params.sessions
        ));
    };
    opened.close().await;
    let elapsed = started.elapsed().as_secs_f64();
    let db_bytes = std::fs::read_dir(&params.data_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0);
    Ok(json!({
        "setup": {
            "sessions": params.sessions,
            "messages_per_session": params.messages,
            "max_context_tokens": params.max_context_tokens,
            "batch": params.batch,
        },
        "already_stored": existing,
        "seeded": seeded,
        "seed_s": round3(elapsed),
        "sessions_per_s": if seeded > 0 { round1(seeded as f64 / elapsed.max(1e-9)) } else { 0.0 },
        "data_dir_bytes": db_bytes,
    }))
}

/// One seeded session's contents, shared by all of them: only the id differs.
struct Template {
    messages: Vec<SharedMessage>,
    max_context_tokens: u32,
    now: SystemTime,
}

impl Template {
    fn new(messages: u64, max_context_tokens: u32) -> Self {
        let counter = TokenCounter::for_model(MODEL);
        let now = contextd::domain::session::now();
        let reply = workload::echo_text();
        let messages = (0..messages)
            .map(|index| {
                let (role, content) = if index % 2 == 0 {
                    (Role::User, workload::MESSAGE.to_string())
                } else {
                    (Role::Assistant, reply.clone())
                };
                Arc::new(Message {
                    index,
                    role,
                    token_count: counter.count_message(role, &content, &[], ""),
                    content,
                    tool_calls: Vec::new(),
                    tool_call_id: String::new(),
                    tool_name: String::new(),
                    is_error: false,
                    create_time: now,
                    turn_id: format!("t-{:032x}", index / 2 + 1),
                })
            })
            .collect();
        Self {
            messages,
            max_context_tokens,
            now,
        }
    }

    fn session(&self, index: u64) -> (Session, Vec<SharedMessage>) {
        let context = match serde_json::json!({ "user_id": "john_doe" }) {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        };
        let session = Session {
            id: session_id(index),
            system_prompt: String::new(),
            context,
            model: MODEL.to_string(),
            tools: Vec::new(),
            labels: Default::default(),
            create_time: self.now,
            update_time: self.now,
            message_count: self.messages.len() as u64,
            pending: None,
            usage: Usage::default(),
            max_context_tokens: self.max_context_tokens,
            version: 1,
            expire_time: None,
            idle_ttl: None,
            window: Default::default(),
            server_tools: None,
        };
        (session, self.messages.clone())
    }
}

/// Picks sessions at random from one worker's share of the store: worker `w` of `W` takes
/// sessions `w`, `w + W`, `w + 2W`, …, so two turns never wait for one session.
#[derive(Debug, Clone)]
pub struct SessionPicker {
    first: u64,
    stride: u64,
    choices: u64,
    state: u64,
}

impl SessionPicker {
    /// The picker of worker `worker` of `workers` over `sessions` sessions (at least one per
    /// worker), its random sequence started from `seed`.
    pub fn new(worker: u64, workers: u64, sessions: u64, seed: u64) -> Self {
        Self {
            first: worker,
            stride: workers,
            choices: sessions.saturating_sub(worker).div_ceil(workers).max(1),
            state: seed ^ worker.wrapping_mul(0x2545_f491_4f6c_dd1d),
        }
    }

    /// The next session's index.
    pub fn next_session(&mut self) -> u64 {
        // splitmix64: fast, and good enough to spread turns evenly.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        self.first + self.stride * (z % self.choices)
    }
}

/// One worker: the unary turn on a session its [`SessionPicker`] chooses, again and again.
pub struct RandomSessionWorker {
    client: InteractServiceClient<Channel>,
    picker: SessionPicker,
}

impl Worker for RandomSessionWorker {
    async fn run_once(&mut self) -> OpResult {
        let request = request_on(&session_id(self.picker.next_session()));
        match self.client.interact(workload::authorized(request)).await {
            Ok(_) => Ok(1),
            Err(status) => Err(status.code().into()),
        }
    }
}

/// Runs the turns against a server started on a directory [`seed`] filled with `sessions`.
pub async fn run(
    setup: ClosedLoop,
    sessions: u64,
    server: Option<&ServerProbe>,
) -> Result<Value, String> {
    let workers = setup.workers() as u64;
    if sessions < workers {
        return Err(format!(
            "--sessions {sessions}: give at least one per worker ({workers})"
        ));
    }
    let channels = load::connect(setup.addr, setup.connections).await?;
    // One turn first: it proves the server answers and that the seeded sessions are there.
    let mut client = InteractServiceClient::new(channels[0].clone());
    let reply = client
        .interact(workload::authorized(request_on(&session_id(sessions - 1))))
        .await
        .map_err(|s| format!("the first Interact failed: {s}"))?
        .into_inner();
    if reply.session_created {
        return Err(format!(
            "session {} was not in the store: seed it first (loadgen seed-sessions)",
            session_id(sessions - 1)
        ));
    }
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let workers = (0..workers)
        .map(|w| RandomSessionWorker {
            client: InteractServiceClient::new(channels[w as usize % channels.len()].clone()),
            picker: SessionPicker::new(w, workers, sessions, seed),
        })
        .collect();
    let result = load::run(workers, setup.plan, server).await;
    let mut out = result.to_json();
    out["setup"] = setup.to_json();
    out["setup"]["sessions"] = json!(sessions);
    out["turns_per_s"] = out["ops_per_s"].clone();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_stay_in_their_share() {
        let (sessions, workers) = (1_003u64, 50u64);
        let mut seen = std::collections::BTreeSet::new();
        for w in 0..workers {
            let mut picker = SessionPicker::new(w, workers, sessions, 12_345);
            for _ in 0..2_000 {
                let s = picker.next_session();
                assert!(s < sessions, "{s}");
                assert_eq!(s % workers, w);
                seen.insert(s);
            }
        }
        // Every session is some worker's, and random picks reach them all.
        assert_eq!(seen.len() as u64, sessions);
    }

    #[test]
    fn ids_have_one_length() {
        assert_eq!(session_id(0).len(), session_id(99_999_999).len());
    }

    #[test]
    fn template_alternates_roles() {
        let template = Template::new(4, 512);
        let (session, messages) = template.session(7);
        assert_eq!(session.id, "many-00000007");
        assert_eq!(session.message_count, 4);
        let roles: Vec<_> = messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::User, Role::Assistant, Role::User, Role::Assistant]
        );
        assert!(messages.iter().all(|m| m.token_count > 0));
    }
}
