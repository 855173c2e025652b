//! The `summarize` window strategy: when a turn's window would pass the session's threshold
//! (default 90 % of the input budget), the oldest turns still shown are folded into a running
//! summary written by the summarizer model. The summary is pinned after the context and
//! records the range of messages it stands for; the messages themselves stay in storage
//! (`ListMessages` and `history_search` still find them). The new summary is stored with the
//! turn, so a failed turn leaves the old one.

use std::time::SystemTime;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::window::{PinnedHead, WindowBudget, take_units};
use super::{Engine, EngineError};
use crate::domain::session::{ContextSummary, Message, Role, Session, SharedMessage};
use crate::domain::tokens::{MESSAGE_OVERHEAD_TOKENS, TokenCounter};
use crate::model::{ModelEvent, ModelRequest};

/// What the summarizer is told to do.
pub const SUMMARIZER_INSTRUCTIONS: &str = "You maintain the running summary of a conversation between a user and an assistant. \
Rewrite the summary so that it also covers the new messages. Keep every fact, name, number, decision, \
preference and open question the assistant needs to continue the conversation; drop pleasantries. \
Write plain prose, in the language of the conversation. Reply with the summary only.";

/// Fewest tokens a summary may use.
const MIN_SUMMARY_TOKENS: u32 = 32;

/// What a summarize step would fold, decided from the window alone (no model call): the
/// turn writes it ([`Engine::fold_into_summary`]), and `PreviewContext` shows it as pending.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FoldPlan {
    /// How many of the shown history's newest messages stay shown.
    pub(super) kept: usize,
    /// How many older messages are folded.
    pub(super) folded: usize,
    /// `Message.index` of the first message the new summary stands for (the old summary's
    /// first, when there is one).
    pub(super) first_index: u64,
    /// `Message.index` after the last message folded.
    pub(super) end_index: u64,
    /// The most tokens the summary may take.
    pub(super) cap: u32,
    /// The model that writes it.
    pub(super) summarizer: String,
}

impl Engine {
    /// Whether the window would pass the session's threshold, and if so which of the oldest
    /// shown turns would be folded. `history` is the shown history, newest first; `turn_tokens`
    /// what the turn adds after it.
    pub(super) fn plan_fold(
        &self,
        session: &Session,
        budget: WindowBudget,
        turn_tokens: u32,
        history: &[SharedMessage],
    ) -> Option<FoldPlan> {
        let counter = TokenCounter::for_model(&session.model);
        let previous = session.window.active_summary();
        let head = PinnedHead::new(&counter, &session.system_prompt, &session.context)
            .with_summary(previous);
        let limit =
            u64::from(budget.input_tokens()) * u64::from(session.window.threshold_percent()) / 100;
        let shown: u64 = history.iter().map(|m| u64::from(m.token_count)).sum();
        let need = u64::from(head.tokens()) + shown + u64::from(turn_tokens);
        if need <= limit {
            return None;
        }
        // Keep the newest turns within half of what is left, so the next folds are rare.
        let pinned = u64::from(head.tokens() + turn_tokens);
        let keep = (limit.saturating_sub(pinned) / 2) as u32;
        let (mut kept, _) = take_units(history, keep);
        // Fold whole turns: the oldest kept message must not share a turn with a folded one.
        while kept > 0 && kept < history.len() && history[kept - 1].turn_id == history[kept].turn_id
        {
            kept -= 1;
        }
        // Newest first: the oldest folded message is the last one.
        let (Some(last), Some(first)) = (history.get(kept), history.last()) else {
            return None;
        };
        let summarizer = [
            session.window.summarizer_model.as_str(),
            self.config.summarizer_model.as_str(),
            session.model.as_str(),
        ]
        .into_iter()
        .find(|m| !m.is_empty())
        .unwrap_or_default()
        .to_string();
        let cap = ((limit / 4) as u32)
            .max(MIN_SUMMARY_TOKENS)
            .min(budget.reserved_output_tokens.max(MIN_SUMMARY_TOKENS));
        Some(FoldPlan {
            kept,
            folded: history.len() - kept,
            first_index: previous.map_or(first.index, |s| s.first_index.min(first.index)),
            end_index: last.index + 1,
            cap,
            summarizer,
        })
    }

    /// Folds the oldest shown turns into the summary when the window would pass the
    /// threshold. `history` is the shown history, newest first; what is folded is removed
    /// from it.
    pub(super) async fn summarize_if_needed(
        &self,
        session: &mut Session,
        budget: WindowBudget,
        turn_tokens: u32,
        history: &mut Vec<SharedMessage>,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        match self.plan_fold(session, budget, turn_tokens, history) {
            Some(plan) => {
                self.fold_into_summary(session, &plan, history, cancel)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Writes the summary `plan` describes with the summarizer model and sets it on
    /// `session` (in memory: the caller stores it); the folded messages are removed from
    /// `history`.
    pub(super) async fn fold_into_summary(
        &self,
        session: &mut Session,
        plan: &FoldPlan,
        history: &mut Vec<SharedMessage>,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let counter = TokenCounter::for_model(&session.model);
        let summarizer = plan.summarizer.clone();
        let fold: Vec<SharedMessage> = history[plan.kept..].iter().rev().cloned().collect();
        let (backend, _) = self.resolve_model(&summarizer).map_err(|_| {
            EngineError::FailedPrecondition(format!(
                "session '{}' summarizes with model '{summarizer}', which this server does not serve; change summarizer_model with UpdateSession",
                session.id
            ))
        })?;
        let cap = plan.cap;
        let previous = session.window.active_summary();
        let prompt = summarizer_prompt(previous.map(|s| s.text.as_str()), &fold);
        let request = ModelRequest {
            model: summarizer.clone(),
            system_prompt: SUMMARIZER_INSTRUCTIONS.to_string(),
            context: Default::default(),
            context_text: String::new(),
            summary: None,
            messages: vec![SharedMessage::new(Message {
                index: 0,
                role: Role::User,
                token_count: counter.count_message(Role::User, &prompt, &[], ""),
                content: prompt,
                tool_calls: Vec::new(),
                tool_call_id: String::new(),
                tool_name: String::new(),
                is_error: false,
                create_time: SystemTime::now(),
                turn_id: String::new(),
            })],
            tools: Vec::new(),
            max_output_tokens: cap,
        };

        let mut stream = backend.stream(&request)?;
        let mut text = String::new();
        loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                next = stream.next() => next,
            };
            match next {
                None => break,
                Some(Ok(ModelEvent::Delta(delta))) => text.push_str(&delta),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
            }
        }
        let text = fit_tokens(&counter, text.trim(), cap);
        if text.is_empty() {
            tracing::warn!(session = %session.id, model = %summarizer, "the summarizer returned nothing; older turns are left out instead");
            return Ok(());
        }
        let token_count = MESSAGE_OVERHEAD_TOKENS + counter.count_text(&text);
        tracing::info!(
            session = %session.id,
            model = %summarizer,
            folded = plan.folded,
            first_index = plan.first_index,
            end_index = plan.end_index,
            summary_tokens = token_count,
            "folded older turns into the summary"
        );
        session.window.summary = Some(ContextSummary {
            text,
            first_index: plan.first_index,
            end_index: plan.end_index,
            token_count,
        });
        history.truncate(plan.kept);
        Ok(())
    }
}

/// `text` cut (at a character boundary) to at most `cap` tokens.
fn fit_tokens(counter: &TokenCounter, text: &str, cap: u32) -> String {
    let mut text = text.to_string();
    loop {
        let count = counter.count_text(&text);
        if count <= cap {
            return text;
        }
        let mut end = (text.len() as u64 * u64::from(cap) / u64::from(count)) as usize;
        end = end.min(text.len().saturating_sub(1));
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The summarizer's input: the summary so far and the messages to fold in.
pub fn summarizer_prompt(previous: Option<&str>, fold: &[SharedMessage]) -> String {
    let mut prompt = String::new();
    if let Some(previous) = previous {
        prompt.push_str("Summary so far:\n");
        prompt.push_str(previous);
        prompt.push_str("\n\n");
    }
    prompt.push_str("New messages:\n");
    for message in fold {
        match message.role {
            Role::User => prompt.push_str(&format!("user: {}\n", message.content)),
            Role::Assistant => {
                prompt.push_str("assistant:");
                if !message.content.is_empty() {
                    prompt.push(' ');
                    prompt.push_str(&message.content);
                }
                for call in &message.tool_calls {
                    prompt.push_str(&format!(
                        " [called {}({})]",
                        call.name,
                        serde_json::Value::Object(call.arguments.clone())
                    ));
                }
                prompt.push('\n');
            }
            Role::Tool => prompt.push_str(&format!(
                "tool {}{}: {}\n",
                message.tool_name,
                if message.is_error { " (failed)" } else { "" },
                message.content
            )),
        }
    }
    prompt.push_str("\nWrite the updated summary.");
    prompt
}
