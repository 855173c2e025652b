//! The caller's scope of a request: who is asking, as the engine needs to know it.
//!
//! The authentication layer ([`crate::auth::layer`]) decides the scope once, at the edge,
//! and puts it in the request's extensions (which nothing on the wire can set); every handler
//! asks here and passes it to the engine. The in-process calls of the JSON doors carry the
//! scope over in the same extension. A request without one was not authenticated and is
//! refused: nothing falls back to a default tenant.

use tonic::{Request, Status};

use crate::domain::Scope;

/// The scope `request` runs in; UNAUTHENTICATED when no door authenticated it.
pub fn caller_scope<T>(request: &Request<T>) -> Result<Scope, Status> {
    scope_of_extensions(request.extensions()).ok_or_else(unauthenticated)
}

/// The scope of a request with these extensions (a gRPC request's or an HTTP request's), for
/// the doors that are not gRPC handlers.
pub fn scope_of_extensions(extensions: &http::Extensions) -> Option<Scope> {
    extensions.get::<Scope>().cloned()
}

/// The refusal of a call that reached a handler without credentials.
pub fn unauthenticated() -> Status {
    Status::unauthenticated(crate::auth::AuthError::Missing.to_string())
}
