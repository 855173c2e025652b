//! The caller's scope of a request: who is asking, as the engine needs to know it.
//!
//! Every handler asks here first and passes the scope to the engine, so when authentication
//! arrives it fills the scope in one place (from the request's credentials) and no handler
//! or engine call changes. Until then every request is the tenant `default`.

use tonic::Request;

use crate::domain::Scope;

/// The scope `request` runs in.
pub fn caller_scope<T>(request: &Request<T>) -> Scope {
    let _ = request;
    Scope::default()
}
