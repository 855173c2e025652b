//! Request ids: every call on every door carries `x-request-id`, the caller's when it sent a
//! sane one (1 to 128 visible ASCII characters) or a generated one.
//!
//! [`RequestIdLayer`] wraps the whole router, so the id is in place before any door runs: it
//! is written into the request's headers (the JSON doors forward it to their in-process gRPC
//! calls, where the request log puts it in the RPC's span and thus in every log line of the
//! call), kept as a [`RequestId`] extension, returned in the response headers (for gRPC:
//! response metadata), and readable with [`current`] while the call is handled, so that error
//! bodies can name it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The header of the request id, in requests and responses.
pub const HEADER: &str = "x-request-id";

/// Longest request id taken from a caller.
pub const MAX_LEN: usize = 128;

/// The id of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new random id (a UUID without dashes).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string().into())
    }

    /// The caller's id in `value` when it is sane, else a generated one.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        value
            .filter(|v| is_sane(v.as_bytes()))
            .and_then(|v| v.to_str().ok())
            .map(|v| Self(v.into()))
            .unwrap_or_else(Self::generate)
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1 to [`MAX_LEN`] visible ASCII characters (no spaces, no control characters).
pub fn is_sane(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The id of the call being handled on this task, if any.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `future` as part of the call `id` (for [`current`]), such as a task a door spawns.
pub async fn scope<F: Future>(id: RequestId, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// `future`, run later on another task, still as part of the current call (if any): for
/// the tasks a door spawns to produce a stream.
pub fn inherit<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let id = current();
    async move {
        match id {
            Some(id) => CURRENT.scope(id, future).await,
            None => future.await,
        }
    }
}

/// Headers holding only the current call's `x-request-id` (empty outside a call), for a door
/// that makes its in-process gRPC call from no HTTP request of its own.
pub fn current_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some(value) = current().and_then(|id| HeaderValue::from_str(id.as_str()).ok()) {
        headers.insert(HEADER, value);
    }
    headers
}

/// Gives every request an id (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Send,
    S::Future: Send + 'static,
    R: 'static,
{
    type Response = Response<InCall<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<InCall<R>>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = RequestId::from_header(request.headers().get(HEADER));
        let value = HeaderValue::from_str(id.as_str()).ok();
        if let Some(value) = &value {
            request.headers_mut().insert(HEADER, value.clone());
        }
        request.extensions_mut().insert(id.clone());
        let future = CURRENT.scope(id.clone(), self.inner.call(request));
        Box::pin(async move {
            let mut response = future.await?;
            if let Some(mut value) = value {
                // Sent as never indexed: every id is new, so HPACK gains nothing by adding it
                // to the connection's table, where each one pushed out a useful entry and made
                // every later response compare its id with all the stored ones (about 2 % of a
                // unary turn's CPU).
                value.set_sensitive(true);
                response.headers_mut().insert(HEADER, value);
            }
            Ok(response.map(|body| InCall { id, body }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body polled as part of its call: what a stream produces after the handler
    /// returned (an SSE `error` event, a Connect end-of-stream error) still names the call's
    /// request id.
    pub struct InCall<B> {
        id: RequestId,
        #[pin]
        body: B,
    }
}

impl<B: http_body::Body> http_body::Body for InCall<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let body = this.body;
        CURRENT.sync_scope(this.id.clone(), || body.poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_ids_are_kept_only_when_sane() {
        let keep = |text: &str| RequestId::from_header(Some(&HeaderValue::from_str(text).unwrap()));
        assert_eq!(keep("abc-123_X.y").as_str(), "abc-123_X.y");
        assert_ne!(keep("has space").as_str(), "has space");
        assert_ne!(keep(&"x".repeat(129)).as_str(), "x".repeat(129));
        assert_eq!(keep(&"x".repeat(128)).as_str(), "x".repeat(128));
        let generated = RequestId::from_header(None);
        assert_eq!(generated.as_str().len(), 32);
        assert!(is_sane(generated.as_str().as_bytes()));
        assert!(!is_sane(b""));
        assert!(!is_sane("é".as_bytes()));
    }
}
