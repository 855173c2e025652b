//! Both providers' SSE parsers on arbitrary reply bodies, cut into chunks of any size.
//!
//! Input: a chunk-size byte, then the body. The same bytes go to the OpenAI-compatible
//! `chat.completion.chunk` parser and the Anthropic Messages parser. Checked: no panic; at
//! most one Finish and nothing after it; every error names the backend; and the events do
//! not depend on where the body was cut (the same body read whole gives the same events).
#![no_main]

use contextd::config::BackendKind;
use contextd::fuzzing::{AnthropicEventParser, OpenAiChunkParser};
use contextd_fuzz::{check_sse_outcome, http_backend, read_sse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(size % 64) + 1;

    let openai = http_backend(BackendKind::Openai);
    let cut = read_sse(&openai, OpenAiChunkParser::default(), body, chunk);
    check_sse_outcome(&cut);
    let whole = read_sse(&openai, OpenAiChunkParser::default(), body, body.len());
    assert_eq!(
        cut.events, whole.events,
        "OpenAI events depend on the chunking"
    );
    assert_eq!(cut.error.is_some(), whole.error.is_some());

    let anthropic = http_backend(BackendKind::Anthropic);
    let cut = read_sse(&anthropic, AnthropicEventParser::default(), body, chunk);
    check_sse_outcome(&cut);
    let whole = read_sse(
        &anthropic,
        AnthropicEventParser::default(),
        body,
        body.len(),
    );
    assert_eq!(
        cut.events, whole.events,
        "Anthropic events depend on the chunking"
    );
    assert_eq!(cut.error.is_some(), whole.error.is_some());
});
