//! Token counting with a real tokenizer (tiktoken's o200k_base, compiled into the binary).
//!
//! A message's count is taken once, when the message is created, and stored with it, so
//! assembling a window never re-tokenizes history.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use super::session::{Role, ToolCall};

/// Tokens every message costs beyond its text (role and separators), as chat formats do.
pub const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// Counts tokens. Cheap to clone; the tables are loaded once per process.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenCounter;

fn encoder() -> &'static CoreBPE {
    static ENCODER: OnceLock<&'static CoreBPE> = OnceLock::new();
    ENCODER.get_or_init(tiktoken_rs::o200k_base_singleton)
}

impl TokenCounter {
    /// Loads the tables now (they take a moment), so the first turn does not pay for it.
    pub fn warm_up() {
        let _ = encoder();
    }

    /// Tokens of a piece of text.
    pub fn count_text(&self, text: &str) -> u32 {
        if text.is_empty() {
            return 0;
        }
        u32::try_from(encoder().encode_ordinary(text).len()).unwrap_or(u32::MAX)
    }

    /// Tokens a message costs in a window: overhead, text, and its tool calls.
    pub fn count_message(
        &self,
        role: Role,
        content: &str,
        tool_calls: &[ToolCall],
        tool_name: &str,
    ) -> u32 {
        let mut total = MESSAGE_OVERHEAD_TOKENS + self.count_text(content);
        if role == Role::Tool {
            total += self.count_text(tool_name);
        }
        for call in tool_calls {
            total += MESSAGE_OVERHEAD_TOKENS
                + self.count_text(&call.name)
                + self.count_text(&serde_json::Value::Object(call.arguments.clone()).to_string());
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_real_tokens() {
        let counter = TokenCounter;
        assert_eq!(counter.count_text(""), 0);
        assert_eq!(counter.count_text("hello"), 1);
        let sentence = counter.count_text("Tell me about climate change.");
        assert!((4..=8).contains(&sentence), "{sentence}");
        assert_eq!(
            counter.count_message(Role::User, "hello", &[], ""),
            1 + MESSAGE_OVERHEAD_TOKENS
        );
    }
}
