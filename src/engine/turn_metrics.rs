//! What turns report to the metrics facade: turns running and ended, model calls' latency
//! and tokens, server-side tool calls. Names and label sets are documented in
//! `crate::telemetry::metrics`.

use std::time::Duration;

use crate::domain::session::FinishReason;
use crate::telemetry::metrics::{
    GaugeGuard, Handles, MODEL_REQUEST_DURATION_SECONDS, MODEL_TOKENS_TOTAL, TOOL_CALLS_TOTAL,
    TURNS_IN_FLIGHT, TURNS_TOTAL,
};

use super::EngineError;
use super::turn::TurnOutcome;

/// `contextd_turns_in_flight` raised for as long as a turn runs.
pub(super) fn in_flight() -> GaugeGuard {
    GaugeGuard::new(metrics::gauge!(TURNS_IN_FLIGHT))
}

/// The configured backend of a session's model: the part before `/` (`echo` alone).
pub(super) fn backend_of(model: &str) -> &str {
    model.split('/').next().unwrap_or(model)
}

/// Counts an ended turn in `contextd_turns_total{model,finish_reason}`; a turn that failed
/// is `failed`, one that was cancelled `cancelled`.
pub(super) fn turn_done(model: &str, result: &Result<TurnOutcome, EngineError>) {
    let finish = match result {
        Ok(outcome) => finish_label(&outcome.finish),
        Err(EngineError::Cancelled) => "cancelled",
        Err(_) => "failed",
    };
    let model = if model.is_empty() { "unknown" } else { model };
    static TURNS: Handles<metrics::Counter> = Handles::new();
    TURNS
        .get(model, finish, || {
            metrics::counter!(TURNS_TOTAL, "model" => model.to_owned(), "finish_reason" => finish)
        })
        .increment(1);
}

fn finish_label(finish: &FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "stop",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
        FinishReason::StepLimit => "step_limit",
    }
}

/// Records one model call of `backend` that took `took`.
pub(super) fn model_call(backend: &str, took: Duration) {
    static CALLS: Handles<metrics::Histogram> = Handles::new();
    CALLS
        .get(
            backend,
            "",
            || metrics::histogram!(MODEL_REQUEST_DURATION_SECONDS, "backend" => backend.to_owned()),
        )
        .record(took.as_secs_f64());
}

/// Counts a model step's tokens.
pub(super) fn model_tokens(backend: &str, input: u64, output: u64) {
    static TOKENS: Handles<metrics::Counter> = Handles::new();
    for (direction, tokens) in [("input", input), ("output", output)] {
        TOKENS
            .get(backend, direction, || {
                metrics::counter!(MODEL_TOKENS_TOTAL, "backend" => backend.to_owned(), "direction" => direction)
            })
            .increment(tokens);
    }
}

/// Counts a server-side tool call (`tool` is a known tool's name or `unknown`).
pub(super) fn tool_call(tool: &str, is_error: bool) {
    let outcome = if is_error { "error" } else { "ok" };
    static CALLS: Handles<metrics::Counter> = Handles::new();
    CALLS
        .get(
            tool,
            outcome,
            || metrics::counter!(TOOL_CALLS_TOTAL, "tool" => tool.to_owned(), "outcome" => outcome),
        )
        .increment(1);
}
