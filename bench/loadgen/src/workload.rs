//! What the scenarios send, in one place, so that contextd, the ceiling server and the Python
//! peer are driven with the same bytes.

use std::collections::BTreeMap;

use contextd::api::v1::{FinishReason, InteractResponse, ToolDefinition, Usage};
use prost_types::value::Kind;
use prost_types::{Struct, Value};

/// The user message of unary turns (the README's first example).
pub const MESSAGE: &str = "Hello, I am John.";

/// The context patch sent with every unary turn.
pub fn context() -> Struct {
    string_struct(&[("user_id", "john_doe")])
}

/// A `Struct` of string values.
pub fn string_struct(pairs: &[(&str, &str)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_string(),
                    Value {
                        kind: Some(Kind::StringValue((*v).to_string())),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Session id of worker `worker` in a run tagged `tag` (the tag keeps runs apart on a server
/// that outlives one run). Always the same length for a given tag.
pub fn session_id(tag: &str, worker: usize) -> String {
    format!("bench-{tag}-{worker:05}")
}

/// A short random tag for session names.
pub fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// The reply the echo model gives to [`MESSAGE`] with [`context`].
pub fn echo_text() -> String {
    format!("You said '{MESSAGE}'. User john_doe is active.")
}

/// The ceiling server's fixed reply: field for field what contextd answers a unary turn of
/// this workload (same session id length, text, context, usage magnitudes and turn id form),
/// so both put the same bytes on the wire. The load generator reports the encoded size of
/// each server's reply so this can be checked in every run.
pub fn ceiling_reply() -> InteractResponse {
    InteractResponse {
        session_id: session_id("00000000", 0),
        response: echo_text(),
        updated_context: Some(context()),
        finish_reason: FinishReason::Stop as i32,
        tool_calls: Vec::new(),
        usage: Some(Usage {
            input_tokens: 1890,
            output_tokens: 20,
            context_tokens: 1890,
        }),
        session_created: false,
        turn_id: format!("t-{}", "0".repeat(32)),
    }
}

/// Words in a streamed reply: the echo model streams word by word, so a message of this many
/// words comes back as about as many deltas.
pub const STREAM_WORDS: usize = 200;

/// The message of a streamed turn: [`STREAM_WORDS`] short words.
pub fn stream_message() -> String {
    (0..STREAM_WORDS)
        .map(|i| format!("w{}", i % 10))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The client-side tool declared by Converse sessions.
pub fn lookup_tool() -> ToolDefinition {
    ToolDefinition {
        name: "lookup".to_string(),
        description: "Looks a word up in the client's dictionary.".to_string(),
        input_schema: None,
        annotations: None,
    }
}

/// A user message that makes the echo model call [`lookup_tool`] once.
pub const TOOL_CALL_MESSAGE: &str = "/call lookup {\"q\":\"weather\"}";

/// What the client's tool answers.
pub const TOOL_RESULT: &str = "sunny, 21 C";

/// `request` with `authorization: Bearer $CONTEXTD_API_KEY` when that variable is set (the
/// scenarios that measure a server with `auth.mode = "keys"`).
pub fn authorized<T>(request: T) -> tonic::Request<T> {
    static BEARER: std::sync::OnceLock<
        Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    > = std::sync::OnceLock::new();
    let bearer = BEARER.get_or_init(|| {
        let key = std::env::var("CONTEXTD_API_KEY")
            .ok()
            .filter(|k| !k.is_empty())?;
        format!("Bearer {key}").parse().ok()
    });
    let mut request = tonic::Request::new(request);
    if let Some(bearer) = bearer {
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
    }
    request
}
