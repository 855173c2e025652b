//! The benchmark harness for contextd: a closed-loop load generator on the generated tonic
//! client, and a bare tonic server that answers `Interact` with a fixed reply (the ceiling).
//!
//! # Layout
//!
//! - [`workload`]: what every scenario sends (messages, contexts, session names) and the
//!   fixed reply of the ceiling server, the same size as the echo model's.
//! - [`probe`]: the server's CPU time and memory, read from `/proc/<pid>`.
//! - [`fake_openai`]: the wire format of `fake-openai`, the OpenAI-compatible upstream the
//!   `gateway` scenario puts behind contextd and SMG.
//! - [`load`]: the closed loop: connections × in-flight workers, warm-up, a fixed measuring
//!   window, a bound on the request count, HDR latency histograms and errors by status code.
//! - [`scenario`]: one module per benchmark scenario.

pub mod fake_openai;
pub mod load;
pub mod probe;
pub mod scenario;
pub mod workload;
