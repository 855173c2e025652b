//! Input limits the engine enforces on whatever reaches it (from the wire, or from a tool).

use serde_json::Value;

use super::error::EngineError;
use super::session::Context;
use crate::config::Limits;

/// Nesting depth of a JSON value: a scalar is 0, `{}` and `[]` are 1, `{"a": {}}` is 2.
pub fn json_depth(value: &Value) -> usize {
    // Iterative, so a hostile value cannot overflow the stack.
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Object(map) => {
                deepest = deepest.max(depth);
                stack.extend(map.values().map(|v| (v, depth + 1)));
            }
            Value::Array(items) => {
                deepest = deepest.max(depth);
                stack.extend(items.iter().map(|v| (v, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Nesting depth and compact-JSON size in bytes of a context, measured without copying it.
pub fn measure_context(context: &Context) -> (usize, usize) {
    let depth = 1 + context.values().map(json_depth).max().unwrap_or(0);
    let mut size = ByteCount(0);
    // Serializing a map of JSON values into a counter cannot fail.
    let _ = serde_json::to_writer(&mut size, context);
    (depth, size.0)
}

/// An `io::Write` that only counts bytes.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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
    fn depth() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({})), 1);
        assert_eq!(json_depth(&json!({"a": {"b": [1]}})), 3);
        let mut deep = json!({});
        for _ in 0..40 {
            deep = json!({ "x": deep });
        }
        assert_eq!(json_depth(&deep), 41);
        let map = json!({"a": {"b": [1]}, "c": "dé"})
            .as_object()
            .cloned()
            .unwrap();
        let (depth, size) = measure_context(&map);
        assert_eq!(depth, 3);
        assert_eq!(size, serde_json::to_string(&map).unwrap().len());
        assert_eq!(measure_context(&Context::new()), (1, 2));
    }

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
