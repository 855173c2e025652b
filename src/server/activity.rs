//! What a connection is doing, for its timeouts: open requests and streams, body deadlines,
//! and the quiet time of a JSON-lines connection.
//!
//! An HTTP connection is idle while none of its requests is open: a request opens when it
//! arrives and closes when its response body has been sent (so a Converse stream, a Server-
//! Sent Events reply or an HTTP/2 WebSocket keeps its connection however quiet it is;
//! HTTP/2 keepalive pings find dead peers under those). [`ConnectionService`] wraps the
//! router of one connection to count them, to put the TLS client's [`PeerIdentity`] in every
//! request, and to give unary request bodies a deadline; [`Activity::idle`] resolves once the
//! count has stayed at zero for the idle timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::{Service, ServiceExt};

use super::peer::PeerIdentity;

/// The open requests of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    open: watch::Sender<usize>,
}

impl Activity {
    /// A connection with nothing open.
    pub(crate) fn new() -> Self {
        Self {
            open: watch::Sender::new(0),
        }
    }

    /// Counts a request as open until the returned guard is dropped.
    fn begin(&self) -> OpenRequest {
        self.open.send_modify(|open| *open += 1);
        OpenRequest {
            open: self.open.clone(),
        }
    }

    /// Resolves once nothing has been open for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        let mut open = self.open.subscribe();
        loop {
            // The sender lives as long as `self`: these waits end only by the count changing.
            if open.wait_for(|n| *n == 0).await.is_err() {
                return std::future::pending().await;
            }
            if tokio::time::timeout(timeout, open.wait_for(|n| *n > 0))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// One open request; closes it when dropped.
#[derive(Debug)]
struct OpenRequest {
    open: watch::Sender<usize>,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.open.send_modify(|open| *open = open.saturating_sub(1));
    }
}

/// The router of one HTTP connection, counting its requests in [`Activity`], adding the peer's
/// identity, and bounding unary request bodies in time.
#[derive(Clone)]
pub(crate) struct ConnectionService {
    router: Router,
    activity: Activity,
    peer: Option<PeerIdentity>,
    body_timeout: Duration,
}

impl ConnectionService {
    /// `router` for one connection of `peer`.
    pub(crate) fn new(
        router: Router,
        activity: Activity,
        peer: Option<PeerIdentity>,
        body_timeout: Duration,
    ) -> Self {
        Self {
            router,
            activity,
            peer,
            body_timeout,
        }
    }
}

/// Whether a request's body is a stream of its own (Converse, on every gRPC-shaped door),
/// exempt from the body deadline.
fn streams_its_body<B>(request: &Request<B>) -> bool {
    request.uri().path().ends_with("/Converse")
}

/// Errors of the bodies the service reads.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Service<Request<B>> for ConnectionService
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let open = self.activity.begin();
        if let Some(peer) = &self.peer {
            request.extensions_mut().insert(peer.clone());
        }
        let deadline = (!streams_its_body(&request)).then_some(self.body_timeout);
        let request = request.map(|body| Body::new(TimedBody::new(body, deadline)));
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| Body::new(TrackedBody { inner: body, open })))
        })
    }
}

pin_project! {
    /// A response body that keeps its request open until it is dropped.
    struct TrackedBody {
        #[pin]
        inner: Body,
        open: OpenRequest,
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a request body reports once its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within limits.request_body_timeout_ms")]
pub(crate) struct BodyTimeout;

pin_project! {
    /// A request body that must end before a deadline (when it has one).
    struct TimedBody<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: Option<Sleep>,
    }
}

impl<B: HttpBody> TimedBody<B> {
    fn new(inner: B, timeout: Option<Duration>) -> Self {
        let deadline = if inner.is_end_stream() {
            None
        } else {
            timeout.map(tokio::time::sleep)
        };
        Self { inner, deadline }
    }
}

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) {
            if frame.is_none() {
                this.deadline.set(None);
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if let Some(deadline) = this.deadline.as_pin_mut()
            && deadline.poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A stream that fails its reads once nothing was read or written for the idle timeout:
    /// a JSON-lines connection waiting for its next line. A line being answered is not
    /// read meanwhile, and its answer's write starts the quiet time anew.
    pub(crate) struct IdleIo<S> {
        #[pin]
        inner: S,
        // Boxed, so that the stream is `Unpin` when `S` is.
        quiet: Pin<Box<Sleep>>,
        idle: Duration,
    }
}

impl<S> IdleIo<S> {
    /// `inner`, closed after `idle` without traffic.
    pub(crate) fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            quiet: Box::pin(tokio::time::sleep(idle)),
            idle,
        }
    }
}

impl<S: AsyncRead> AsyncRead for IdleIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.quiet.as_mut().reset(Instant::now() + *this.idle);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.quiet.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle connection closed",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite> AsyncWrite for IdleIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = this.inner.poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.quiet.as_mut().reset(Instant::now() + *this.idle);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_while_nothing_is_open() {
        let activity = Activity::new();
        let open = activity.begin();
        let idle = activity.idle(Duration::from_secs(5));
        tokio::pin!(idle);
        // Open: not idle however long it waits.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut idle)
                .await
                .is_err()
        );
        drop(open);
        // Closed: idle after the timeout.
        tokio::time::timeout(Duration::from_secs(6), &mut idle)
            .await
            .expect("idle after the timeout");
    }

    #[tokio::test]
    async fn every_request_of_a_connection_carries_the_peer_identity() {
        use axum::Extension;
        use axum::routing::get;
        use http_body_util::{BodyExt, Full};
        let router = Router::new().route(
            "/who",
            get(|peer: Option<Extension<PeerIdentity>>| async move {
                peer.and_then(|Extension(peer)| peer.common_name)
                    .unwrap_or_else(|| "nobody".to_string())
            }),
        );
        let peer = PeerIdentity {
            common_name: Some("alice".to_string()),
            uri_sans: vec!["spiffe://example.org/alice".to_string()],
        };
        let activity = Activity::new();
        for (peer, expected) in [(Some(peer), "alice"), (None, "nobody")] {
            let mut service = ConnectionService::new(
                router.clone(),
                activity.clone(),
                peer,
                Duration::from_secs(5),
            );
            let request = Request::get("/who").body(Full::new(Bytes::new())).unwrap();
            let response = service.call(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, expected);
        }
        // Both responses were read to the end and dropped: nothing is open.
        assert_eq!(*activity.open.borrow(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_fails_its_reads() {
        use tokio::io::AsyncReadExt;
        let (client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::new(server, Duration::from_secs(5));
        let mut byte = [0u8; 1];
        let error = io.read(&mut byte).await.expect_err("timed out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }
}
