//! Input limits the engine enforces on whatever reaches it (from the wire, or from a tool):
//! the measures come from [`crate::domain::measure`], the bounds from [`Limits`].

use super::error::EngineError;
use crate::config::Limits;
use crate::domain::measure::measure_context;
use crate::domain::session::Context;

/// Checks a context (or context patch) against the depth and size limits. `what` names the
/// field in the message.
pub fn check_context(what: &str, context: &Context, limits: &Limits) -> Result<(), EngineError> {
    let (depth, size) = measure_context(context);
    if depth > limits.max_context_depth {
        return Err(EngineError::InvalidArgument(format!(
            "{what} is nested {depth} levels deep; at most {} levels are allowed (limits.max_context_depth)",
            limits.max_context_depth
        )));
    }
    if size > limits.max_context_bytes {
        return Err(EngineError::InvalidArgument(format!(
            "{what} is {size} bytes of JSON; at most {} bytes are allowed (limits.max_context_bytes)",
            limits.max_context_bytes
        )));
    }
    Ok(())
}

/// Checks a user message against the size limit.
pub fn check_message(message: &str, limits: &Limits) -> Result<(), EngineError> {
    if message.len() > limits.max_message_bytes {
        return Err(EngineError::InvalidArgument(format!(
            "message is {} bytes; at most {} bytes are allowed (limits.max_message_bytes)",
            message.len(),
            limits.max_message_bytes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits() {
        let limits = Limits::default();
        let mut ok = json!({});
        for _ in 0..31 {
            ok = json!({ "x": ok });
        }
        let ok = ok.as_object().cloned().unwrap_or_default();
        assert!(check_context("context", &ok, &limits).is_ok());
        let deep = json!({ "x": ok }).as_object().cloned().unwrap_or_default();
        let err = check_context("context", &deep, &limits).unwrap_err();
        assert!(err.to_string().contains("33 levels"), "{err}");
        assert!(check_message(&"a".repeat(limits.max_message_bytes), &limits).is_ok());
        assert!(check_message(&"a".repeat(limits.max_message_bytes + 1), &limits).is_err());
    }
}
