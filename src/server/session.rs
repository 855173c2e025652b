//! `contextd.v1.SessionService`: wire ↔ engine for session management. Each handler decodes
//! the request (`api::convert`), makes one engine call in the caller's scope, and encodes
//! the answer.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::logging::record_session;
use super::scope::caller_scope;
use crate::api::convert::{
    etag_from_wire, message_to_wire, messages_page_from_token, messages_page_token,
    new_session_from_wire, patch_from_wire, preview_to_wire, session_to_wire,
    sessions_page_from_token, sessions_page_token, update_from_wire,
};
use crate::api::v1::{self, session_service_server::SessionService};
use crate::engine::Engine;

/// Implements `SessionService` over the engine.
pub struct SessionApi {
    engine: Arc<Engine>,
}

impl SessionApi {
    /// The service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<v1::CreateSessionRequest>,
    ) -> Result<Response<v1::CreateSessionResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        record_session(&r.session_id);
        let new = new_session_from_wire("", r)?;
        let session = self.engine.create_session(&scope, new).await?;
        record_session(&session.id);
        Ok(Response::new(v1::CreateSessionResponse {
            session: Some(session_to_wire(&session)),
        }))
    }

    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::GetSessionResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        record_session(&r.session_id);
        let session = self.engine.get_session(&scope, &r.session_id).await?;
        Ok(Response::new(v1::GetSessionResponse {
            session: Some(session_to_wire(&session)),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        let after = sessions_page_from_token(&r.page_token)?;
        let page = self
            .engine
            .list_sessions(
                &scope,
                after.as_deref(),
                r.page_size,
                session_to_wire,
                repeated_field_len,
            )
            .await?;
        Ok(Response::new(v1::ListSessionsResponse {
            sessions: page.items,
            next_page_token: sessions_page_token(page.next.as_deref()),
        }))
    }

    async fn update_session(
        &self,
        request: Request<v1::UpdateSessionRequest>,
    ) -> Result<Response<v1::UpdateSessionResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        record_session(&r.session_id);
        let session_id = r.session_id.clone();
        let (update, etag) = update_from_wire(r)?;
        let session = self
            .engine
            .update_session(&scope, &session_id, update, etag.as_deref())
            .await?;
        Ok(Response::new(v1::UpdateSessionResponse {
            session: Some(session_to_wire(&session)),
        }))
    }

    async fn delete_session(
        &self,
        request: Request<v1::DeleteSessionRequest>,
    ) -> Result<Response<v1::DeleteSessionResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        record_session(&r.session_id);
        let etag = etag_from_wire(r.etag);
        let deleted_messages = self
            .engine
            .delete_session(&scope, &r.session_id, etag.as_deref())
            .await?;
        Ok(Response::new(v1::DeleteSessionResponse {
            deleted_messages,
        }))
    }

    async fn list_messages(
        &self,
        request: Request<v1::ListMessagesRequest>,
    ) -> Result<Response<v1::ListMessagesResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        record_session(&r.session_id);
        let from = messages_page_from_token(&r.session_id, &r.page_token)?;
        let page = self
            .engine
            .list_messages(
                &scope,
                &r.session_id,
                from,
                r.page_size,
                |m| message_to_wire(m),
                repeated_field_len,
            )
            .await?;
        Ok(Response::new(v1::ListMessagesResponse {
            messages: page.items,
            next_page_token: messages_page_token(&r.session_id, page.next),
        }))
    }

    async fn preview_context(
        &self,
        request: Request<v1::PreviewContextRequest>,
    ) -> Result<Response<v1::PreviewContextResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        record_session(&r.session_id);
        let patch = patch_from_wire("context", r.context)?;
        let preview = self
            .engine
            .preview_context(
                &scope,
                &r.session_id,
                &r.message,
                patch.as_ref(),
                r.summarize,
            )
            .await?;
        Ok(Response::new(preview_to_wire(&preview)))
    }
}

/// The bytes `item` takes in a reply as one element of a repeated message field: its tag,
/// its length and its encoding (the page's byte bound counts what goes on the wire).
fn repeated_field_len<M: prost::Message>(item: &M) -> usize {
    prost::encoding::message::encoded_len(1, item)
}
