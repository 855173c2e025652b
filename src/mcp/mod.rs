//! The MCP doors: contextd as a Model Context Protocol server, so MCP hosts use its
//! sessions and tools.
//!
//! - [`cancel`]: `notifications/cancelled` on the stateless `/mcp`, which the SDK drops.
//! - [`catalog`]: what contextd offers in MCP's terms (tools, sessions as resources) and
//!   how calls and reads run: the one mapping both doors encode.
//! - [`grpc`]: Google's MCP gRPC binding (`model_context_protocol.Mcp`) on the gRPC port.
//! - [`server`]: `/mcp`, MCP over Streamable HTTP (stateless), with the official SDK.

pub mod cancel;
pub mod catalog;
pub mod grpc;
pub mod server;
