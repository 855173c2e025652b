//! Request logging as a tower layer: one line per RPC with method, session, gRPC status code
//! and latency, written when the response ends (for streams: when the stream ends).
//!
//! The RPC's span carries its request id (`x-request-id`, see [`crate::telemetry::request_id`]),
//! so every line logged while the call runs names it. Handlers add the session id to the request's span with [`record_session`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use http::{Request, Response};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field};

use super::call_end::{self, grpc_status};

/// The header by which the JSON doors name themselves on their in-process gRPC calls, so an
/// RPC's log line says which door it came through (`http`, `lines`; absent: `grpc`).
pub const DOOR_HEADER: &str = "x-contextd-door";

/// Adds the session id to the current RPC's log line.
pub fn record_session(session_id: &str) {
    Span::current().record("session", session_id);
}

/// Logs every RPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLogLayer;

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog { inner }
    }
}

/// The service of [`RequestLogLayer`].
#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RequestLog<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let door = request
            .headers()
            .get(DOOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("grpc")
            .to_owned();
        let request_id = crate::telemetry::request_id::RequestId::from_header(
            request.headers().get(crate::telemetry::request_id::HEADER),
        );
        let span = tracing::info_span!(
            "rpc",
            method = %request.uri().path(),
            door = %door,
            request_id = %request_id,
            session = field::Empty,
        );
        let started = Instant::now();
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = future.await?;
            let early_status = grpc_status(response.headers());
            Ok(response.map(|body| {
                call_end::watch(body, early_status, move |status| {
                    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                    let code = match status.as_deref() {
                        Some(_) => call_end::code_label(status.as_deref()),
                        None => "CANCELLED (client left)",
                    };
                    let _entered = span.enter();
                    tracing::info!(code, latency_ms = format!("{latency_ms:.2}"), "rpc done");
                })
            }))
        })
    }
}
