//! Authentication in front of every HTTP-borne door: gRPC, gRPC-Web, Connect, the JSON
//! routes and their event streams, `/mcp`, and the WebSocket upgrade.
//!
//! One middleware decides each request's [`Scope`] from its `authorization` header (or the
//! connection's client certificate) and puts it in the request's extensions, where handlers
//! read it; a request that needs credentials and has none valid is answered here, in its own
//! protocol's error format (gRPC status, Connect error, JSON error body with
//! `WWW-Authenticate`), and nothing behind it runs. Health is always open; reflection,
//! `/api/mcp/status`, `/openapi.json` and `/metrics` are open when `auth.open_endpoints` names
//! them. A WebSocket upgrade without credentials goes through: its `open` frame must carry
//! them instead (browsers cannot set headers on a WebSocket).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, header};

use super::{AuthError, Authenticator};
use crate::config::AuthMode;
use crate::http::error::ApiError;
use crate::server::peer::PeerIdentity;

/// What a path is, for authentication.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// Served to anyone.
    Health,
    /// Served to anyone when `auth.open_endpoints` names it.
    Endpoint(&'static str),
    /// A Converse WebSocket upgrade: credentials may come in its `open` frame.
    WebSocket,
    /// Everything else: credentials required.
    Call,
}

fn classify(method: &Method, path: &str) -> Class {
    if matches!(path, "/health" | "/healthz") || path.starts_with("/grpc.health.v1.Health/") {
        return Class::Health;
    }
    if path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
    {
        return Class::Endpoint("reflection");
    }
    match path {
        "/api/mcp/status" => return Class::Endpoint("status"),
        "/openapi.json" => return Class::Endpoint("openapi"),
        "/metrics" => return Class::Endpoint("metrics"),
        _ => {}
    }
    if matches!(*method, Method::GET | Method::CONNECT)
        && crate::http::websocket_session(path).is_some()
    {
        return Class::WebSocket;
    }
    Class::Call
}

/// The middleware (see the module docs).
pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    if auth.mode() == AuthMode::None {
        request
            .extensions_mut()
            .insert(crate::domain::Scope::default());
        return next.run(request).await;
    }
    let class = classify(request.method(), request.uri().path());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned());
    let peer = request.extensions().get::<PeerIdentity>().cloned();
    match auth
        .authenticate(authorization.as_deref(), peer.as_ref())
        .await
    {
        Ok(scope) => {
            request.extensions_mut().insert(scope);
            next.run(request).await
        }
        Err(error) => {
            let open = match class {
                Class::Health => true,
                Class::Endpoint(name) => auth.is_open(name),
                // Without credentials on the upgrade, the open frame must carry them.
                Class::WebSocket => authorization.is_none(),
                Class::Call => false,
            };
            if open {
                next.run(request).await
            } else {
                let response = refuse(&request, &error);
                crate::server::drain::drain(request.into_body()).await;
                response
            }
        }
    }
}

/// The refusal of `request`, in its protocol's format.
fn refuse(request: &Request, error: &AuthError) -> Response {
    crate::telemetry::metrics::rejected(error.reason());
    tracing::info!(
        path = request.uri().path(),
        reason = error.reason(),
        "refused a call without valid credentials"
    );
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/grpc") {
        let mut response = error.status().into_http::<Body>();
        if content_type.starts_with("application/grpc-web")
            && let Ok(value) = HeaderValue::from_str(&content_type)
        {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        return response;
    }
    let api = ApiError::from(error.status());
    let mut response = if crate::http::is_grpc_path(request.uri().path())
        && crate::http::connect::is_connect(request.method(), &content_type)
    {
        crate::http::connect::refusal(request.method(), &content_type, &api)
    } else {
        api.into_response()
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"contextd\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        assert_eq!(classify(&Method::GET, "/health"), Class::Health);
        assert_eq!(
            classify(&Method::POST, "/grpc.health.v1.Health/Check"),
            Class::Health
        );
        assert_eq!(
            classify(
                &Method::POST,
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            ),
            Class::Endpoint("reflection")
        );
        assert_eq!(
            classify(&Method::GET, "/metrics"),
            Class::Endpoint("metrics")
        );
        assert_eq!(
            classify(&Method::GET, "/v1/sessions/s1:converse"),
            Class::WebSocket
        );
        assert_eq!(
            classify(&Method::POST, "/v1/sessions/s1:converse"),
            Class::Call
        );
        assert_eq!(
            classify(&Method::POST, "/contextd.v1.SessionService/ListSessions"),
            Class::Call
        );
        assert_eq!(classify(&Method::POST, "/mcp"), Class::Call);
    }
}
