//! A server-side tool's `input_schema`, compiled once: when its provider builds or lists
//! the tool (the built-ins at start, an MCP server's tools at every `tools/list`), not at
//! every call. A changed schema arrives as a newly listed tool with its own compiled copy.
//!
//! Checking a call gives the message the model reads: which values break which rule, the
//! first [`MAX_LISTED_VIOLATIONS`] listed and the rest counted.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::domain::session::Context;

/// Schema violations listed in one result; the rest are counted.
const MAX_LISTED_VIOLATIONS: usize = 5;

/// An `input_schema` and what compiling it gave. Cloning shares the compiled validator.
#[derive(Clone)]
pub struct CompiledSchema {
    compiled: Arc<Compiled>,
}

/// Nothing to check (an empty schema takes any object), a validator, or why the schema
/// cannot be one.
enum Compiled {
    Empty,
    Ready(jsonschema::Validator),
    Unusable(String),
}

impl CompiledSchema {
    /// Compiles `schema` (JSON Schema; the draft its `$schema` names, else 2020-12).
    pub fn new(schema: &Context) -> Self {
        let compiled = if schema.is_empty() {
            Compiled::Empty
        } else {
            match jsonschema::validator_for(&Value::Object(schema.clone())) {
                Ok(validator) => Compiled::Ready(validator),
                Err(e) => Compiled::Unusable(e.to_string()),
            }
        };
        Self {
            compiled: Arc::new(compiled),
        }
    }

    /// Checks the `arguments` of a call to the tool `name`. The error says which values
    /// break which rule, in words the model can act on; a schema that could not be compiled
    /// refuses every call rather than running it unchecked.
    pub fn check(&self, name: &str, arguments: &Context) -> Result<(), String> {
        let validator = match &*self.compiled {
            Compiled::Empty => return Ok(()),
            Compiled::Ready(validator) => validator,
            Compiled::Unusable(e) => {
                return Err(format!(
                    "tool '{name}' cannot be called: its input_schema is not a usable JSON Schema ({e})"
                ));
            }
        };
        let instance = Value::Object(arguments.clone());
        let violations: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("at {}: {e}", if at.is_empty() { "/" } else { &at })
            })
            .collect();
        if violations.is_empty() {
            return Ok(());
        }
        let mut message = format!(
            "the arguments do not match the input_schema of tool '{name}', so it did not run: {}",
            violations
                .iter()
                .take(MAX_LISTED_VIOLATIONS)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
        if violations.len() > MAX_LISTED_VIOLATIONS {
            message.push_str(&format!(
                "; and {} more",
                violations.len() - MAX_LISTED_VIOLATIONS
            ));
        }
        Err(message)
    }
}

impl fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.compiled {
            Compiled::Empty => "empty",
            Compiled::Ready(_) => "compiled",
            Compiled::Unusable(_) => "unusable",
        };
        f.debug_tuple("CompiledSchema").field(&state).finish()
    }
}
