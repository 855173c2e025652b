//! SQLite's reads on a turn's path — a session's row with its pending tool calls, and a page
//! of its history — run on a blocking thread through read-only connections of their own.
//!
//! Through the async driver every statement is a hand-off to its connection's thread and its
//! rows come back as messages, each a chance for a thread switch; here a whole read (every statement it needs, the rows decoded) is one call on one thread
//! (`tokio::task::spawn_blocking`), with its statements prepared once per connection and
//! kept. The statements are the ones PostgreSQL runs (the parent module's constants).
//!
//! At most `storage.max_connections` reads run at once; a read waits for a free connection
//! for at most `storage.connect_timeout_ms`. A connection is opened when first needed, read
//! only and never creating the file, and closed after a database failure.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{OpenFlags, OptionalExtension, Row, named_params};
use tokio::sync::Semaphore;

use super::{CallRow, MessageRow, PENDING_CALLS, SELECT_SESSION, SESSION_EXISTS, SessionRow};
use crate::domain::session::{Message, Session};
use crate::store::StoreError;
use crate::store::sql::rusqlite_unavailable as failed;

/// The read-only connections, and how many may read at once.
pub(crate) struct Readers {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    /// How long a read waits for a connection (`storage.connect_timeout_ms`).
    wait: Duration,
}

struct Shared {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl Readers {
    /// Readers of the database at `path` (created and migrated by then), at most `max` at
    /// once, each waiting at most `wait` for a connection and for a writer's lock.
    pub fn new(path: PathBuf, max: usize, wait: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                path,
                busy_timeout: wait,
                idle: Mutex::new(Vec::new()),
            }),
            permits: Arc::new(Semaphore::new(max.max(1))),
            wait,
        }
    }

    /// The session's row with its pending calls; `None`: no such session.
    pub async fn session(
        &self,
        tenant: &str,
        session_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        let (tenant, session_id) = (tenant.to_string(), session_id.to_string());
        self.read(move |conn| read_session(conn, &tenant, &session_id))
            .await
    }

    /// Runs `statement` (one of the parent module's `select_messages!` reads, bound as
    /// `$1` tenant, `$2` session, `$3` index, `$4` limit) and decodes its rows;
    /// [`StoreError::NotFound`] when it finds none and the session does not exist.
    pub async fn messages(
        &self,
        statement: &'static str,
        tenant: &str,
        session_id: &str,
        index: i64,
        limit: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let (tenant, session_id) = (tenant.to_string(), session_id.to_string());
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(statement)
                .and_then(|mut select| {
                    select
                        .query_map(
                            named_params! {
                                "$1": tenant, "$2": session_id, "$3": index, "$4": limit,
                            },
                            message_row,
                        )?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(failed)?;
            if rows.is_empty() && !session_exists(conn, &tenant, &session_id)? {
                return Err(StoreError::NotFound(session_id));
            }
            rows.into_iter()
                .map(|row| row.into_message(&session_id))
                .collect()
        })
        .await
    }

    /// Runs `read` on a free connection on a blocking thread.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                StoreError::Unavailable("timed out waiting for a database connection".to_string())
            })?
            .map_err(|_| StoreError::Unavailable("the database is closed".to_string()))?;
        let shared = self.shared.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = match shared.take_idle() {
                Some(conn) => conn,
                None => shared.open()?,
            };
            let result = read(&conn);
            // A database failure may have left the connection unusable: the next read opens
            // a fresh one.
            if !matches!(result, Err(StoreError::Unavailable(_))) {
                shared.put_idle(conn);
            }
            result
        });
        task.await.map_err(|e| {
            tracing::error!(error = %e, "a database read did not finish");
            StoreError::Unavailable(
                "the database failed unexpectedly (the server log has the details)".to_string(),
            )
        })?
    }
}

impl Shared {
    fn take_idle(&self) -> Option<rusqlite::Connection> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_idle(&self, conn: rusqlite::Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    /// A read-only connection on the file, which is only opened, never created.
    fn open(&self) -> Result<rusqlite::Connection, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(failed)?;
        conn.busy_timeout(self.busy_timeout).map_err(failed)?;
        Ok(conn)
    }
}

fn read_session(
    conn: &rusqlite::Connection,
    tenant: &str,
    session_id: &str,
) -> Result<Option<Session>, StoreError> {
    let row = conn
        .prepare_cached(SELECT_SESSION)
        .and_then(|mut select| {
            select
                .query_row(
                    named_params! { "$1": tenant, "$2": session_id },
                    session_row,
                )
                .optional()
        })
        .map_err(failed)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let calls = match row.pending_turn {
        Some(_) => conn
            .prepare_cached(PENDING_CALLS)
            .and_then(|mut select| {
                select
                    .query_map(named_params! { "$1": tenant, "$2": session_id }, |r| {
                        Ok(CallRow {
                            call_id: r.get(0)?,
                            name: r.get(1)?,
                            arguments: r.get(2)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(failed)?
            .into_iter()
            .map(CallRow::into_call)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    row.into_session(calls).map(Some)
}

fn session_exists(
    conn: &rusqlite::Connection,
    tenant: &str,
    session_id: &str,
) -> Result<bool, StoreError> {
    conn.prepare_cached(SESSION_EXISTS)
        .and_then(|mut select| {
            select
                .query_row(named_params! { "$1": tenant, "$2": session_id }, |_| Ok(()))
                .optional()
        })
        .map(|found| found.is_some())
        .map_err(failed)
}

/// A row of `SELECT_SESSION`, by column position.
fn session_row(r: &Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        session_id: r.get(0)?,
        version: r.get(1)?,
        create_time: r.get(2)?,
        update_time: r.get(3)?,
        expire_time: r.get(4)?,
        message_count: r.get(5)?,
        pending_turn: r.get(6)?,
        pending_steps: r.get(7)?,
        body: r.get(8)?,
    })
}

/// A row of `select_messages!`, by column position.
fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        idx: r.get(0)?,
        role: r.get(1)?,
        content: r.get(2)?,
        tool_calls: r.get(3)?,
        tool_call_id: r.get(4)?,
        tool_name: r.get(5)?,
        is_error: r.get(6)?,
        create_time: r.get(7)?,
        token_count: r.get(8)?,
        turn_id: r.get(9)?,
    })
}
