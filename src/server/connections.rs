//! Admission of connections: how many may be open, what each costs in file descriptors, and
//! what the operator sees of them.
//!
//! A fixed budget (`limits.max_connections`) covers every door and every connection still in
//! its handshake, so a flood of silent or slow peers reaches the budget, not the process's
//! open-files limit, and a connection beyond it is closed at once instead of queueing. The
//! refusal is counted (`contextd_rejected_total{reason="max_connections"}`) and logged at most
//! once a second. Open connections are a gauge per door (`contextd_connections_open{door}`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::Limits;

/// How often a refusal is logged at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The connection limits of the accept loop, read from `[limits]`.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    /// From accept until the protocol is known and any TLS handshake is done.
    pub(crate) handshake: Duration,
    /// A connection with no open request or stream is closed after this.
    pub(crate) idle: Duration,
    /// HTTP/2 keepalive ping interval.
    pub(crate) keepalive_interval: Duration,
    /// HTTP/2 keepalive ping timeout.
    pub(crate) keepalive_timeout: Duration,
    /// HTTP/1 header read timeout.
    pub(crate) header_read: Duration,
    /// Deadline for a unary request's body.
    pub(crate) request_body: Duration,
    /// HTTP/2 streams per connection.
    pub(crate) max_concurrent_streams: u32,
}

impl ConnectionLimits {
    /// The limits `limits` sets.
    pub(crate) fn from_config(limits: &Limits) -> Self {
        Self {
            handshake: Duration::from_millis(limits.handshake_timeout_ms),
            idle: Duration::from_millis(limits.idle_connection_timeout_ms),
            keepalive_interval: Duration::from_millis(limits.keepalive_interval_ms),
            keepalive_timeout: Duration::from_millis(limits.keepalive_timeout_ms),
            header_read: Duration::from_millis(limits.header_read_timeout_ms),
            request_body: Duration::from_millis(limits.request_body_timeout_ms),
            max_concurrent_streams: limits.max_concurrent_streams,
        }
    }
}

/// The budget of open connections, shared by the accept loop and the connections' tasks.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionBudget {
    open: Arc<AtomicUsize>,
    max: usize,
    started: Instant,
    /// Milliseconds since `started` of the last logged refusal (plus one; 0: never).
    last_refusal_log: Arc<AtomicU64>,
}

impl ConnectionBudget {
    /// A budget of `max` connections.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
            started: Instant::now(),
            last_refusal_log: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A place for one more connection, held until the slot is dropped; `None` (counted and
    /// logged) when the budget is spent.
    pub(crate) fn admit(&self) -> Option<ConnectionSlot> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok();
        if admitted {
            return Some(ConnectionSlot {
                open: self.open.clone(),
            });
        }
        crate::telemetry::metrics::rejected("max_connections");
        self.log_refusal();
        None
    }

    /// Logs a refusal unless one was logged less than [`REFUSAL_LOG_INTERVAL`] ago.
    fn log_refusal(&self) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_refusal_log.load(Ordering::Relaxed);
        let interval = REFUSAL_LOG_INTERVAL.as_millis() as u64;
        if (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last_refusal_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_connections = self.max,
                "refusing connections: limits.max_connections are open (logged at most once a second)"
            );
        }
    }
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    open: Arc<AtomicUsize>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a connection in `contextd_connections_open{door}` while it lives.
#[derive(Debug)]
pub(crate) struct DoorGauge {
    door: &'static str,
}

impl DoorGauge {
    /// Counts one open connection of `door` (`"http"` or `"lines"`).
    pub(crate) fn open(door: &'static str) -> Self {
        metrics::gauge!(crate::telemetry::metrics::CONNECTIONS_OPEN, "door" => door).increment(1.0);
        Self { door }
    }
}

impl Drop for DoorGauge {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::metrics::CONNECTIONS_OPEN, "door" => self.door)
            .decrement(1.0);
    }
}

/// Raises the soft open-files limit to the hard one, so the connection budget rather than the
/// process limit decides how many peers are served, and logs both.
pub fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        use rlimit::Resource;
        let (soft, hard) = match rlimit::getrlimit(Resource::NOFILE) {
            Ok(limits) => limits,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the open-files limit");
                return;
            }
        };
        match rlimit::increase_nofile_limit(hard) {
            Ok(raised) => tracing::info!(
                soft = soft,
                hard = hard,
                now = raised,
                "open-files limit (soft limit raised to the hard one)"
            ),
            Err(e) => tracing::warn!(
                soft = soft,
                hard = hard,
                error = %e,
                "cannot raise the open-files limit; each connection takes one"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_beyond_its_size_and_gives_places_back() {
        let budget = ConnectionBudget::new(2);
        let first = budget.admit().expect("first");
        let _second = budget.admit().expect("second");
        assert!(budget.admit().is_none());
        drop(first);
        assert!(budget.admit().is_some());
    }
}
