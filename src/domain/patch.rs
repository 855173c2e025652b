//! RFC 7386 JSON Merge Patch, applied to session contexts.

use serde_json::Value;

use super::session::Context;

/// Applies `patch` to `target` as RFC 7386 describes: objects merge key by key, `null`
/// deletes a key, anything else replaces the value.
///
/// ```
/// use contextd::domain::patch::apply_merge_patch;
/// use serde_json::json;
///
/// let mut context = json!({"user": {"name": "John", "city": "Oslo"}, "topic": "x"});
/// apply_merge_patch(&mut context, &json!({"user": {"city": "NYC"}, "topic": null}));
/// assert_eq!(context, json!({"user": {"name": "John", "city": "NYC"}}));
/// ```
pub fn apply_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Context::new());
    }
    if let Value::Object(target) = target {
        merge_context(target, patch);
    }
}

/// Applies an object patch to a context (the common case: both are JSON objects).
pub fn merge_context(target: &mut Context, patch: &Context) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            apply_merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(target: Value, patch: Value) -> Value {
        let mut target = target;
        apply_merge_patch(&mut target, &patch);
        target
    }

    /// The test cases of RFC 7386, appendix A.
    #[test]
    fn rfc_7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(
                patched(target.clone(), patch.clone()),
                expected,
                "{target} + {patch}"
            );
        }
    }

    #[test]
    fn nested_objects_merge() {
        let mut ctx = json!({"user": {"name": "John", "city": "Oslo"}, "topic": "x"});
        apply_merge_patch(&mut ctx, &json!({"user": {"city": "NYC"}, "topic": null}));
        assert_eq!(ctx, json!({"user": {"name": "John", "city": "NYC"}}));
    }
}
