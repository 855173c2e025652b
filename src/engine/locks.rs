//! Per-session turn locks: turns (and updates) on one session run one at a time, in arrival
//! order, while different sessions run in parallel. A lock is keyed by (tenant, session id),
//! like everything a store keeps, so two tenants' sessions of the same id never wait on each
//! other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::domain::TenantId;

/// A lock's key: the tenant, then the session id.
type LockKey = (TenantId, String);

type LockMap = HashMap<LockKey, Arc<AsyncMutex<()>>>;

/// One fair (FIFO) async mutex per session that has a turn running or waiting.
///
/// The map sits behind a `std::sync::Mutex` held only to look up, insert or remove an entry:
/// never across an `.await`. Entries are removed when the last holder or waiter lets go, so
/// the map holds only busy sessions. This orders turns within one process; across replicas
/// the store's version check refuses a stale commit.
#[derive(Clone, Default)]
pub struct TurnLocks {
    map: Arc<Mutex<LockMap>>,
}

/// Holds a session's turn lock; releases it on drop.
pub struct TurnGuard {
    map: Arc<Mutex<LockMap>>,
    key: LockKey,
    mutex: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl TurnLocks {
    /// Waits for the session's turn lock (in arrival order).
    pub async fn lock(&self, tenant: &TenantId, session_id: &str) -> TurnGuard {
        let key = (tenant.clone(), session_id.to_string());
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let guard = mutex.clone().lock_owned().await;
        TurnGuard {
            map: self.map.clone(),
            key,
            mutex,
            guard: Some(guard),
        }
    }

    /// Sessions with a turn running or waiting.
    #[cfg(test)]
    pub fn busy_sessions(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are only made under the map lock, so the count is stable here: 2 means
        // the map and this guard are the only owners, and nobody waits.
        if Arc::strong_count(&self.mutex) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn serializes_one_session_in_order_and_cleans_up() {
        let locks = TurnLocks::default();
        let tenant = TenantId::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = locks.lock(&tenant, "a").await;
        let mut tasks = Vec::new();
        for i in 0..5 {
            let locks = locks.clone();
            let order = order.clone();
            let tenant = tenant.clone();
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(&tenant, "a").await;
                order.lock().unwrap().push(i);
            }));
            // Let each waiter queue before the next one arrives.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Another session is not blocked, nor the same id of another tenant.
        drop(locks.lock(&tenant, "b").await);
        drop(locks.lock(&TenantId::new("other"), "a").await);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(locks.busy_sessions(), 0);
    }
}
