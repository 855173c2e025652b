//! Sessions as a catalogue for the MCP doors: the newest sessions of a tenant, and one
//! session with its newest history, in single calls.
//!
//! The store lists sessions in id order only (which pages well and keeps every key
//! (tenant, id)); MCP's resource list has no paging in the gRPC binding, so "the newest N"
//! is chosen here by walking the tenant's sessions page by page and keeping only N. The
//! cost grows with the tenant's session count, which is why the doors bound N
//! (`mcp.max_listed_resources`) and nothing else lists this way.

use super::Engine;
use super::error::EngineError;
use crate::domain::Scope;
use crate::domain::session::{self, Session, SharedMessage};

/// Sessions read from the store per page while looking for the newest.
const SCAN_PAGE: usize = 500;

impl Engine {
    /// The `limit` most recently changed sessions of the caller's tenant, newest first
    /// (expired ones left out).
    pub async fn newest_sessions(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<Session>, EngineError> {
        let mut newest: Vec<Session> = Vec::new();
        if limit == 0 {
            return Ok(newest);
        }
        let now = session::now();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_sessions(&scope.tenant, after.as_deref(), SCAN_PAGE)
                .await?;
            let full = page.len() == SCAN_PAGE;
            after = page.last().map(|s| s.id.clone());
            newest.extend(page.into_iter().filter(|s| !s.is_expired(now)));
            // Newest first; the id breaks ties so the order is stable across calls.
            newest.sort_by(|a, b| b.update_time.cmp(&a.update_time).then(a.id.cmp(&b.id)));
            newest.truncate(limit);
            if !full {
                return Ok(newest);
            }
        }
    }

    /// A session with up to `limit` of its newest stored messages, newest first.
    pub async fn session_with_newest_history(
        &self,
        scope: &Scope,
        session_id: &str,
        limit: usize,
    ) -> Result<(Session, Vec<SharedMessage>), EngineError> {
        let session = self.get_session(scope, session_id).await?;
        let messages = if limit == 0 {
            Vec::new()
        } else {
            self.store
                .list_messages_before(&scope.tenant, session_id, session.message_count, limit)
                .await?
        };
        Ok((session, messages))
    }
}
