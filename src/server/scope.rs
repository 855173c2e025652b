//! The caller's scope of a request: who is asking, as the engine needs to know it.
//!
//! The door's authentication layer decides the scope once, at the edge, and puts it in the
//! request's extensions (which nothing on the wire can set); every handler asks here and
//! passes it to the engine. The in-process calls of the JSON doors carry the scope over in
//! the same extension.

use tonic::Request;

use crate::domain::Scope;

/// The scope `request` runs in.
pub fn caller_scope<T>(request: &Request<T>) -> Scope {
    scope_of_extensions(request.extensions())
}

/// The scope of a request with these extensions (a gRPC request's or an HTTP request's), for
/// the doors that are not gRPC handlers.
pub fn scope_of_extensions(extensions: &http::Extensions) -> Scope {
    extensions.get::<Scope>().cloned().unwrap_or_default()
}

/// The scope of a request with these headers (gRPC metadata or HTTP headers alike).
pub fn scope_of_headers(headers: &http::HeaderMap) -> Scope {
    let _ = headers;
    Scope::default()
}
