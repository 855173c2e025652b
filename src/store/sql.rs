//! The durable store on SQL: embedded SQLite (the default) or PostgreSQL (for replicas).
//!
//! One query layer for both: every statement below is written once, in SQL both databases
//! accept (`$1` placeholders included), and [`on_pool!`] runs it on whichever pool is open.
//!
//! Layout (see `migrations/`): `sessions` (one row per session; settings, context, tools and
//! usage as one JSON document), `messages` (append-only, keyed by `(tenant, session, idx)`, so
//! every history read is a keyset range scan on the primary key, never an OFFSET), and
//! `pending_tool_calls` (the calls a paused turn waits for). Every row carries the tenant id.
//!
//! A commit updates the session row only if its version is still the one the change was
//! based on (`UPDATE … WHERE version = $expected`), inserts the turn's messages, and replaces
//! the pending calls. A stale or concurrent write changes nothing and reports `Conflict`; the
//! primary key makes a duplicated message impossible. Commits are written by one writer
//! task, those waiting together in one transaction (group commit, see [`batch`]): one fsync
//! for many turns, and each caller answered once its batch is durable.
//!
//! Ordering across replicas (PostgreSQL): a turn holds a session-level advisory lock keyed by
//! the session from before it reads the session until after it commits
//! ([`SessionStore::lease_session`]). Turns on one session therefore run one after another
//! whichever replica takes them, instead of racing and having all but one refused by the
//! version check (which still guards every write). The lock lives on a connection of a
//! separate small pool, so waiting turns never starve the query pool; if a replica dies, its
//! connections close and PostgreSQL releases its locks. Taking the lock and reading what the
//! session cache checks its copy against (the row's version, creation time and length) is one
//! round trip: `contextd_lease_session`, a function in the schema that reads after the lock
//! is granted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, SqlitePool};

use super::db_file::DatabaseFile;
use super::{SessionLease, SessionStore, StoreError};
use crate::domain::TenantId;
use crate::domain::key::TenantUsage;
use crate::domain::receipt::TurnReceipt;
use crate::domain::session::{
    Context, Message, PendingTurn, Role, ServerToolSelection, Session, SharedMessage, ToolCall,
    ToolSpec, Usage, WindowState,
};

/// The open database.
pub(crate) enum Pools {
    /// SQLite: the file commits are written to (by the group commit's own connection), one
    /// connection for the other writes, and two kinds of readers (WAL lets them read while a
    /// writer writes): the blocking connections of a turn's reads, and the async pool.
    /// SQLite runs one write transaction at a time; each of the two writers starts its
    /// transactions with a write, so the second waits in SQLite's busy handler
    /// (`storage.connect_timeout_ms`) rather than failing with `SQLITE_BUSY`.
    Sqlite {
        /// Where commits go (see [`batch`]).
        commits: batch::SqliteFile,
        /// The writer of everything else (deletes and sweeps).
        write: SqlitePool,
        /// The readers of a turn's path: a session's row, a page of its history (see
        /// [`readers`]).
        readers: readers::Readers,
        /// The other readers.
        read: SqlitePool,
    },
    /// PostgreSQL: the query pool, and the pool whose connections hold turn leases.
    Postgres {
        /// Queries.
        pool: PgPool,
        /// Advisory-lock holders.
        locks: PgPool,
    },
}

/// Runs `$body` with `$pool` bound to the pool for `$role` (`read` or `write`): the same code,
/// type-checked once per database.
macro_rules! on_pool {
    ($pools:expr, $role:ident, |$pool:ident| $body:expr) => {
        match $pools {
            Pools::Sqlite { $role: $pool, .. } => $body,
            Pools::Postgres { pool: $pool, .. } => $body,
        }
    };
}

/// A query for one session's messages (`$1` tenant, `$2` session) with the given condition
/// and order, selecting every column [`MessageRow`] reads.
macro_rules! select_messages {
    ($rest:literal) => {
        concat!(
            "SELECT idx, role, content, tool_calls, tool_call_id, tool_name, is_error,
                 create_time, token_count, turn_id
             FROM messages WHERE tenant_id = $1 AND session_id = $2 AND ",
            $rest
        )
    };
}

/// Sessions and histories in SQLite or PostgreSQL.
pub struct SqlStore {
    pools: Pools,
    /// SQLite's database file, checked before every write (see [`DatabaseFile`]).
    file: Option<Arc<DatabaseFile>>,
    /// The writer every commit goes through (see [`batch`]).
    group: batch::GroupCommit,
    /// The write-through cache of hot sessions (see [`cache`]; on PostgreSQL used only under
    /// a confirmed lease); `None` with `storage.cache_bytes = 0`.
    cache: Option<Arc<cache::SessionCache>>,
}

impl SqlStore {
    /// A store on `pools`; its commit writer starts now (needs a Tokio runtime), writing at
    /// most `limits` per transaction.
    ///
    /// `cache_bytes` bounds the session cache (0: none); on PostgreSQL, where other replicas
    /// write the same rows, a cached session is used only under this process's lease once
    /// the row read under it confirms nobody else changed it.
    pub(crate) fn new(
        pools: Pools,
        file: Option<Arc<DatabaseFile>>,
        limits: batch::BatchLimits,
        cache_bytes: usize,
    ) -> Self {
        let enabled = cache_bytes > 0;
        let (write, cache) = match &pools {
            Pools::Sqlite { commits, .. } => (
                batch::WritePool::Sqlite(commits.clone()),
                enabled.then(|| Arc::new(cache::SessionCache::new(cache_bytes))),
            ),
            Pools::Postgres { pool, .. } => (
                batch::WritePool::Postgres(pool.clone()),
                enabled.then(|| Arc::new(cache::SessionCache::shared(cache_bytes))),
            ),
        };
        let group = batch::GroupCommit::start(write, file.clone(), limits);
        Self {
            pools,
            file,
            group,
            cache,
        }
    }

    /// Transactions the commit writer has committed, and the commits in them.
    pub fn commit_batches(&self) -> (u64, u64) {
        let stats = self.group.stats();
        (
            stats.batches.load(std::sync::atomic::Ordering::Relaxed),
            stats.commits.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// `Err` once the database file is known to be gone (reads check the flag only).
    fn ensure_present(&self) -> Result<(), StoreError> {
        self.file.as_ref().map_or(Ok(()), |f| f.ensure_present())
    }

    /// The writer connection, once the database file is checked to be the one opened.
    async fn writer<DB: sqlx::Database>(
        &self,
        pool: &sqlx::Pool<DB>,
    ) -> Result<PoolConnection<DB>, StoreError> {
        if let Some(file) = &self.file {
            file.verify()?;
        }
        pool.acquire().await.map_err(unavailable)
    }

    /// Closes every connection, waiting for checked-out ones to come back.
    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { write, read, .. } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres { pool, locks } => {
                locks.close().await;
                pool.close().await;
            }
        }
    }

    async fn pending_calls(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Vec<ToolCall>, StoreError> {
        let rows: Vec<CallRow> = on_pool!(&self.pools, read, |pool| {
            sqlx::query_as(PENDING_CALLS)
                .bind(tenant.as_str())
                .bind(session_id)
                .fetch_all(pool)
                .await
        })
        .map_err(unavailable)?;
        rows.into_iter().map(CallRow::into_call).collect()
    }

    async fn with_pending(
        &self,
        tenant: &TenantId,
        row: SessionRow,
    ) -> Result<Session, StoreError> {
        let calls = match row.pending_turn {
            Some(_) => self.pending_calls(tenant, &row.session_id).await?,
            None => Vec::new(),
        };
        row.into_session(calls)
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn get_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<Session>, StoreError> {
        self.ensure_present()?;
        if let Some(session) = self
            .cache
            .as_ref()
            .and_then(|c| c.session(tenant, session_id))
        {
            return Ok(Some(session));
        }
        let session = match &self.pools {
            Pools::Sqlite { readers, .. } => readers.session(tenant.as_str(), session_id).await?,
            Pools::Postgres { pool, .. } => {
                let row: Option<SessionRow> = sqlx::query_as(SELECT_SESSION)
                    .bind(tenant.as_str())
                    .bind(session_id)
                    .fetch_optional(pool)
                    .await
                    .map_err(unavailable)?;
                match row {
                    Some(row) => Some(self.with_pending(tenant, row).await?),
                    None => None,
                }
            }
        };
        if let Some(cache) = &self.cache {
            cache.confirm(tenant, session_id, session.as_ref());
        }
        Ok(session)
    }

    async fn list_sessions(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.ensure_present()?;
        let rows: Vec<SessionRow> = on_pool!(&self.pools, read, |pool| {
            sqlx::query_as(LIST_SESSIONS)
                .bind(tenant.as_str())
                .bind(after.unwrap_or(""))
                .bind(to_i64(limit as u64))
                .fetch_all(pool)
                .await
        })
        .map_err(unavailable)?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            sessions.push(self.with_pending(tenant, row).await?);
        }
        Ok(sessions)
    }

    async fn newest_sessions(
        &self,
        tenant: &TenantId,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.ensure_present()?;
        // One query on the (tenant_id, update_time) index (migration 0004).
        let rows: Vec<SessionRow> = on_pool!(&self.pools, read, |pool| {
            sqlx::query_as(NEWEST_SESSIONS)
                .bind(tenant.as_str())
                .bind(micros(now))
                .bind(to_i64(limit as u64))
                .fetch_all(pool)
                .await
        })
        .map_err(unavailable)?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            sessions.push(self.with_pending(tenant, row).await?);
        }
        Ok(sessions)
    }

    async fn commit(
        &self,
        tenant: &TenantId,
        session: &Session,
        expected_version: Option<u64>,
        messages: &[SharedMessage],
        receipt: Option<&TurnReceipt>,
    ) -> Result<(), StoreError> {
        let body = SessionBody::of(session).encode()?;
        let first_index = session.message_count - messages.len() as u64;
        if messages
            .iter()
            .enumerate()
            .any(|(offset, m)| m.index != first_index + offset as u64)
        {
            // The history moved on under the caller: the change was based on a state that is
            // not the stored one.
            return Err(StoreError::Conflict(session.id.clone()));
        }
        if expected_version.is_none() && first_index != 0 {
            // A new session's history starts at 0.
            return Err(StoreError::Conflict(session.id.clone()));
        }
        let encoded: Vec<EncodedMessage<'_>> = messages
            .iter()
            .map(|m| EncodedMessage::of(m))
            .collect::<Result<_, _>>()?;
        let calls: Vec<(String, String, String)> = match &session.pending {
            Some(pending) => pending
                .tool_calls
                .iter()
                .map(|c| Ok((c.id.clone(), c.name.clone(), encode_json(&c.arguments)?)))
                .collect::<Result<_, StoreError>>()?,
            None => Vec::new(),
        };
        let tenant_id = tenant;
        let tenant = tenant.as_str();
        let id = session.id.as_str();
        let pending_turn = session.pending.as_ref().map(|p| p.turn_id.as_str());
        let pending_steps = session.pending.as_ref().map_or(0, |p| i64::from(p.steps));

        let messages_bytes: usize = encoded
            .iter()
            .map(|m| m.message.content.len() + m.tool_calls.as_ref().map_or(0, String::len))
            .sum();
        let bytes = body.len() + messages_bytes;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = batch::CommitJob {
            row: batch::SessionWrite {
                tenant: tenant.to_string(),
                session_id: id.to_string(),
                version: to_i64(session.version),
                create_time: micros(session.create_time),
                update_time: micros(session.update_time),
                expire_time: session.expire_time.map(micros),
                message_count: to_i64(session.message_count),
                pending_turn: pending_turn.map(str::to_string),
                pending_steps,
                body,
            },
            expected_version,
            first_index,
            messages: messages
                .iter()
                .cloned()
                .zip(encoded.into_iter().map(|m| m.tool_calls))
                .collect(),
            calls,
            clear_pending: !self
                .cache
                .as_ref()
                .is_some_and(|c| c.known_without_pending(tenant_id, id)),
            receipt: receipt.map(|r| batch::ReceiptWrite {
                key: r.key.clone(),
                fingerprint: r.fingerprint.clone(),
                turn_id: r.turn_id.clone(),
                outcome: r.outcome.clone(),
                create_time: micros(r.create_time),
            }),
            bytes,
            reply,
        };
        let committed = self.group.commit(job, answer).await;
        if let Some(cache) = &self.cache {
            // Only what the database now holds: the new row and messages, or nothing.
            match &committed {
                Ok(()) => cache.committed(tenant_id, session, first_index, messages),
                Err(_) => cache.forget(tenant_id, &session.id),
            }
        }
        committed
    }

    async fn get_receipt(
        &self,
        tenant: &TenantId,
        session_id: &str,
        key: &str,
    ) -> Result<Option<TurnReceipt>, StoreError> {
        self.ensure_present()?;
        let row: Option<(String, String, String, i64)> = on_pool!(&self.pools, read, |pool| {
            sqlx::query_as(
                "SELECT fingerprint, turn_id, outcome, create_time FROM turn_receipts
                 WHERE tenant_id = $1 AND session_id = $2 AND idempotency_key = $3",
            )
            .bind(tenant.as_str())
            .bind(session_id)
            .bind(key)
            .fetch_optional(pool)
            .await
        })
        .map_err(unavailable)?;
        Ok(
            row.map(|(fingerprint, turn_id, outcome, created)| TurnReceipt {
                key: key.to_string(),
                fingerprint,
                turn_id,
                outcome,
                create_time: from_micros(created),
            }),
        )
    }

    async fn delete_receipts_before(
        &self,
        before: SystemTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let before = micros(before);
        on_pool!(&self.pools, write, |pool| {
            let mut conn = self.writer(pool).await?;
            // One statement: it is its own transaction.
            let result = sqlx::query(
                "DELETE FROM turn_receipts WHERE (tenant_id, session_id, idempotency_key) IN (
                     SELECT tenant_id, session_id, idempotency_key FROM turn_receipts
                     WHERE create_time < $1 ORDER BY create_time LIMIT $2)",
            )
            .bind(before)
            .bind(to_i64(limit as u64))
            .execute(&mut *conn)
            .await
            .map_err(unavailable);
            settle(&mut conn, &result);
            Ok(result?.rows_affected())
        })
    }

    async fn delete_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        // Dropped before (no read finds it cached while it goes) and after.
        let _forget = self.cache.as_ref().map(|c| {
            c.forget(tenant, session_id);
            Forget(c, tenant.clone(), session_id.to_string())
        });
        let tenant = tenant.as_str();
        on_pool!(&self.pools, write, |pool| {
            let mut conn = self.writer(pool).await?;
            let result = async {
                let mut tx = sqlx::Connection::begin(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                let count: Option<i64> = sqlx::query_scalar(
                    "DELETE FROM sessions WHERE tenant_id = $1 AND session_id = $2
                 RETURNING message_count",
                )
                .bind(tenant)
                .bind(session_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
                let Some(count) = count else {
                    return Ok(None);
                };
                for statement in DELETE_SESSION_ROWS {
                    sqlx::query(statement)
                        .bind(tenant)
                        .bind(session_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(Some(count.max(0) as u64))
            }
            .await;
            settle(&mut conn, &result);
            result
        })
    }

    async fn list_messages(
        &self,
        tenant: &TenantId,
        session_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        self.ensure_present()?;
        self.read_messages(
            select_messages!("idx >= $3 ORDER BY idx LIMIT $4"),
            tenant,
            session_id,
            from,
            limit,
        )
        .await
    }

    async fn list_messages_before(
        &self,
        tenant: &TenantId,
        session_id: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        self.ensure_present()?;
        let generation = match self
            .cache
            .as_ref()
            .map(|c| c.history_before(tenant, session_id, before, limit))
        {
            Some(cache::CachedHistory::Hit(messages)) => return Ok(messages),
            Some(cache::CachedHistory::Miss(generation)) => generation,
            None => None,
        };
        let messages = self
            .read_messages(
                select_messages!("idx < $3 ORDER BY idx DESC LIMIT $4"),
                tenant,
                session_id,
                before,
                limit,
            )
            .await?;
        if let Some(cache) = &self.cache {
            cache.add_older(tenant, session_id, generation, &messages);
        }
        Ok(messages)
    }

    async fn search_messages(
        &self,
        tenant: &TenantId,
        session_id: &str,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        self.ensure_present()?;
        let pattern = format!("%{}%", escape_like(query));
        // Case-insensitive substring match; the pattern's wildcards are escaped with `\`.
        let rows: Vec<MessageRow> = match &self.pools {
            Pools::Sqlite { read, .. } => {
                sqlx::query_as(select_messages!(
                    "content LIKE $3 ESCAPE '\\' ORDER BY idx DESC LIMIT $4"
                ))
                .bind(tenant.as_str())
                .bind(session_id)
                .bind(&pattern)
                .bind(to_i64(limit as u64))
                .fetch_all(read)
                .await
            }
            Pools::Postgres { pool, .. } => {
                sqlx::query_as(select_messages!(
                    "content ILIKE $3 ESCAPE '\\' ORDER BY idx DESC LIMIT $4"
                ))
                .bind(tenant.as_str())
                .bind(session_id)
                .bind(&pattern)
                .bind(to_i64(limit as u64))
                .fetch_all(pool)
                .await
            }
        }
        .map_err(unavailable)?;
        self.messages_of(tenant, session_id, rows).await
    }

    async fn lease_session(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<SessionLease, StoreError> {
        let Pools::Postgres { locks, .. } = &self.pools else {
            return Ok(SessionLease::local());
        };
        let key = format!("{tenant}/{session_id}");
        let mut waiting = Waiting(Some(locks.acquire().await.map_err(unavailable)?));
        let conn = waiting.0.as_mut().expect("set above");
        // The lock and, read once it is granted, what the cached row is checked against.
        let stored: Option<(i64, i64, i64)> = sqlx::query_as(LEASE_SESSION)
            .bind(&key)
            .bind(tenant.as_str())
            .bind(session_id)
            .fetch_optional(&mut **conn)
            .await
            .map_err(unavailable)?;
        let conn = waiting.0.take().expect("set above");
        let cache = self.cache.clone().map(|cache| {
            let stored = stored.map(|(version, created, count)| cache::Stamp {
                version: version.max(0) as u64,
                create_micros: created.max(0) as u128,
                message_count: count.max(0) as u64,
            });
            cache.lease_taken(tenant, session_id, stored);
            (cache, tenant.clone(), session_id.to_string())
        });
        Ok(SessionLease::holding(Box::new(AdvisoryLock {
            conn: Some(conn),
            key,
            cache,
        })))
    }

    async fn count_sessions(&self, tenant: &TenantId, now: SystemTime) -> Result<u64, StoreError> {
        self.ensure_present()?;
        let now = micros(now);
        let count: i64 = on_pool!(&self.pools, read, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM sessions
                 WHERE tenant_id = $1 AND (expire_time IS NULL OR expire_time > $2)",
            )
            .bind(tenant.as_str())
            .bind(now)
            .fetch_one(pool)
            .await
        })
        .map_err(unavailable)?;
        Ok(count.max(0) as u64)
    }

    async fn delete_expired(&self, now: SystemTime, limit: usize) -> Result<u64, StoreError> {
        let deleted = self.delete_expired_rows(now, limit).await;
        if let Some(cache) = &self.cache
            && !matches!(deleted, Ok(0))
        {
            cache.forget_all(None);
        }
        deleted
    }

    async fn tenant_usage(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<TenantUsage>, StoreError> {
        self.ensure_present()?;
        let tenant = tenant.map(TenantId::as_str);
        let (sessions, messages): (Vec<(String, i64, i64, i64)>, Vec<(String, i64, i64)>) =
            on_pool!(&self.pools, read, |pool| {
                let sessions = sqlx::query_as(
                    "SELECT tenant_id, COUNT(*), CAST(COALESCE(SUM(message_count), 0) AS BIGINT),
                        CAST(COALESCE(SUM(octet_length(body)), 0) AS BIGINT)
                     FROM sessions WHERE ($1 IS NULL OR tenant_id = $1)
                     GROUP BY tenant_id ORDER BY tenant_id",
                )
                .bind(tenant)
                .fetch_all(pool)
                .await
                .map_err(unavailable)?;
                let messages = sqlx::query_as(
                    "SELECT tenant_id, CAST(COALESCE(SUM(token_count), 0) AS BIGINT),
                        CAST(COALESCE(SUM(octet_length(content)
                            + COALESCE(octet_length(tool_calls), 0)), 0) AS BIGINT)
                     FROM messages WHERE ($1 IS NULL OR tenant_id = $1)
                     GROUP BY tenant_id",
                )
                .bind(tenant)
                .fetch_all(pool)
                .await
                .map_err(unavailable)?;
                (sessions, messages)
            });
        let messages: BTreeMap<String, (i64, i64)> = messages
            .into_iter()
            .map(|(tenant, tokens, bytes)| (tenant, (tokens, bytes)))
            .collect();
        Ok(sessions
            .into_iter()
            .map(|(tenant, count, message_count, body_bytes)| {
                let (tokens, message_bytes) = messages.get(&tenant).copied().unwrap_or_default();
                TenantUsage {
                    tenant: TenantId::new(tenant),
                    sessions: count.max(0) as u64,
                    messages: message_count.max(0) as u64,
                    tokens: tokens.max(0) as u64,
                    bytes: (body_bytes.max(0) + message_bytes.max(0)) as u64,
                    keys: 0,
                }
            })
            .collect())
    }

    async fn delete_tenant(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        let forget = || {
            if let Some(cache) = &self.cache {
                cache.forget_all(Some(tenant));
            }
        };
        forget();
        let deleted = self.delete_tenant_rows(tenant).await;
        forget();
        deleted
    }
}

impl SqlStore {
    /// [`SessionStore::delete_expired`], the cache not touched.
    async fn delete_expired_rows(&self, now: SystemTime, limit: usize) -> Result<u64, StoreError> {
        let now = micros(now);
        on_pool!(&self.pools, write, |pool| {
            let mut conn = self.writer(pool).await?;
            let result = async {
                let mut tx = sqlx::Connection::begin(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                // Every tenant's: expiry is housekeeping, not a caller's request. The first
                // statement writes (so it waits for the commit writer rather than failing as
                // a read turned write would; see `Pools::Sqlite`).
                let keys: Vec<(String, String)> = sqlx::query_as(
                    "DELETE FROM sessions WHERE (tenant_id, session_id) IN (
                         SELECT tenant_id, session_id FROM sessions
                         WHERE expire_time IS NOT NULL AND expire_time <= $1
                         ORDER BY expire_time LIMIT $2)
                     RETURNING tenant_id, session_id",
                )
                .bind(now)
                .bind(to_i64(limit as u64))
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
                for (tenant, id) in &keys {
                    for statement in DELETE_SESSION_ROWS {
                        sqlx::query(statement)
                            .bind(tenant)
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .map_err(unavailable)?;
                    }
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(keys.len() as u64)
            }
            .await;
            settle(&mut conn, &result);
            result
        })
    }

    /// [`SessionStore::delete_tenant`], the cache not touched.
    async fn delete_tenant_rows(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        self.ensure_present()?;
        on_pool!(&self.pools, write, |pool| {
            let mut conn = self.writer(pool).await?;
            let result = async {
                let mut tx = sqlx::Connection::begin(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                // The first statement deletes the messages, whose count is reported.
                let mut messages = None;
                for statement in DELETE_TENANT_ROWS {
                    let deleted = sqlx::query(statement)
                        .bind(tenant.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?
                        .rows_affected();
                    messages.get_or_insert(deleted);
                }
                let messages = messages.unwrap_or_default();
                let sessions = sqlx::query("DELETE FROM sessions WHERE tenant_id = $1")
                    .bind(tenant.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .rows_affected();
                tx.commit().await.map_err(unavailable)?;
                Ok((sessions, messages))
            }
            .await;
            settle(&mut conn, &result);
            result
        })
    }

    /// Up to `limit` messages by `statement` (a `select_messages!` read bound as tenant,
    /// session, `index` and `limit`); [`StoreError::NotFound`] when there are none and no
    /// such session.
    async fn read_messages(
        &self,
        statement: &'static str,
        tenant: &TenantId,
        session_id: &str,
        index: u64,
        limit: usize,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        let (index, limit) = (to_i64(index), to_i64(limit as u64));
        let rows: Vec<MessageRow> = match &self.pools {
            Pools::Sqlite { readers, .. } => {
                let messages = readers
                    .messages(statement, tenant.as_str(), session_id, index, limit)
                    .await?;
                return Ok(messages.into_iter().map(Arc::new).collect());
            }
            Pools::Postgres { pool, .. } => sqlx::query_as(statement)
                .bind(tenant.as_str())
                .bind(session_id)
                .bind(index)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(unavailable)?,
        };
        self.messages_of(tenant, session_id, rows).await
    }

    async fn messages_of(
        &self,
        tenant: &TenantId,
        session_id: &str,
        rows: Vec<MessageRow>,
    ) -> Result<Vec<SharedMessage>, StoreError> {
        if rows.is_empty() && !self.session_exists(tenant, session_id).await? {
            return Err(StoreError::NotFound(session_id.to_string()));
        }
        rows.into_iter()
            .map(|row| row.into_message(session_id).map(Arc::new))
            .collect()
    }

    async fn session_exists(
        &self,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = on_pool!(&self.pools, read, |pool| {
            sqlx::query_scalar(SESSION_EXISTS)
                .bind(tenant.as_str())
                .bind(session_id)
                .fetch_optional(pool)
                .await
        })
        .map_err(unavailable)?;
        Ok(found.is_some())
    }
}

/// Deletes a session's rows in every table that hangs off it (`$1` tenant, `$2` session):
/// one list, so deleting a session and expiring one cannot drift apart when a table is added.
const DELETE_SESSION_ROWS: [&str; 3] = [
    "DELETE FROM messages WHERE tenant_id = $1 AND session_id = $2",
    "DELETE FROM pending_tool_calls WHERE tenant_id = $1 AND session_id = $2",
    "DELETE FROM turn_receipts WHERE tenant_id = $1 AND session_id = $2",
];

/// Deletes a tenant's rows in every table that hangs off its sessions (`$1` tenant), the
/// messages first; the same tables as [`DELETE_SESSION_ROWS`] (a test keeps them in step).
const DELETE_TENANT_ROWS: [&str; 3] = [
    "DELETE FROM messages WHERE tenant_id = $1",
    "DELETE FROM pending_tool_calls WHERE tenant_id = $1",
    "DELETE FROM turn_receipts WHERE tenant_id = $1",
];

/// Takes a session's advisory lock (`$1`, its key) and then reads its row's version, creation
/// time and length (see the migration that defines the function).
const LEASE_SESSION: &str = "SELECT version, create_time, message_count
    FROM contextd_lease_session($1, $2, $3)";

const SESSION_EXISTS: &str = "SELECT 1 FROM sessions WHERE tenant_id = $1 AND session_id = $2";

const PENDING_CALLS: &str = "SELECT call_id, name, arguments FROM pending_tool_calls
    WHERE tenant_id = $1 AND session_id = $2 ORDER BY position";

const SELECT_SESSION: &str = "SELECT session_id, version, create_time, update_time, expire_time,
        message_count, pending_turn, pending_steps, body
    FROM sessions WHERE tenant_id = $1 AND session_id = $2";

const LIST_SESSIONS: &str = "SELECT session_id, version, create_time, update_time, expire_time,
        message_count, pending_turn, pending_steps, body
    FROM sessions WHERE tenant_id = $1 AND session_id > $2
    ORDER BY session_id LIMIT $3";

/// The newest unexpired sessions of a tenant: `$2` is now, in microseconds.
const NEWEST_SESSIONS: &str = "SELECT session_id, version, create_time, update_time, expire_time,
        message_count, pending_turn, pending_steps, body
    FROM sessions WHERE tenant_id = $1 AND (expire_time IS NULL OR expire_time > $2)
    ORDER BY update_time DESC, session_id LIMIT $3";

/// A lease connection still waiting for its lock: if the wait is abandoned (the turn was
/// cancelled), the connection is closed rather than pooled, so a lock granted after the
/// abandonment dies with it instead of staying held.
struct Waiting(Option<PoolConnection<Postgres>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// A held advisory lock; unlocked (and the connection pooled again) on drop.
struct AdvisoryLock {
    conn: Option<PoolConnection<Postgres>>,
    key: String,
    /// The cache told of the lease, told again as it goes (before the unlock).
    cache: Option<(Arc<cache::SessionCache>, TenantId, String)>,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if let Some((cache, tenant, session_id)) = self.cache.take() {
            cache.lease_released(&tenant, &session_id);
        }
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Closing the connection releases every lock it holds.
            conn.close_on_drop();
            return;
        };
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            let unlocked: Result<bool, _> =
                sqlx::query_scalar("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                    .bind(&key)
                    .fetch_one(&mut *conn)
                    .await;
            if !matches!(unlocked, Ok(true)) {
                tracing::warn!(lock = %key, "could not release a session lease; closing its connection");
                conn.close_on_drop();
            }
        });
    }
}

/// The JSON document in `sessions.body`.
#[derive(Serialize, Deserialize)]
struct SessionBody<'a> {
    system_prompt: Cow<'a, str>,
    context: Cow<'a, Context>,
    model: Cow<'a, str>,
    tools: Cow<'a, [ToolSpec]>,
    labels: Cow<'a, BTreeMap<String, String>>,
    usage: Usage,
    max_context_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_ttl_ms: Option<u64>,
    #[serde(default)]
    window: Cow<'a, WindowState>,
    /// Absent in rows written before sessions chose their server-side tools: the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_tools: Option<Cow<'a, ServerToolSelection>>,
}

impl<'a> SessionBody<'a> {
    fn of(session: &'a Session) -> Self {
        Self {
            system_prompt: Cow::Borrowed(&session.system_prompt),
            context: Cow::Borrowed(&session.context),
            model: Cow::Borrowed(&session.model),
            tools: Cow::Borrowed(&session.tools),
            labels: Cow::Borrowed(&session.labels),
            usage: session.usage,
            max_context_tokens: session.max_context_tokens,
            idle_ttl_ms: session.idle_ttl.map(|d| d.as_millis() as u64),
            window: Cow::Borrowed(&session.window),
            server_tools: session.server_tools.as_ref().map(Cow::Borrowed),
        }
    }

    fn encode(&self) -> Result<String, StoreError> {
        encode_json(self)
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    session_id: String,
    version: i64,
    create_time: i64,
    update_time: i64,
    expire_time: Option<i64>,
    message_count: i64,
    pending_turn: Option<String>,
    pending_steps: i64,
    body: String,
}

impl SessionRow {
    fn into_session(self, calls: Vec<ToolCall>) -> Result<Session, StoreError> {
        let body: SessionBody<'static> = serde_json::from_str(&self.body).map_err(|e| {
            StoreError::Unavailable(format!(
                "stored session '{}' is unreadable: {e}",
                self.session_id
            ))
        })?;
        Ok(Session {
            id: self.session_id,
            system_prompt: body.system_prompt.into_owned(),
            context: body.context.into_owned(),
            model: body.model.into_owned(),
            tools: body.tools.into_owned(),
            labels: body.labels.into_owned(),
            create_time: from_micros(self.create_time),
            update_time: from_micros(self.update_time),
            message_count: self.message_count.max(0) as u64,
            pending: self.pending_turn.map(|turn_id| PendingTurn {
                turn_id,
                tool_calls: calls,
                steps: u32::try_from(self.pending_steps).unwrap_or(0),
            }),
            usage: body.usage,
            max_context_tokens: body.max_context_tokens,
            version: self.version.max(0) as u64,
            expire_time: self.expire_time.map(from_micros),
            idle_ttl: body.idle_ttl_ms.map(Duration::from_millis),
            window: body.window.into_owned(),
            server_tools: body.server_tools.map(Cow::into_owned),
        })
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    idx: i64,
    role: String,
    content: String,
    tool_calls: Option<String>,
    tool_call_id: String,
    tool_name: String,
    is_error: bool,
    create_time: i64,
    token_count: i64,
    turn_id: String,
}

impl MessageRow {
    fn into_message(self, session_id: &str) -> Result<Message, StoreError> {
        let unreadable = |what: String| {
            StoreError::Unavailable(format!(
                "message {} of session '{session_id}' is unreadable: {what}",
                self.idx
            ))
        };
        let role = Role::parse(&self.role)
            .ok_or_else(|| unreadable(format!("unknown role {:?}", self.role)))?;
        let tool_calls = match &self.tool_calls {
            Some(json) => serde_json::from_str(json).map_err(|e| unreadable(e.to_string()))?,
            None => Vec::new(),
        };
        Ok(Message {
            index: self.idx.max(0) as u64,
            role,
            content: self.content,
            tool_calls,
            tool_call_id: self.tool_call_id,
            tool_name: self.tool_name,
            is_error: self.is_error,
            create_time: from_micros(self.create_time),
            token_count: u32::try_from(self.token_count).unwrap_or(u32::MAX),
            turn_id: self.turn_id,
        })
    }
}

/// A message about to be inserted, with its tool calls as JSON.
struct EncodedMessage<'a> {
    message: &'a Message,
    tool_calls: Option<String>,
}

impl<'a> EncodedMessage<'a> {
    fn of(message: &'a Message) -> Result<Self, StoreError> {
        let tool_calls = if message.tool_calls.is_empty() {
            None
        } else {
            Some(encode_json(&message.tool_calls)?)
        };
        Ok(Self {
            message,
            tool_calls,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CallRow {
    call_id: String,
    name: String,
    arguments: String,
}

impl CallRow {
    fn into_call(self) -> Result<ToolCall, StoreError> {
        let arguments = serde_json::from_str(&self.arguments).map_err(|e| {
            StoreError::Unavailable(format!(
                "pending tool call '{}' is unreadable: {e}",
                self.call_id
            ))
        })?;
        Ok(ToolCall {
            id: self.call_id,
            name: self.name,
            arguments,
        })
    }
}

fn encode_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode for storage: {e}")))
}

/// Maps a database failure: whatever it was, the store could not do its work now. The
/// caller's message says what happened in words (never SQL, never a path); the log line at
/// ERROR, inside the request's span, keeps the driver's own text.
fn unavailable(error: sqlx::Error) -> StoreError {
    let reason = describe(&error);
    tracing::error!(error = %error, "store operation failed: {reason}");
    StoreError::Unavailable(reason)
}

/// What a database failure means for the caller.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_string(),
        sqlx::Error::PoolClosed => "the database connection pool is closed".to_string(),
        sqlx::Error::Io(_) => "cannot reach the database server; retry later".to_string(),
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                Some(_) => describe_sqlite(code.parse().unwrap_or(0)),
                None => describe_postgres(&code),
            }
        }
        _ => "the database failed unexpectedly (the server log has the details)".to_string(),
    }
}

/// A failed SQLite call (through the blocking connections), as its caller is told; the
/// details go to the log.
fn rusqlite_unavailable(error: rusqlite::Error) -> StoreError {
    let reason = match &error {
        rusqlite::Error::SqliteFailure(e, _) => describe_sqlite(e.extended_code),
        _ => "the database failed unexpectedly (the server log has the details)".to_string(),
    };
    tracing::error!(error = %error, "store operation failed: {reason}");
    StoreError::Unavailable(reason)
}

/// SQLite's primary result codes (the low byte of the extended code).
fn describe_sqlite(code: i32) -> String {
    let text = match code & 0xff {
        13 => {
            "the data disk is full; nothing of this request was stored (free space on it and retry: contextd resumes by itself)"
        }
        10 => {
            "the database could not be read or written (an I/O error on the data disk); nothing of this request was stored"
        }
        8 => {
            "the database is read-only (check the data directory's permissions and mount); nothing of this request was stored"
        }
        5 | 6 => "the database is busy; retry",
        11 | 26 => "the database file is damaged or not a contextd database",
        14 => "the database file cannot be opened (was the data directory removed?)",
        _ => return format!("the database refused the operation (SQLite code {code})"),
    };
    text.to_string()
}

/// PostgreSQL's SQLSTATE classes that mean "not now".
fn describe_postgres(code: &str) -> String {
    let text = match code {
        "53100" => "the database server's disk is full; nothing of this request was stored",
        c if c.starts_with("53") => "the database server is out of resources; retry later",
        c if c.starts_with("57P") => "the database server is shutting down or restarting; retry",
        c if c.starts_with("08") => "the connection to the database server failed; retry",
        "25006" => {
            "the database server is read-only (a standby?); nothing of this request was stored"
        }
        _ => return format!("the database refused the operation (SQLSTATE {code})"),
    };
    text.to_string()
}

/// Ends a write transaction's use of its connection. After a database failure the
/// connection is closed, not pooled again: SQLite rolls a transaction back by itself on some
/// failures (a full disk, an I/O error), after which the driver's explicit rollback fails and
/// its idea of the connection's transaction depth is wrong for good. Reused, that connection
/// ran every later "transaction" as a savepoint inside one that never committed: writes
/// answered OK and were lost. A fresh connection starts clean.
fn settle<DB: sqlx::Database, T>(conn: &mut PoolConnection<DB>, result: &Result<T, StoreError>) {
    if matches!(result, Err(StoreError::Unavailable(_))) {
        conn.close_on_drop();
    }
}

/// Microseconds since the Unix epoch (negative before it).
fn micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

fn from_micros(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Escapes `%`, `_` and `\` so a search text matches literally inside a LIKE pattern.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

mod batch;
mod cache;
mod keys;
mod readers;

/// Drops a session's cache entry when it goes out of scope.
struct Forget<'a>(&'a Arc<cache::SessionCache>, TenantId, String);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(&self.1, &self.2);
    }
}

pub(crate) use batch::{BatchLimits, SqliteFile};
pub(crate) use readers::Readers;

/// Throwaway PostgreSQL clusters, shared with the integration tests.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/common/postgres.rs"]
mod test_cluster;

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn tenant_and_session_deletes_name_the_same_tables() {
        for (tenant, session) in super::DELETE_TENANT_ROWS
            .iter()
            .zip(super::DELETE_SESSION_ROWS)
        {
            assert_eq!(format!("{tenant} AND session_id = $2"), session);
        }
    }

    use super::*;

    #[test]
    fn times_round_trip() {
        let now = SystemTime::now();
        let back = from_micros(micros(now));
        let drift = now.duration_since(back).unwrap_or_default();
        assert!(drift < Duration::from_micros(1));
        assert_eq!(from_micros(micros(UNIX_EPOCH)), UNIX_EPOCH);
        let early = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(from_micros(micros(early)), early);
    }

    #[test]
    fn like_patterns_are_literal() {
        assert_eq!(escape_like("100%_off\\"), "100\\%\\_off\\\\");
        assert_eq!(escape_like("plain"), "plain");
    }

    /// A fresh SQLite store in a directory removed with the returned guard.
    async fn sqlite_store() -> (Arc<SqlStore>, TempDir) {
        sqlite_store_with(crate::config::StorageConfig::default()).await
    }

    /// [`sqlite_store`] with `settings`.
    async fn sqlite_store_with(settings: crate::config::StorageConfig) -> (Arc<SqlStore>, TempDir) {
        let dir =
            TempDir(std::env::temp_dir().join(format!("contextd-batch-{}", uuid::Uuid::new_v4())));
        let opened =
            crate::store::open::open_store(&crate::config::StoreKind::Sqlite, &dir.0, &settings)
                .await
                .expect("open SQLite");
        (opened.sql.clone().expect("an SQL store"), dir)
    }

    struct TempDir(std::path::PathBuf);

    /// A store whose writers wait a minute for each other (however slow the machine, the
    /// tests below release the write lock well within it).
    async fn patient_sqlite_store() -> (Arc<SqlStore>, TempDir) {
        sqlite_store_with(crate::config::StorageConfig {
            connect_timeout_ms: 60_000,
            ..Default::default()
        })
        .await
    }

    /// SQLite's write lock, taken through the store's other writer connection: the commit
    /// writer's next batch waits for it (in SQLite's busy handler) until it is rolled back.
    async fn take_write_lock(store: &SqlStore) -> PoolConnection<sqlx::Sqlite> {
        let Pools::Sqlite { write, .. } = &store.pools else {
            unreachable!("a SQLite store")
        };
        let mut held = write.acquire().await.expect("the other writer connection");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *held)
            .await
            .expect("the write lock");
        held
    }

    /// Commits the writer has taken off its queue so far.
    fn taken(store: &SqlStore) -> u64 {
        store
            .group
            .stats()
            .taken
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (a minute at most) until the writer has taken a commit after the first `before`.
    async fn wait_until_taken(store: &SqlStore, before: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while taken(store) == before {
            assert!(tokio::time::Instant::now() < deadline, "never taken");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lets go of [`take_write_lock`]'s lock.
    async fn release_write_lock(mut held: PoolConnection<sqlx::Sqlite>) {
        sqlx::query("ROLLBACK")
            .execute(&mut *held)
            .await
            .expect("the write lock released");
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn new_session(id: &str) -> Session {
        let now = SystemTime::now();
        Session {
            id: id.into(),
            system_prompt: String::new(),
            context: Context::new(),
            model: "echo".into(),
            tools: Vec::new(),
            labels: BTreeMap::new(),
            create_time: now,
            update_time: now,
            message_count: 0,
            pending: None,
            usage: Usage::default(),
            max_context_tokens: 0,
            version: 1,
            expire_time: None,
            idle_ttl: None,
            window: WindowState::default(),
            server_tools: None,
        }
    }

    /// Sessions `s0` … `s{count - 1}`, created in `store` one by one.
    async fn create_sessions(store: &SqlStore, tenant: &TenantId, count: usize) -> Vec<Session> {
        let mut sessions = Vec::new();
        for i in 0..count {
            let session = new_session(&format!("s{i}"));
            store
                .commit(tenant, &session, None, &[], None)
                .await
                .expect("create");
            sessions.push(session);
        }
        sessions
    }

    /// `session` one turn on: a user message and a reply, version and count moved on.
    fn turn(session: &mut Session) -> Vec<SharedMessage> {
        let messages: Vec<SharedMessage> = [Role::User, Role::Assistant]
            .into_iter()
            .enumerate()
            .map(|(offset, role)| {
                Arc::new(Message {
                    index: session.message_count + offset as u64,
                    role,
                    content: format!("message {}", session.message_count + offset as u64),
                    tool_calls: Vec::new(),
                    tool_call_id: String::new(),
                    tool_name: String::new(),
                    is_error: false,
                    create_time: SystemTime::now(),
                    token_count: 3,
                    turn_id: format!("turn-{}", session.version),
                })
            })
            .collect();
        session.message_count += messages.len() as u64;
        session.version += 1;
        messages
    }

    /// A commit of more messages than one INSERT takes writes them all, in order, and a
    /// commit whose messages collide with stored ones writes none of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_turns_are_written_whole_or_not_at_all() {
        let (store, _dir) = sqlite_store().await;
        let tenant = TenantId::default();
        let mut session = new_session("long");
        store
            .commit(&tenant, &session, None, &[], None)
            .await
            .expect("create");
        let mut messages = Vec::new();
        while messages.len() <= 2 * batch::MESSAGES_PER_INSERT {
            messages.extend(turn(&mut session));
        }
        let total = messages.len() as u64;
        // Every message belongs to this commit: renumbered from 0, version moved on once.
        session.version = 2;
        store
            .commit(&tenant, &session, Some(1), &messages, None)
            .await
            .expect("a long commit");
        let stored = store
            .list_messages_before(&tenant, "long", total, total as usize)
            .await
            .unwrap();
        let indexes: Vec<u64> = stored.iter().rev().map(|m| m.index).collect();
        assert_eq!(indexes, (0..total).collect::<Vec<_>>());

        // The same messages again (a stale copy of the history): refused, nothing written.
        let mut again = session.clone();
        again.version = 3;
        again.message_count = total + messages.len() as u64;
        let refused = store
            .commit(&tenant, &again, Some(2), &messages, None)
            .await;
        assert!(refused.is_err(), "{refused:?}");
        let row = store.get_session(&tenant, "long").await.unwrap().unwrap();
        assert_eq!((row.version, row.message_count), (2, total));
    }

    /// Commits queued while a transaction is being written go together in the next one,
    /// and one stale commit among them is refused alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_waiting_for_the_writer_share_one_transaction() {
        let (store, _dir) = patient_sqlite_store().await;
        let tenant = TenantId::default();
        let sessions = create_sessions(&store, &tenant, 32).await;
        let (before, _) = store.commit_batches();

        // The write lock held here: the writer's next batch waits for it, and every commit
        // sent meanwhile queues behind that batch.
        let held = take_write_lock(&store).await;
        let taken_before = taken(&store);
        let writer = store.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut running = Vec::new();
        for (i, mut session) in sessions.into_iter().enumerate() {
            let store = store.clone();
            let tenant = tenant.clone();
            running.push(tokio::spawn(async move {
                let expected = session.version;
                let messages = turn(&mut session);
                // Session s7's commit is based on a version that was never stored.
                let expected = if i == 7 { expected + 5 } else { expected };
                store
                    .commit(&tenant, &session, Some(expected), &messages, None)
                    .await
            }));
            if i == 0 {
                // The first commit is taken into a batch of its own, which waits for the
                // lock; only then are the others sent, so they all queue behind it.
                wait_until_taken(&writer, taken_before).await;
            }
        }
        while store.group.queued() < 31 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "commits never queued"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release_write_lock(held).await;
        let mut refused = Vec::new();
        for (i, outcome) in running.into_iter().enumerate() {
            match outcome.await.expect("commit task") {
                Ok(()) => {}
                Err(e) => refused.push((i, e.to_string())),
            }
        }
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, 7);
        assert!(refused[0].1.contains("changed concurrently"), "{refused:?}");
        let (after, _) = store.commit_batches();
        assert_eq!(after - before, 2, "one batch of 1, then one of 31");
        for i in 0..32 {
            let stored = store
                .get_session(&tenant, &format!("s{i}"))
                .await
                .expect("read")
                .expect("stored");
            let expected = if i == 7 { 0 } else { 2 };
            assert_eq!(stored.message_count, expected, "s{i}");
            let history = store
                .list_messages(&tenant, &format!("s{i}"), 0, 10)
                .await
                .expect("history");
            assert_eq!(history.len() as u64, expected, "s{i}");
        }
    }

    /// A commit whose caller gave up before its batch started is not written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_abandoned_before_its_batch_is_not_written() {
        let (store, _dir) = patient_sqlite_store().await;
        let tenant = TenantId::default();
        let held = take_write_lock(&store).await;
        // The first commit is taken into a batch that waits for the lock ...
        let first = {
            let store = store.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move {
                store
                    .commit(&tenant, &new_session("kept"), None, &[], None)
                    .await
            })
        };
        wait_until_taken(&store, 0).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (_, before) = store.commit_batches();
        // ... the second queues behind it, and its caller gives up.
        let abandoned = {
            let store = store.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move {
                store
                    .commit(&tenant, &new_session("abandoned"), None, &[], None)
                    .await
            })
        };
        while store.group.queued() < 1 {
            assert!(tokio::time::Instant::now() < deadline, "never queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        release_write_lock(held).await;
        first.await.expect("task").expect("kept is written");
        // A later commit proves the abandoned one's batch (if any) is behind us.
        store
            .commit(&tenant, &new_session("later"), None, &[], None)
            .await
            .expect("later is written");
        assert!(
            store
                .get_session(&tenant, "abandoned")
                .await
                .unwrap()
                .is_none()
        );
        let (_, after) = store.commit_batches();
        assert_eq!(after - before, 2, "kept and later, not abandoned");
    }

    /// On PostgreSQL, commits queued together are written a kind of row at a time, with the
    /// outcomes of writing them one by one: created, updated, refused as stale, as deleted
    /// and as existing, and one whose messages collide with a stray row refused alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_batches_give_each_commit_its_own_outcome() {
        use sqlx::Connection as _;
        let url = super::test_cluster::Cluster::shared().create_database();
        let settings = crate::config::StorageConfig::default();
        let opened = crate::store::open::open_store(
            &crate::config::StoreKind::Postgres(url.clone()),
            std::path::Path::new("."),
            &settings,
        )
        .await
        .expect("open PostgreSQL");
        let store = opened.sql.clone().expect("an SQL store");
        let tenant = TenantId::default();
        let sessions = create_sessions(&store, &tenant, 12).await;
        store
            .delete_session(&tenant, "s9")
            .await
            .expect("delete s9");
        let mut other = sqlx::PgConnection::connect(&url).await.expect("connect");
        // A stray message where s11's turn will write its second one.
        sqlx::query(
            "INSERT INTO messages (tenant_id, session_id, idx, role, content, tool_calls,
                 tool_call_id, tool_name, is_error, create_time, token_count, turn_id)
             VALUES ($1, 's11', 1, 'user', 'stray', NULL, '', '', false, 0, 1, 'x')",
        )
        .bind(tenant.as_str())
        .execute(&mut other)
        .await
        .expect("stray row");
        // s0's row locked here: the batch with its commit waits, the rest queue behind it.
        sqlx::query("BEGIN")
            .execute(&mut other)
            .await
            .expect("begin");
        sqlx::query("SELECT 1 FROM sessions WHERE tenant_id = $1 AND session_id = 's0' FOR UPDATE")
            .bind(tenant.as_str())
            .execute(&mut other)
            .await
            .expect("lock s0");
        let (before, _) = store.commit_batches();
        let taken_before = taken(&store);
        let writer = store.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut running = Vec::new();
        let mut sent = 0;
        for (i, mut session) in sessions.into_iter().enumerate() {
            if i == 10 {
                // Created again below instead.
                continue;
            }
            let expected = session.version;
            let messages = turn(&mut session);
            // s7's commit is based on a version never stored; s3's calls wait for results;
            // s5's carries a receipt.
            let expected = if i == 7 { expected + 5 } else { expected };
            if i == 3 {
                session.pending = Some(PendingTurn {
                    turn_id: "t3".into(),
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "lookup".into(),
                        arguments: Context::new(),
                    }],
                    steps: 1,
                });
            }
            let receipt = (i == 5).then(|| TurnReceipt {
                key: "k5".into(),
                fingerprint: "f".into(),
                turn_id: "turn-5".into(),
                outcome: "o".into(),
                create_time: SystemTime::now(),
            });
            let store = store.clone();
            let tenant = tenant.clone();
            running.push((
                format!("s{i}"),
                tokio::spawn(async move {
                    store
                        .commit(
                            &tenant,
                            &session,
                            Some(expected),
                            &messages,
                            receipt.as_ref(),
                        )
                        .await
                }),
            ));
            sent += 1;
            if i == 0 {
                wait_until_taken(&writer, taken_before).await;
            }
        }
        // Two creates in the same batch: one new, one of an existing session.
        for id in ["fresh", "s10"] {
            let store = store.clone();
            let tenant = tenant.clone();
            let mut session = new_session(id);
            session.version = 7;
            running.push((
                format!("create {id}"),
                tokio::spawn(async move { store.commit(&tenant, &session, None, &[], None).await }),
            ));
            sent += 1;
        }
        while store.group.queued() < sent - 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "commits never queued"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sqlx::query("ROLLBACK")
            .execute(&mut other)
            .await
            .expect("unlock s0");
        let mut outcomes = BTreeMap::new();
        for (name, task) in running {
            let outcome = task.await.expect("commit task");
            outcomes.insert(name, outcome.map_err(|e| e.to_string()));
        }
        let refused: BTreeMap<_, _> = outcomes
            .iter()
            .filter_map(|(name, outcome)| outcome.as_ref().err().map(|e| (name.clone(), e.clone())))
            .collect();
        assert_eq!(
            refused.keys().cloned().collect::<Vec<_>>(),
            ["create s10", "s11", "s7", "s9"],
            "{refused:?}"
        );
        assert!(
            refused["s7"].contains("changed concurrently"),
            "{refused:?}"
        );
        assert!(
            refused["s11"].contains("changed concurrently"),
            "{refused:?}"
        );
        assert!(refused["s9"].contains("does not exist"), "{refused:?}");
        assert!(
            refused["create s10"].contains("already exists"),
            "{refused:?}"
        );
        let (after, _) = store.commit_batches();
        assert_eq!(after - before, 2, "one batch of s0, then one of the rest");
        for i in [0, 1, 2, 3, 4, 5, 6, 8] {
            let id = format!("s{i}");
            let stored = store
                .get_session(&tenant, &id)
                .await
                .unwrap()
                .expect("stored");
            assert_eq!((stored.version, stored.message_count), (2, 2), "{id}");
            let history = store.list_messages(&tenant, &id, 0, 10).await.unwrap();
            let indexes: Vec<u64> = history.iter().map(|m| m.index).collect();
            assert_eq!(indexes, [0, 1], "{id}");
        }
        for (id, version) in [("s7", 1), ("s11", 1)] {
            let stored = store.get_session(&tenant, id).await.unwrap().expect("kept");
            assert_eq!((stored.version, stored.message_count), (version, 0), "{id}");
        }
        assert!(store.get_session(&tenant, "s9").await.unwrap().is_none());
        assert_eq!(
            store
                .get_session(&tenant, "fresh")
                .await
                .unwrap()
                .expect("created")
                .version,
            7
        );
        let s10 = store
            .get_session(&tenant, "s10")
            .await
            .unwrap()
            .expect("kept");
        assert_eq!((s10.version, s10.message_count), (1, 0));
        assert_eq!(store.pending_calls(&tenant, "s3").await.unwrap().len(), 1);
        let receipt = store.get_receipt(&tenant, "s5", "k5").await.unwrap();
        assert_eq!(receipt.map(|r| r.turn_id), Some("turn-5".to_string()));
        opened.close().await;
    }

    /// Pending calls are cleared from the database when a turn ends, whether or not the
    /// cache knew of them (it skips the statement only when it knows there are none).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_calls_are_cleared_with_and_without_the_cache() {
        let (store, _dir) = sqlite_store().await;
        let tenant = TenantId::default();
        let mut session = new_session("paused");
        store
            .commit(&tenant, &session, None, &[], None)
            .await
            .unwrap();
        // A turn pauses: one pending call.
        let expected = session.version;
        let messages = turn(&mut session);
        session.pending = Some(PendingTurn {
            turn_id: "t".into(),
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "lookup".into(),
                arguments: Context::new(),
            }],
            steps: 1,
        });
        store
            .commit(&tenant, &session, Some(expected), &messages, None)
            .await
            .unwrap();
        assert_eq!(
            store.pending_calls(&tenant, "paused").await.unwrap().len(),
            1
        );
        // It ends: the database row and its calls are cleared.
        let expected = session.version;
        let messages = turn(&mut session);
        session.pending = None;
        store
            .commit(&tenant, &session, Some(expected), &messages, None)
            .await
            .unwrap();
        assert!(
            store
                .pending_calls(&tenant, "paused")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
