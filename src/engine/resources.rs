//! Sessions as a catalogue for the MCP doors: the newest sessions of a tenant, and one
//! session with its newest history, in single calls.
//!
//! "The newest N" is one store call ([`crate::store::SessionStore::newest_sessions`]): one
//! query on an index over (tenant, update time) in SQLite and PostgreSQL. The doors bound N
//! (`mcp.max_listed_resources`), as MCP's resource list has no paging in the gRPC binding.

use super::Engine;
use super::error::EngineError;
use crate::domain::Scope;
use crate::domain::session::{self, Session, SharedMessage};

impl Engine {
    /// The `limit` most recently changed sessions of the caller's tenant, newest first
    /// (expired ones left out).
    pub async fn newest_sessions(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<Session>, EngineError> {
        Ok(self
            .store
            .newest_sessions(&scope.tenant, limit, session::now())
            .await?)
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
