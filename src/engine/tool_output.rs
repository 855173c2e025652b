//! Tool results are bounded before the model sees them: a tool (server-side, or a client's
//! `ToolResult`) can return far more than a window holds, and one oversized result would make
//! every later step of the turn fail "does not fit". Past `limits.max_tool_result_bytes` or
//! `limits.max_tool_result_tokens` (default: a quarter of the session's window) the result is
//! cut at a character boundary and ends with a marker the model sees,
//! `[truncated: N more bytes]`, so it knows there was more and can ask for less.

use std::borrow::Cow;

use crate::domain::tokens::TokenCounter;

/// `content`, cut to at most `max_bytes` bytes and `max_tokens` tokens (marker included).
pub(super) fn bound_tool_output<'a>(
    content: &'a str,
    max_bytes: usize,
    max_tokens: u32,
    counter: &TokenCounter,
) -> Cow<'a, str> {
    if content.len() <= max_bytes && counter.count_text(content) <= max_tokens {
        return Cow::Borrowed(content);
    }
    // Room for the marker, which is at most this long.
    const MARKER_BYTES: usize = 48;
    const MARKER_TOKENS: u32 = 16;
    let mut keep = floor_char_boundary(content, max_bytes.saturating_sub(MARKER_BYTES));
    let token_room = max_tokens.saturating_sub(MARKER_TOKENS);
    // Shrink towards the token bound; each pass scales by the measured ratio, so a few passes
    // suffice even for text whose tokens are uneven.
    for _ in 0..8 {
        let tokens = counter.count_text(&content[..keep]);
        if tokens <= token_room {
            break;
        }
        let scaled = (keep as f64 * f64::from(token_room) / f64::from(tokens) * 0.95) as usize;
        keep = floor_char_boundary(content, scaled.min(keep.saturating_sub(1)));
    }
    let cut = content.len() - keep;
    Cow::Owned(format!(
        "{}\n[truncated: {cut} more bytes]",
        &content[..keep]
    ))
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_results_pass_untouched() {
        let counter = TokenCounter::for_model("echo");
        assert!(matches!(
            bound_tool_output("fine", 100, 100, &counter),
            Cow::Borrowed("fine")
        ));
    }

    #[test]
    fn long_results_are_cut_with_a_marker_within_both_bounds() {
        let counter = TokenCounter::for_model("echo");
        let long = "héllo wörld ".repeat(10_000);
        let by_bytes = bound_tool_output(&long, 1_000, 100_000, &counter);
        assert!(by_bytes.len() <= 1_000, "{}", by_bytes.len());
        assert!(by_bytes.ends_with("more bytes]"), "{by_bytes}");
        let by_tokens = bound_tool_output(&long, usize::MAX, 200, &counter);
        assert!(counter.count_text(&by_tokens) <= 200);
        let cut: usize = by_tokens
            .rsplit("[truncated: ")
            .next()
            .and_then(|m| m.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let kept = by_tokens.len()
            - by_tokens
                .rfind("\n[truncated")
                .map_or(0, |i| by_tokens.len() - i);
        assert_eq!(kept + cut, long.len(), "the marker counts what was cut");
    }
}
