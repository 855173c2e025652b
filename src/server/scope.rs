//! The caller's scope of a request: who is asking, as the engine needs to know it.
//!
//! Every handler asks here first and passes the scope to the engine, so when authentication
//! arrives it fills the scope in one place (from the request's credentials) and no handler
//! or engine call changes. Until then every request is the tenant `default`.

use tonic::Request;

use crate::domain::Scope;

/// The scope `request` runs in.
pub fn caller_scope<T>(request: &Request<T>) -> Scope {
    scope_of_headers(request.metadata().as_ref())
}

/// The scope of a request with these headers (gRPC metadata or HTTP headers alike), for the
/// doors that are not gRPC handlers.
pub fn scope_of_headers(headers: &http::HeaderMap) -> Scope {
    let _ = headers;
    Scope::default()
}
