//! The write-through cache of a SQL store: each hot session's row and the newest part of its
//! history, so that a turn reads nothing from the database in the common case (the window is
//! assembled from up to a few hundred messages, which the database hands over row by row).
//!
//! What it holds is only ever what the database holds: a session's row is put here by the
//! commit that wrote it, after that commit succeeded, and a history is extended by committed
//! messages at its end and by messages read from the database at its start (stored messages
//! never change). Anything that removes rows (a deleted session, a tenant, expired sessions)
//! drops the entries first and again after.
//!
//! On SQLite the data directory's lock makes this process the database's only writer, so an
//! entry is always current. PostgreSQL replicas write the same rows from several processes
//! ([`SessionCache::shared`]): there an entry is used only while this process holds the
//! session's lease and has *confirmed* it — the row read under that lease has the version,
//! creation time and length this process last wrote, so no other replica has changed the
//! session since, and none can until the lease goes. Every other read goes to the database.
//!
//! Bounded by bytes (`storage.cache_bytes`): the sessions used least recently go first, and
//! one session's history keeps at most an eighth of the budget and 1,024 messages (its
//! oldest messages go first; a window reaching further back reads them from the database).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::TenantId;
use crate::domain::session::{Session, SharedMessage};
use crate::store::lru::{SessionLru, Weighed};

/// Bytes counted for a cached message besides its text.
const MESSAGE_OVERHEAD: usize = 160;
/// Bytes counted for a cached session besides its variable parts.
const SESSION_OVERHEAD: usize = 512;
/// Most messages one session keeps: about three windows of the default 8,192 tokens. A
/// window reaching further back reads the rest from the database.
const MAX_MESSAGES: usize = 1024;

/// Cached sessions, by tenant and id.
pub(crate) struct SessionCache {
    budget: usize,
    /// Whether other processes write the same database (PostgreSQL replicas).
    shared: bool,
    inner: Mutex<Inner>,
}

/// A session, by tenant and id.
type Key = (TenantId, String);

struct Inner {
    entries: SessionLru<Entry>,
    /// Source of [`Entry::generation`].
    next_generation: u64,
    /// Sessions whose lease this process holds (shared databases only), with how many
    /// leases.
    leased: HashMap<Key, u32>,
}

impl Inner {
    /// Keeps the session's entry only if it is what this process last wrote — same version,
    /// creation time and length as `stored` — confirming it for use when `leased`; drops it
    /// otherwise (`stored` is `None`: no such session).
    fn check(&mut self, tenant: &TenantId, session_id: &str, stored: Option<Stamp>, leased: bool) {
        let current = self.entries.update(tenant, session_id, false, |entry| {
            let current = match (stored, &entry.session) {
                (Some(stored), Some(written)) => {
                    stored == Stamp::of(written) && stored.message_count == entry.end
                }
                _ => false,
            };
            entry.confirmed = current && leased;
            current
        });
        if current == Some(false) {
            self.entries.remove(tenant, session_id);
        }
    }
}

/// What tells one stored state of a session's row from another: every write raises the
/// version, a session made anew under the same id has another creation time, and the length
/// says how far its history goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The row's version.
    pub version: u64,
    /// When the session was created, in microseconds since the epoch (as stored).
    pub create_micros: u128,
    /// How many messages its history holds.
    pub message_count: u64,
}

impl Stamp {
    /// The stamp of a session's row.
    pub fn of(session: &Session) -> Self {
        Self {
            version: session.version,
            create_micros: micros(session.create_time),
            message_count: session.message_count,
        }
    }
}

/// One session: its row as last committed (when this process committed it) and a run of its
/// newest messages.
struct Entry {
    /// Changes whenever the entry is made anew, so a read that started before can tell its
    /// messages do not belong to this entry's history.
    generation: u64,
    session: Option<Session>,
    /// Shared databases: confirmed against the stored row under a lease this process still
    /// holds, so the entry may be used (always true on a database of one writer).
    confirmed: bool,
    /// Contiguous messages, oldest first, ending at `end`.
    messages: VecDeque<SharedMessage>,
    /// The index after the newest cached message: the stored history's length.
    end: u64,
    bytes: usize,
}

impl Entry {
    /// The index of the oldest cached message.
    fn start(&self) -> u64 {
        self.end - self.messages.len() as u64
    }
}

impl Weighed for Entry {
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What a history read found in the cache.
pub(crate) enum CachedHistory {
    /// Every message asked for, newest first.
    Hit(Vec<SharedMessage>),
    /// Not (all) there: read the database, then offer the result to
    /// [`SessionCache::add_older`] with this generation (`None`: no entry).
    Miss(Option<u64>),
}

fn message_bytes(message: &SharedMessage) -> usize {
    MESSAGE_OVERHEAD + message.content.len()
}

fn session_bytes(session: &Session) -> usize {
    // An estimate: the variable parts' text, not their exact heap size.
    SESSION_OVERHEAD
        + session.system_prompt.len()
        + serde_json::to_string(&session.context).map_or(0, |s| s.len())
        + session
            .tools
            .iter()
            .map(|t| t.name.len() + t.description.len() + 256)
            .sum::<usize>()
}

/// A stored time as the database keeps it (microseconds since the epoch).
fn micros(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

impl SessionCache {
    /// A cache of at most `budget` bytes for a database this process alone writes.
    pub fn new(budget: usize) -> Self {
        Self::with_writers(budget, false)
    }

    /// A cache of at most `budget` bytes for a database other processes write too: entries
    /// are used only once confirmed under a lease (see [`Self::lease_taken`]).
    pub fn shared(budget: usize) -> Self {
        Self::with_writers(budget, true)
    }

    fn with_writers(budget: usize, shared: bool) -> Self {
        Self {
            budget,
            shared,
            inner: Mutex::new(Inner {
                entries: SessionLru::new(budget),
                next_generation: 0,
                leased: HashMap::new(),
            }),
        }
    }

    /// Whether the cached row may stand for the stored one.
    fn usable(&self, entry: &Entry) -> bool {
        !self.shared || entry.confirmed
    }

    /// This process now holds the session's lease, and `stored` is what the session's row
    /// held once the lease was granted (`None`: no such session): the entry is confirmed for
    /// use while the lease is held if it is what this process last wrote, dropped otherwise.
    pub fn lease_taken(&self, tenant: &TenantId, session_id: &str, stored: Option<Stamp>) {
        let mut inner = self.lock();
        let key = (tenant.clone(), session_id.to_string());
        *inner.leased.entry(key).or_default() += 1;
        inner.check(tenant, session_id, stored, true);
    }

    /// The session's lease is going: other replicas may change it from now on.
    pub fn lease_released(&self, tenant: &TenantId, session_id: &str) {
        let mut inner = self.lock();
        let key = (tenant.clone(), session_id.to_string());
        if let Some(count) = inner.leased.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                inner.leased.remove(&key);
            }
        }
        inner
            .entries
            .update(tenant, session_id, false, |e| e.confirmed = false);
    }

    /// Shared databases: after reading the session's row outside a lease (`None`: no such
    /// session), drops the entry unless it is what this process last wrote.
    pub fn confirm(&self, tenant: &TenantId, session_id: &str, stored: Option<&Session>) {
        if !self.shared {
            return;
        }
        let mut inner = self.lock();
        let leased = inner
            .leased
            .contains_key(&(tenant.clone(), session_id.to_string()));
        inner.check(tenant, session_id, stored.map(Stamp::of), leased);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached row, when it may stand for the stored one: always on a database of one
    /// writer; on a shared one only under this process's confirmed lease.
    pub fn session(&self, tenant: &TenantId, session_id: &str) -> Option<Session> {
        let mut inner = self.lock();
        let entry = inner.entries.get(tenant, session_id)?;
        if !self.usable(entry) {
            return None;
        }
        entry.session.clone()
    }

    /// Whether the session's stored row is known to have no pending tool calls (its row is
    /// cached and has none), so a commit need not clear them.
    pub fn known_without_pending(&self, tenant: &TenantId, session_id: &str) -> bool {
        self.lock()
            .entries
            .peek(tenant, session_id)
            .filter(|e| self.usable(e))
            .and_then(|e| e.session.as_ref())
            .is_some_and(|s| s.pending.is_none())
    }

    /// Up to `limit` messages before index `before`, newest first, when the cache has all of
    /// them (or the history's start).
    pub fn history_before(
        &self,
        tenant: &TenantId,
        session_id: &str,
        before: u64,
        limit: usize,
    ) -> CachedHistory {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get(tenant, session_id) else {
            return CachedHistory::Miss(None);
        };
        if !self.usable(entry) {
            return CachedHistory::Miss(None);
        }
        let start = entry.start();
        if before > entry.end {
            // Newer than what this cache saw: the database knows better.
            return CachedHistory::Miss(Some(entry.generation));
        }
        let wanted_from = before.saturating_sub(limit as u64);
        if before < start || (wanted_from < start && start > 0) {
            return CachedHistory::Miss(Some(entry.generation));
        }
        let from = (wanted_from.max(start) - start) as usize;
        let to = (before - start) as usize;
        CachedHistory::Hit(entry.messages.range(from..to).rev().cloned().collect())
    }

    /// After a commit wrote `session` with `messages` (continuing the history at
    /// `first_index`): the entry holds the new row and the messages at its end.
    pub fn committed(
        &self,
        tenant: &TenantId,
        session: &Session,
        first_index: u64,
        messages: &[SharedMessage],
    ) {
        let mut inner = self.lock();
        // On a shared database only a confirmed entry is known to hold this session's history;
        // another one (another replica may have recreated the session meanwhile) starts over.
        let continues = inner
            .entries
            .peek(tenant, &session.id)
            .is_some_and(|e| e.end == first_index && self.usable(e));
        if !continues {
            // A new session, or a history this cache did not follow: start a new run.
            inner.next_generation += 1;
            let generation = inner.next_generation;
            // Written under this process's lease: nobody else can change it until it goes.
            let confirmed = inner
                .leased
                .contains_key(&(tenant.clone(), session.id.clone()));
            inner.entries.insert(
                tenant,
                &session.id,
                Entry {
                    generation,
                    session: None,
                    confirmed,
                    messages: VecDeque::new(),
                    end: first_index,
                    bytes: 0,
                },
            );
        }
        let limit = self.budget / 8;
        inner.entries.update(tenant, &session.id, true, |entry| {
            if let Some(old) = entry.session.take() {
                entry.bytes -= session_bytes(&old);
            }
            entry.bytes += session_bytes(session);
            entry.session = Some(session.clone());
            for message in messages {
                entry.bytes += message_bytes(message);
                entry.messages.push_back(message.clone());
            }
            entry.end = first_index + messages.len() as u64;
            trim_history(entry, limit);
        });
    }

    /// After a database read of the messages before `start` (newest first) for an entry of
    /// `generation`: the ones just before the entry's oldest are added at its start.
    pub fn add_older(
        &self,
        tenant: &TenantId,
        session_id: &str,
        generation: Option<u64>,
        read: &[SharedMessage],
    ) {
        let Some(generation) = generation else {
            return;
        };
        let limit = self.budget / 8;
        let mut inner = self.lock();
        let usable = inner
            .entries
            .peek(tenant, session_id)
            .is_some_and(|e| e.generation == generation && self.usable(e));
        if !usable {
            return;
        }
        inner.entries.update(tenant, session_id, true, |entry| {
            add_before(entry, read, limit);
        });
    }

    /// Drops the session's entry (before and after anything that may remove its rows).
    pub fn forget(&self, tenant: &TenantId, session_id: &str) {
        self.lock().entries.remove(tenant, session_id);
    }

    /// Drops every entry of `tenant`, or every entry when `None`.
    pub fn forget_all(&self, tenant: Option<&TenantId>) {
        self.lock().entries.remove_tenant(tenant);
    }

    /// Bytes held now, as counted.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().entries.bytes()
    }
}

/// Drops an entry's oldest messages until it is within `limit` bytes and [`MAX_MESSAGES`].
fn trim_history(entry: &mut Entry, limit: usize) {
    while entry.bytes > limit || entry.messages.len() > MAX_MESSAGES {
        let Some(oldest) = entry.messages.pop_front() else {
            break;
        };
        entry.bytes -= message_bytes(&oldest);
    }
}

/// Adds the messages of `read` (newest first) that continue the entry's run at its start,
/// while it stays within `limit` bytes and [`MAX_MESSAGES`].
fn add_before(entry: &mut Entry, read: &[SharedMessage], limit: usize) {
    for message in read {
        // Only the message right before the oldest cached one keeps the run contiguous.
        if entry.start() == 0 || message.index != entry.start() - 1 {
            continue;
        }
        if entry.bytes + message_bytes(message) > limit || entry.messages.len() >= MAX_MESSAGES {
            break;
        }
        entry.bytes += message_bytes(message);
        entry.messages.push_front(message.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::domain::session::{Message, Role};

    fn message(index: u64) -> SharedMessage {
        Arc::new(Message {
            index,
            role: Role::User,
            content: format!("m{index}"),
            tool_calls: Vec::new(),
            tool_call_id: String::new(),
            tool_name: String::new(),
            is_error: false,
            create_time: SystemTime::now(),
            token_count: 1,
            turn_id: String::new(),
        })
    }

    fn indexes(history: CachedHistory) -> Option<Vec<u64>> {
        match history {
            CachedHistory::Hit(messages) => Some(messages.iter().map(|m| m.index).collect()),
            CachedHistory::Miss(_) => None,
        }
    }

    fn session(id: &str, count: u64) -> Session {
        let mut session = crate::store::sql::tests::new_session(id);
        session.message_count = count;
        session
    }

    #[test]
    fn history_is_served_only_when_every_message_asked_for_is_cached() {
        let cache = SessionCache::new(1 << 20);
        let tenant = TenantId::default();
        // A session whose first ten messages this process did not see.
        let messages: Vec<_> = (10..14).map(message).collect();
        cache.committed(&tenant, &session("s", 14), 10, &messages);
        assert_eq!(
            indexes(cache.history_before(&tenant, "s", 14, 2)),
            Some(vec![13, 12])
        );
        assert_eq!(
            indexes(cache.history_before(&tenant, "s", 14, 4)),
            Some(vec![13, 12, 11, 10])
        );
        // Reaching before index 10 needs the database.
        let CachedHistory::Miss(generation) = cache.history_before(&tenant, "s", 14, 5) else {
            panic!("a hit without message 9");
        };
        // What the database answered (newest first) extends the run at its start.
        let read: Vec<_> = (5..14).rev().map(message).collect();
        cache.add_older(&tenant, "s", generation, &read);
        assert_eq!(
            indexes(cache.history_before(&tenant, "s", 14, 9)),
            Some((5..14).rev().collect())
        );
        // A history read back to its start is complete: fewer than asked for is all there is.
        let start: Vec<_> = (0..5).rev().map(message).collect();
        cache.add_older(&tenant, "s", generation, &start);
        assert_eq!(
            indexes(cache.history_before(&tenant, "s", 3, 64)),
            Some(vec![2, 1, 0])
        );
        assert!(matches!(
            cache.history_before(&tenant, "other", 3, 64),
            CachedHistory::Miss(None)
        ));
    }

    #[test]
    fn a_read_from_before_the_entry_was_made_anew_is_not_added() {
        let cache = SessionCache::new(1 << 20);
        let tenant = TenantId::default();
        cache.committed(&tenant, &session("s", 12), 10, &[message(10), message(11)]);
        let CachedHistory::Miss(generation) = cache.history_before(&tenant, "s", 12, 5) else {
            panic!("a hit");
        };
        // Meanwhile the session is deleted and created again.
        cache.forget(&tenant, "s");
        cache.committed(&tenant, &session("s", 2), 0, &[message(0), message(1)]);
        cache.add_older(&tenant, "s", generation, &[message(9), message(8)]);
        assert_eq!(
            indexes(cache.history_before(&tenant, "s", 2, 64)),
            Some(vec![1, 0])
        );
    }

    #[test]
    fn the_budget_bounds_every_entry_and_the_whole() {
        let budget = 64 * (MESSAGE_OVERHEAD + 4) + 4 * SESSION_OVERHEAD;
        let cache = SessionCache::new(budget);
        let tenant = TenantId::default();
        for i in 0..50 {
            let id = format!("s{i}");
            let messages: Vec<_> = (0..40).map(message).collect();
            cache.committed(&tenant, &session(&id, 40), 0, &messages);
            assert!(cache.bytes() <= budget, "{} > {budget}", cache.bytes());
        }
        // The newest session is there, its history cut to an eighth of the budget.
        assert!(cache.session(&tenant, "s49").is_some());
        assert!(
            cache.session(&tenant, "s0").is_none(),
            "the oldest was evicted"
        );
        let CachedHistory::Miss(_) = cache.history_before(&tenant, "s49", 40, 40) else {
            panic!("the whole history fits an eighth of the budget");
        };
    }

    #[test]
    fn a_history_keeps_at_most_max_messages() {
        let cache = SessionCache::new(1 << 30);
        let tenant = TenantId::default();
        let total = MAX_MESSAGES as u64 + 10;
        let messages: Vec<_> = (0..total).map(message).collect();
        cache.committed(&tenant, &session("s", total), 0, &messages);
        let newest = cache.history_before(&tenant, "s", total, MAX_MESSAGES);
        assert_eq!(indexes(newest).map(|m| m.len()), Some(MAX_MESSAGES));
        assert!(matches!(
            cache.history_before(&tenant, "s", total, MAX_MESSAGES + 1),
            CachedHistory::Miss(Some(_))
        ));
    }
}
