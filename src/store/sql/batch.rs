//! Group commit: every [`SessionStore::commit`](super::SessionStore::commit) of one process
//! goes to one writer task, which writes the commits waiting for it together, in one
//! transaction and so with one fsync, and answers each caller only once that transaction is
//! durable.
//!
//! Waiting adds no timer: the writer takes the first commit at once and, while that batch is
//! on disk, later commits queue; the next batch is whatever queued meanwhile, up to
//! `storage.commit_batch_max_turns` commits and `storage.commit_batch_max_bytes` bytes. A
//! commit whose caller has gone (its deadline passed, it was cancelled) before its batch
//! starts is left out: nothing of it is written, as the caller was told. Once its batch has
//! started it is written, and the turn id it carries finds it.
//!
//! One commit's refusal does not fail the others. Its first statement is the one that can
//! refuse it (the session row's insert or version-checked update), so a refused commit has
//! written nothing and the batch goes on without it. A commit refused after that (a message
//! index already taken: the history is not what the version promised) rolls the batch back;
//! it is answered with its refusal and the rest are written again without it. A database
//! failure (a full disk, an I/O error, the file gone) rolls the whole batch back, closes the
//! connection (see [`settle`](super::settle)), and refuses every commit in it as UNAVAILABLE.
//!
//! The commit point is the batch's COMMIT: a turn is stored when its batch commits, and no
//! caller hears OK before that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot};

use super::{DatabaseFile, StoreError, micros, settle, to_i64, unavailable};
use crate::domain::session::SharedMessage;

mod postgres;
mod sqlite;

pub(crate) use sqlite::SqliteFile;

/// How many commits may wait for the writer before callers wait to queue (backpressure).
const QUEUE: usize = 4096;

/// Bounds of one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Most commits in one transaction.
    pub max_turns: usize,
    /// Most bytes (session documents and message contents) in one transaction; a single
    /// larger commit is written alone.
    pub max_bytes: usize,
}

/// Where the writer writes.
pub(crate) enum WritePool {
    /// SQLite: the database file, written through a connection of the writer's own on a
    /// blocking thread (see [`sqlite`]).
    Sqlite(SqliteFile),
    /// PostgreSQL: the query pool, a connection taken from it per batch.
    Postgres(PgPool),
}

/// The session row a commit writes.
pub(crate) struct SessionWrite {
    pub tenant: String,
    pub session_id: String,
    pub version: i64,
    pub create_time: i64,
    pub update_time: i64,
    pub expire_time: Option<i64>,
    pub message_count: i64,
    pub pending_turn: Option<String>,
    pub pending_steps: i64,
    /// The JSON document of the `body` column.
    pub body: String,
}

/// The receipt row a commit writes.
pub(crate) struct ReceiptWrite {
    pub key: String,
    pub fingerprint: String,
    pub turn_id: String,
    pub outcome: String,
    pub create_time: i64,
}

/// One commit, owned, waiting for its batch.
pub(crate) struct CommitJob {
    pub row: SessionWrite,
    /// `None`: the session is created; `Some(v)`: updated if its version is still `v`.
    pub expected_version: Option<u64>,
    /// The history's length the new messages continue (checked with the version).
    pub first_index: u64,
    /// The messages, each with its tool calls as JSON.
    pub messages: Vec<(SharedMessage, Option<String>)>,
    /// The pending tool calls: id, name, arguments as JSON.
    pub calls: Vec<(String, String, String)>,
    /// Whether the stored pending calls must be cleared first: false only when the stored
    /// row is known to have none (saves a statement per turn).
    pub clear_pending: bool,
    pub receipt: Option<ReceiptWrite>,
    /// Its size, for [`BatchLimits::max_bytes`].
    pub bytes: usize,
    /// Where its outcome goes; closed when the caller has gone.
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The sending side of the writer's queue, and what it has done.
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<CommitJob>,
    stats: Arc<BatchStats>,
}

/// Counters of the writer, read by tests and the log.
#[derive(Default)]
pub(crate) struct BatchStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Commits written in them.
    pub commits: AtomicU64,
    /// Commits taken off the queue (written, refused or left out).
    pub taken: AtomicU64,
}

impl GroupCommit {
    /// Starts the writer task (needs a Tokio runtime); it ends when this is dropped.
    pub fn start(pool: WritePool, file: Option<Arc<DatabaseFile>>, limits: BatchLimits) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let stats = Arc::new(BatchStats::default());
        let target = match pool {
            WritePool::Sqlite(file) => Target::Sqlite(file, None),
            WritePool::Postgres(pool) => Target::Postgres(pool),
        };
        let writer = Writer {
            target,
            file,
            limits,
            stats: stats.clone(),
        };
        tokio::spawn(writer.run(queue));
        Self { jobs, stats }
    }

    /// Queues `job` and waits until its batch is durable (or refused).
    pub async fn commit(
        &self,
        job: CommitJob,
        reply: oneshot::Receiver<Result<(), StoreError>>,
    ) -> Result<(), StoreError> {
        let closed = || StoreError::Unavailable("the store is closed".into());
        self.jobs.send(job).await.map_err(|_| closed())?;
        reply.await.unwrap_or_else(|_| Err(closed()))
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Commits queued and not yet taken by the writer.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }
}

/// What the writer task writes through.
enum Target {
    /// SQLite: the connection, lent to a blocking thread for each batch (`None` meanwhile,
    /// or after a blocking thread failed to give it back: the next batch opens a new one).
    Sqlite(SqliteFile, Option<sqlite::Writer>),
    /// PostgreSQL's pool.
    Postgres(PgPool),
}

/// The writer task's state.
struct Writer {
    target: Target,
    file: Option<Arc<DatabaseFile>>,
    limits: BatchLimits,
    stats: Arc<BatchStats>,
}

/// Why a batch's transaction was not committed.
enum BatchFailure {
    /// The database failed: every commit of the batch is refused with this.
    Store(StoreError),
    /// Commit `index` was refused after writing part of itself: it is answered with this and
    /// the rest are written again.
    Commit(usize, StoreError),
}

/// What one attempt at writing a batch gave: each commit's outcome, or why none was written.
type Attempt = Result<Vec<Result<(), StoreError>>, BatchFailure>;

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<CommitJob>) {
        let mut held: Option<CommitJob> = None;
        loop {
            let first = match held.take() {
                Some(job) => job,
                None => match queue.recv().await {
                    Some(job) => {
                        self.stats.taken.fetch_add(1, Ordering::Relaxed);
                        job
                    }
                    None => return,
                },
            };
            let mut bytes = first.bytes;
            let mut batch = vec![first];
            while batch.len() < self.limits.max_turns {
                let Ok(job) = queue.try_recv() else { break };
                self.stats.taken.fetch_add(1, Ordering::Relaxed);
                if bytes + job.bytes > self.limits.max_bytes {
                    held = Some(job);
                    break;
                }
                bytes += job.bytes;
                batch.push(job);
            }
            // A caller gone before its batch starts is answered by nobody: write nothing of it.
            batch.retain(|job| !job.reply.is_closed());
            if !batch.is_empty() {
                self.write(batch).await;
            }
        }
    }

    /// Writes one batch and answers every commit in it.
    async fn write(&mut self, mut batch: Vec<CommitJob>) {
        match &mut self.target {
            Target::Sqlite(target, lent) => {
                // The whole batch, its retries and its answers on one blocking thread: one
                // hand-off instead of two per statement. Should the thread panic, its
                // callers' replies are dropped (they hear UNAVAILABLE) and so is the
                // connection.
                let mut writer = lent
                    .take()
                    .unwrap_or_else(|| sqlite::Writer::new(target.clone()));
                let (file, stats) = (self.file.clone(), self.stats.clone());
                let done = tokio::task::spawn_blocking(move || {
                    loop {
                        let attempt = verify(&file).and_then(|()| writer.write(&batch));
                        match answer(&stats, batch, attempt) {
                            Some(rest) => batch = rest,
                            None => return writer,
                        }
                    }
                })
                .await;
                *lent = done.ok();
            }
            Target::Postgres(pool) => loop {
                let attempt = match verify(&self.file) {
                    Ok(()) => write_postgres(pool, &batch).await,
                    Err(failure) => Err(failure),
                };
                match answer(&self.stats, batch, attempt) {
                    Some(rest) => batch = rest,
                    None => return,
                }
            },
        }
    }
}

/// `Err` once the database file is known not to be the one opened (SQLite only).
fn verify(file: &Option<Arc<DatabaseFile>>) -> Result<(), BatchFailure> {
    match file {
        Some(file) => file.verify().map_err(BatchFailure::Store),
        None => Ok(()),
    }
}

/// Answers the commits of `batch` that `attempt` settled; what is left to write again (the
/// batch without a commit refused halfway), if anything.
fn answer(
    stats: &BatchStats,
    mut batch: Vec<CommitJob>,
    attempt: Attempt,
) -> Option<Vec<CommitJob>> {
    match attempt {
        Ok(outcomes) => {
            let written = outcomes.iter().filter(|o| o.is_ok()).count();
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.commits.fetch_add(written as u64, Ordering::Relaxed);
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
            None
        }
        Err(BatchFailure::Commit(index, refusal)) => {
            let job = batch.remove(index);
            let _ = job.reply.send(Err(refusal));
            (!batch.is_empty()).then_some(batch)
        }
        Err(BatchFailure::Store(error)) => {
            for job in batch {
                let _ = job.reply.send(Err(error.clone()));
            }
            None
        }
    }
}

/// Creates a session (`$1`…`$10`: the [`SessionWrite`] columns); no row if it exists.
const INSERT_SESSION: &str = "INSERT INTO sessions (tenant_id, session_id, version, create_time,
         update_time, expire_time, message_count, pending_turn, pending_steps, body)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (tenant_id, session_id) DO NOTHING";

/// Updates a session if it is still at version `$10` with `$11` messages.
const UPDATE_SESSION: &str = "UPDATE sessions SET version = $3, update_time = $4,
         expire_time = $5, message_count = $6, pending_turn = $7, pending_steps = $8, body = $9
     WHERE tenant_id = $1 AND session_id = $2 AND version = $10 AND message_count = $11";

/// A session's stored version: tells a stale commit (a conflict) from a deleted session.
const SESSION_VERSION: &str =
    "SELECT version FROM sessions WHERE tenant_id = $1 AND session_id = $2";

/// Clears a session's pending tool calls.
const CLEAR_PENDING: &str =
    "DELETE FROM pending_tool_calls WHERE tenant_id = $1 AND session_id = $2";

/// One pending tool call: its position, id, name and arguments.
const INSERT_CALL: &str = "INSERT INTO pending_tool_calls (tenant_id, session_id, position,
         call_id, name, arguments)
     VALUES ($1, $2, $3, $4, $5, $6)";

/// A turn's receipt; a key reused after its window (not yet swept) names the new turn.
const INSERT_RECEIPT: &str = "INSERT INTO turn_receipts (tenant_id, session_id, idempotency_key,
         fingerprint, turn_id, outcome, create_time)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (tenant_id, session_id, idempotency_key) DO UPDATE SET
         fingerprint = excluded.fingerprint, turn_id = excluded.turn_id,
         outcome = excluded.outcome, create_time = excluded.create_time";

/// The start of an insert of message rows, whose parameters are the tenant, the session,
/// then each row's ten columns in this order.
macro_rules! insert_messages {
    () => {
        "INSERT INTO messages (tenant_id, session_id, idx, role, content, tool_calls,
             tool_call_id, tool_name, is_error, create_time, token_count, turn_id) VALUES "
    };
}

/// One message (SQLite, whose kept statements make a row per statement cheap).
const INSERT_MESSAGE: &str = concat!(
    insert_messages!(),
    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
);

/// Writes `batch` in one transaction on a connection of PostgreSQL's pool: each kind of row
/// in one statement (see [`postgres`]), or commit by commit where that cannot say who is
/// refused.
async fn write_postgres(pool: &PgPool, batch: &[CommitJob]) -> Attempt {
    if batch.len() > 1 && !postgres::names_a_session_twice(batch) {
        // Err: someone's messages collided, and commit by commit finds whose.
        if let Ok(attempt) = postgres::write_together(pool, batch).await {
            return attempt;
        }
    }
    write_each(pool, batch).await
}

/// Writes `batch` in one transaction on a connection of PostgreSQL's pool, commit by commit.
async fn write_each(pool: &PgPool, batch: &[CommitJob]) -> Attempt {
    let mut conn: PoolConnection<sqlx::Postgres> = pool
        .acquire()
        .await
        .map_err(|e| BatchFailure::Store(unavailable(e)))?;
    let result = async {
        let store = |e| BatchFailure::Store(unavailable(e));
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(store)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (index, job) in batch.iter().enumerate() {
            let row = &job.row;
            // The statement that may refuse the commit comes first: refused, it has
            // written nothing.
            let refusal = match job.expected_version {
                None => {
                    let inserted = sqlx::query(INSERT_SESSION)
                        .bind(&row.tenant)
                        .bind(&row.session_id)
                        .bind(row.version)
                        .bind(row.create_time)
                        .bind(row.update_time)
                        .bind(row.expire_time)
                        .bind(row.message_count)
                        .bind(row.pending_turn.as_deref())
                        .bind(row.pending_steps)
                        .bind(&row.body)
                        .execute(&mut *tx)
                        .await
                        .map_err(store)?;
                    (inserted.rows_affected() == 0)
                        .then(|| StoreError::AlreadyExists(row.session_id.clone()))
                }
                Some(version) => {
                    let updated = sqlx::query(UPDATE_SESSION)
                        .bind(&row.tenant)
                        .bind(&row.session_id)
                        .bind(row.version)
                        .bind(row.update_time)
                        .bind(row.expire_time)
                        .bind(row.message_count)
                        .bind(row.pending_turn.as_deref())
                        .bind(row.pending_steps)
                        .bind(&row.body)
                        .bind(to_i64(version))
                        // The new messages continue the stored history exactly, or
                        // nothing is written.
                        .bind(to_i64(job.first_index))
                        .execute(&mut *tx)
                        .await
                        .map_err(store)?;
                    if updated.rows_affected() == 0 {
                        let exists: Option<i64> = sqlx::query_scalar(SESSION_VERSION)
                            .bind(&row.tenant)
                            .bind(&row.session_id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(store)?;
                        Some(match exists {
                            Some(_) => StoreError::Conflict(row.session_id.clone()),
                            None => StoreError::NotFound(row.session_id.clone()),
                        })
                    } else {
                        if job.clear_pending {
                            sqlx::query(CLEAR_PENDING)
                                .bind(&row.tenant)
                                .bind(&row.session_id)
                                .execute(&mut *tx)
                                .await
                                .map_err(store)?;
                        }
                        None
                    }
                }
            };
            if let Some(refusal) = refusal {
                outcomes.push(Err(refusal));
                continue;
            }
            // One statement per chunk of messages, not per message: each statement
            // is a round trip (PostgreSQL) or a hand-off to the connection's thread
            // (SQLite).
            for chunk in job.messages.chunks(MESSAGES_PER_INSERT) {
                // Built from the row count only: no caller text goes into the SQL.
                let sql = sqlx::AssertSqlSafe(insert_messages_sql(chunk.len()));
                let mut insert = sqlx::query(sql).bind(&row.tenant).bind(&row.session_id);
                for (message, tool_calls) in chunk {
                    insert = insert
                        .bind(to_i64(message.index))
                        .bind(message.role.as_str())
                        .bind(message.content.as_str())
                        .bind(tool_calls.as_deref())
                        .bind(message.tool_call_id.as_str())
                        .bind(message.tool_name.as_str())
                        .bind(message.is_error)
                        .bind(micros(message.create_time))
                        .bind(i64::from(message.token_count))
                        .bind(message.turn_id.as_str());
                }
                insert.execute(&mut *tx).await.map_err(|e| match e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        BatchFailure::Commit(index, StoreError::Conflict(row.session_id.clone()))
                    }
                    other => store(other),
                })?;
            }
            for (position, (call_id, name, arguments)) in job.calls.iter().enumerate() {
                sqlx::query(INSERT_CALL)
                    .bind(&row.tenant)
                    .bind(&row.session_id)
                    .bind(position as i64)
                    .bind(call_id)
                    .bind(name)
                    .bind(arguments)
                    .execute(&mut *tx)
                    .await
                    .map_err(store)?;
            }
            if let Some(receipt) = &job.receipt {
                sqlx::query(INSERT_RECEIPT)
                    .bind(&row.tenant)
                    .bind(&row.session_id)
                    .bind(&receipt.key)
                    .bind(&receipt.fingerprint)
                    .bind(&receipt.turn_id)
                    .bind(&receipt.outcome)
                    .bind(receipt.create_time)
                    .execute(&mut *tx)
                    .await
                    .map_err(store)?;
            }
            outcomes.push(Ok(()));
        }
        tx.commit().await.map_err(store)?;
        Ok(outcomes)
    }
    .await;
    // After a database failure the connection is closed, not pooled again.
    let settled: Result<(), StoreError> = match &result {
        Err(BatchFailure::Store(error)) => Err(error.clone()),
        _ => Ok(()),
    };
    settle(&mut conn, &settled);
    result
}

/// Messages written by one INSERT: 10 parameters each, well within SQLite's 32,766 and
/// PostgreSQL's 65,535.
pub(super) const MESSAGES_PER_INSERT: usize = 256;

/// `INSERT INTO messages … VALUES (…), (…)` for `rows` messages of one session: `$1` and `$2`
/// are the tenant and the session, then ten parameters per message.
fn insert_messages_sql(rows: usize) -> String {
    let mut sql = String::from(insert_messages!());
    for row in 0..rows {
        let p = 3 + row * 10;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "($1, $2, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            p,
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7,
            p + 8,
            p + 9
        ));
    }
    sql
}
