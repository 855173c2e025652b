//! Windows kept across turns: the history a session's last turn chose its window from, held
//! in memory for the session's next turn, so that a turn reads, counts and hands over only
//! what changed since — not the few hundred messages of a full window every time.
//!
//! What is kept is only ever what the store holds: an entry is written after the store
//! committed the turn that produced it, and stands for the session exactly as that commit
//! stored it (its creation time, version and length, the [`Stamp`]). A turn takes the entry
//! out (so a failed or cancelled turn leaves none behind) and uses it only if the session it
//! read from the store still carries the same stamp: any other write — an `UpdateSession`,
//! another replica's turn, a session deleted and created again — changes the stamp, and the
//! turn reads its history from the store as before. The kept history is a newest-first run
//! of whole units (an assistant message with its tool results) that holds more tokens than
//! the session's input budget, or reaches the oldest message a window may show, so the
//! window chosen from it is the one the store's history gives (a property test in
//! `engine::window_tests` compares the two).
//!
//! Bounded by bytes (`engine.window_cache_bytes`; `0` keeps none): the sessions used least
//! recently go first. Counted as what an entry may keep alive (its messages' text and a fixed
//! overhead each), although the messages are usually shared with the store's own cache.

use std::sync::Mutex;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use super::window::Totals;
use crate::domain::TenantId;
use crate::domain::session::{Role, Session, SharedMessage};
use crate::store::lru::{SessionLru, Weighed};

/// Bytes counted for a kept message besides its text.
const MESSAGE_OVERHEAD: usize = 64;
/// Bytes counted for an entry besides its messages.
const ENTRY_OVERHEAD: usize = 256;

/// What identifies a stored state of a session: a turn may use a kept window only if the
/// session it read has the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// Creation time in microseconds (what every store keeps), so a session deleted and
    /// created again under the same id is a different one.
    created_micros: u128,
    version: u64,
    message_count: u64,
}

impl Stamp {
    fn of(session: &Session) -> Self {
        Self {
            created_micros: session
                .create_time
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros()),
            version: session.version,
            message_count: session.message_count,
        }
    }
}

/// One session's kept history.
struct Entry {
    stamp: Stamp,
    /// The index after the newest kept message: the `before` of the history it stands for
    /// (the session's length, or where a paused turn's stored messages begin).
    end: u64,
    /// Newest first.
    history: Vec<SharedMessage>,
    /// What they hold.
    totals: Totals,
    /// Whether the oldest kept message is the oldest a window may show (the first message,
    /// or the first after the summary).
    reaches_start: bool,
}

impl Weighed for Entry {
    /// What the entry may keep alive: its messages' text and a fixed overhead each.
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD + self.history.len() * MESSAGE_OVERHEAD + self.totals.text_bytes
    }
}

/// The kept windows of this process.
pub(super) struct KeptWindows {
    budget: usize,
    entries: Mutex<SessionLru<Entry>>,
    /// Turns that used a kept window (for tests that show it is used).
    #[cfg(test)]
    hits: AtomicU64,
}

/// The oldest index a window of `session` may show: the first message, or the first after
/// the messages its summary stands for.
pub(super) fn first_showable(session: &Session) -> u64 {
    session.window.active_summary().map_or(0, |s| s.end_index)
}

impl KeptWindows {
    /// Keeps at most `budget` bytes of windows (`0`: none).
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            entries: Mutex::new(SessionLru::new(budget)),
            #[cfg(test)]
            hits: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, SessionLru<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes out the history kept for `session` (as read from the store) before index
    /// `before`, if there is one it can stand for: the same stamp, the same end, and enough
    /// of it for `input_tokens`. Any entry of the session is gone afterwards.
    pub(super) fn take(
        &self,
        tenant: &TenantId,
        session: &Session,
        before: u64,
        input_tokens: u32,
    ) -> Option<(Vec<SharedMessage>, Totals)> {
        if self.budget == 0 {
            return None;
        }
        let entry = self.entries().remove(tenant, &session.id)?;
        let usable = entry.stamp == Stamp::of(session)
            && entry.end == before
            && (entry.reaches_start || entry.totals.tokens > u64::from(input_tokens));
        if !usable {
            return None;
        }
        #[cfg(test)]
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some((entry.history, entry.totals))
    }

    /// Keeps `history` (newest first, before index `end`, with its totals) for the next turn
    /// of `session`, as just stored: trimmed to the newest whole units holding more than
    /// `input_tokens`, and to what the session's summary leaves shown. Costs what is trimmed,
    /// not what is kept: the history is walked from its oldest end.
    pub(super) fn keep(
        &self,
        tenant: &TenantId,
        session: &Session,
        end: u64,
        (mut history, mut totals): (Vec<SharedMessage>, Totals),
        input_tokens: u32,
    ) {
        if self.budget == 0 {
            return;
        }
        debug_assert_eq!(totals, Totals::of(&history));
        // Indexes fall towards the end, so the shown ones are a prefix.
        let start = first_showable(session);
        let shown = history.partition_point(|m| m.index >= start);
        totals = history[shown..].iter().fold(totals, |t, m| t.minus(m));
        history.truncate(shown);
        let (kept, totals) = covering_prefix(&history, totals, input_tokens);
        history.truncate(kept);
        let reaches_start = history.last().map_or(end <= start, |m| m.index <= start);
        let entry = Entry {
            stamp: Stamp::of(session),
            end,
            history,
            totals,
            reaches_start,
        };
        // One session may not push out everyone else.
        if entry.bytes() > self.budget / 8 {
            return;
        }
        let gone = self.entries().insert(tenant, &session.id, entry);
        // Their messages are released outside the lock.
        drop(gone);
    }

    /// Drops what is kept for a session (deleted, or changed outside a turn).
    pub(super) fn forget(&self, tenant: &TenantId, session_id: &str) {
        let old = self.entries().remove(tenant, session_id);
        drop(old);
    }

    /// Drops what is kept for every session of `tenant`.
    pub(super) fn forget_tenant(&self, tenant: &TenantId) {
        let gone = self.entries().remove_tenant(Some(tenant));
        drop(gone);
    }

    /// Turns that used a kept window.
    #[cfg(test)]
    pub(super) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Bytes counted for what is kept now.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.entries().bytes()
    }
}

/// How many of the newest-first messages (holding `totals`) make the shortest run of whole
/// units that holds more than `tokens` (all of them if none does), and what that run holds.
/// A unit ends at a message that is not a tool result: the results come first when walking
/// back, then the assistant message that called them. Walks back from the oldest message
/// while what is before it still holds more than `tokens`.
fn covering_prefix(newest_first: &[SharedMessage], totals: Totals, tokens: u32) -> (usize, Totals) {
    let mut shortest = (newest_first.len(), totals);
    let mut prefix = totals;
    let mut i = newest_first.len();
    while i > 0 && prefix.tokens > u64::from(tokens) {
        let message = &newest_first[i - 1];
        if message.role != Role::Tool {
            shortest = (i, prefix);
        }
        prefix = prefix.minus(message);
        i -= 1;
    }
    shortest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::session::Message;
    use std::time::SystemTime;

    fn msg(index: u64, role: Role, tokens: u32) -> SharedMessage {
        SharedMessage::new(Message {
            index,
            role,
            content: "x".repeat(10),
            tool_calls: vec![],
            tool_call_id: String::new(),
            tool_name: String::new(),
            is_error: false,
            create_time: SystemTime::now(),
            token_count: tokens,
            turn_id: String::new(),
        })
    }

    fn session(version: u64, message_count: u64) -> Session {
        let mut session = crate::store::sql::tests::new_session("s");
        session.create_time = UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        session.version = version;
        session.message_count = message_count;
        session
    }

    fn history(count: u64) -> (Vec<SharedMessage>, Totals) {
        let history: Vec<_> = (0..count).rev().map(|i| msg(i, Role::User, 10)).collect();
        let totals = Totals::of(&history);
        (history, totals)
    }

    /// What `covering_prefix` gives, by walking forwards over every message.
    fn covering_reference(newest_first: &[SharedMessage], tokens: u32) -> (usize, u64) {
        let mut sum = 0u64;
        for (i, message) in newest_first.iter().enumerate() {
            sum += u64::from(message.token_count);
            if sum > u64::from(tokens) && message.role != Role::Tool {
                return (i + 1, sum);
            }
        }
        (newest_first.len(), sum)
    }

    fn covering(newest_first: &[SharedMessage], tokens: u32) -> (usize, u64) {
        let (count, totals) = covering_prefix(newest_first, Totals::of(newest_first), tokens);
        assert_eq!(totals, Totals::of(&newest_first[..count]));
        (count, totals.tokens)
    }

    #[test]
    fn keeps_whole_units_just_past_the_budget() {
        // Newest first: user, tool, tool, assistant (the call), user.
        let h = vec![
            msg(4, Role::User, 10),
            msg(3, Role::Tool, 10),
            msg(2, Role::Tool, 10),
            msg(1, Role::Assistant, 10),
            msg(0, Role::User, 10),
        ];
        assert_eq!(covering(&h, 5), (1, 10));
        // Past 15 tokens inside the tool results: the unit ends at its call.
        assert_eq!(covering(&h, 15), (4, 40));
        assert_eq!(covering(&h, 100), (5, 50));
    }

    #[test]
    fn walking_back_from_the_oldest_finds_what_walking_forwards_does() {
        for h in crate::engine::window::tests::every_small_history(msg) {
            // Every budget that matters (the longest history holds at most 10 tokens).
            for tokens in 0..=11 {
                assert_eq!(covering(&h, tokens), covering_reference(&h, tokens));
            }
        }
    }

    #[test]
    fn a_window_is_used_only_for_the_state_it_was_kept_for() {
        let tenant = TenantId::default();
        let kept = KeptWindows::new(1 << 20);
        let s = session(3, 40);
        kept.keep(&tenant, &s, 40, history(40), 100);
        // Another version, another end, a larger budget, another tenant: not used, and gone.
        assert!(kept.take(&tenant, &session(4, 40), 40, 100).is_none());
        kept.keep(&tenant, &s, 40, history(40), 100);
        assert!(kept.take(&tenant, &s, 39, 100).is_none());
        kept.keep(&tenant, &s, 40, history(40), 100);
        assert!(kept.take(&tenant, &s, 40, 200).is_none());
        kept.keep(&tenant, &s, 40, history(40), 100);
        assert!(kept.take(&TenantId::new("other"), &s, 40, 100).is_none());
        let (mine, totals) = kept.take(&tenant, &s, 40, 100).expect("kept");
        assert_eq!(totals, Totals::of(&mine));
        // 11 messages of 10 tokens: the fewest that hold more than 100.
        assert_eq!(mine.len(), 11);
        assert_eq!(mine[0].index, 39);
        assert!(kept.take(&tenant, &s, 40, 100).is_none(), "taken out");
        assert_eq!(kept.bytes(), 0);
        assert_eq!(kept.hits(), 1);
    }

    #[test]
    fn a_short_history_is_kept_whole_and_serves_any_budget() {
        let tenant = TenantId::default();
        let kept = KeptWindows::new(1 << 20);
        let s = session(1, 5);
        kept.keep(&tenant, &s, 5, history(5), 100);
        assert_eq!(
            kept.take(&tenant, &s, 5, 10_000).map(|(h, _)| h.len()),
            Some(5)
        );
    }

    #[test]
    fn stays_within_its_budget_least_recently_used_first() {
        let tenant = TenantId::default();
        // Each entry: 256 + 11 × 74 = 1,070 bytes; room for eight (and one is at most an
        // eighth of the budget).
        let kept = KeptWindows::new(8_600);
        let named = |id: &str| {
            let mut s = session(1, 40);
            s.id = id.into();
            s
        };
        for id in ["a", "b", "c", "d", "e", "f", "g", "h", "i"] {
            kept.keep(&tenant, &named(id), 40, history(40), 100);
        }
        assert_eq!(kept.bytes(), 8 * 1_070);
        assert!(
            kept.take(&tenant, &named("a"), 40, 100).is_none(),
            "a went first"
        );
        assert!(kept.take(&tenant, &named("i"), 40, 100).is_some());
        // A window larger than an eighth of the budget is not kept.
        kept.keep(&tenant, &named("big"), 400, history(400), 10_000);
        assert!(kept.take(&tenant, &named("big"), 400, 100).is_none());
        kept.forget_tenant(&tenant);
        assert_eq!(kept.bytes(), 0);
    }
}
