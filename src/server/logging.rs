//! Request logging as a tower layer: one line per RPC with method, session, gRPC status code
//! and latency, written when the response ends (for streams: when the stream ends).
//!
//! Handlers add the session id to the request's span with [`record_session`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::{Instrument, Span, field};

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
        let span = tracing::info_span!(
            "rpc",
            method = %request.uri().path(),
            door = %door,
            session = field::Empty,
        );
        let started = Instant::now();
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = future.await?;
            let early_status = grpc_status(response.headers());
            Ok(response.map(|body| {
                Body::new(LoggedBody {
                    inner: body,
                    log: Some(RpcLog {
                        span,
                        started,
                        status: early_status,
                    }),
                })
            }))
        })
    }
}

/// What is known of an RPC until its line is written.
struct RpcLog {
    span: Span,
    started: Instant,
    status: Option<String>,
}

impl RpcLog {
    fn write(self, status: Option<String>) {
        let code = status.or(self.status);
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let code = code
            .as_deref()
            .map(code_name)
            .unwrap_or("CANCELLED (client left)");
        let _entered = self.span.enter();
        tracing::info!(code, latency_ms = format!("{latency_ms:.2}"), "rpc done");
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn code_name(number: &str) -> &'static str {
    let code = number
        .parse::<i32>()
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Unknown);
    crate::api::code_name(code)
}

pin_project! {
    /// A response body that writes the RPC's log line when it ends (or is dropped early,
    /// which means the client went away).
    struct LoggedBody {
        #[pin]
        inner: Body,
        log: Option<RpcLog>,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(log) = this.project().log.take() {
                let status = log.status.clone();
                log.write(status);
            }
        }
    }
}

impl http_body::Body for LoggedBody {
    type Data = bytes_alias::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(log) = this.log.take()
                {
                    log.write(grpc_status(trailers));
                }
            }
            Poll::Ready(None) => {
                if let Some(log) = this.log.take() {
                    let status = log.status.clone();
                    log.write(status);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(log) = this.log.take() {
                    log.write(Some("13".into()));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `bytes` is re-exported by axum; naming it here avoids a direct dependency.
mod bytes_alias {
    pub use axum::body::Bytes;
}
