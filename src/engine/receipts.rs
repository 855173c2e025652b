//! Idempotent turns: a request with an idempotency key runs at most once per (tenant,
//! session, key) within `limits.idempotency_window`.
//!
//! The check happens under the session's lock, so a repeat that arrives while the first
//! attempt still runs waits for it and then finds its receipt. The receipt is written in the
//! turn's own commit (see [`crate::domain::receipt`]): a first attempt that failed or was
//! cancelled left none, and its repeat simply runs. A repeat is answered with the stored
//! outcome; on a stream, as `Started`, the whole reply as one `Delta`, the client-side tool
//! calls, then the outcome.

use sha2::{Digest, Sha256};

use super::turn::emit;
use super::{Engine, EngineError, TurnEvent, TurnOutcome, TurnRequest, TurnSink};
use crate::domain::Scope;
use crate::domain::receipt::TurnReceipt;
use crate::domain::session;

/// A fingerprint of what a turn request asks for: its message, context patch, tool results
/// and whether it abandons the paused turn (the key and the session are the receipt's address, not its content).
pub(super) fn fingerprint(request: &TurnRequest) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        // Length-prefixed, so no two different requests hash the same bytes.
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(request.message.as_bytes());
    let patch = request
        .context_patch
        .as_ref()
        .map(|p| serde_json::Value::Object(p.clone()).to_string())
        .unwrap_or_default();
    field(patch.as_bytes());
    for result in &request.tool_results {
        field(result.tool_call_id.as_bytes());
        field(result.content.as_bytes());
        field(&[u8::from(result.is_error)]);
    }
    // Only when set, so the fingerprints of receipts stored before the field existed hold.
    if request.abandon_tool_calls {
        field(b"abandon_tool_calls");
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Engine {
    /// The stored outcome for a repeat of `request`'s key (replayed on `sink`), or `None` to
    /// run the turn. Called under the session's lock.
    pub(super) async fn replay_receipt<S: TurnSink>(
        &self,
        scope: &Scope,
        request: &TurnRequest,
        fingerprint: &str,
        sink: &mut S,
    ) -> Result<Option<TurnOutcome>, EngineError> {
        let key = &request.idempotency_key;
        let Some(receipt) = self
            .store
            .get_receipt(&scope.tenant, &request.session_id, key)
            .await?
        else {
            return Ok(None);
        };
        let age = session::now()
            .duration_since(receipt.create_time)
            .unwrap_or_default();
        if age >= self.limits.idempotency_window {
            return Ok(None); // Forgotten: the key may name a new turn.
        }
        if receipt.fingerprint != fingerprint {
            return Err(EngineError::InvalidArgument(format!(
                "idempotency_key '{key}' was already used on session '{}' for a different request (turn {}); a retry must repeat its request exactly, and a new request needs a new key",
                request.session_id, receipt.turn_id
            )));
        }
        let outcome: TurnOutcome = serde_json::from_str(&receipt.outcome).map_err(|_| {
            EngineError::StoreUnavailable(format!(
                "the stored outcome of turn {} cannot be read",
                receipt.turn_id
            ))
        })?;
        emit(
            sink,
            TurnEvent::Started {
                turn_id: outcome.turn_id.clone(),
                session_id: outcome.session_id.clone(),
                session_created: outcome.session_created,
            },
        )
        .await?;
        if !outcome.response.is_empty() {
            emit(sink, TurnEvent::Delta(outcome.response.clone())).await?;
        }
        for call in &outcome.tool_calls {
            emit(sink, TurnEvent::ToolCall(call.clone())).await?;
        }
        Ok(Some(outcome))
    }
}

/// The receipt a turn's commit stores for `key`.
pub(super) fn receipt_of(
    key: String,
    fingerprint: String,
    outcome: &TurnOutcome,
) -> Result<TurnReceipt, EngineError> {
    let encoded = serde_json::to_string(outcome).map_err(|e| {
        EngineError::StoreUnavailable(format!("cannot encode the turn's outcome: {e}"))
    })?;
    Ok(TurnReceipt {
        key,
        fingerprint,
        turn_id: outcome.turn_id.clone(),
        outcome: encoded,
        create_time: session::now(),
    })
}
