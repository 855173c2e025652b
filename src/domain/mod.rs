//! The domain: what a conversation is, independent of how it is stored, served or answered.
//!
//! Sessions, messages, tool calls, usage and finish reasons ([`session`]), the RFC 7386 merge
//! patch of contexts ([`patch`]), measuring JSON ([`measure`]) and counting tokens
//! ([`tokens`]), turn receipts for retried requests ([`receipt`]), API keys and tenant usage ([`key`]),
//! and the caller's [`Scope`]. Everything here is pure: no I/O, no locks, no
//! wire or database types. The engine, the ports (model backends, stores, tool providers) and
//! their adapters all build on this module, and it depends on none of them, so the layers
//! above never import each other just to share a type.

pub mod key;
pub mod measure;
pub mod patch;
pub mod receipt;
pub mod scope;
pub mod session;
pub mod tokens;

pub use scope::{Role, Scope, TenantId};
