//! contextd: a gRPC context service for LLM agents.
//!
//! contextd keeps LLM conversations as sessions (history, structured context, the tools a
//! session may use), decides what fits a model's context window, calls the model and runs
//! tool-call round trips. Replies come unary, streamed token by token, or over one
//! bidirectional stream.
//!
//! # Layout
//!
//! Data flows one way: wire → door → engine → ports → adapters, and everything stands on the
//! domain.
//!
//! - [`domain`]: the floor: sessions, messages, tool calls, usage, finish reasons, the RFC
//!   7386 merge patch, measuring JSON, counting tokens, and the caller's `Scope`. Pure; it
//!   imports none of the modules below.
//! - [`api`]: the generated protobuf/gRPC code (the only place that includes it) and the one
//!   set of conversions between wire and domain types, page tokens included.
//! - [`config`]: the typed configuration: defaults < file < environment < flags.
//! - [`server`]: the gRPC door: one file per tonic service (decode → one engine call →
//!   encode), the accept loop that gives each connection to its protocol, the caller's
//!   scope, request logging, per-tenant request rates, deadlines, the shutdown sequence,
//!   and the single table from engine error kinds to gRPC codes.
//! - [`http`]: the JSON doors on the same port: HTTP/JSON routes from the contract's
//!   `google.api.http` rules, Server-Sent Events, the classic `/api/mcp/interact` and
//!   `/health`, and newline-delimited JSON over plain TCP, each transcoded in-process into the
//!   gRPC services.
//! - [`auth`]: who is calling: API keys (hashed, in the store or a keys file), client
//!   certificates, and the middleware that turns them into the caller's scope on every door.
//! - [`mcp`]: the MCP doors: Google's MCP gRPC binding and `/mcp` (Streamable HTTP), over
//!   one catalogue of tools and session resources.
//! - `engine`: sessions, preview, window assembly, tool dispatch, the turn (begin → step
//!   loop → commit), the Converse state machine every streaming door drives, and the
//!   server's lifecycle as turns see it, with protocol-neutral errors. Knows the ports, never
//!   tonic, sqlx or reqwest.
//! - `model`: the `ModelBackend` port and its adapters: the offline `echo` model,
//!   OpenAI-compatible and Anthropic providers over HTTP.
//! - `store`: the `SessionStore` port and its adapters: in memory, SQLite (embedded, the
//!   default) and PostgreSQL (shared by replicas); every key is (tenant, session id).
//! - `tools`: the `ToolProvider` port, the tool registry and the built-in session tools.
//! - [`telemetry`]: what operators see: the Prometheus recorder and the metric names, request
//!   ids, and (with the `otlp` feature) OpenTelemetry traces over OTLP.
//! - [`client`]: a Rust client: the generated tonic clients and a thin wrapper over them.
//! - [`chat`]: the interactive terminal chat of `contextd chat`, built on [`client`].

pub mod admin_cli;
pub mod api;
pub mod auth;
pub mod chat;
pub mod client;
pub mod config;
pub mod domain;
pub(crate) mod engine;
pub mod http;
pub mod mcp;
pub(crate) mod model;
pub mod server;
pub(crate) mod store;
pub mod telemetry;
pub(crate) mod tools;

/// Store faults injected by plan, for tests that drive a real server (not a stable API).
#[doc(hidden)]
pub use store::fault as store_faults;

/// The store interface, for tests that drive stores directly (not a stable API).
#[doc(hidden)]
pub use store::SessionStore;

/// Internals that the fuzz targets and property tests drive directly (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::engine::window::{
        HistorySelection, PinnedHead, TurnTooLarge, WindowBudget, select_history, take_units,
        take_units_from_oldest,
    };
    pub use crate::model::anthropic::EventParser as AnthropicEventParser;
    pub use crate::model::http::{HttpBackend, SseParser};
    pub use crate::model::openai::ChunkParser as OpenAiChunkParser;
    pub use crate::model::{ModelError, ModelEvent, ModelFinish};
}
