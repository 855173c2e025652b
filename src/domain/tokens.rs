//! Token counting with a real tokenizer (OpenAI's o200k_base, or cl100k_base for the older
//! OpenAI models that use it; both compiled into the binary). Counted with `bpe-openai`, which
//! counts without building the token list and pre-tokenizes with `regex-automata`: the same
//! counts as tiktoken (tested against it), in about half the time on this service's texts.
//!
//! A message's count is taken once, when the message is created (with the session's model's
//! tokenizer at that time), and stored with it, so assembling a window never re-tokenizes
//! history.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use bpe_openai::Tokenizer;

use super::session::{Role, ToolCall};

/// Tokens every message costs beyond its text (role and separators), as chat formats do.
pub const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// Counts tokens with one OpenAI encoding. Cheap to copy; the tables are loaded once per
/// process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenCounter {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-5, the o-series, and the estimate for other models.
    #[default]
    O200k,
    /// `cl100k_base`: GPT-4, GPT-4 Turbo, GPT-3.5 Turbo.
    Cl100k,
}

fn o200k() -> &'static Tokenizer {
    bpe_openai::o200k_base()
}

fn cl100k() -> &'static Tokenizer {
    bpe_openai::cl100k_base()
}

/// Text held by each recurring-text cache before it starts over.
const RECURRING_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Longer texts are counted every time rather than cached.
const MAX_CACHED_TEXT_BYTES: usize = 256 * 1024;

#[derive(Default)]
struct RecurringCache {
    counts: HashMap<String, u32>,
    bytes: usize,
}

fn recurring_cache(counter: TokenCounter) -> &'static Mutex<RecurringCache> {
    static CACHES: OnceLock<[Mutex<RecurringCache>; 2]> = OnceLock::new();
    let caches = CACHES.get_or_init(Default::default);
    match counter {
        TokenCounter::O200k => &caches[0],
        TokenCounter::Cl100k => &caches[1],
    }
}

fn lock(cache: &Mutex<RecurringCache>) -> std::sync::MutexGuard<'_, RecurringCache> {
    // The cache holds only counts; one left behind by a panic is still right.
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

impl TokenCounter {
    /// Loads the tables now (they take a moment), so the first turn does not pay for it.
    pub fn warm_up() {
        let _ = o200k();
    }

    /// The counter for a session's model (`backend/model` or a bare name): cl100k for the
    /// OpenAI models that use it, o200k for everything else.
    pub fn for_model(model: &str) -> Self {
        let name = model.rsplit('/').next().unwrap_or(model);
        let legacy = name == "gpt-4"
            || name.starts_with("gpt-4-")
            || name.starts_with("gpt-3.5")
            || name.starts_with("gpt-35")
            || name.starts_with("text-embedding-ada")
            || name.starts_with("text-embedding-3");
        if legacy {
            TokenCounter::Cl100k
        } else {
            TokenCounter::O200k
        }
    }

    fn encoder(self) -> &'static Tokenizer {
        match self {
            TokenCounter::O200k => o200k(),
            TokenCounter::Cl100k => cl100k(),
        }
    }

    /// Tokens of a piece of text.
    pub fn count_text(&self, text: &str) -> u32 {
        if text.is_empty() {
            return 0;
        }
        u32::try_from(self.encoder().count(text)).unwrap_or(u32::MAX)
    }

    /// Tokens of a text that recurs on every turn (a system prompt, a rendered context),
    /// remembered across turns and sessions: counting them again on every step took about
    /// 4 % of a unary turn's CPU.
    pub fn count_recurring_text(&self, text: &str) -> u32 {
        if text.is_empty() {
            return 0;
        }
        if text.len() > MAX_CACHED_TEXT_BYTES {
            return self.count_text(text);
        }
        let cache = recurring_cache(*self);
        if let Some(&count) = lock(cache).counts.get(text) {
            return count;
        }
        let count = self.count_text(text);
        let mut cache = lock(cache);
        if cache.bytes + text.len() > RECURRING_CACHE_BYTES {
            cache.counts.clear();
            cache.bytes = 0;
        }
        if cache.counts.insert(text.to_string(), count).is_none() {
            cache.bytes += text.len();
        }
        count
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
        let counter = TokenCounter::O200k;
        assert_eq!(counter.count_text(""), 0);
        assert_eq!(counter.count_text("hello"), 1);
        let sentence = counter.count_text("Tell me about climate change.");
        assert!((4..=8).contains(&sentence), "{sentence}");
        assert_eq!(
            counter.count_message(Role::User, "hello", &[], ""),
            1 + MESSAGE_OVERHEAD_TOKENS
        );
    }

    #[test]
    fn recurring_texts_count_like_any_text() {
        let text = "Session context (JSON):\n{\"user_id\":\"john_doe\"}";
        for counter in [TokenCounter::O200k, TokenCounter::Cl100k] {
            let first = counter.count_recurring_text(text);
            assert_eq!(first, counter.count_text(text));
            assert_eq!(counter.count_recurring_text(text), first, "from the cache");
        }
        assert_ne!(
            TokenCounter::O200k.count_recurring_text(&"naïve café résumé — 東京 🙂 ".repeat(20)),
            TokenCounter::Cl100k.count_recurring_text(&"naïve café résumé — 東京 🙂 ".repeat(20)),
            "one cache per encoding"
        );
        assert_eq!(TokenCounter::O200k.count_recurring_text(""), 0);
    }

    /// Texts of every kind a session holds: prose, code, JSON, numbers, whitespace runs,
    /// contractions, and scripts other than Latin.
    const CORPUS: &[&str] = &[
        "Hello, world! It's a test.",
        "You said 'Tell me about climate change.'. User john_doe is active.",
        "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
        "{\"user_id\":\"john_doe\",\"topic\":\"environment\",\"n\":[1,2.5,-3e10]}",
        "def f(a, b):\r\n\treturn a  +  b  # sum\r\n\r\n",
        "1234567890 3.14159 0x1F 1,000,000 2026-12-03T07:00:00Z",
        "CamelCaseWords HTTPServer don't I'll we've THEY'RE she'd",
        "   leading and trailing   \n\n\t tabs and\u{a0}no-break   ",
        "日本語のテキスト、漢字とかなとカナ。東京タワー",
        "Привет, мир! Как дела? Ёлка",
        "مرحبا بالعالم، كيف حالك؟",
        "नमस्ते दुनिया — हिन्दी",
        "🚀🔥 emoji 👍🏽 with skin tones, flags 🇫🇷 and ZWJ 👩‍💻",
        "naïve café résumé Æsir Ångström ß ǅ",
        "a  b   c    d\n \ny\n\n\nz",
        "",
    ];

    #[test]
    fn counts_equal_tiktoken_on_mixed_text_code_and_scripts() {
        let reference = [
            (TokenCounter::O200k, tiktoken_rs::o200k_base().unwrap()),
            (TokenCounter::Cl100k, tiktoken_rs::cl100k_base().unwrap()),
        ];
        for (counter, tiktoken) in &reference {
            for text in CORPUS {
                assert_eq!(
                    counter.count_text(text) as usize,
                    tiktoken.encode_ordinary(text).len(),
                    "{counter:?} on {text:?}"
                );
            }
            let whole = CORPUS.concat();
            assert_eq!(
                counter.count_text(&whole) as usize,
                tiktoken.encode_ordinary(&whole).len()
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        #[test]
        fn counts_equal_tiktoken_on_random_text(
            text in "([ a-zA-Z0-9'.,!?\\-\n\t\r]|[à-ÿ]|[а-я]|[一-龥]|[ぁ-ん]|[ا-ي]|[😀-🙏]|\\s){0,120}"
        ) {
            for (counter, tiktoken) in [
                (TokenCounter::O200k, tiktoken_rs::o200k_base_singleton()),
                (TokenCounter::Cl100k, tiktoken_rs::cl100k_base_singleton()),
            ] {
                proptest::prop_assert_eq!(
                    counter.count_text(&text) as usize,
                    tiktoken.encode_ordinary(&text).len(),
                    "{:?}", counter
                );
            }
        }
    }

    #[test]
    fn picks_the_tokenizer_of_the_model() {
        assert_eq!(
            TokenCounter::for_model("openai/gpt-4o-mini"),
            TokenCounter::O200k
        );
        assert_eq!(
            TokenCounter::for_model("openai/gpt-4-turbo"),
            TokenCounter::Cl100k
        );
        assert_eq!(
            TokenCounter::for_model("local/gpt-3.5-turbo"),
            TokenCounter::Cl100k
        );
        assert_eq!(TokenCounter::for_model("gpt-4"), TokenCounter::Cl100k);
        assert_eq!(TokenCounter::for_model("gpt-4.1"), TokenCounter::O200k);
        assert_eq!(
            TokenCounter::for_model("anthropic/claude-sonnet-4-5"),
            TokenCounter::O200k
        );
        assert_eq!(TokenCounter::for_model("echo"), TokenCounter::O200k);
        let text = "naïve café résumé — 東京 🙂 ".repeat(20);
        assert_ne!(
            TokenCounter::O200k.count_text(&text),
            TokenCounter::Cl100k.count_text(&text),
            "two different encodings"
        );
    }
}
