//! Sessions' entries, least recently used first, bounded by bytes: what the SQL stores'
//! write-through cache ([`super::sql::cache`]) and the engine's kept windows both hold.
//!
//! Each entry says what it weighs ([`Weighed`]); the map keeps their sum within its budget by
//! dropping the entries used least recently. An entry changed in place goes through
//! [`SessionLru::update`], which counts it again. The map has no lock of its own: its owner
//! holds it under one, and may drop what [`SessionLru::insert`] hands back outside it.

use hashlink::LruCache;

use crate::domain::TenantId;

/// What an entry counts against the budget.
pub(crate) trait Weighed {
    /// Bytes counted for the entry as it is now.
    fn bytes(&self) -> usize;
}

/// A session, by tenant and id.
type Key = (TenantId, String);

fn key(tenant: &TenantId, session_id: &str) -> Key {
    (tenant.clone(), session_id.to_string())
}

/// Entries by session, within `budget` bytes.
pub(crate) struct SessionLru<E> {
    entries: LruCache<Key, E>,
    /// The sum of the entries' [`Weighed::bytes`].
    bytes: usize,
    budget: usize,
}

impl<E: Weighed> SessionLru<E> {
    /// An empty map that holds at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            entries: LruCache::new_unbounded(),
            bytes: 0,
            budget,
        }
    }

    /// Bytes counted for every entry now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The session's entry, without counting it as used.
    pub fn peek(&self, tenant: &TenantId, session_id: &str) -> Option<&E> {
        self.entries.peek(&key(tenant, session_id))
    }

    /// The session's entry, now the most recently used.
    pub fn get(&mut self, tenant: &TenantId, session_id: &str) -> Option<&E> {
        self.entries.get(&key(tenant, session_id))
    }

    /// Changes the session's entry with `change` (counting it as used when `used`), counts
    /// its bytes again and drops the least recently used entries beyond the budget (the
    /// changed one included, if it alone is over). `None`: no entry.
    pub fn update<R>(
        &mut self,
        tenant: &TenantId,
        session_id: &str,
        used: bool,
        change: impl FnOnce(&mut E) -> R,
    ) -> Option<R> {
        let key = key(tenant, session_id);
        let entry = if used {
            self.entries.get_mut(&key)?
        } else {
            self.entries.peek_mut(&key)?
        };
        let before = entry.bytes();
        let result = change(entry);
        self.bytes = self.bytes - before + entry.bytes();
        drop(self.evict());
        Some(result)
    }

    /// Puts `entry` for the session, the most recently used. Hands back what it replaced and
    /// what left to make room, for the caller to drop outside its lock.
    pub fn insert(&mut self, tenant: &TenantId, session_id: &str, entry: E) -> Vec<E> {
        self.bytes += entry.bytes();
        let mut gone = Vec::new();
        if let Some(old) = self.entries.insert(key(tenant, session_id), entry) {
            self.bytes -= old.bytes();
            gone.push(old);
        }
        gone.extend(self.evict());
        gone
    }

    /// Takes the session's entry out.
    pub fn remove(&mut self, tenant: &TenantId, session_id: &str) -> Option<E> {
        let old = self.entries.remove(&key(tenant, session_id))?;
        self.bytes -= old.bytes();
        Some(old)
    }

    /// Takes every entry of `tenant` out, or every entry when `None`.
    pub fn remove_tenant(&mut self, tenant: Option<&TenantId>) -> Vec<E> {
        let keys: Vec<Key> = self
            .entries
            .iter()
            .filter(|((t, _), _)| tenant.is_none_or(|tenant| t == tenant))
            .map(|(k, _)| k.clone())
            .collect();
        let gone: Vec<E> = keys
            .iter()
            .filter_map(|key| self.entries.remove(key))
            .collect();
        self.bytes -= gone.iter().map(Weighed::bytes).sum::<usize>();
        gone
    }

    /// Takes the least recently used entries out until the rest are within the budget.
    fn evict(&mut self) -> Vec<E> {
        let mut gone = Vec::new();
        while self.bytes > self.budget {
            let Some((_, old)) = self.entries.remove_lru() else {
                break;
            };
            self.bytes -= old.bytes();
            gone.push(old);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry that weighs what it says.
    struct Weight(usize);

    impl Weighed for Weight {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn keeps_the_sum_within_the_budget_least_recently_used_first() {
        let tenant = TenantId::default();
        let other = TenantId::new("other");
        let mut lru = SessionLru::new(100);
        assert!(lru.insert(&tenant, "a", Weight(40)).is_empty());
        assert!(lru.insert(&other, "a", Weight(40)).is_empty());
        // `tenant`'s "a" is used, so `other`'s goes to make room.
        assert!(lru.get(&tenant, "a").is_some());
        let gone = lru.insert(&tenant, "b", Weight(40));
        assert_eq!(gone.iter().map(Weighed::bytes).collect::<Vec<_>>(), [40]);
        assert!(lru.peek(&other, "a").is_none());
        assert_eq!(lru.bytes(), 80);
        // Replacing hands back the old entry and counts the new one.
        let gone = lru.insert(&tenant, "b", Weight(10));
        assert_eq!(gone.iter().map(Weighed::bytes).collect::<Vec<_>>(), [40]);
        assert_eq!(lru.bytes(), 50);
        // Growing in place past the budget drops the least recently used: "a" (peeking at it
        // did not count as a use).
        assert!(lru.peek(&tenant, "a").is_some());
        assert_eq!(lru.update(&tenant, "b", true, |w| w.0 = 70), Some(()));
        assert!(lru.peek(&tenant, "a").is_none());
        assert_eq!(lru.bytes(), 70);
        assert_eq!(lru.update(&tenant, "missing", true, |w| w.0 = 1), None);
        // Alone over the budget: it goes too.
        lru.update(&tenant, "b", false, |w| w.0 = 101);
        assert_eq!(lru.bytes(), 0);
        assert!(lru.peek(&tenant, "b").is_none());
    }

    #[test]
    fn removes_one_session_a_tenant_or_everything() {
        let (t1, t2) = (TenantId::new("one"), TenantId::new("two"));
        let mut lru = SessionLru::new(1_000);
        for (tenant, id) in [(&t1, "a"), (&t1, "b"), (&t2, "a"), (&t2, "c")] {
            lru.insert(tenant, id, Weight(10));
        }
        assert_eq!(lru.remove(&t1, "a").map(|w| w.0), Some(10));
        assert!(lru.remove(&t1, "a").is_none());
        assert_eq!(lru.bytes(), 30);
        assert_eq!(lru.remove_tenant(Some(&t2)).len(), 2);
        assert!(lru.peek(&t1, "b").is_some());
        assert_eq!(lru.bytes(), 10);
        assert_eq!(lru.remove_tenant(None).len(), 1);
        assert_eq!(lru.bytes(), 0);
    }
}
