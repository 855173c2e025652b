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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::EngineError;

/// Shared shutdown state of one server.
#[derive(Clone, Default)]
pub struct Lifecycle {
    draining: CancellationToken,
    closing: CancellationToken,
    turns: Arc<RunningTurns>,
}

#[derive(Default)]
struct RunningTurns {
    count: AtomicUsize,
    idle: Notify,
}

/// Counts one running turn until dropped.
pub struct TurnTicket {
    turns: Arc<RunningTurns>,
}

impl Drop for TurnTicket {
    fn drop(&mut self) {
        if self.turns.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.turns.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    /// Registers a turn about to start; refused once draining began.
    pub fn begin_turn(&self) -> Result<TurnTicket, EngineError> {
        if self.draining.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        self.turns.count.fetch_add(1, Ordering::AcqRel);
        Ok(TurnTicket {
            turns: self.turns.clone(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_turns_and_refuses_new_ones() {
        let lifecycle = Lifecycle::default();
        let ticket = lifecycle.begin_turn().unwrap();
        lifecycle.drain();
        assert!(lifecycle.begin_turn().is_err());
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
