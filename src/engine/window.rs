//! Context-window assembly: what the model sees within the session's token budget.
//!
//! Order: the system prompt and the rendered context (pinned), then the newest history that
//! fits, then the current turn (its user message, and the tool calls and results so far),
//! which must fit or the turn fails. History is taken as a contiguous newest suffix, and an
//! assistant message that called tools is taken together with its results or not at all.
//! Everything stays in storage; only the model's view is windowed.

use super::Engine;
use super::error::EngineError;
use crate::domain::TenantId;
use crate::domain::session::{
    Context, ContextSummary, Role, Session, SharedMessage, WindowStrategy,
};
use crate::domain::tokens::{MESSAGE_OVERHEAD_TOKENS, TokenCounter};

/// The session's budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowBudget {
    /// Window size in tokens.
    pub max_context_tokens: u32,
    /// Tokens kept for the reply.
    pub reserved_output_tokens: u32,
    /// Provider tokens per counted token (1.0 when the counter is the model's tokenizer).
    pub token_scale: f64,
    /// A lower limit on the input, in counted tokens, after the provider said the window
    /// was too long.
    pub input_cap: u32,
}

impl WindowBudget {
    /// The budget for a window of `max_context_tokens`: the configured output reservation,
    /// but never more than a quarter of the window (small windows stay usable).
    pub fn new(max_context_tokens: u32, configured_reserve: u32) -> Self {
        Self {
            max_context_tokens,
            reserved_output_tokens: configured_reserve.min(max_context_tokens / 4),
            token_scale: 1.0,
            input_cap: u32::MAX,
        }
    }

    /// The same budget for a model whose provider counts `scale` tokens per counted token.
    pub fn with_scale(mut self, scale: f64) -> Self {
        if scale.is_finite() && scale > 0.0 {
            self.token_scale = scale;
        }
        self
    }

    /// The same budget with the input limited to `cap` counted tokens.
    pub fn capped(mut self, cap: u32) -> Self {
        self.input_cap = cap;
        self
    }

    /// Tokens the input may use, in counted tokens.
    pub fn input_tokens(&self) -> u32 {
        let provider_tokens = f64::from(self.max_context_tokens - self.reserved_output_tokens);
        ((provider_tokens / self.token_scale).floor() as u32).min(self.input_cap)
    }
}

/// The pinned head of every window.
#[derive(Debug, Clone, PartialEq)]
pub struct PinnedHead {
    /// The system prompt text.
    pub system_prompt: String,
    /// Its tokens (0 when empty).
    pub system_tokens: u32,
    /// The context rendered for the model ("" when the context is empty).
    pub context_text: String,
    /// Its tokens (0 when empty).
    pub context_tokens: u32,
    /// The running summary shown after the context, if any.
    pub summary: Option<ContextSummary>,
}

impl PinnedHead {
    /// Renders and counts the system prompt and context.
    pub fn new(counter: &TokenCounter, system_prompt: &str, context: &Context) -> Self {
        let context_text = render_context(context);
        let cost = |text: &str| {
            if text.is_empty() {
                0
            } else {
                MESSAGE_OVERHEAD_TOKENS + counter.count_recurring_text(text)
            }
        };
        Self {
            system_prompt: system_prompt.to_string(),
            system_tokens: cost(system_prompt),
            context_tokens: cost(&context_text),
            context_text,
            summary: None,
        }
    }

    /// The head with `summary` pinned after the context.
    pub fn with_summary(mut self, summary: Option<&ContextSummary>) -> Self {
        self.summary = summary.cloned();
        self
    }

    /// Tokens of the whole head.
    pub fn tokens(&self) -> u32 {
        self.system_tokens
            + self.context_tokens
            + self.summary.as_ref().map_or(0, |s| s.token_count)
    }
}

/// The context as the model reads it; empty when there is none.
pub fn render_context(context: &Context) -> String {
    if context.is_empty() {
        return String::new();
    }
    let json = serde_json::to_string(context).unwrap_or_default();
    format!("Session context (JSON):\n{json}")
}

/// The current turn does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnTooLarge {
    /// Tokens the turn needs.
    pub needed: u32,
    /// Tokens left after the pinned head.
    pub available: u32,
}

/// Which history made it into the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySelection {
    /// How many of the newest-first history messages are in the window.
    pub taken: usize,
    /// Their tokens.
    pub tokens: u32,
    /// Tokens of the whole window (head + history + turn).
    pub total_tokens: u32,
}

/// Chooses the history for a window.
///
/// `newest_first`: stored history before the current turn, newest first (it may be only the
/// newest part of the history: the caller loads until the budget is surely exceeded).
/// `turn_tokens`: tokens of the current turn's messages, which are always included.
pub fn select_history(
    budget: WindowBudget,
    head: &PinnedHead,
    turn_tokens: u32,
    newest_first: &[SharedMessage],
) -> Result<HistorySelection, TurnTooLarge> {
    select_history_of(budget, head, turn_tokens, newest_first, None)
}

/// [`select_history`], walking from the oldest message when `history_tokens` (the tokens of
/// all of `newest_first`) is known (see [`take_units_from_oldest`]).
fn select_history_of(
    budget: WindowBudget,
    head: &PinnedHead,
    turn_tokens: u32,
    newest_first: &[SharedMessage],
    history_tokens: Option<u64>,
) -> Result<HistorySelection, TurnTooLarge> {
    let available = budget.input_tokens().saturating_sub(head.tokens());
    if turn_tokens > available {
        return Err(TurnTooLarge {
            needed: turn_tokens,
            available,
        });
    }
    let left = available - turn_tokens;
    let (taken, used) = match history_tokens {
        Some(total) => take_units_from_oldest(newest_first, total, left),
        None => take_units(newest_first, left),
    };
    Ok(HistorySelection {
        taken,
        tokens: used,
        total_tokens: head.tokens() + used + turn_tokens,
    })
}

/// How many of the newest-first messages fit in `left` tokens, taken in whole units, and
/// their tokens.
pub fn take_units(newest_first: &[SharedMessage], mut left: u32) -> (usize, u32) {
    let mut taken = 0;
    let mut used = 0u32;
    while taken < newest_first.len() {
        // A unit is one message, or tool results together with the assistant message that
        // called them (which comes after them when walking back).
        let mut end = taken;
        while end < newest_first.len() && newest_first[end].role == Role::Tool {
            end += 1;
        }
        if end == newest_first.len() {
            // Results whose call is older than anything loaded: cannot be shown alone.
            break;
        }
        let unit = &newest_first[taken..=end];
        let cost: u32 = unit.iter().map(|m| m.token_count).sum();
        if cost > left {
            break;
        }
        left -= cost;
        used += cost;
        taken = end + 1;
    }
    (taken, used)
}

/// [`take_units`] for a history whose tokens are known to be `total`: the same result, found
/// by walking back from the oldest message over what does not fit, so that choosing a window
/// from a history just longer than it (as a kept one is) costs what its oldest few messages
/// do, not a walk over the few hundred it shows.
pub fn take_units_from_oldest(
    newest_first: &[SharedMessage],
    total: u64,
    left: u32,
) -> (usize, u32) {
    // What `take_units` takes is the longest run of whole units whose tokens fit: the largest
    // count `i` that ends a unit (`i` is 0, or message `i - 1` is not a tool result) with at
    // most `left` tokens before it. Tokens before `i` only shrink as `i` goes down.
    let mut i = newest_first.len();
    let mut prefix = total;
    while i > 0 && (prefix > u64::from(left) || newest_first[i - 1].role == Role::Tool) {
        i -= 1;
        prefix = prefix.saturating_sub(u64::from(newest_first[i].token_count));
    }
    // `prefix <= left` here (it is 0 when `i` is 0), so it fits a u32.
    let used = u32::try_from(prefix).unwrap_or(left);
    debug_assert_eq!((i, used), take_units(newest_first, left), "total {total}");
    (i, used)
}

/// A window chosen for a session: its pinned head and the history that fits.
pub(super) struct Assembly {
    /// The system prompt, context and summary, rendered and counted.
    pub(super) head: PinnedHead,
    /// Which history is shown, and the window's tokens.
    pub(super) selection: HistorySelection,
}

/// The one window assembly of turns and previews: pins the session's head, fits the newest
/// history around the current turn's `turn_tokens` within `budget`, and refuses a window
/// that does not fit (or, with the `disabled` strategy, leaves out any of the `before`
/// stored messages), with a message that says by how much. `history_tokens`, when known, is
/// the tokens of all of `newest_first` (it then costs what does not fit, not what does).
pub(super) fn assemble_window(
    session: &Session,
    counter: &TokenCounter,
    budget: WindowBudget,
    turn_tokens: u32,
    newest_first: &[SharedMessage],
    history_tokens: Option<u64>,
    before: u64,
) -> Result<Assembly, EngineError> {
    let head = PinnedHead::new(counter, &session.system_prompt, &session.context)
        .with_summary(session.window.active_summary());
    let selection = select_history_of(budget, &head, turn_tokens, newest_first, history_tokens)
        .map_err(|e| too_large(e, budget, &head))?;
    check_nothing_dropped(session, before, selection.taken)?;
    Ok(Assembly { head, selection })
}

/// Messages read from the store per page while assembling a window.
pub(super) const HISTORY_PAGE: usize = 64;

/// What a window is chosen from, read once per turn (or preview).
pub(super) struct WindowSource {
    /// The session's budget.
    pub(super) budget: WindowBudget,
    /// The paused turn's stored messages, oldest first (always in the window).
    pub(super) stored_tail: Vec<SharedMessage>,
    /// History before them, newest first.
    pub(super) history: Vec<SharedMessage>,
    /// What `history` holds.
    pub(super) totals: Totals,
}

/// What a history holds, counted once and then carried with it, so that choosing a window
/// from it and keeping it for the next turn cost what changed, not a walk over every message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    /// The messages' tokens.
    pub(super) tokens: u64,
    /// Their text, in bytes.
    pub(super) text_bytes: usize,
}

impl Totals {
    /// Counts `messages`.
    pub(super) fn of(messages: &[SharedMessage]) -> Self {
        messages.iter().fold(Self::default(), |t, m| t.plus(m))
    }

    /// With `message` added.
    pub(super) fn plus(self, message: &SharedMessage) -> Self {
        Self {
            tokens: self.tokens + u64::from(message.token_count),
            text_bytes: self.text_bytes + message.content.len(),
        }
    }

    /// With `message` (one of those counted) taken away.
    pub(super) fn minus(self, message: &SharedMessage) -> Self {
        Self {
            tokens: self.tokens - u64::from(message.token_count),
            text_bytes: self.text_bytes - message.content.len(),
        }
    }
}

impl Engine {
    /// Provider tokens per counted token for `session`: measured, or the model's first guess.
    pub(super) fn token_scale(&self, session: &Session) -> f64 {
        if session.window.token_scale > 0.0 {
            return session.window.token_scale;
        }
        self.models
            .resolve(&session.model)
            .map(|(_, info)| info.initial_token_scale)
            .filter(|scale| *scale > 0.0)
            .unwrap_or(1.0)
    }

    /// Reads what a window for `session` is chosen from: the paused turn's stored messages
    /// (when `pending_turn` names one) and enough history before them to fill the budget.
    /// With `kept`, a turn's: the history kept from the session's last turn when it still
    /// stands for the stored session (see `engine::kept`), otherwise the store's.
    pub(super) async fn load_window(
        &self,
        tenant: &TenantId,
        session: &Session,
        pending_turn: Option<&str>,
        kept: bool,
    ) -> Result<WindowSource, EngineError> {
        let budget = WindowBudget::new(
            session.max_context_tokens,
            self.config.reserved_output_tokens,
        )
        .with_scale(self.token_scale(session));
        let stored_tail = match pending_turn {
            Some(turn_id) => self.load_turn_tail(tenant, session, turn_id).await?,
            None => Vec::new(),
        };
        let before = session.message_count - stored_tail.len() as u64;
        if kept
            && keeps_windows(session)
            && let Some((history, totals)) =
                self.kept
                    .take(tenant, session, before, budget.input_tokens())
        {
            return Ok(WindowSource {
                budget,
                stored_tail,
                history,
                totals,
            });
        }
        let mut history = self
            .load_history(tenant, &session.id, before, budget.input_tokens())
            .await?;
        // Messages the summary stands for are not shown again.
        let start = super::kept::first_showable(session);
        let shown = history.iter().take_while(|m| m.index >= start).count();
        history.truncate(shown);
        Ok(WindowSource {
            budget,
            stored_tail,
            totals: Totals::of(&history),
            history,
        })
    }

    /// The stored messages of a paused turn (the newest ones with its turn id), oldest first.
    pub(super) async fn load_turn_tail(
        &self,
        tenant: &TenantId,
        session: &Session,
        turn_id: &str,
    ) -> Result<Vec<SharedMessage>, EngineError> {
        let mut tail = Vec::new();
        let mut before = session.message_count;
        'pages: while before > 0 {
            let page = self
                .store
                .list_messages_before(tenant, &session.id, before, HISTORY_PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            for message in page {
                if message.turn_id != turn_id {
                    break 'pages;
                }
                before = message.index;
                tail.push(message);
            }
        }
        tail.reverse();
        Ok(tail)
    }

    /// Stored history before index `before`, newest first: enough to fill `budget` tokens
    /// (and to finish a tool-result group at the edge), never the whole history.
    pub(super) async fn load_history(
        &self,
        tenant: &TenantId,
        session_id: &str,
        before: u64,
        budget: u32,
    ) -> Result<Vec<SharedMessage>, EngineError> {
        let mut history: Vec<SharedMessage> = Vec::new();
        let mut tokens: u64 = 0;
        let mut cursor = before;
        while cursor > 0 {
            let complete_group = history.last().is_none_or(|m| m.role != Role::Tool);
            if tokens > u64::from(budget) && complete_group {
                break;
            }
            let page = self
                .store
                .list_messages_before(tenant, session_id, cursor, HISTORY_PAGE)
                .await?;
            let Some(oldest) = page.last() else { break };
            cursor = oldest.index;
            tokens += page.iter().map(|m| u64::from(m.token_count)).sum::<u64>();
            history.extend(page);
        }
        Ok(history)
    }
}

/// Whether turns of `session` keep their window for the next one. Not with the `summarize`
/// strategy, whose fold is chosen from all the history a turn read.
pub(super) fn keeps_windows(session: &Session) -> bool {
    session.window.strategy != WindowStrategy::Summarize
}

/// With the `disabled` strategy, refuses a window that leaves out any of the `before` stored
/// messages.
pub(super) fn check_nothing_dropped(
    session: &Session,
    before: u64,
    taken: usize,
) -> Result<(), EngineError> {
    let omitted = before - taken as u64;
    if session.window.strategy == WindowStrategy::Disabled && omitted > 0 {
        return Err(EngineError::InvalidArgument(format!(
            "session '{}' uses the window strategy disabled, and {omitted} of its {before} stored messages no longer fit its window of {} tokens; raise max_context_tokens, switch to sliding_window or summarize, or start a new session",
            session.id, session.max_context_tokens
        )));
    }
    Ok(())
}

pub(super) fn too_large(
    error: TurnTooLarge,
    budget: WindowBudget,
    head: &PinnedHead,
) -> EngineError {
    EngineError::MessageTooLarge {
        needed: error.needed,
        available: error.available,
        over: error.needed - error.available,
        max_context_tokens: budget.max_context_tokens,
        reserved_output_tokens: budget.reserved_output_tokens,
        pinned: head.tokens(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::domain::session::{Message, ToolCall};
    use std::time::SystemTime;

    fn msg(index: u64, role: Role, tokens: u32) -> SharedMessage {
        SharedMessage::new(Message {
            index,
            role,
            content: format!("m{index}"),
            tool_calls: if role == Role::Assistant && tokens == 99 {
                vec![ToolCall {
                    id: "c".into(),
                    name: "t".into(),
                    arguments: Context::new(),
                }]
            } else {
                vec![]
            },
            tool_call_id: String::new(),
            tool_name: String::new(),
            is_error: false,
            create_time: SystemTime::now(),
            token_count: tokens,
            turn_id: String::new(),
        })
    }

    /// Every history of up to 5 messages, newest first, of users', assistants' and tool
    /// results with 0 to 2 tokens each (59,049 of the longest): for comparing two walks that
    /// must agree.
    pub(in crate::engine) fn every_small_history(
        msg: impl Fn(u64, Role, u32) -> SharedMessage,
    ) -> impl Iterator<Item = Vec<SharedMessage>> {
        let roles = [Role::User, Role::Tool, Role::Assistant];
        (0..=5u32)
            .flat_map(move |len| (0..9u32.pow(len)).map(move |shape| (len, shape)))
            .map(move |(len, shape)| {
                let mut code = shape;
                (0..u64::from(len))
                    .rev()
                    .map(|index| {
                        let (role, tokens) = (roles[(code % 3) as usize], (code / 3) % 3);
                        code /= 9;
                        msg(index, role, tokens)
                    })
                    .collect()
            })
    }

    #[test]
    fn walking_back_from_the_oldest_takes_what_walking_forwards_does() {
        for h in every_small_history(msg) {
            let total = h.iter().map(|m| u64::from(m.token_count)).sum();
            // Every budget that matters (the longest history holds at most 10 tokens).
            for left in 0..=11 {
                assert_eq!(
                    take_units_from_oldest(&h, total, left),
                    take_units(&h, left),
                    "{:?}, {left} tokens",
                    h.iter()
                        .map(|m| (m.role, m.token_count))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    fn head() -> PinnedHead {
        PinnedHead {
            system_prompt: "s".into(),
            system_tokens: 10,
            context_text: "c".into(),
            context_tokens: 10,
            summary: None,
        }
    }

    #[test]
    fn budget_reserves_at_most_a_quarter() {
        assert_eq!(WindowBudget::new(8192, 1024).reserved_output_tokens, 1024);
        assert_eq!(WindowBudget::new(400, 1024).reserved_output_tokens, 100);
        assert_eq!(WindowBudget::new(400, 1024).input_tokens(), 300);
        assert_eq!(
            WindowBudget::new(400, 0).with_scale(2.0).input_tokens(),
            200
        );
        assert_eq!(WindowBudget::new(400, 0).capped(150).input_tokens(), 150);
    }

    #[test]
    fn takes_newest_history_that_fits() {
        let budget = WindowBudget::new(200, 0); // 200 input tokens
        // newest first: 30 tokens each; head 20 + turn 20 leaves 160 → 5 messages.
        let history: Vec<_> = (0..10).rev().map(|i| msg(i, Role::User, 30)).collect();
        let sel = select_history(budget, &head(), 20, &history).unwrap();
        assert_eq!(sel.taken, 5);
        assert_eq!(sel.tokens, 150);
        assert_eq!(sel.total_tokens, 190);
    }

    #[test]
    fn never_splits_a_tool_call_from_its_result() {
        let budget = WindowBudget::new(100, 0);
        // Oldest → newest: user(10), assistant+call(99→ cost 30 below), tool(30), assistant(10)
        let mut call = msg(1, Role::Assistant, 99);
        SharedMessage::make_mut(&mut call).token_count = 30;
        let history = vec![
            msg(3, Role::Assistant, 10),
            msg(2, Role::Tool, 30),
            call,
            msg(0, Role::User, 10),
        ];
        // head 20 + turn 20 → 60 left: assistant(10) fits, tool+call (60) does not → stop.
        let sel = select_history(budget, &head(), 20, &history).unwrap();
        assert_eq!(sel.taken, 1);
        // With 10 more tokens the whole unit fits, and the user message after it does not.
        let budget = WindowBudget::new(110, 0);
        let sel = select_history(budget, &head(), 20, &history).unwrap();
        assert_eq!(sel.taken, 3);
    }

    #[test]
    fn orphan_results_at_the_edge_are_left_out() {
        let budget = WindowBudget::new(1000, 0);
        let history = vec![msg(5, Role::User, 5), msg(4, Role::Tool, 5)];
        let sel = select_history(budget, &head(), 5, &history).unwrap();
        assert_eq!(sel.taken, 1);
    }

    #[test]
    fn turn_that_does_not_fit_says_by_how_much() {
        let budget = WindowBudget::new(100, 20); // 80 input
        let err = select_history(budget, &head(), 70, &[]).unwrap_err();
        assert_eq!(
            err,
            TurnTooLarge {
                needed: 70,
                available: 60
            }
        );
    }
}
