//! contextd: a gRPC context service for LLM agents.
//!
//! contextd keeps LLM conversations as sessions (history, structured context, the tools a
//! session may use), decides what fits a model's context window, calls the model and runs
//! tool-call round trips. Replies come unary, streamed token by token, or over one
//! bidirectional stream.
//!
//! # Layout
//!
//! Data flows one way: wire → edge → engine → ports → adapters.
//!
//! - [`api`]: the generated protobuf/gRPC code (the only place that includes it) and the
//!   conversions between wire and domain types.
//! - [`config`]: the typed configuration: defaults < file < environment < flags.
//! - [`server`]: the edge: one file per tonic service, request logging, shutdown, and the
//!   single mapping from engine errors to gRPC statuses.
//! - [`engine`]: sessions, merge patches, token counting, context-window assembly and the turn
//!   loop. Knows traits, never tonic.
//! - [`model`]: the `ModelBackend` port and its adapters (the offline `echo` model).
//! - [`store`]: the `SessionStore` port and its adapters (in memory).
//! - [`tools`]: the `ToolProvider` port, the tool registry and the built-in session tools.
//! - [`client`]: a Rust client: the generated tonic clients and a thin wrapper over them.
//! - [`chat`]: the interactive terminal chat of `contextd chat`, built on [`client`].

pub mod api;
pub mod chat;
pub mod client;
pub mod config;
pub mod domain;
pub mod engine;
pub mod model;
pub mod server;
pub mod store;
pub mod tools;
