//! What operators see of a running contextd: metrics ([`metrics`]), request ids
//! ([`request_id`]) and, with the `otlp` feature, traces exported over OTLP ([`otlp`]).
//!
//! Each is a concern of its own; the doors and the engine only emit through the `metrics`
//! facade and `tracing` spans, so nothing here is on a request's path but the request-id
//! layer.

pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod request_id;
