//! The server's lifecycle as turns see it: graceful shutdown in three explicit phases.
//!
//! 1. **Draining** (on SIGINT/SIGTERM or the caller's shutdown future): new connections and
//!    new turns are refused with UNAVAILABLE; health reports NOT_SERVING; running turns go on.
//! 2. **Closing** (when no turn runs any more, or after `shutdown_grace_ms`): turns still
//!    running are cancelled (not stored) and every open stream ends with UNAVAILABLE.
//! 3. The server returns once connections have closed (bounded as well).
//!
//! It lives in the engine because what it counts and cancels are turns; the doors (the accept
//! loop, health) read the same state to refuse connections and report NOT_SERVING.
//!
//! The same count enforces the turn concurrency limits (`limits.turns_in_flight`,
//! `limits.tenant_turns_in_flight`): every door begins its turns here (Interact, streams,
//! Converse, the MCP doors' `interact` tool), so one place counts them all, and a turn is
//! counted for exactly as long as it runs, not for as long as its request or stream is open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::EngineError;
use crate::domain::TenantId;

/// How long a caller refused for too many running turns is asked to wait: turns take seconds,
/// and no running turn's end can be predicted, so this is a polite interval, not a promise.
pub const TURN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Shared shutdown state of one server.
#[derive(Clone, Default)]
pub struct Lifecycle {
    draining: CancellationToken,
    closing: CancellationToken,
    turns: Arc<RunningTurns>,
}

/// How many turns may run at once; 0 for no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnLimits {
    /// On the whole server (`limits.turns_in_flight`).
    pub total: usize,
    /// For one tenant (`limits.tenant_turns_in_flight`).
    pub per_tenant: usize,
}

#[derive(Default)]
struct RunningTurns {
    count: AtomicUsize,
    idle: Notify,
    limits: TurnLimits,
    /// Running turns of each tenant that has any, kept only with a per-tenant limit. An entry
    /// goes when its count reaches 0, so the map never holds more tenants than running
    /// turns. A plain mutex: it guards two integer updates and is never held across an await.
    per_tenant: Mutex<HashMap<TenantId, usize>>,
}

/// Counts one running turn until dropped.
pub struct TurnTicket {
    turns: Arc<RunningTurns>,
    /// The tenant counted in `per_tenant`, when a per-tenant limit is set.
    tenant: Option<TenantId>,
}

impl Drop for TurnTicket {
    fn drop(&mut self) {
        if let Some(tenant) = self.tenant.take() {
            let mut counts = self
                .turns
                .per_tenant
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(count) = counts.get_mut(&tenant) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&tenant);
                }
            }
        }
        if self.turns.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.turns.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    /// A lifecycle whose turns are bounded by `limits`.
    pub fn with_turn_limits(limits: TurnLimits) -> Self {
        Self {
            turns: Arc::new(RunningTurns {
                limits,
                ..RunningTurns::default()
            }),
            ..Self::default()
        }
    }

    /// Registers a turn of `tenant` about to start; refused once draining began, and with
    /// [`EngineError::Overloaded`] while the server or the tenant runs as many turns as the
    /// limits allow.
    pub fn begin_turn(&self, tenant: &TenantId) -> Result<TurnTicket, EngineError> {
        if self.draining.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let limits = self.turns.limits;
        let counted =
            self.turns
                .count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                    (limits.total == 0 || running < limits.total).then_some(running + 1)
                });
        if counted.is_err() {
            return Err(too_many_turns(format!(
                "the server is running {} turns, as many as it runs at once (limits.turns_in_flight); retry shortly",
                limits.total
            )));
        }
        // From here the ticket owns the count: an early return drops it and uncounts.
        let mut ticket = TurnTicket {
            turns: self.turns.clone(),
            tenant: None,
        };
        if limits.per_tenant > 0 {
            let mut counts = self
                .turns
                .per_tenant
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let count = counts.entry(tenant.clone()).or_insert(0);
            if *count >= limits.per_tenant {
                drop(counts);
                return Err(too_many_turns(format!(
                    "tenant '{tenant}' is running {} turns, as many as one tenant runs at once (limits.tenant_turns_in_flight); wait for one to finish",
                    limits.per_tenant
                )));
            }
            *count += 1;
            ticket.tenant = Some(tenant.clone());
        }
        Ok(ticket)
    }

    /// A token for one turn: cancelled when the server closes (or by the caller).
    pub fn turn_token(&self) -> CancellationToken {
        self.closing.child_token()
    }

    /// Whether draining began (health reports NOT_SERVING from then on).
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Whether the server is closing (turns cancelled because of shutdown).
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Resolves when closing begins.
    pub async fn closed(&self) {
        self.closing.cancelled().await
    }

    /// Resolves when draining begins.
    pub async fn draining(&self) {
        self.draining.cancelled().await
    }

    /// Starts phase 1.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    /// Starts phase 2.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Number of running turns.
    pub fn running_turns(&self) -> usize {
        self.turns.count.load(Ordering::Acquire)
    }

    /// Resolves when no turn runs.
    pub async fn idle(&self) {
        loop {
            let notified = self.turns.idle.notified();
            if self.running_turns() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A refusal for too many running turns, counted in `contextd_rejected_total`.
fn too_many_turns(message: String) -> EngineError {
    crate::telemetry::metrics::rejected("turns_in_flight");
    EngineError::Overloaded {
        message,
        retry_after: TURN_RETRY_AFTER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_limits_count_the_server_and_each_tenant() {
        let lifecycle = Lifecycle::with_turn_limits(TurnLimits {
            total: 3,
            per_tenant: 2,
        });
        let alpha = TenantId::new("alpha");
        let beta = TenantId::new("beta");
        let a1 = lifecycle.begin_turn(&alpha).unwrap();
        let _a2 = lifecycle.begin_turn(&alpha).unwrap();
        let refused = lifecycle.begin_turn(&alpha).err().unwrap();
        assert!(
            refused
                .to_string()
                .contains("limits.tenant_turns_in_flight"),
            "{refused}"
        );
        assert_eq!(refused.retry_after(), Some(TURN_RETRY_AFTER));
        // The refused turn was not counted.
        assert_eq!(lifecycle.running_turns(), 2);
        let _b1 = lifecycle.begin_turn(&beta).unwrap();
        let refused = lifecycle.begin_turn(&beta).err().unwrap();
        assert!(
            refused.to_string().contains("limits.turns_in_flight"),
            "{refused}"
        );
        drop(a1);
        let _a3 = lifecycle.begin_turn(&alpha).unwrap();
        assert_eq!(lifecycle.running_turns(), 3);
    }

    #[test]
    fn finished_tenants_leave_no_entry() {
        let lifecycle = Lifecycle::with_turn_limits(TurnLimits {
            total: 0,
            per_tenant: 1,
        });
        for i in 0..100 {
            let ticket = lifecycle
                .begin_turn(&TenantId::new(format!("t{i}")))
                .unwrap();
            drop(ticket);
        }
        assert!(lifecycle.turns.per_tenant.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn drain_waits_for_turns_and_refuses_new_ones() {
        let lifecycle = Lifecycle::default();
        let ticket = lifecycle.begin_turn(&TenantId::default()).unwrap();
        lifecycle.drain();
        assert!(lifecycle.begin_turn(&TenantId::default()).is_err());
        let waiter = tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(ticket);
        waiter.await.unwrap();
        let token = lifecycle.turn_token();
        lifecycle.close();
        assert!(token.is_cancelled());
    }
}
