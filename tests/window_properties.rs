//! Laws of window assembly, checked on generated conversations and budgets: a window never
//! shows a tool result without the assistant message that called it, never exceeds the
//! input budget, always holds the current turn's user message (or refuses the turn exactly
//! when it cannot fit), and is the same window a brute-force search over every cut picks.
//!
//! The histories are built the way sessions grow: user messages, plain replies, and replies
//! that call tools followed by their results, sometimes loaded from the middle of a tool
//! group (the engine reads only the newest part of a long history).

use std::sync::Arc;
use std::time::SystemTime;

use contextd::domain::session::{Message, Role, SharedMessage};
use contextd::fuzzing::{PinnedHead, WindowBudget, select_history};
use proptest::prelude::*;

/// One step of a conversation, oldest first.
#[derive(Debug, Clone)]
enum Unit {
    /// A user message of this many tokens.
    User(u32),
    /// A reply without tool calls.
    Reply(u32),
    /// A reply that called tools, and each result's tokens.
    Call(u32, Vec<u32>),
}

fn tokens() -> impl Strategy<Value = u32> {
    // Zero-token messages included: they must not confuse the unit boundaries.
    prop_oneof![1 => Just(0u32), 9 => 1u32..120]
}

fn unit() -> impl Strategy<Value = Unit> {
    prop_oneof![
        tokens().prop_map(Unit::User),
        tokens().prop_map(Unit::Reply),
        (tokens(), prop::collection::vec(tokens(), 1..4)).prop_map(|(c, r)| Unit::Call(c, r)),
    ]
}

/// A generated case: the history (newest first), the budget, the head and the turn.
#[derive(Debug, Clone)]
struct Case {
    newest_first: Vec<SharedMessage>,
    budget: WindowBudget,
    head: PinnedHead,
    turn_tokens: u32,
}

fn message(index: u64, role: Role, token_count: u32) -> SharedMessage {
    Arc::new(Message {
        index,
        role,
        content: format!("m{index}"),
        tool_calls: Vec::new(),
        tool_call_id: String::new(),
        tool_name: String::new(),
        is_error: false,
        create_time: SystemTime::UNIX_EPOCH,
        token_count,
        turn_id: String::new(),
    })
}

/// Flattens units (oldest first) into stored messages, newest first, after `orphans` tool
/// results whose call lies before the loaded part.
fn history(orphans: &[u32], units: &[Unit]) -> Vec<SharedMessage> {
    let mut roles: Vec<(Role, u32)> = orphans.iter().map(|t| (Role::Tool, *t)).collect();
    for unit in units {
        match unit {
            Unit::User(t) => roles.push((Role::User, *t)),
            Unit::Reply(t) => roles.push((Role::Assistant, *t)),
            Unit::Call(t, results) => {
                roles.push((Role::Assistant, *t));
                roles.extend(results.iter().map(|r| (Role::Tool, *r)));
            }
        }
    }
    let mut messages: Vec<SharedMessage> = roles
        .into_iter()
        .enumerate()
        .map(|(index, (role, t))| message(index as u64, role, t))
        .collect();
    messages.reverse();
    messages
}

fn case(max_units: usize) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(tokens(), 0..3),
        prop::collection::vec(unit(), 0..max_units),
        (
            0u32..3000,
            0u32..800,
            prop_oneof![Just(1.0f64), 0.5f64..3.0],
        ),
        prop::option::of(0u32..2000),
        // A turn always has a message, and every message costs at least its overhead.
        (0u32..150, 0u32..150, 1u32..400),
        // Half the cases put the budget's edge exactly at a cut of the history, or one token
        // either side of it, where an off-by-one would show.
        prop::option::weighted(0.5, (any::<prop::sample::Index>(), -1i64..=1)),
    )
        .prop_map(
            |(orphans, units, (window, reserve, scale), cap, (system, context, turn), edge)| {
                let newest_first = history(&orphans, &units);
                let mut budget = WindowBudget::new(window, reserve).with_scale(scale);
                if let Some(cap) = cap {
                    budget = budget.capped(cap);
                }
                if let Some((cut, delta)) = edge {
                    let cut = cut.index(newest_first.len() + 1);
                    let room: u32 = newest_first[..cut].iter().map(|m| m.token_count).sum();
                    let room = (i64::from(room) + delta).max(0) as u32;
                    budget = WindowBudget::new(system + context + turn + room, 0);
                }
                Case {
                    newest_first,
                    budget,
                    head: PinnedHead {
                        system_prompt: "s".into(),
                        system_tokens: system,
                        context_text: String::new(),
                        context_tokens: context,
                        summary: None,
                    },
                    turn_tokens: turn,
                }
            },
        )
}

/// The tokens left for history once the head and the turn are in, if the turn fits.
fn room_for_history(case: &Case) -> Option<u32> {
    let available = case
        .budget
        .input_tokens()
        .saturating_sub(case.head.tokens());
    available.checked_sub(case.turn_tokens)
}

/// The brute-force window: of every cut `k` (the newest `k` messages), the largest one that
/// does not start at a tool result and fits in `room`.
fn reference_taken(newest_first: &[SharedMessage], room: u32) -> usize {
    (0..=newest_first.len())
        .filter(|&k| k == 0 || newest_first[k - 1].role != Role::Tool)
        .filter(|&k| newest_first[..k].iter().map(|m| m.token_count).sum::<u32>() <= room)
        .max()
        .unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_splits_a_tool_call_from_its_result(case in case(24)) {
        if let Ok(selection) = select_history(case.budget, &case.head, case.turn_tokens, &case.newest_first) {
            let window = &case.newest_first[..selection.taken];
            // Every tool result shown has, older than it and still in the window, the
            // assistant message of its group.
            for (at, shown) in window.iter().enumerate() {
                if shown.role == Role::Tool {
                    let caller = window[at..].iter().find(|m| m.role != Role::Tool);
                    prop_assert!(
                        caller.is_some_and(|m| m.role == Role::Assistant),
                        "tool result {} is shown without its call", shown.index
                    );
                }
            }
        }
    }

    #[test]
    fn never_exceeds_the_budget(case in case(24)) {
        if let Ok(selection) = select_history(case.budget, &case.head, case.turn_tokens, &case.newest_first) {
            let shown: u32 = case.newest_first[..selection.taken].iter().map(|m| m.token_count).sum();
            prop_assert_eq!(selection.tokens, shown);
            prop_assert_eq!(selection.total_tokens, case.head.tokens() + shown + case.turn_tokens);
            prop_assert!(shown + case.turn_tokens + case.head.tokens() <= case.budget.input_tokens());
        }
    }

    #[test]
    fn always_keeps_the_newest_user_message(case in case(24)) {
        // The newest user message is the current turn's: it is in every window, and a turn
        // is refused exactly when it cannot be.
        match select_history(case.budget, &case.head, case.turn_tokens, &case.newest_first) {
            Ok(selection) => {
                prop_assert!(room_for_history(&case).is_some());
                prop_assert!(selection.total_tokens >= case.turn_tokens + case.head.tokens());
            }
            Err(refused) => {
                prop_assert!(room_for_history(&case).is_none(), "a turn that fits was refused");
                prop_assert_eq!(refused.needed, case.turn_tokens);
                prop_assert!(refused.needed > refused.available);
            }
        }
    }

    #[test]
    fn equals_a_brute_force_reference_on_small_histories(case in case(7)) {
        let chosen = select_history(case.budget, &case.head, case.turn_tokens, &case.newest_first);
        match room_for_history(&case) {
            None => prop_assert!(chosen.is_err()),
            Some(room) => {
                let selection = chosen.expect("the turn fits");
                prop_assert_eq!(selection.taken, reference_taken(&case.newest_first, room));
            }
        }
    }
}
