//! Window assembly (`select_history`) on arbitrary histories and budgets.
//!
//! Input: a budget (window size, output reservation, token scale, input cap), the pinned
//! head's tokens, the current turn's tokens, then messages newest first (a role byte and a
//! token count each). Checked: no panic or overflow; a window never exceeds the input budget;
//! its token sums add up; it is a newest suffix that starts at a unit boundary (never a tool
//! result without the call before it); it stops only where the next unit does not fit; and a
//! refusal happens exactly when the turn alone does not fit. Walking back from the oldest
//! message with the history's total (`take_units_from_oldest`, what turns do) takes the same.
#![no_main]

use std::sync::Arc;
use std::time::SystemTime;

use contextd::domain::session::{Message, Role, SharedMessage};
use contextd::fuzzing::{PinnedHead, WindowBudget, select_history, take_units_from_oldest};
use libfuzzer_sys::fuzz_target;

fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([
        data.get(at).copied().unwrap_or(0),
        data.get(at + 1).copied().unwrap_or(0),
    ])
}

fn message(index: u64, role: Role, token_count: u32) -> SharedMessage {
    Arc::new(Message {
        index,
        role,
        content: String::new(),
        tool_calls: Vec::new(),
        tool_call_id: String::new(),
        tool_name: String::new(),
        is_error: false,
        create_time: SystemTime::UNIX_EPOCH,
        token_count,
        turn_id: String::new(),
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 11 {
        return;
    }
    let mut budget = WindowBudget::new(u32::from(u16_at(data, 0)), u32::from(u16_at(data, 2)));
    if data[4] != 0 {
        budget = budget.with_scale(0.5 + f64::from(data[4]) / 64.0);
    }
    let cap = u16_at(data, 5);
    if cap != u16::MAX {
        budget = budget.capped(u32::from(cap));
    }
    let head = PinnedHead {
        system_prompt: String::new(),
        system_tokens: u32::from(data[7]),
        context_text: String::new(),
        context_tokens: u32::from(data[8]),
        summary: None,
    };
    let turn_tokens = u32::from(u16_at(data, 9));
    let records = &data[11..];
    let count = records.len() / 3;
    let newest_first: Vec<SharedMessage> = records
        .chunks_exact(3)
        .enumerate()
        .map(|(at, record)| {
            let role = match record[0] % 3 {
                0 => Role::User,
                1 => Role::Assistant,
                _ => Role::Tool,
            };
            message((count - at) as u64, role, u32::from(u16_at(record, 1)))
        })
        .collect();

    let input = budget.input_tokens();
    let available = input.saturating_sub(head.tokens());
    match select_history(budget, &head, turn_tokens, &newest_first) {
        Err(refused) => {
            assert!(turn_tokens > available, "refused a turn that fits");
            assert_eq!(
                (refused.needed, refused.available),
                (turn_tokens, available)
            );
        }
        Ok(selection) => {
            assert!(
                turn_tokens <= available,
                "accepted a turn that does not fit"
            );
            let taken = &newest_first[..selection.taken];
            let sum: u32 = taken.iter().map(|m| m.token_count).sum();
            assert_eq!(selection.tokens, sum);
            let total: u64 = newest_first.iter().map(|m| u64::from(m.token_count)).sum();
            assert_eq!(
                take_units_from_oldest(&newest_first, total, available - turn_tokens),
                (selection.taken, selection.tokens),
                "walking back from the oldest message takes another window"
            );
            assert_eq!(selection.total_tokens, head.tokens() + sum + turn_tokens);
            assert!(
                sum + turn_tokens <= available,
                "the window exceeds the budget"
            );
            assert!(
                taken.last().is_none_or(|oldest| oldest.role != Role::Tool),
                "a tool result was taken without its call"
            );
            // The next unit (tool results and the message before them) did not fit, or
            // there is none.
            let rest = &newest_first[selection.taken..];
            if let Some(end) = rest.iter().position(|m| m.role != Role::Tool) {
                let cost: u32 = rest[..=end].iter().map(|m| m.token_count).sum();
                assert!(
                    cost > available - turn_tokens - sum,
                    "stopped although the next unit fits"
                );
            }
        }
    }
});
