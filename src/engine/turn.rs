//! The turn loop: merge the context patch, assemble the window, call the model, run
//! server-side tools and loop, or pause for client-side tools; then commit everything at once.
//!
//! A turn holds its session's turn lock from start to commit, so turns on one session run in
//! arrival order. Nothing is written before the final commit: a failed, cancelled or dropped
//! turn (a client that went away, a deadline) leaves the session exactly as it was.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::error::EngineError;
use super::receipts;
use super::tool_output::bound_tool_output;
use super::validate::{check_context, check_message};
use super::window::WindowSource;
use super::window::{Assembly, Totals, WindowBudget, assemble_window, keeps_windows};
use super::{Engine, NewSession};
use crate::config::Limits;
use crate::domain::Scope;
use crate::domain::patch::merge_context;
use crate::domain::receipt::validate_idempotency_key;
use crate::domain::session::{
    Context, FinishReason, Message, PendingTurn, Role, Session, SharedMessage, ToolCall,
    ToolResult, Usage, generate_tool_call_id, generate_turn_id, validate_session_id,
};
use crate::domain::session::{WindowState, WindowStrategy};
use crate::domain::tokens::TokenCounter;
use crate::model::{ModelBackend, ModelError, ModelEvent, ModelFinish, ModelRequest};
use crate::tools::ToolOutput;

/// A request to run (or continue) a turn.
#[derive(Debug, Clone, Default)]
pub struct TurnRequest {
    /// The session; created when missing.
    pub session_id: String,
    /// The user's text (may be empty when tool results are sent).
    pub message: String,
    /// Merge patch for the session context.
    pub context_patch: Option<Context>,
    /// Results for the pending tool calls.
    pub tool_results: Vec<ToolResult>,
    /// Settings for the session if this turn creates it (the id is `session_id`).
    pub create: Option<NewSession>,
    /// Makes retries safe (see [`super::receipts`]); empty for none.
    pub idempotency_key: String,
    /// Abandons the paused turn: every pending call gets [`ABANDONED_RESULT`] as an error
    /// result and the turn ends `Cancelled` without another model step. Only with no message
    /// and no tool results, and only while the session waits for tool results.
    pub abandon_tool_calls: bool,
}

/// The result every pending call of an abandoned turn gets (with `is_error` set).
pub const ABANDONED_RESULT: &str = "cancelled by the client";

/// Something that happened during a turn, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// The turn holds the session and has merged the context patch.
    Started {
        /// The turn.
        turn_id: String,
        /// The session.
        session_id: String,
        /// Whether this turn created the session.
        session_created: bool,
    },
    /// Reply text.
    Delta(String),
    /// A client-side tool call the client must answer.
    ToolCall(ToolCall),
    /// A server-side tool ran.
    ToolResult {
        /// The call.
        call: ToolCall,
        /// Its result.
        result: ToolResult,
    },
}

/// The receiver of a turn's events went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

/// Where a turn's events go (a stream to the client, or nowhere for unary calls).
pub trait TurnSink: Send {
    /// Delivers one event. `Err(SinkClosed)` means nobody listens any more: the turn stops.
    fn emit(&mut self, event: TurnEvent) -> impl Future<Output = Result<(), SinkClosed>> + Send;
}

/// Drops every event (unary calls only need the outcome).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSink;

impl TurnSink for NoSink {
    async fn emit(&mut self, _event: TurnEvent) -> Result<(), SinkClosed> {
        Ok(())
    }
}

/// How a turn ended. Serializable: a turn's receipt keeps it for repeats of its request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TurnOutcome {
    /// The session.
    pub session_id: String,
    /// The turn.
    pub turn_id: String,
    /// All reply text of this request (equals the concatenated deltas).
    pub response: String,
    /// The session context after the turn.
    pub context: Context,
    /// Why it ended.
    pub finish: FinishReason,
    /// Client-side calls to answer, when paused.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens used by this request.
    pub usage: Usage,
    /// Whether the session was created by it.
    pub session_created: bool,
}

/// A turn between its begin and its commit: the session as the turn changes it (held only by
/// this turn, under the session's lock), the window's material, and what the turn added.
struct ActiveTurn {
    /// The session with the turn's changes so far (context, pause, window state).
    session: Session,
    /// Whether this turn creates the session.
    created: bool,
    /// The stored version the commit is based on (`None`: the session is new).
    expected_version: Option<u64>,
    /// The session's model backend.
    backend: Arc<dyn ModelBackend>,
    /// The kind of that backend (`echo`, `openai`, `anthropic`).
    model_kind: String,
    /// Model steps taken, counting those before a pause.
    steps: u32,
    /// The session's window budget.
    budget: WindowBudget,
    /// The paused turn's stored messages, oldest first.
    stored_tail: Vec<SharedMessage>,
    /// History before them, newest first.
    history: Vec<SharedMessage>,
    /// What `history` holds.
    history_totals: Totals,
    /// Stored messages before the turn's own (for the `disabled` strategy's check).
    before: u64,
    /// The messages the turn adds.
    state: TurnState,
    /// All reply text so far.
    response: String,
    /// Tokens used so far.
    usage: Usage,
    /// Client-side calls the turn pauses for.
    client_calls: Vec<ToolCall>,
}

/// Checks a turn request before anything waits on the session: its id, sizes, and that it
/// carries a message or tool results.
fn check_turn_request(request: &TurnRequest, limits: &Limits) -> Result<(), EngineError> {
    validate_session_id(&request.session_id).map_err(EngineError::InvalidArgument)?;
    check_message(&request.message, limits)?;
    if let Some(patch) = &request.context_patch {
        check_context("context", patch, limits)?;
    }
    if !request.idempotency_key.is_empty() {
        validate_idempotency_key(&request.idempotency_key).map_err(EngineError::InvalidArgument)?;
    }
    if request.abandon_tool_calls {
        if !request.message.is_empty() || !request.tool_results.is_empty() {
            return Err(EngineError::InvalidArgument(
                "abandon_tool_calls cannot be combined with a message or tool_results: abandon the paused turn first, then send the message in a new request"
                    .into(),
            ));
        }
        return Ok(());
    }
    if request.message.is_empty() && request.tool_results.is_empty() {
        return Err(EngineError::InvalidArgument(
            "message is empty: send a message, or tool_results for a turn that waits for them"
                .into(),
        ));
    }
    Ok(())
}

/// What one model step produced.
struct Step {
    text: String,
    calls: Vec<ToolCall>,
    finish: ModelFinish,
    reported: Option<(u64, u64)>,
}

impl Engine {
    /// Runs one turn (or continues a paused one). Events go to `sink` as they happen; the
    /// turn stops as soon as `cancel` fires or the sink closes, and is then not stored.
    ///
    /// Three phases: [`Self::begin_turn`] (load or create the session, match tool results,
    /// read the window, merge the patch, add the user message), [`Self::step_turn`] (model
    /// steps and server-side tools until the model stops, pauses for client tools or reaches
    /// the step limit) and [`Self::commit_turn`] (one store write of everything).
    pub async fn run_turn<S: TurnSink>(
        &self,
        scope: &Scope,
        request: TurnRequest,
        sink: &mut S,
        cancel: &CancellationToken,
    ) -> Result<TurnOutcome, EngineError> {
        let _in_flight = super::turn_metrics::in_flight();
        let span = tracing::info_span!(
            "turn",
            session = %request.session_id,
            model = tracing::field::Empty
        );
        let mut model = String::new();
        let result = tracing::Instrument::instrument(
            self.turn_phases(scope, request, sink, cancel, &mut model),
            span,
        )
        .await;
        super::turn_metrics::turn_done(&model, &result);
        result
    }

    /// [`Self::run_turn`]'s work; `model` is set to the session's model once it is known.
    async fn turn_phases<S: TurnSink>(
        &self,
        scope: &Scope,
        request: TurnRequest,
        sink: &mut S,
        cancel: &CancellationToken,
        model: &mut String,
    ) -> Result<TurnOutcome, EngineError> {
        check_turn_request(&request, &self.limits)?;
        self.check_storage_quota(&scope.tenant).await?;
        let _turn = tokio::select! {
            guard = self.lock_session(&scope.tenant, &request.session_id) => guard?,
            _ = cancel.cancelled() => return Err(EngineError::Cancelled),
        };
        let keyed = if request.idempotency_key.is_empty() {
            None
        } else {
            let fingerprint = receipts::fingerprint(&request);
            if let Some(outcome) = self
                .replay_receipt(scope, &request, &fingerprint, sink)
                .await?
            {
                return Ok(outcome);
            }
            Some((request.idempotency_key.clone(), fingerprint))
        };
        let abandon = request.abandon_tool_calls;
        let mut turn = self.begin_turn(scope, request, sink, cancel).await?;
        model.clone_from(&turn.session.model);
        tracing::Span::current().record("model", model.as_str());
        let finish = if abandon {
            // The pending calls are answered with errors in `begin_turn`; the model is not
            // asked again.
            FinishReason::Cancelled
        } else {
            self.step_turn(scope, &mut turn, sink, cancel).await?
        };
        self.commit_turn(scope, turn, finish, cancel, keyed).await
    }

    /// The first phase of a turn, under the session's lock: the session (created when
    /// missing), its model, the paused turn's results paired with its calls (or, when the
    /// request abandons it, an error result for each), the window's material, the merged
    /// context and the turn's first messages. Emits `Started`.
    async fn begin_turn<S: TurnSink>(
        &self,
        scope: &Scope,
        request: TurnRequest,
        sink: &mut S,
        cancel: &CancellationToken,
    ) -> Result<ActiveTurn, EngineError> {
        let session_id = request.session_id;
        let (mut session, created) = match self.load_session(&scope.tenant, &session_id).await? {
            Some(session) => (session, false),
            None => {
                let mut new = request.create.unwrap_or_default();
                new.session_id = session_id.clone();
                (self.build_session(&scope.tenant, new)?, true)
            }
        };
        let expected_version = (!created).then_some(session.version);
        let (backend, model_info) = self.resolve_model(&session.model).map_err(|e| match e {
            EngineError::UnknownModel { model, known } => EngineError::FailedPrecondition(format!(
                "session '{session_id}' uses model '{model}', which this server does not serve (known: {known}); change it with UpdateSession"
            )),
            other => other,
        })?;

        // Match tool results to the paused turn, if there is one.
        let pending = session.pending.take();
        let resumed = pending.is_some();
        let (turn_id, steps, answered) = match pending {
            Some(pending) => {
                let answered = if request.abandon_tool_calls {
                    abandoned_results(&pending.tool_calls)
                } else {
                    pair_results(&session_id, &pending.tool_calls, &request.tool_results)?
                };
                (pending.turn_id, pending.steps, answered)
            }
            None => {
                if request.abandon_tool_calls {
                    return Err(EngineError::InvalidArgument(format!(
                        "session '{session_id}' is not waiting for tool results, so there is nothing to abandon; send a message instead"
                    )));
                }
                if !request.tool_results.is_empty() {
                    return Err(EngineError::InvalidArgument(format!(
                        "session '{session_id}' is not waiting for tool results; send them only after a turn ends with tool calls"
                    )));
                }
                (generate_turn_id(), 0, Vec::new())
            }
        };
        let WindowSource {
            budget,
            stored_tail,
            mut history,
            totals: mut history_totals,
        } = self
            .load_window(
                &scope.tenant,
                &session,
                resumed.then_some(turn_id.as_str()),
                true,
            )
            .await?;

        if let Some(patch) = &request.context_patch {
            merge_context(&mut session.context, patch);
            check_context("the merged context", &session.context, &self.limits)?;
        }

        emit(
            sink,
            TurnEvent::Started {
                turn_id: turn_id.clone(),
                session_id: session_id.clone(),
                session_created: created,
            },
        )
        .await?;

        let mut state = TurnState {
            counter: TokenCounter::for_model(&session.model),
            next_index: session.message_count,
            turn_id,
            new_messages: Vec::new(),
        };
        for (call, result) in answered {
            let message = self.tool_message(&state, budget, &call, &result);
            state.push(message);
        }
        if !request.message.is_empty() {
            let tokens = state
                .counter
                .count_message(Role::User, &request.message, &[], "");
            let message = state.message(Role::User, request.message, tokens);
            state.push(message);
        }

        let before = session.message_count - stored_tail.len() as u64;
        // An abandoned turn takes no model step, so it needs no summary either.
        if session.window.strategy == WindowStrategy::Summarize && !request.abandon_tool_calls {
            let turn_tokens: u32 = stored_tail
                .iter()
                .chain(&state.new_messages)
                .map(|m| m.token_count)
                .sum();
            self.summarize_if_needed(&mut session, budget, turn_tokens, &mut history, cancel)
                .await?;
            history_totals = Totals::of(&history);
        }
        Ok(ActiveTurn {
            session,
            created,
            expected_version,
            backend,
            model_kind: model_info.kind,
            steps,
            budget,
            stored_tail,
            history,
            history_totals,
            before,
            state,
            response: String::new(),
            usage: Usage::default(),
            client_calls: Vec::new(),
        })
    }

    /// The second phase: model steps, each on a window assembled afresh, with the server-side
    /// tools the model calls run in between, until the model stops, pauses for client-side
    /// tools or reaches the step limit. Returns why it ended.
    async fn step_turn<S: TurnSink>(
        &self,
        scope: &Scope,
        turn: &mut ActiveTurn,
        sink: &mut S,
        cancel: &CancellationToken,
    ) -> Result<FinishReason, EngineError> {
        let mut offered = self.offered_tools(&scope.tenant, &turn.session);
        let budget = turn.budget;
        // Set once the provider said the window was too long: the window is trimmed below
        // what was sent, once.
        let mut trimmed: Option<u32> = None;
        loop {
            let session = &mut turn.session;
            let turn_tokens: u32 = turn
                .stored_tail
                .iter()
                .chain(&turn.state.new_messages)
                .map(|m| m.token_count)
                .sum();
            let step_budget = trimmed.map_or(budget, |cap| budget.capped(cap));
            let Assembly { head, selection } = assemble_window(
                session,
                &turn.state.counter,
                step_budget,
                turn_tokens,
                &turn.history,
                Some(turn.history_totals.tokens),
                turn.before,
            )
            .map_err(|e| blame_tool_results(e, &turn.stored_tail, &turn.state.new_messages))?;
            // The selected history moves into the request and back after the step, rather
            // than being cloned: a full window is hundreds of messages, and cloning and
            // dropping them took about 5 % of a unary turn's CPU. So do the offered tools and
            // the context (JSON schemas and documents, deep to clone).
            let mut messages: Vec<SharedMessage> = Vec::with_capacity(
                selection.taken + turn.stored_tail.len() + turn.state.new_messages.len(),
            );
            messages.extend(turn.history.drain(..selection.taken).rev());
            messages.extend(turn.stored_tail.iter().cloned());
            messages.extend(turn.state.new_messages.iter().cloned());
            let model_request = ModelRequest {
                model: session.model.clone(),
                system_prompt: head.system_prompt.clone(),
                context: std::mem::take(&mut session.context),
                context_text: head.context_text.clone(),
                summary: head.summary.as_ref().map(|s| s.text.clone()),
                messages,
                tools: std::mem::take(&mut offered),
                max_output_tokens: budget.reserved_output_tokens,
            };

            let step = self
                .run_model_step(turn.backend.as_ref(), &model_request, sink, cancel)
                .await;
            session.context = model_request.context;
            offered = model_request.tools;
            let mut shown = model_request.messages;
            shown.truncate(selection.taken);
            shown.reverse();
            turn.history.splice(0..0, shown);
            let step = match step {
                Err(EngineError::Model(ModelError::ContextTooLong { backend, message })) => {
                    if trimmed.is_some() || selection.taken == 0 {
                        return Err(EngineError::InvalidArgument(format!(
                            "model backend '{backend}' says the window is too long for the model even after trimming it to {} tokens ({message}); lower max_context_tokens for this session or shorten the message",
                            selection.total_tokens
                        )));
                    }
                    let cap = selection.total_tokens.saturating_sub(head.tokens()) * 3 / 4;
                    tracing::info!(
                        session = %session.id,
                        backend = %backend,
                        sent_tokens = selection.total_tokens,
                        "the provider says the window is too long; trimming it and retrying once"
                    );
                    trimmed = Some(head.tokens() + cap);
                    // Remember for later turns: this model counts more tokens than estimated.
                    let scale = budget.token_scale * 4.0 / 3.0;
                    session.window.token_scale = scale.min(MAX_TOKEN_SCALE);
                    continue;
                }
                other => other?,
            };
            turn.steps += 1;
            if let Some((reported_input, _)) = step.reported
                && turn.model_kind == "anthropic"
            {
                calibrate(&mut session.window, reported_input, selection.total_tokens);
            }
            turn.response.push_str(&step.text);
            let output_tokens =
                turn.state
                    .counter
                    .count_message(Role::Assistant, &step.text, &step.calls, "");
            let (input, output) = step
                .reported
                .unwrap_or((u64::from(selection.total_tokens), u64::from(output_tokens)));
            super::turn_metrics::model_tokens(
                super::turn_metrics::backend_of(&session.model),
                input,
                output,
            );
            turn.usage.add(Usage {
                input_tokens: input,
                output_tokens: output,
                context_tokens: u64::from(selection.total_tokens),
            });
            if !step.text.is_empty() || !step.calls.is_empty() {
                let mut message = turn
                    .state
                    .message(Role::Assistant, step.text, output_tokens);
                message.tool_calls = step.calls.clone();
                turn.state.push(message);
            }
            if step.calls.is_empty() {
                return Ok(match step.finish {
                    ModelFinish::Length => FinishReason::Length,
                    _ => FinishReason::Stop,
                });
            }

            for call in step.calls {
                if session.tools.iter().any(|t| t.name == call.name) {
                    turn.client_calls.push(call);
                    continue;
                }
                let output = if offered.iter().any(|t| t.name == call.name) {
                    tokio::select! {
                        output = self.run_server_tool(&scope.tenant, &session.id, &call, &mut session.context, &turn.state.new_messages) => output,
                        _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                    }
                } else {
                    // A model may name a tool it was not offered: it does not run.
                    not_offered(&call.name, &offered)
                };
                let result = ToolResult {
                    tool_call_id: call.id.clone(),
                    content: output.content,
                    is_error: output.is_error,
                };
                let message = self.tool_message(&turn.state, budget, &call, &result);
                // What the client is shown is what the model sees (bounded).
                let result = ToolResult {
                    content: message.content.clone(),
                    ..result
                };
                turn.state.push(message);
                emit(sink, TurnEvent::ToolResult { call, result }).await?;
            }
            if !turn.client_calls.is_empty() {
                for call in &turn.client_calls {
                    emit(sink, TurnEvent::ToolCall(call.clone())).await?;
                }
                session.pending = Some(PendingTurn {
                    turn_id: turn.state.turn_id.clone(),
                    tool_calls: turn.client_calls.clone(),
                    steps: turn.steps,
                });
                return Ok(FinishReason::ToolCalls);
            }
            if turn.steps >= self.config.max_tool_steps {
                return Ok(FinishReason::StepLimit);
            }
        }
    }

    /// The last phase: the session with the turn's messages, usage and pause (if any), stored
    /// in one write that the store refuses if the session moved meanwhile. Nothing before
    /// this wrote anything, so a turn that fails or is cancelled up to here leaves no trace.
    async fn commit_turn(
        &self,
        scope: &Scope,
        turn: ActiveTurn,
        finish: FinishReason,
        cancel: &CancellationToken,
        keyed: Option<(String, String)>,
    ) -> Result<TurnOutcome, EngineError> {
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let ActiveTurn {
            mut session,
            created,
            expected_version,
            budget,
            stored_tail,
            history,
            history_totals,
            before,
            state,
            response,
            usage,
            client_calls,
            ..
        } = turn;
        session.message_count += state.new_messages.len() as u64;
        session.usage.add(usage);
        session.touch(crate::domain::session::now());
        session.version += 1;
        let outcome = TurnOutcome {
            session_id: session.id.clone(),
            turn_id: state.turn_id,
            response,
            context: session.context.clone(),
            finish,
            tool_calls: client_calls,
            usage,
            session_created: created,
        };
        let receipt = keyed
            .map(|(key, fingerprint)| receipts::receipt_of(key, fingerprint, &outcome))
            .transpose()?;
        self.store
            .commit(
                &scope.tenant,
                &session,
                expected_version,
                &state.new_messages,
                receipt.as_ref(),
            )
            .await?;
        let written: usize = state.new_messages.iter().map(|m| m.content.len()).sum();
        self.note_stored(&scope.tenant, written as u64);
        if keeps_windows(&session) {
            // The next turn starts from this one's history: all of it, with this turn's
            // messages in front once the turn is finished; as it was while it is paused (its
            // messages are then read again as the paused turn's).
            let (mut history, mut totals) = (history, history_totals);
            let end = if session.pending.is_some() {
                before
            } else {
                let newer = state.new_messages.iter().rev().cloned();
                let newer: Vec<SharedMessage> =
                    newer.chain(stored_tail.into_iter().rev()).collect();
                totals = newer.iter().fold(totals, |t, m| t.plus(m));
                history.splice(0..0, newer);
                session.message_count
            };
            self.kept.keep(
                &scope.tenant,
                &session,
                end,
                (history, totals),
                budget.input_tokens(),
            );
        }
        Ok(outcome)
    }

    /// How a turn the client cancelled ended: nothing of it was stored, so the outcome is
    /// the session as it stands (its context re-read; empty if it is gone meanwhile), with
    /// the finish reason `Cancelled`.
    pub async fn cancelled_outcome(
        &self,
        scope: &Scope,
        session_id: &str,
        turn_id: &str,
    ) -> TurnOutcome {
        let context = self
            .get_session(scope, session_id)
            .await
            .map(|s| s.context)
            .unwrap_or_default();
        TurnOutcome {
            session_id: session_id.to_string(),
            turn_id: turn_id.to_string(),
            response: String::new(),
            context,
            finish: FinishReason::Cancelled,
            tool_calls: Vec::new(),
            usage: Usage::default(),
            session_created: false,
        }
    }

    /// Streams one model step, forwarding text as it comes.
    async fn run_model_step<S: TurnSink>(
        &self,
        backend: &dyn ModelBackend,
        request: &ModelRequest,
        sink: &mut S,
        cancel: &CancellationToken,
    ) -> Result<Step, EngineError> {
        let backend_name = super::turn_metrics::backend_of(&request.model);
        let span =
            tracing::info_span!("model.call", backend = backend_name, model = %request.model);
        let started = std::time::Instant::now();
        let step = tracing::Instrument::instrument(
            self.stream_model_step(backend, request, sink, cancel),
            span,
        )
        .await;
        super::turn_metrics::model_call(backend_name, started.elapsed());
        step
    }

    /// [`Self::run_model_step`]'s work, in the model call's span.
    async fn stream_model_step<S: TurnSink>(
        &self,
        backend: &dyn ModelBackend,
        request: &ModelRequest,
        sink: &mut S,
        cancel: &CancellationToken,
    ) -> Result<Step, EngineError> {
        let mut stream = backend.stream(request)?;
        let mut step = Step {
            text: String::new(),
            calls: Vec::new(),
            finish: ModelFinish::Stop,
            reported: None,
        };
        loop {
            // Dropping `stream` on return is what stops the model at once.
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                next = stream.next() => next,
            };
            let Some(event) = next else { break };
            let event = match event {
                // Only a window refused before any output may be trimmed and sent again;
                // after text went out, a retry would repeat it.
                Err(ModelError::ContextTooLong { backend, message }) if !step.text.is_empty() => {
                    return Err(EngineError::Model(ModelError::Unavailable {
                        backend,
                        message,
                    }));
                }
                other => other?,
            };
            match event {
                ModelEvent::Delta(text) => {
                    step.text.push_str(&text);
                    emit(sink, TurnEvent::Delta(text)).await?;
                }
                ModelEvent::ToolCall(mut call) => {
                    if call.id.is_empty() || step.calls.iter().any(|c| c.id == call.id) {
                        call.id = generate_tool_call_id();
                    }
                    step.calls.push(call);
                }
                ModelEvent::Usage {
                    input_tokens,
                    output_tokens,
                } => step.reported = Some((input_tokens, output_tokens)),
                ModelEvent::Finish(finish) => step.finish = finish,
            }
        }
        Ok(step)
    }

    /// A tool result as the message the model sees, bounded (see `engine::tool_output`).
    fn tool_message(
        &self,
        turn: &TurnState,
        budget: WindowBudget,
        call: &ToolCall,
        result: &ToolResult,
    ) -> Message {
        let max_tokens = match self.limits.max_tool_result_tokens {
            0 => (budget.max_context_tokens / 4).max(1),
            n => n,
        };
        let content = bound_tool_output(
            &result.content,
            self.limits.max_tool_result_bytes,
            max_tokens,
            &turn.counter,
        )
        .into_owned();
        let tokens = turn
            .counter
            .count_message(Role::Tool, &content, &[], &call.name);
        let mut message = turn.message(Role::Tool, content, tokens);
        message.tool_call_id = call.id.clone();
        message.tool_name = call.name.clone();
        message.is_error = result.is_error;
        message
    }
}

/// The result of a call to a tool the session does not offer (the model made it up, or it
/// is a server-side tool outside the session's `server_tools`).
fn not_offered(name: &str, offered: &[crate::domain::session::SharedTool]) -> ToolOutput {
    let names: Vec<&str> = offered.iter().map(|t| t.name.as_str()).collect();
    let names = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    ToolOutput::error(format!(
        "tool '{name}' is not offered to this session, so it did not run; offered tools: {names}"
    ))
}

/// A window that does not fit because of the turn's tool results says so: the user's message
/// is not what to shorten then.
fn blame_tool_results(
    error: EngineError,
    stored_tail: &[SharedMessage],
    new_messages: &[SharedMessage],
) -> EngineError {
    let EngineError::MessageTooLarge { over, .. } = error else {
        return error;
    };
    let tool_tokens: u32 = stored_tail
        .iter()
        .chain(new_messages)
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.token_count)
        .sum();
    if tool_tokens == 0 {
        return error;
    }
    EngineError::ToolResultsTooLarge { tool_tokens, over }
}

/// Fewest counted input tokens a step needs before its reported usage corrects the estimate:
/// below that, the provider's fixed overhead (tool definitions, its own framing) dominates.
pub const MIN_CALIBRATION_TOKENS: u32 = 1024;
/// Bounds of the token-estimate correction.
const MIN_TOKEN_SCALE: f64 = 0.5;
const MAX_TOKEN_SCALE: f64 = 4.0;

/// Corrects a session's token estimate from the input tokens a provider reported for a window
/// of `counted` tokens: the first measure is taken as is, later ones averaged in.
fn calibrate(window: &mut WindowState, reported: u64, counted: u32) {
    if counted < MIN_CALIBRATION_TOKENS || reported == 0 {
        return;
    }
    let measured = (reported as f64 / f64::from(counted)).clamp(MIN_TOKEN_SCALE, MAX_TOKEN_SCALE);
    window.token_scale = if window.token_scale > 0.0 {
        (window.token_scale + measured) / 2.0
    } else {
        measured
    };
}

/// The messages a turn adds, numbered from the session's message count.
struct TurnState {
    /// The tokenizer of the session's model.
    counter: TokenCounter,
    next_index: u64,
    turn_id: String,
    new_messages: Vec<SharedMessage>,
}

impl TurnState {
    fn message(&self, role: Role, content: String, token_count: u32) -> Message {
        Message {
            index: self.next_index + self.new_messages.len() as u64,
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: String::new(),
            tool_name: String::new(),
            is_error: false,
            create_time: crate::domain::session::now(),
            token_count,
            turn_id: self.turn_id.clone(),
        }
    }

    fn push(&mut self, message: Message) {
        self.new_messages.push(SharedMessage::new(message));
    }
}

pub(super) async fn emit<S: TurnSink>(sink: &mut S, event: TurnEvent) -> Result<(), EngineError> {
    sink.emit(event)
        .await
        .map_err(|SinkClosed| EngineError::Cancelled)
}

/// An error result for each pending call of an abandoned turn, in call order.
fn abandoned_results(pending: &[ToolCall]) -> Vec<(ToolCall, ToolResult)> {
    pending
        .iter()
        .map(|call| {
            let result = ToolResult {
                tool_call_id: call.id.clone(),
                content: ABANDONED_RESULT.into(),
                is_error: true,
            };
            (call.clone(), result)
        })
        .collect()
}

/// Pairs each pending call with its result, in call order; refuses missing, unknown and
/// repeated ids.
fn pair_results(
    session_id: &str,
    pending: &[ToolCall],
    results: &[ToolResult],
) -> Result<Vec<(ToolCall, ToolResult)>, EngineError> {
    let mut seen = std::collections::HashSet::new();
    for result in results {
        if !pending.iter().any(|c| c.id == result.tool_call_id) {
            let ids: Vec<_> = pending.iter().map(|c| c.id.as_str()).collect();
            return Err(EngineError::InvalidArgument(format!(
                "tool result for unknown tool_call_id {:?}; session '{session_id}' waits for: {}",
                result.tool_call_id,
                ids.join(", ")
            )));
        }
        if !seen.insert(result.tool_call_id.as_str()) {
            return Err(EngineError::InvalidArgument(format!(
                "tool_call_id {:?} has more than one result",
                result.tool_call_id
            )));
        }
    }
    let missing: Vec<_> = pending
        .iter()
        .filter(|c| !seen.contains(c.id.as_str()))
        .map(|c| c.id.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(EngineError::MissingToolResults {
            session_id: session_id.to_string(),
            missing: missing.join(", "),
        });
    }
    Ok(pending
        .iter()
        .filter_map(|call| {
            results
                .iter()
                .find(|r| r.tool_call_id == call.id)
                .map(|r| (call.clone(), r.clone()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::config::EngineConfig;
    use crate::domain::TenantId;
    use crate::domain::session::ToolSpec;
    use crate::model::{ModelError, ModelInfo, ModelRegistry, ModelStream};
    use crate::store::SessionStore;
    use crate::store::memory::MemoryStore;
    use crate::tools::ToolRegistry;
    use crate::tools::builtin::BuiltinTools;

    /// What the scripted model does on every step.
    #[derive(Clone, Copy)]
    enum Script {
        /// Always asks for `context_set` (a server-side tool), never finishes.
        LoopOnServerTool,
        /// Asks for one server-side and one client-side tool at once, then replies.
        MixedCalls,
        /// Sends a delta, then never anything again (until dropped).
        Hang,
        /// Sends a delta, then fails.
        FailMidStream,
    }

    struct Scripted {
        script: Script,
        dropped: Arc<AtomicBool>,
        calls: Arc<AtomicUsize>,
    }

    /// Sets a flag when the model's stream is dropped.
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn call(name: &str, arguments: serde_json::Value) -> ModelEvent {
        ModelEvent::ToolCall(ToolCall {
            id: String::new(),
            name: name.into(),
            arguments: arguments.as_object().cloned().unwrap_or_default(),
        })
    }

    impl ModelBackend for Scripted {
        fn models(&self) -> Vec<ModelInfo> {
            vec![ModelInfo {
                name: "scripted".into(),
                context_window: 4096,
                ..ModelInfo::default()
            }]
        }

        fn stream(&self, request: &ModelRequest) -> Result<ModelStream, ModelError> {
            let step = self.calls.fetch_add(1, Ordering::SeqCst);
            let flag = DropFlag(self.dropped.clone());
            let answered = request
                .messages
                .last()
                .is_some_and(|m| m.role == Role::Tool);
            let events: Vec<Result<ModelEvent, ModelError>> = match self.script {
                Script::LoopOnServerTool => vec![
                    Ok(call("context_set", json!({"patch": {"step": step}}))),
                    Ok(ModelEvent::Finish(ModelFinish::ToolCalls)),
                ],
                Script::MixedCalls if !answered => vec![
                    Ok(call("context_get", json!({}))),
                    Ok(call("client_tool", json!({"x": 1}))),
                    Ok(ModelEvent::Finish(ModelFinish::ToolCalls)),
                ],
                Script::MixedCalls => vec![
                    Ok(ModelEvent::Delta("done".into())),
                    Ok(ModelEvent::Finish(ModelFinish::Stop)),
                ],
                Script::Hang => vec![Ok(ModelEvent::Delta("partial".into()))],
                Script::FailMidStream => vec![
                    Ok(ModelEvent::Delta("partial".into())),
                    Err(ModelError::Unavailable {
                        backend: "scripted".into(),
                        message: "connection reset".into(),
                    }),
                ],
            };
            let hang = matches!(self.script, Script::Hang);
            let stream = futures_util::stream::iter(events).chain(futures_util::stream::unfold(
                (flag, hang),
                |(flag, hang)| async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    drop(flag);
                    None
                },
            ));
            Ok(Box::pin(stream))
        }
    }

    struct Fixture {
        engine: Engine,
        store: Arc<MemoryStore>,
        dropped: Arc<AtomicBool>,
        calls: Arc<AtomicUsize>,
    }

    impl Fixture {
        /// Session `s1` as the store holds it.
        async fn stored_session(&self) -> Session {
            self.store
                .get_session(&TenantId::default(), "s1")
                .await
                .unwrap()
                .unwrap()
        }
    }

    fn fixture(script: Script) -> Fixture {
        let dropped = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut models = ModelRegistry::new();
        models.register(Arc::new(Scripted {
            script,
            dropped: dropped.clone(),
            calls: calls.clone(),
        }));
        let mut tools = ToolRegistry::new();
        tools.register(Arc::new(BuiltinTools::new(32, 1 << 20)));
        let store = Arc::new(MemoryStore::new());
        let config = EngineConfig {
            default_model: "scripted".into(),
            max_tool_steps: 3,
            ..EngineConfig::default()
        };
        let engine = Engine::new(store.clone(), models, tools, config, Limits::default());
        Fixture {
            engine,
            store,
            dropped,
            calls,
        }
    }

    fn request(message: &str) -> TurnRequest {
        TurnRequest {
            session_id: "s1".into(),
            message: message.into(),
            create: Some(NewSession {
                tools: vec![ToolSpec {
                    name: "client_tool".into(),
                    description: String::new(),
                    input_schema: Context::new(),
                    annotations: Context::new(),
                }],
                ..NewSession::default()
            }),
            ..TurnRequest::default()
        }
    }

    #[tokio::test]
    async fn step_limit_ends_a_tool_loop_and_keeps_what_happened() {
        let f = fixture(Script::LoopOnServerTool);
        let outcome = f
            .engine
            .run_turn(
                &Scope::default(),
                request("go"),
                &mut NoSink,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(outcome.finish, FinishReason::StepLimit);
        assert_eq!(f.calls.load(Ordering::SeqCst), 3);
        assert_eq!(outcome.context["step"], 2);
        // user + 3 × (assistant call + tool result)
        let session = f.stored_session().await;
        assert_eq!(session.message_count, 7);
        assert!(session.pending.is_none());
    }

    #[tokio::test]
    async fn mixed_calls_run_server_tools_and_pause_for_client_tools() {
        let f = fixture(Script::MixedCalls);
        let cancel = CancellationToken::new();
        let outcome = f
            .engine
            .run_turn(&Scope::default(), request("go"), &mut NoSink, &cancel)
            .await
            .unwrap();
        assert_eq!(outcome.finish, FinishReason::ToolCalls);
        assert_eq!(outcome.tool_calls.len(), 1);
        assert_eq!(outcome.tool_calls[0].name, "client_tool");
        let session = f.stored_session().await;
        // user, assistant(2 calls), tool(context_get)
        assert_eq!(session.message_count, 3);
        let pending = session.pending.clone().unwrap();
        assert_eq!(pending.turn_id, outcome.turn_id);

        let resumed = f
            .engine
            .run_turn(
                &Scope::default(),
                TurnRequest {
                    session_id: "s1".into(),
                    tool_results: vec![ToolResult {
                        tool_call_id: outcome.tool_calls[0].id.clone(),
                        content: "42".into(),
                        is_error: false,
                    }],
                    ..TurnRequest::default()
                },
                &mut NoSink,
                &cancel,
            )
            .await
            .unwrap();
        assert_eq!(resumed.finish, FinishReason::Stop);
        assert_eq!(resumed.turn_id, outcome.turn_id);
        assert_eq!(resumed.response, "done");
        let messages = f
            .store
            .list_messages(&TenantId::default(), "s1", 0, 100)
            .await
            .unwrap();
        let roles: Vec<_> = messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool,
                Role::Assistant
            ]
        );
        assert!(messages.iter().all(|m| m.turn_id == outcome.turn_id));
    }

    #[tokio::test]
    async fn an_abandon_answers_only_the_pending_calls_and_takes_no_model_step() {
        let f = fixture(Script::MixedCalls);
        let cancel = CancellationToken::new();
        let paused = f
            .engine
            .run_turn(&Scope::default(), request("go"), &mut NoSink, &cancel)
            .await
            .unwrap();
        assert_eq!(paused.finish, FinishReason::ToolCalls);
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        let abandon = TurnRequest {
            session_id: "s1".into(),
            abandon_tool_calls: true,
            ..TurnRequest::default()
        };
        let done = f
            .engine
            .run_turn(&Scope::default(), abandon.clone(), &mut NoSink, &cancel)
            .await
            .unwrap();
        assert_eq!(done.finish, FinishReason::Cancelled);
        assert_eq!(done.turn_id, paused.turn_id);
        assert_eq!(done.response, "");
        assert_eq!(f.calls.load(Ordering::SeqCst), 1, "no model step");
        let session = f.stored_session().await;
        assert!(session.pending.is_none());
        let messages = f
            .store
            .list_messages(&TenantId::default(), "s1", 0, 100)
            .await
            .unwrap();
        // user, assistant(2 calls), tool(context_get, run by the server), tool(abandoned)
        assert_eq!(messages.len(), 4);
        let abandoned = &messages[3];
        assert_eq!(abandoned.tool_call_id, paused.tool_calls[0].id);
        assert_eq!(abandoned.content, ABANDONED_RESULT);
        assert!(abandoned.is_error);
        assert!(
            !messages[2].is_error,
            "the server-side result stays as it ran"
        );
        // Nothing is pending any more.
        let again = f
            .engine
            .run_turn(&Scope::default(), abandon, &mut NoSink, &cancel)
            .await;
        assert!(matches!(again, Err(EngineError::InvalidArgument(_))));
    }

    #[tokio::test]
    async fn cancel_drops_the_model_stream_at_once_and_stores_nothing() {
        let f = fixture(Script::Hang);
        let cancel = CancellationToken::new();
        let mut sink = NoSink;
        let scope = Scope::default();
        let turn = f.engine.run_turn(&scope, request("go"), &mut sink, &cancel);
        tokio::pin!(turn);
        // Drive the turn until the model hangs after its first delta.
        tokio::select! {
            _ = &mut turn => panic!("the hanging model cannot finish"),
            _ = tokio::task::yield_now() => {}
        }
        while f.calls.load(Ordering::SeqCst) == 0 {
            tokio::select! {
                _ = &mut turn => panic!("the hanging model cannot finish"),
                _ = tokio::task::yield_now() => {}
            }
        }
        assert!(!f.dropped.load(Ordering::SeqCst));
        cancel.cancel();
        let result = turn.await;
        assert!(matches!(result, Err(EngineError::Cancelled)));
        assert!(f.dropped.load(Ordering::SeqCst), "model stream dropped");
        assert!(
            f.store
                .get_session(&TenantId::default(), "s1")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn calibration_takes_the_first_measure_then_averages() {
        let mut window = WindowState::default();
        calibrate(&mut window, 500, 400);
        assert_eq!(window.token_scale, 0.0, "small windows do not calibrate");
        calibrate(&mut window, 2400, 2000);
        assert!((window.token_scale - 1.2).abs() < 1e-9);
        calibrate(&mut window, 2800, 2000);
        assert!((window.token_scale - 1.3).abs() < 1e-9);
        calibrate(&mut window, 100_000, 2000);
        assert!(window.token_scale <= (1.3 + MAX_TOKEN_SCALE) / 2.0 + 1e-9);
    }

    #[tokio::test]
    async fn model_failure_mid_stream_stores_nothing() {
        let f = fixture(Script::FailMidStream);
        f.engine
            .create_session(
                &Scope::default(),
                NewSession {
                    session_id: "s1".into(),
                    ..NewSession::default()
                },
            )
            .await
            .unwrap();
        let result = f
            .engine
            .run_turn(
                &Scope::default(),
                request("go"),
                &mut NoSink,
                &CancellationToken::new(),
            )
            .await;
        assert!(matches!(
            result,
            Err(EngineError::Model(ModelError::Unavailable { .. }))
        ));
        let session = f.stored_session().await;
        assert_eq!(session.message_count, 0);
        assert_eq!(session.version, 1);
    }
}
