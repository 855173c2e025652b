//! `PreviewContext`: exactly what the model would see if a message were sent now, entry by
//! entry, built from the same window assembly as a turn ([`super::window`]) and storing
//! nothing — except, when asked to, the summary the turn would write first
//! ([`super::summary`]), which is then kept for that turn.

use tokio_util::sync::CancellationToken;

use super::Engine;
use super::error::EngineError;
use super::summary::FoldPlan;
use super::validate::{check_context, check_message};
use super::window::{Assembly, WindowBudget, WindowSource, assemble_window};
use crate::domain::Scope;
use crate::domain::patch::merge_context;
use crate::domain::session::{self, Context, ContextSummary, Role, Session, SharedTool};
use crate::domain::tokens::TokenCounter;

/// What a window holds at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The system prompt.
    SystemPrompt,
    /// The rendered context.
    Context,
    /// A stored message.
    History,
    /// The new user message.
    UserMessage,
    /// The running summary of older turns (`summarize` strategy).
    Summary,
    /// The summary the turn would write before its model step, not written yet.
    PendingSummary,
}

/// One entry of a previewed window.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewEntry {
    /// What it holds.
    pub kind: EntryKind,
    /// The role the model sees (`None` for the system prompt).
    pub role: Option<Role>,
    /// Its text.
    pub content: String,
    /// Its tokens.
    pub token_count: u32,
    /// The stored message's index, for history.
    pub message_index: Option<u64>,
    /// Tool calls of an assistant message.
    pub tool_calls: Vec<session::ToolCall>,
    /// The call a tool message answers.
    pub tool_call_id: String,
    /// For the summary: the stored messages it stands for (`first..end`).
    pub summarized: Option<(u64, u64)>,
}

/// Exactly what the model would see.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// Entries in order.
    pub entries: Vec<PreviewEntry>,
    /// Sum of the entries' tokens.
    pub total_tokens: u32,
    /// History messages left out.
    pub omitted_messages: u64,
    /// The budget used.
    pub budget: WindowBudget,
    /// The session's model.
    pub model: String,
    /// Tools the model would be offered.
    pub tools: Vec<SharedTool>,
    /// Whether a summary was written and stored for the next turn (`summarize = true`).
    pub summary_kept: bool,
}

impl Engine {
    /// What the model would see if `message` (with `context_patch`) were sent now. Where
    /// the turn would first fold older turns into the summary, the window shows a pending
    /// summary in its place — or, with `summarize`, the summary written now, which is stored
    /// for the next turn unless the session changed meanwhile.
    pub async fn preview_context(
        &self,
        scope: &Scope,
        session_id: &str,
        message: &str,
        context_patch: Option<&Context>,
        summarize: bool,
    ) -> Result<Preview, EngineError> {
        check_message(message, &self.limits)?;
        if let Some(patch) = context_patch {
            check_context("context", patch, &self.limits)?;
        }
        let mut session = self.get_session(scope, session_id).await?;
        if let Some(patch) = context_patch {
            merge_context(&mut session.context, patch);
        }
        let pending_turn = session.pending.as_ref().map(|p| p.turn_id.as_str());
        let WindowSource {
            budget,
            stored_tail,
            mut history,
            ..
        } = self
            .load_window(&scope.tenant, &session, pending_turn, false)
            .await?;
        let counter = TokenCounter::for_model(&session.model);
        let user_tokens = if message.is_empty() {
            0
        } else {
            counter.count_message(Role::User, message, &[], "")
        };
        let tail_tokens: u32 = stored_tail.iter().map(|m| m.token_count).sum::<u32>() + user_tokens;
        let before = session.message_count - stored_tail.len() as u64;
        // The turn's own first step, as `begin_turn` takes it.
        let mut pending_summary = false;
        let mut summary_kept = false;
        if session.window.strategy == session::WindowStrategy::Summarize
            && let Some(plan) = self.plan_fold(&session, budget, tail_tokens, &history)
        {
            if summarize {
                let version = session.version;
                self.fold_into_summary(
                    &mut session,
                    &plan,
                    &mut history,
                    &CancellationToken::new(),
                )
                .await?;
                summary_kept = self
                    .keep_summary(scope, session_id, version, &session.window.summary)
                    .await?;
            } else {
                history.truncate(plan.kept);
                session.window.summary = Some(pending(&plan));
                pending_summary = true;
            }
        }
        let Assembly { head, selection } = assemble_window(
            &session,
            &counter,
            budget,
            tail_tokens,
            &history,
            None,
            before,
        )?;

        let mut entries = Vec::new();
        if head.system_tokens > 0 {
            entries.push(PreviewEntry {
                kind: EntryKind::SystemPrompt,
                role: None,
                content: head.system_prompt.clone(),
                token_count: head.system_tokens,
                message_index: None,
                tool_calls: vec![],
                tool_call_id: String::new(),
                summarized: None,
            });
        }
        if head.context_tokens > 0 {
            entries.push(PreviewEntry {
                kind: EntryKind::Context,
                role: None,
                content: head.context_text.clone(),
                token_count: head.context_tokens,
                message_index: None,
                tool_calls: vec![],
                tool_call_id: String::new(),
                summarized: None,
            });
        }
        if let Some(summary) = &head.summary {
            entries.push(PreviewEntry {
                kind: if pending_summary {
                    EntryKind::PendingSummary
                } else {
                    EntryKind::Summary
                },
                role: None,
                content: summary.text.clone(),
                token_count: summary.token_count,
                message_index: None,
                tool_calls: vec![],
                tool_call_id: String::new(),
                summarized: Some((summary.first_index, summary.end_index)),
            });
        }
        let shown = history[..selection.taken]
            .iter()
            .rev()
            .chain(stored_tail.iter());
        entries.extend(shown.map(|m| PreviewEntry {
            kind: EntryKind::History,
            role: Some(m.role),
            content: m.content.clone(),
            token_count: m.token_count,
            message_index: Some(m.index),
            tool_calls: m.tool_calls.clone(),
            tool_call_id: m.tool_call_id.clone(),
            summarized: None,
        }));
        if !message.is_empty() {
            entries.push(PreviewEntry {
                kind: EntryKind::UserMessage,
                role: Some(Role::User),
                content: message.to_string(),
                token_count: user_tokens,
                message_index: None,
                tool_calls: vec![],
                tool_call_id: String::new(),
                summarized: None,
            });
        }
        Ok(Preview {
            entries,
            total_tokens: selection.total_tokens,
            omitted_messages: before - selection.taken as u64,
            budget,
            model: session.model.clone(),
            tools: self.offered_tools(&scope.tenant, &session),
            summary_kept,
        })
    }

    /// Stores `summary` on the session if it is still at `version`; whether it was. Taken
    /// under the session's turn lock, so a turn running meanwhile is never refused for it:
    /// that turn moves the version on, and the summary is then left out (it may no longer
    /// be the one the next turn needs).
    async fn keep_summary(
        &self,
        scope: &Scope,
        session_id: &str,
        version: u64,
        summary: &Option<ContextSummary>,
    ) -> Result<bool, EngineError> {
        let Some(summary) = summary else {
            return Ok(false);
        };
        let _turn = self.lock_session(&scope.tenant, session_id).await?;
        let mut session: Session = self.get_session(scope, session_id).await?;
        if session.version != version {
            return Ok(false);
        }
        session.window.summary = Some(summary.clone());
        self.save_change(&scope.tenant, &mut session, version)
            .await?;
        Ok(true)
    }
}

/// The stand-in for a summary not written yet: its range, and the most tokens it may take.
fn pending(plan: &FoldPlan) -> ContextSummary {
    ContextSummary {
        text: format!(
            "pending: before its model step, the turn folds the {} oldest messages shown (indexes {}..{}) into the summary with model '{}'; the summary takes at most {} tokens",
            plan.folded, plan.first_index, plan.end_index, plan.summarizer, plan.cap
        ),
        first_index: plan.first_index,
        end_index: plan.end_index,
        token_count: plan.cap,
    }
}
