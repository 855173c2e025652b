//! The end of a gRPC call, as layers see it: a response body that reports the call's final
//! status once, when its trailers pass, when it ends without them, or when it is dropped
//! early (the client went away). The request log and the RPC metrics both hang off it.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http::HeaderMap;
use http_body::Frame;
use pin_project_lite::pin_project;

/// How a call ended: its `grpc-status` number, or `None` when the client left before one
/// was sent.
pub type EndStatus = Option<String>;

/// The `grpc-status` of a header or trailer map.
pub fn grpc_status(headers: &HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The name of a `grpc-status` number (`OK`, `NOT_FOUND`, …); `None`: the client left
/// (`CANCELLED`).
pub fn code_label(status: Option<&str>) -> &'static str {
    match status {
        None => "CANCELLED",
        Some(number) => crate::api::code_name(
            number
                .parse::<i32>()
                .map(tonic::Code::from_i32)
                .unwrap_or(tonic::Code::Unknown),
        ),
    }
}

/// Wraps `body` so that `on_end` runs once with the call's final status; `early` is the
/// status already known from the response headers (a trailers-only response).
pub fn watch<F>(body: Body, early: EndStatus, on_end: F) -> Body
where
    F: FnOnce(EndStatus) + Send + 'static,
{
    Body::new(EndBody {
        inner: body,
        end: Some(End {
            early,
            on_end: Box::new(on_end),
        }),
    })
}

struct End {
    early: EndStatus,
    on_end: Box<dyn FnOnce(EndStatus) + Send>,
}

impl End {
    fn finish(self, status: EndStatus) {
        (self.on_end)(status.or(self.early));
    }
}

pin_project! {
    struct EndBody {
        #[pin]
        inner: Body,
        end: Option<End>,
    }

    impl PinnedDrop for EndBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(end) = this.project().end.take() {
                end.finish(None);
            }
        }
    }
}

impl http_body::Body for EndBody {
    type Data = Bytes;
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
                    && let Some(end) = this.end.take()
                {
                    end.finish(grpc_status(trailers));
                }
            }
            Poll::Ready(None) => {
                if let Some(end) = this.end.take() {
                    let early = end.early.clone();
                    end.finish(early);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(end) = this.end.take() {
                    end.finish(Some("13".into()));
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
