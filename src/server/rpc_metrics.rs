//! RPC metrics as a tower layer on the gRPC services: `contextd_rpc_requests_total{method,
//! code}` and `contextd_rpc_duration_seconds{method}` when a call ends, and
//! `contextd_streams_open{kind}` while a streaming call runs.
//!
//! Every door but the WebSocket Converse and `/mcp` reaches the engine through these
//! services (the JSON doors call them in-process), so one layer counts them all; those two
//! count their calls where they serve them, under the gRPC method they stand for.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use http::{Request, Response};
use tower::{Layer, Service};

use super::call_end::{self, grpc_status};
use super::logging::DOOR_HEADER;
use crate::config::MetricsConfig;
use crate::telemetry::metrics::{self as names, GaugeGuard};

/// Counts every RPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer {
    tenant_labels: bool,
}

impl RpcMetricsLayer {
    /// The layer `config` describes (with or without a `tenant` label).
    pub fn new(config: &MetricsConfig) -> Self {
        Self {
            tenant_labels: config.tenant_labels,
        }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            tenant_labels: self.tenant_labels,
        }
    }
}

/// The service of [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    tenant_labels: bool,
}

/// The kind of stream a streaming call on `door` is (`contextd_streams_open{kind}`).
fn stream_kind(door: &str) -> &'static str {
    match door {
        "http" => "sse",
        "grpc-web" => "grpc-web",
        "lines" => "lines",
        "connect" => "connect",
        _ => "grpc",
    }
}

impl<S, B> Service<Request<B>> for RpcMetrics<S>
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
        let (method, streams) = names::method_of(request.uri().path());
        let tenant = self.tenant_labels.then(|| {
            crate::server::scope::scope_of_extensions(request.extensions())
                .map(|scope| scope.tenant.as_str().to_owned())
                .unwrap_or_default()
        });
        let stream = streams.then(|| {
            let door = request
                .headers()
                .get(DOOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("grpc");
            GaugeGuard::stream(stream_kind(door))
        });
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let early = grpc_status(response.headers());
            Ok(response.map(|body| {
                call_end::watch(body, early, move |status| {
                    drop(stream);
                    names::rpc_done(
                        &method,
                        call_end::code_label(status.as_deref()),
                        tenant.as_deref(),
                        started.elapsed().as_secs_f64(),
                    );
                })
            }))
        })
    }
}
