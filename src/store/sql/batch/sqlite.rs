//! SQLite's batches, written on a blocking thread through a connection of the writer's own.
//!
//! Through the async driver every statement is a hand-off to its connection's thread and an
//! answer back, so a batch of 30 turns cost some 100 thread switches. Here a whole batch —
//! `BEGIN IMMEDIATE`, every statement of every commit, `COMMIT` and its fsync — runs in one
//! call on one thread (`tokio::task::spawn_blocking`), with each statement prepared once and
//! kept. The statements are the ones PostgreSQL runs (the constants of the parent module).
//!
//! The async pool keeps a writer connection of its own for the other writes (deleting a
//! session, a tenant, expired rows and old receipts). The two never run write transactions
//! at once: each starts with a write (`BEGIN IMMEDIATE` here; a writing first statement
//! there), so the one that comes second waits for the first in SQLite's busy handler, for at
//! most `storage.connect_timeout_ms`.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{OpenFlags, TransactionBehavior, named_params};

use super::{
    BatchFailure, CLEAR_PENDING, CommitJob, INSERT_CALL, INSERT_MESSAGE, INSERT_RECEIPT,
    INSERT_SESSION, SESSION_VERSION, UPDATE_SESSION,
};
use crate::config::SyncMode;
use crate::store::StoreError;
use crate::store::sql::{micros, rusqlite_unavailable, to_i64};

/// The database file the writer opens its connection on, and how.
#[derive(Debug, Clone)]
pub(crate) struct SqliteFile {
    /// The database file (created and migrated by the time the writer opens it).
    pub path: PathBuf,
    /// `storage.sqlite_synchronous`.
    pub synchronous: SyncMode,
    /// How long a write waits for the other writer connection (`storage.connect_timeout_ms`).
    pub busy_timeout: Duration,
}

/// The writer's connection, opened when first needed and again after a database failure.
pub(super) struct Writer {
    file: SqliteFile,
    open: Option<rusqlite::Connection>,
}

impl Writer {
    /// A writer of `file`; nothing is opened yet.
    pub fn new(file: SqliteFile) -> Self {
        Self { file, open: None }
    }

    /// Writes `batch` in one transaction (see [`super`] for what each outcome means). After a
    /// database failure the connection is closed: the next batch opens a fresh one, as SQLite
    /// may have rolled the transaction back by itself.
    pub fn write(
        &mut self,
        batch: &[CommitJob],
    ) -> Result<Vec<Result<(), StoreError>>, BatchFailure> {
        let result = self.connection().and_then(|conn| write_batch(conn, batch));
        if matches!(result, Err(BatchFailure::Store(_))) {
            self.open = None;
        }
        result
    }

    /// The open connection, opening it if need be.
    fn connection(&mut self) -> Result<&mut rusqlite::Connection, BatchFailure> {
        let conn = match self.open.take() {
            Some(conn) => conn,
            None => open(&self.file)?,
        };
        Ok(self.open.insert(conn))
    }
}

/// A connection on `file`, which is only opened, never created: a database file removed
/// under contextd is not silently replaced by an empty one.
fn open(file: &SqliteFile) -> Result<rusqlite::Connection, BatchFailure> {
    let conn = rusqlite::Connection::open_with_flags(
        &file.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(store)?;
    conn.busy_timeout(file.busy_timeout).map_err(store)?;
    let synchronous = match file.synchronous {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(store)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(store)?;
    Ok(conn)
}

/// One transaction for `batch`: rolled back when dropped unless committed.
fn write_batch(
    conn: &mut rusqlite::Connection,
    batch: &[CommitJob],
) -> Result<Vec<Result<(), StoreError>>, BatchFailure> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, job) in batch.iter().enumerate() {
        let row = &job.row;
        // The statement that may refuse the commit comes first: refused, it has written
        // nothing.
        let refusal = match job.expected_version {
            None => {
                let inserted = tx
                    .prepare_cached(INSERT_SESSION)
                    .and_then(|mut insert| {
                        insert.execute(named_params! {
                            "$1": row.tenant,
                            "$2": row.session_id,
                            "$3": row.version,
                            "$4": row.create_time,
                            "$5": row.update_time,
                            "$6": row.expire_time,
                            "$7": row.message_count,
                            "$8": row.pending_turn,
                            "$9": row.pending_steps,
                            "$10": row.body,
                        })
                    })
                    .map_err(store)?;
                (inserted == 0).then(|| StoreError::AlreadyExists(row.session_id.clone()))
            }
            Some(version) => {
                let updated = tx
                    .prepare_cached(UPDATE_SESSION)
                    .and_then(|mut update| {
                        update.execute(named_params! {
                            "$1": row.tenant,
                            "$2": row.session_id,
                            "$3": row.version,
                            "$4": row.update_time,
                            "$5": row.expire_time,
                            "$6": row.message_count,
                            "$7": row.pending_turn,
                            "$8": row.pending_steps,
                            "$9": row.body,
                            "$10": to_i64(version),
                            "$11": to_i64(job.first_index),
                        })
                    })
                    .map_err(store)?;
                if updated == 0 {
                    let exists = tx
                        .prepare_cached(SESSION_VERSION)
                        .and_then(|mut select| {
                            select.exists(named_params! {
                                "$1": row.tenant,
                                "$2": row.session_id,
                            })
                        })
                        .map_err(store)?;
                    Some(if exists {
                        StoreError::Conflict(row.session_id.clone())
                    } else {
                        StoreError::NotFound(row.session_id.clone())
                    })
                } else {
                    if job.clear_pending {
                        tx.prepare_cached(CLEAR_PENDING)
                            .and_then(|mut clear| {
                                clear.execute(named_params! {
                                    "$1": row.tenant,
                                    "$2": row.session_id,
                                })
                            })
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
        let mut insert = tx.prepare_cached(INSERT_MESSAGE).map_err(store)?;
        for (message, tool_calls) in &job.messages {
            insert
                .execute(named_params! {
                    "$1": row.tenant,
                    "$2": row.session_id,
                    "$3": to_i64(message.index),
                    "$4": message.role.as_str(),
                    "$5": message.content.as_str(),
                    "$6": tool_calls.as_deref(),
                    "$7": message.tool_call_id.as_str(),
                    "$8": message.tool_name.as_str(),
                    "$9": message.is_error,
                    "$10": micros(message.create_time),
                    "$11": i64::from(message.token_count),
                    "$12": message.turn_id.as_str(),
                })
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        BatchFailure::Commit(index, StoreError::Conflict(row.session_id.clone()))
                    } else {
                        store(e)
                    }
                })?;
        }
        drop(insert);
        if !job.calls.is_empty() {
            let mut insert = tx.prepare_cached(INSERT_CALL).map_err(store)?;
            for (position, (call_id, name, arguments)) in job.calls.iter().enumerate() {
                insert
                    .execute(named_params! {
                        "$1": row.tenant,
                        "$2": row.session_id,
                        "$3": position as i64,
                        "$4": call_id,
                        "$5": name,
                        "$6": arguments,
                    })
                    .map_err(store)?;
            }
        }
        if let Some(receipt) = &job.receipt {
            tx.prepare_cached(INSERT_RECEIPT)
                .and_then(|mut insert| {
                    insert.execute(named_params! {
                        "$1": row.tenant,
                        "$2": row.session_id,
                        "$3": receipt.key,
                        "$4": receipt.fingerprint,
                        "$5": receipt.turn_id,
                        "$6": receipt.outcome,
                        "$7": receipt.create_time,
                    })
                })
                .map_err(store)?;
        }
        outcomes.push(Ok(()));
    }
    tx.commit().map_err(store)?;
    Ok(outcomes)
}

/// Whether `error` is a primary-key or unique constraint refusing a row.
fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// A database failure, in words for the caller (never SQL, never a path); the log line keeps
/// the driver's own text.
fn store(error: rusqlite::Error) -> BatchFailure {
    BatchFailure::Store(rusqlite_unavailable(error))
}
