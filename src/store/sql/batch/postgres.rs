//! PostgreSQL's batches written a kind of row at a time: one statement creates every new
//! session of the batch, one updates every other session row, one clears their pending tool
//! calls, one inserts every message, one every pending call, one every receipt — each row's
//! values passed as arrays (`UNNEST`). A batch of 20 turns is some 7 round trips to the
//! server instead of 60, each of which cost a wake-up, a send and a receive on both sides.
//!
//! The outcome is the one of writing the commits one by one
//! ([`write_each`](super::write_each)), which is still used for a batch of one, a batch naming
//! a session twice (the commits are then ordered), and to find whose messages collided with
//! stored ones (a refusal this path cannot attribute to one commit).

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use super::{Attempt, BatchFailure, CommitJob};
use crate::store::StoreError;
use crate::store::sql::{micros, settle, to_i64, unavailable};

/// Creates the sessions whose rows are not there; returns the keys of those created.
const CREATE_SESSIONS: &str = "INSERT INTO sessions (tenant_id, session_id, version,
         create_time, update_time, expire_time, message_count, pending_turn, pending_steps,
         body)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[],
         $6::int8[], $7::int8[], $8::text[], $9::int8[], $10::text[])
     ON CONFLICT (tenant_id, session_id) DO NOTHING
     RETURNING tenant_id, session_id";

/// Updates the sessions still at the version and length each commit continues; returns the
/// positions of those updated.
const UPDATE_SESSIONS: &str = "UPDATE sessions AS s SET version = v.version,
         update_time = v.update_time, expire_time = v.expire_time,
         message_count = v.message_count, pending_turn = v.pending_turn,
         pending_steps = v.pending_steps, body = v.body
     FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[],
         $7::text[], $8::int8[], $9::text[], $10::int8[], $11::int8[], $12::int4[])
         AS v(tenant_id, session_id, version, update_time, expire_time, message_count,
             pending_turn, pending_steps, body, expected, first_index, position)
     WHERE s.tenant_id = v.tenant_id AND s.session_id = v.session_id
         AND s.version = v.expected AND s.message_count = v.first_index
     RETURNING v.position";

/// The positions of the given sessions that exist (tells a stale commit from a deleted
/// session).
const EXISTING_SESSIONS: &str = "SELECT v.position
     FROM UNNEST($1::text[], $2::text[], $3::int4[]) AS v(tenant_id, session_id, position)
     JOIN sessions s ON s.tenant_id = v.tenant_id AND s.session_id = v.session_id";

/// Clears the pending tool calls of the given sessions.
const CLEAR_PENDING: &str = "DELETE FROM pending_tool_calls AS p
     USING UNNEST($1::text[], $2::text[]) AS v(tenant_id, session_id)
     WHERE p.tenant_id = v.tenant_id AND p.session_id = v.session_id";

/// Inserts messages of any sessions.
const INSERT_MESSAGES: &str = "INSERT INTO messages (tenant_id, session_id, idx, role,
         content, tool_calls, tool_call_id, tool_name, is_error, create_time, token_count,
         turn_id)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
         $6::text[], $7::text[], $8::text[], $9::bool[], $10::int8[], $11::int8[], $12::text[])";

/// Inserts pending tool calls of any sessions.
const INSERT_CALLS: &str = "INSERT INTO pending_tool_calls (tenant_id, session_id, position,
         call_id, name, arguments)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
         $6::text[])";

/// Inserts receipts of any sessions (no two of one session: see [`names_a_session_twice`]);
/// a key reused after its window (not yet swept) names the new turn.
const INSERT_RECEIPTS: &str = "INSERT INTO turn_receipts (tenant_id, session_id,
         idempotency_key, fingerprint, turn_id, outcome, create_time)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
         $6::text[], $7::int8[])
     ON CONFLICT (tenant_id, session_id, idempotency_key) DO UPDATE SET
         fingerprint = excluded.fingerprint, turn_id = excluded.turn_id,
         outcome = excluded.outcome, create_time = excluded.create_time";

/// Some commit's messages collided with stored ones: which one, only writing the commits one
/// by one tells.
pub(super) struct Collided;

/// Whether two commits of `batch` write the same session (then they are written one by one,
/// in order: one statement cannot apply two changes to one row).
pub(super) fn names_a_session_twice(batch: &[CommitJob]) -> bool {
    let mut keys: Vec<(&str, &str)> = batch
        .iter()
        .map(|job| (job.row.tenant.as_str(), job.row.session_id.as_str()))
        .collect();
    keys.sort_unstable();
    keys.windows(2).any(|pair| pair[0] == pair[1])
}

/// Writes `batch` in one transaction, each kind of row in one statement.
pub(super) async fn write_together(
    pool: &PgPool,
    batch: &[CommitJob],
) -> Result<Attempt, Collided> {
    let mut conn: PoolConnection<Postgres> = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return Ok(Err(BatchFailure::Store(unavailable(e)))),
    };
    let mut collided = false;
    let result: Attempt = async {
        let store = |e| BatchFailure::Store(unavailable(e));
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(store)?;
        // Each commit's outcome once known; `Some(Ok)` means its session row was written.
        let mut outcomes: Vec<Option<Result<(), StoreError>>> = vec![None; batch.len()];
        let (creates, updates): (Vec<usize>, Vec<usize>) =
            (0..batch.len()).partition(|&i| batch[i].expected_version.is_none());

        if !creates.is_empty() {
            let rows = |f: &dyn Fn(&CommitJob) -> i64| -> Vec<i64> {
                creates.iter().map(|&i| f(&batch[i])).collect()
            };
            let created: Vec<(String, String)> = sqlx::query_as(CREATE_SESSIONS)
                .bind(texts(batch, &creates, |j| &j.row.tenant))
                .bind(texts(batch, &creates, |j| &j.row.session_id))
                .bind(rows(&|j| j.row.version))
                .bind(rows(&|j| j.row.create_time))
                .bind(rows(&|j| j.row.update_time))
                .bind(
                    creates
                        .iter()
                        .map(|&i| batch[i].row.expire_time)
                        .collect::<Vec<_>>(),
                )
                .bind(rows(&|j| j.row.message_count))
                .bind(pending_turns(batch, &creates))
                .bind(rows(&|j| j.row.pending_steps))
                .bind(texts(batch, &creates, |j| &j.row.body))
                .fetch_all(&mut *tx)
                .await
                .map_err(store)?;
            // No session is named twice in the batch: a key is one commit.
            for (tenant, session) in &created {
                if let Some(&i) = creates.iter().find(|&&i| {
                    batch[i].row.tenant == *tenant && batch[i].row.session_id == *session
                }) {
                    outcomes[i] = Some(Ok(()));
                }
            }
            for &i in &creates {
                outcomes[i].get_or_insert_with(|| {
                    Err(StoreError::AlreadyExists(batch[i].row.session_id.clone()))
                });
            }
        }

        if !updates.is_empty() {
            let rows = |f: &dyn Fn(&CommitJob) -> i64| -> Vec<i64> {
                updates.iter().map(|&i| f(&batch[i])).collect()
            };
            let updated: Vec<i32> = sqlx::query_scalar(UPDATE_SESSIONS)
                .bind(texts(batch, &updates, |j| &j.row.tenant))
                .bind(texts(batch, &updates, |j| &j.row.session_id))
                .bind(rows(&|j| j.row.version))
                .bind(rows(&|j| j.row.update_time))
                .bind(
                    updates
                        .iter()
                        .map(|&i| batch[i].row.expire_time)
                        .collect::<Vec<_>>(),
                )
                .bind(rows(&|j| j.row.message_count))
                .bind(pending_turns(batch, &updates))
                .bind(rows(&|j| j.row.pending_steps))
                .bind(texts(batch, &updates, |j| &j.row.body))
                .bind(rows(&|j| to_i64(j.expected_version.unwrap_or_default())))
                .bind(rows(&|j| to_i64(j.first_index)))
                .bind(positions(&updates))
                .fetch_all(&mut *tx)
                .await
                .map_err(store)?;
            for position in updated {
                outcomes[position as usize] = Some(Ok(()));
            }
            let refused: Vec<usize> = updates
                .iter()
                .copied()
                .filter(|&i| outcomes[i].is_none())
                .collect();
            if !refused.is_empty() {
                let existing: Vec<i32> = sqlx::query_scalar(EXISTING_SESSIONS)
                    .bind(texts(batch, &refused, |j| &j.row.tenant))
                    .bind(texts(batch, &refused, |j| &j.row.session_id))
                    .bind(positions(&refused))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(store)?;
                for &i in &refused {
                    let id = batch[i].row.session_id.clone();
                    outcomes[i] = Some(Err(if existing.contains(&(i as i32)) {
                        StoreError::Conflict(id)
                    } else {
                        StoreError::NotFound(id)
                    }));
                }
            }
            let clear: Vec<usize> = updates
                .iter()
                .copied()
                .filter(|&i| batch[i].clear_pending && matches!(outcomes[i], Some(Ok(()))))
                .collect();
            if !clear.is_empty() {
                sqlx::query(CLEAR_PENDING)
                    .bind(texts(batch, &clear, |j| &j.row.tenant))
                    .bind(texts(batch, &clear, |j| &j.row.session_id))
                    .execute(&mut *tx)
                    .await
                    .map_err(store)?;
            }
        }

        let written: Vec<&CommitJob> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Some(Ok(()))))
            .map(|(job, _)| job)
            .collect();
        let messages = Messages::of(&written);
        if !messages.idx.is_empty() {
            let inserted = sqlx::query(INSERT_MESSAGES)
                .bind(&messages.tenant)
                .bind(&messages.session)
                .bind(&messages.idx)
                .bind(&messages.role)
                .bind(&messages.content)
                .bind(&messages.tool_calls)
                .bind(&messages.tool_call_id)
                .bind(&messages.tool_name)
                .bind(&messages.is_error)
                .bind(&messages.create_time)
                .bind(&messages.token_count)
                .bind(&messages.turn_id)
                .execute(&mut *tx)
                .await;
            match inserted {
                Ok(_) => {}
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    collided = true;
                    return Err(BatchFailure::Store(StoreError::Unavailable(
                        "a message collided".into(),
                    )));
                }
                Err(other) => return Err(store(other)),
            }
        }
        let calls: Vec<(&CommitJob, usize, &(String, String, String))> = written
            .iter()
            .flat_map(|job| job.calls.iter().enumerate().map(move |(p, c)| (*job, p, c)))
            .collect();
        if !calls.is_empty() {
            sqlx::query(INSERT_CALLS)
                .bind(
                    calls
                        .iter()
                        .map(|c| c.0.row.tenant.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    calls
                        .iter()
                        .map(|c| c.0.row.session_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(calls.iter().map(|c| c.1 as i64).collect::<Vec<_>>())
                .bind(calls.iter().map(|c| c.2.0.as_str()).collect::<Vec<_>>())
                .bind(calls.iter().map(|c| c.2.1.as_str()).collect::<Vec<_>>())
                .bind(calls.iter().map(|c| c.2.2.as_str()).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .map_err(store)?;
        }
        let receipts: Vec<(&CommitJob, &super::ReceiptWrite)> = written
            .iter()
            .filter_map(|job| job.receipt.as_ref().map(|r| (*job, r)))
            .collect();
        if !receipts.is_empty() {
            sqlx::query(INSERT_RECEIPTS)
                .bind(
                    receipts
                        .iter()
                        .map(|r| r.0.row.tenant.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    receipts
                        .iter()
                        .map(|r| r.0.row.session_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    receipts
                        .iter()
                        .map(|r| r.1.key.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    receipts
                        .iter()
                        .map(|r| r.1.fingerprint.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    receipts
                        .iter()
                        .map(|r| r.1.turn_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    receipts
                        .iter()
                        .map(|r| r.1.outcome.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(receipts.iter().map(|r| r.1.create_time).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .map_err(store)?;
        }
        tx.commit().await.map_err(store)?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or(Ok(())))
            .collect())
    }
    .await;
    if collided {
        // Rolled back when the transaction dropped; the connection is sound.
        return Err(Collided);
    }
    // After a database failure the connection is closed, not pooled again.
    let settled: Result<(), StoreError> = match &result {
        Err(BatchFailure::Store(error)) => Err(error.clone()),
        _ => Ok(()),
    };
    settle(&mut conn, &settled);
    Ok(result)
}

/// A text column of the commits at `indexes`.
fn texts<'a>(
    batch: &'a [CommitJob],
    indexes: &[usize],
    column: impl Fn(&'a CommitJob) -> &'a String,
) -> Vec<&'a str> {
    indexes
        .iter()
        .map(|&i| column(&batch[i]).as_str())
        .collect()
}

/// The pending turn ids of the commits at `indexes`.
fn pending_turns<'a>(batch: &'a [CommitJob], indexes: &[usize]) -> Vec<Option<&'a str>> {
    indexes
        .iter()
        .map(|&i| batch[i].row.pending_turn.as_deref())
        .collect()
}

/// `indexes` as the positions the statements return.
fn positions(indexes: &[usize]) -> Vec<i32> {
    indexes.iter().map(|&i| i as i32).collect()
}

/// The message columns of the written commits, row by row.
#[derive(Default)]
struct Messages<'a> {
    tenant: Vec<&'a str>,
    session: Vec<&'a str>,
    idx: Vec<i64>,
    role: Vec<&'a str>,
    content: Vec<&'a str>,
    tool_calls: Vec<Option<&'a str>>,
    tool_call_id: Vec<&'a str>,
    tool_name: Vec<&'a str>,
    is_error: Vec<bool>,
    create_time: Vec<i64>,
    token_count: Vec<i64>,
    turn_id: Vec<&'a str>,
}

impl<'a> Messages<'a> {
    fn of(written: &[&'a CommitJob]) -> Self {
        let mut columns = Self::default();
        for job in written {
            for (message, tool_calls) in &job.messages {
                columns.tenant.push(&job.row.tenant);
                columns.session.push(&job.row.session_id);
                columns.idx.push(to_i64(message.index));
                columns.role.push(message.role.as_str());
                columns.content.push(&message.content);
                columns.tool_calls.push(tool_calls.as_deref());
                columns.tool_call_id.push(&message.tool_call_id);
                columns.tool_name.push(&message.tool_name);
                columns.is_error.push(message.is_error);
                columns.create_time.push(micros(message.create_time));
                columns.token_count.push(i64::from(message.token_count));
                columns.turn_id.push(&message.turn_id);
            }
        }
        columns
    }
}
