//! Input limits the engine enforces on whatever reaches it (from the wire, or from a tool):
//! the measures come from [`crate::domain::measure`], the bounds from [`Limits`].

use std::collections::BTreeMap;

use super::error::EngineError;
use crate::config::Limits;
use crate::domain::measure::measure_context;
use crate::domain::session::{Context, ToolSpec};

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

/// A refusal of `what` for being `size` bytes where `limit` allows `max`.
fn too_large(what: &str, size: usize, max: usize, limit: &str) -> EngineError {
    EngineError::InvalidArgument(format!(
        "{what} is {size} bytes; at most {max} bytes are allowed (limits.{limit})"
    ))
}

/// Checks a system prompt against `limits.max_system_prompt_bytes`.
pub fn check_system_prompt(prompt: &str, limits: &Limits) -> Result<(), EngineError> {
    if prompt.len() > limits.max_system_prompt_bytes {
        return Err(too_large(
            "system_prompt",
            prompt.len(),
            limits.max_system_prompt_bytes,
            "max_system_prompt_bytes",
        ));
    }
    Ok(())
}

/// Checks client-declared tools against the count, name, description and schema limits (the
/// schema's nesting against the context limits too). Names' characters and uniqueness are
/// the domain's rule ([`crate::domain::session::validate_tools`]).
pub fn check_tool_limits(tools: &[ToolSpec], limits: &Limits) -> Result<(), EngineError> {
    if tools.len() > limits.max_tools {
        return Err(EngineError::InvalidArgument(format!(
            "{} tools declared; at most {} are allowed (limits.max_tools)",
            tools.len(),
            limits.max_tools
        )));
    }
    for (i, tool) in tools.iter().enumerate() {
        if tool.name.len() > limits.max_tool_name_bytes {
            return Err(too_large(
                &format!("tools[{i}].name"),
                tool.name.len(),
                limits.max_tool_name_bytes,
                "max_tool_name_bytes",
            ));
        }
        if tool.description.len() > limits.max_tool_description_bytes {
            return Err(too_large(
                &format!("description of tool {:?}", tool.name),
                tool.description.len(),
                limits.max_tool_description_bytes,
                "max_tool_description_bytes",
            ));
        }
        if !tool.annotations.is_empty() {
            let what = format!("annotations of tool {:?}", tool.name);
            check_context(&what, &tool.annotations, limits)?;
            let (_, size) = measure_context(&tool.annotations);
            if size > limits.max_tool_description_bytes {
                return Err(EngineError::InvalidArgument(format!(
                    "{what} are {size} bytes of JSON; at most {} bytes are allowed (limits.max_tool_description_bytes bounds them too)",
                    limits.max_tool_description_bytes
                )));
            }
        }
        let what = format!("input_schema of tool {:?}", tool.name);
        check_context(&what, &tool.input_schema, limits)?;
        let (_, size) = measure_context(&tool.input_schema);
        if size > limits.max_tool_schema_bytes {
            return Err(EngineError::InvalidArgument(format!(
                "{what} is {size} bytes of JSON; at most {} bytes are allowed (limits.max_tool_schema_bytes)",
                limits.max_tool_schema_bytes
            )));
        }
    }
    Ok(())
}

/// Checks a session's labels (as they would be stored) against the count, key and value
/// limits.
pub fn check_labels(labels: &BTreeMap<String, String>, limits: &Limits) -> Result<(), EngineError> {
    if labels.len() > limits.max_labels {
        return Err(EngineError::InvalidArgument(format!(
            "the session would have {} labels; at most {} are allowed (limits.max_labels)",
            labels.len(),
            limits.max_labels
        )));
    }
    for (key, value) in labels {
        if key.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a label key is empty; give every label a key".into(),
            ));
        }
        if key.len() > limits.max_label_key_bytes {
            return Err(too_large(
                &format!("label key {:?}", truncated(key)),
                key.len(),
                limits.max_label_key_bytes,
                "max_label_key_bytes",
            ));
        }
        if value.len() > limits.max_label_value_bytes {
            return Err(too_large(
                &format!("the value of label {:?}", truncated(key)),
                value.len(),
                limits.max_label_value_bytes,
                "max_label_value_bytes",
            ));
        }
    }
    Ok(())
}

/// The start of `text`, so a message naming an oversized key stays short.
fn truncated(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return text.to_string();
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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

    fn tool(name: &str, description: &str, schema: serde_json::Value) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            input_schema: schema.as_object().cloned().unwrap_or_default(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn stored_field_limits_name_the_field_the_size_and_the_key() {
        let limits = Limits::default();
        let prompt = "p".repeat(limits.max_system_prompt_bytes);
        assert!(check_system_prompt(&prompt, &limits).is_ok());
        let err = check_system_prompt(&format!("{prompt}!"), &limits).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("system_prompt"), "{text}");
        assert!(text.contains(&(prompt.len() + 1).to_string()), "{text}");
        assert!(text.contains("limits.max_system_prompt_bytes"), "{text}");

        let description = "d".repeat(limits.max_tool_description_bytes + 1);
        let err = check_tool_limits(&[tool("t", &description, json!({}))], &limits).unwrap_err();
        assert!(
            err.to_string()
                .contains("limits.max_tool_description_bytes"),
            "{err}"
        );
        let big = json!({ "description": "s".repeat(limits.max_tool_schema_bytes) });
        let err = check_tool_limits(&[tool("t", "", big)], &limits).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_tool_schema_bytes"),
            "{err}"
        );
        let small = Limits {
            max_tool_name_bytes: 3,
            ..Limits::default()
        };
        let err = check_tool_limits(&[tool("abcd", "", json!({}))], &small).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_tool_name_bytes"),
            "{err}"
        );
        let many: Vec<_> = (0..=limits.max_tools)
            .map(|i| tool(&format!("t{i}"), "", json!({})))
            .collect();
        let err = check_tool_limits(&many, &limits).unwrap_err();
        assert!(err.to_string().contains("limits.max_tools"), "{err}");
        assert!(check_tool_limits(&many[1..], &limits).is_ok());

        let mut labels: BTreeMap<String, String> = (0..limits.max_labels)
            .map(|i| (format!("k{i}"), "v".repeat(limits.max_label_value_bytes)))
            .collect();
        assert!(check_labels(&labels, &limits).is_ok());
        labels.insert("one-more".into(), String::new());
        let err = check_labels(&labels, &limits).unwrap_err();
        assert!(err.to_string().contains("limits.max_labels"), "{err}");
        let key = BTreeMap::from([("k".repeat(limits.max_label_key_bytes + 1), String::new())]);
        let err = check_labels(&key, &limits).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_label_key_bytes"),
            "{err}"
        );
        let value = BTreeMap::from([("k".into(), "v".repeat(limits.max_label_value_bytes + 1))]);
        let err = check_labels(&value, &limits).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_label_value_bytes"),
            "{err}"
        );
    }
}
