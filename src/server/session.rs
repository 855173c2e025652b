//! `contextd.v1.SessionService`: wire ↔ engine for session management.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::logging::record_session;
use crate::api::convert::{
    context_from_wire, decode_page_token, encode_page_token, expire_time_from_wire,
    labels_from_wire, message_to_wire, patch_from_wire, preview_to_wire, session_to_wire,
    tools_from_wire, window_from_wire,
};
use crate::api::v1::{self, session_service_server::SessionService};
use crate::engine::{Engine, NewSession, SessionUpdate};

const SESSIONS_PAGE: &str = "sessions";
const MESSAGES_PAGE: &str = "messages";

/// Implements `SessionService` over the engine.
pub struct SessionApi {
    engine: Arc<Engine>,
}

impl SessionApi {
    /// The service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    fn page_size(&self, requested: u32) -> usize {
        let limits = self.engine.limits();
        let size = match requested {
            0 => limits.default_page_size,
            n => n.min(limits.max_page_size),
        };
        size as usize
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<v1::CreateSessionRequest>,
    ) -> Result<Response<v1::CreateSessionResponse>, Status> {
        let r = request.into_inner();
        record_session(&r.session_id);
        let new = NewSession {
            session_id: r.session_id,
            system_prompt: r.system_prompt,
            context: context_from_wire("context", r.context)?,
            model: r.model,
            tools: tools_from_wire(r.tools)?,
            labels: labels_from_wire(r.labels),
            max_context_tokens: r.max_context_tokens,
            expire_time: expire_time_from_wire("expire_time", r.expire_time)?,
            window: window_from_wire(r.window)?,
        };
        let session = self.engine.create_session(new).await?;
        record_session(&session.id);
        Ok(Response::new(v1::CreateSessionResponse {
            session: Some(session_to_wire(&session)),
        }))
    }

    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::GetSessionResponse>, Status> {
        let r = request.into_inner();
        record_session(&r.session_id);
        let session = self.engine.get_session(&r.session_id).await?;
        Ok(Response::new(v1::GetSessionResponse {
            session: Some(session_to_wire(&session)),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        let r = request.into_inner();
        let after = match r.page_token.as_str() {
            "" => None,
            token => Some(decode_page_token(SESSIONS_PAGE, token)?),
        };
        let (sessions, next) = self
            .engine
            .list_sessions(after.as_deref(), self.page_size(r.page_size))
            .await?;
        Ok(Response::new(v1::ListSessionsResponse {
            sessions: sessions.iter().map(session_to_wire).collect(),
            next_page_token: next
                .map(|id| encode_page_token(SESSIONS_PAGE, &id))
                .unwrap_or_default(),
        }))
    }

    async fn update_session(
        &self,
        request: Request<v1::UpdateSessionRequest>,
    ) -> Result<Response<v1::UpdateSessionResponse>, Status> {
        let r = request.into_inner();
        record_session(&r.session_id);
        let update = SessionUpdate {
            context_patch: patch_from_wire("context", r.context)?,
            system_prompt: r.system_prompt,
            tools: r
                .tools
                .map(|list| tools_from_wire(list.tools))
                .transpose()?,
            model: r.model,
            max_context_tokens: r.max_context_tokens,
            window: r.window.map(|w| window_from_wire(Some(w))).transpose()?,
            set_labels: labels_from_wire(r.labels),
            remove_labels: r.remove_labels,
            expire_time: expire_time_from_wire("expire_time", r.expire_time)?,
        };
        let session = self.engine.update_session(&r.session_id, update).await?;
        Ok(Response::new(v1::UpdateSessionResponse {
            session: Some(session_to_wire(&session)),
        }))
    }

    async fn delete_session(
        &self,
        request: Request<v1::DeleteSessionRequest>,
    ) -> Result<Response<v1::DeleteSessionResponse>, Status> {
        let r = request.into_inner();
        record_session(&r.session_id);
        let deleted_messages = self.engine.delete_session(&r.session_id).await?;
        Ok(Response::new(v1::DeleteSessionResponse {
            deleted_messages,
        }))
    }

    async fn list_messages(
        &self,
        request: Request<v1::ListMessagesRequest>,
    ) -> Result<Response<v1::ListMessagesResponse>, Status> {
        let r = request.into_inner();
        record_session(&r.session_id);
        let from = match r.page_token.as_str() {
            "" => 0,
            token => {
                let key = decode_page_token(MESSAGES_PAGE, token)?;
                let (session, index) = key.rsplit_once('@').unwrap_or_default();
                if session != r.session_id {
                    return Err(Status::invalid_argument(
                        "page_token belongs to another session's listing; pass next_page_token unchanged, or empty for the first page",
                    ));
                }
                index.parse().map_err(|_| {
                    Status::invalid_argument("page_token is not one this listing issued")
                })?
            }
        };
        let (messages, next) = self
            .engine
            .list_messages(&r.session_id, from, self.page_size(r.page_size))
            .await?;
        Ok(Response::new(v1::ListMessagesResponse {
            messages: messages.iter().map(|m| message_to_wire(m)).collect(),
            next_page_token: next
                .map(|n| encode_page_token(MESSAGES_PAGE, &format!("{}@{n}", r.session_id)))
                .unwrap_or_default(),
        }))
    }

    async fn preview_context(
        &self,
        request: Request<v1::PreviewContextRequest>,
    ) -> Result<Response<v1::PreviewContextResponse>, Status> {
        let r = request.into_inner();
        record_session(&r.session_id);
        let patch = patch_from_wire("context", r.context)?;
        let preview = self
            .engine
            .preview_context(&r.session_id, &r.message, patch.as_ref())
            .await?;
        Ok(Response::new(preview_to_wire(&preview)))
    }
}
