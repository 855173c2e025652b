//! Measuring JSON without copying it: nesting depth and compact size. The engine checks these
//! against the configured limits; the built-in tools report them.

use serde_json::Value;

use super::session::Context;

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
}
