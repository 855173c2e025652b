//! One accept loop for every protocol on the port.
//!
//! `axum::serve` hands every connection to hyper, so contextd accepts connections itself and,
//! in each connection's own task (never in the accept path, so a slow peer cannot hold up
//! others), looks at the first bytes: the HTTP/2 preface or an HTTP/1 method go to hyper
//! (gRPC, HTTP/JSON, Server-Sent Events); a TLS record is refused, since no TLS is configured;
//! anything else is a JSON-lines connection ([`crate::http::lines`]).
//!
//! Shutdown covers every door alike: once draining begins, no connection is accepted, HTTP
//! connections get a graceful shutdown (GOAWAY on HTTP/2, close after the response on
//! HTTP/1), JSON-lines connections close after the line being answered, and [`serve`]
//! returns when all have closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::engine::Lifecycle;
use crate::http::{JsonDoors, lines};

/// The request-line starts that make a connection HTTP (`PRI ` is the HTTP/2 preface).
const HTTP_STARTS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"PATCH ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI ",
];
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long the loop waits after an accept error (out of file descriptors, …).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a connection speaks, from its first bytes.
#[derive(Debug, PartialEq, Eq)]
enum Protocol {
    Http,
    Tls,
    JsonLines,
}

/// Decides the protocol once enough bytes are known; `None`: read more.
fn sniff(start: &[u8]) -> Option<Protocol> {
    if start.first() == Some(&TLS_HANDSHAKE) {
        return Some(Protocol::Tls);
    }
    if HTTP_STARTS.iter().any(|method| start.starts_with(method)) {
        return Some(Protocol::Http);
    }
    if HTTP_STARTS.iter().any(|method| method.starts_with(start)) {
        return None;
    }
    Some(Protocol::JsonLines)
}

/// Accepts connections on `listener` until draining begins, then waits for the open ones to
/// close.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    doors: Arc<JsonDoors>,
    lifecycle: Lifecycle,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = lifecycle.draining() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Small frames (deltas) must leave at once.
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            app.clone(),
            doors.clone(),
            lifecycle.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection in the protocol its first bytes name.
async fn connection(
    mut stream: TcpStream,
    app: Router,
    doors: Arc<JsonDoors>,
    lifecycle: Lifecycle,
) {
    let mut start = Vec::with_capacity(16);
    let protocol = loop {
        if let Some(protocol) = sniff(&start) {
            break protocol;
        }
        let mut byte = [0u8; 16];
        let read = tokio::select! {
            read = stream.read(&mut byte) => read,
            () = lifecycle.draining() => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => start.extend_from_slice(&byte[..n]),
        }
    };
    let io = Prefixed::new(start, stream);
    match protocol {
        Protocol::Http => serve_http(io, app, lifecycle).await,
        Protocol::JsonLines => lines::serve(doors, io, lifecycle.draining()).await,
        Protocol::Tls => {
            tracing::debug!("closing a TLS connection: this server has no TLS configured");
        }
    }
}

/// Serves HTTP/1.1 and HTTP/2 (with upgrades) on one connection.
async fn serve_http(io: Prefixed<TcpStream>, app: Router, lifecycle: Lifecycle) {
    let service = TowerToHyperService::new(
        app.map_request(|request: http::Request<Incoming>| request.map(Body::new)),
    );
    let mut builder = Builder::new(TokioExecutor::new());
    // CONNECT protocol, for WebSockets over HTTP/2.
    builder.http2().enable_connect_protocol();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let draining = lifecycle.draining();
    tokio::pin!(draining);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut draining, if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

pin_project! {
    /// A stream whose first bytes were already read: they are read again first.
    struct Prefixed<S> {
        prefix: Vec<u8>,
        offset: usize,
        #[pin]
        inner: S,
    }
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl<S: AsyncRead> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.offset < this.prefix.len() {
            let rest = &this.prefix[*this.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            *this.offset += n;
            if *this.offset == this.prefix.len() {
                *this.prefix = Vec::new();
                *this.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_name_the_protocol() {
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Some(Protocol::Http));
        assert_eq!(sniff(b"GET /health HTTP/1.1"), Some(Protocol::Http));
        assert_eq!(sniff(b"POST "), Some(Protocol::Http));
        assert_eq!(sniff(&[0x16, 3, 1]), Some(Protocol::Tls));
        assert_eq!(sniff(b"{\"sessionId\""), Some(Protocol::JsonLines));
        assert_eq!(
            sniff(b"MCP_INIT: SESSION_ID=101"),
            Some(Protocol::JsonLines)
        );
        assert_eq!(sniff(b" {"), Some(Protocol::JsonLines));
        assert_eq!(sniff(b"GETX"), Some(Protocol::JsonLines));
        // Not enough yet.
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"PO"), None);
        assert_eq!(sniff(b"DELETE"), None);
    }

    #[tokio::test]
    async fn prefixed_bytes_come_first() {
        let mut io = Prefixed::new(b"ab".to_vec(), &b"cd"[..]);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "abcd");
    }
}
