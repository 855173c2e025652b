//! `GET /metrics`: the Prometheus text exposition of everything contextd records (see
//! [`crate::telemetry::metrics`]), on the API port and, with `metrics.listen`
//! (`--metrics-listen`), on a plain HTTP listener of its own that serves nothing else.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

use crate::engine::Lifecycle;
use crate::server::ServeError;

/// The content type of Prometheus's text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub(crate) async fn metrics() -> Response {
    let Some(body) = crate::telemetry::metrics::render() else {
        return super::error::ApiError::new(
            tonic::Code::NotFound,
            "metrics are turned off on this server (metrics.enabled = false)",
        )
        .into_response();
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Binds the metrics listener at `addr` (`host:port`).
pub(crate) async fn bind(addr: &str) -> Result<tokio::net::TcpListener, ServeError> {
    let parsed: std::net::SocketAddr = addr.parse().map_err(|_| {
        crate::config::ConfigError::Invalid(format!(
            "metrics.listen (--metrics-listen) {addr:?} is not an address of the form \
             HOST:PORT, such as 127.0.0.1:9464"
        ))
    })?;
    crate::server::bind(parsed).await.map_err(|message| {
        crate::config::ConfigError::Invalid(format!("metrics.listen: {message}")).into()
    })
}

/// Serves only `GET /metrics` on `listener` until the server closes.
pub(crate) async fn serve(listener: tokio::net::TcpListener, lifecycle: Lifecycle) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listener serving /metrics");
    }
    let router = Router::new().route("/metrics", get(metrics));
    let closed = async move { lifecycle.closed().await };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(closed)
        .await
    {
        tracing::warn!(error = %e, "the metrics listener failed");
    }
}
