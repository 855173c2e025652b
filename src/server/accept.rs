//! One accept loop for every protocol on the port.
//!
//! `axum::serve` hands every connection to hyper, so contextd accepts connections itself and,
//! in each connection's own task (never in the accept path, so a slow peer cannot hold up
//! others), looks at the first bytes: the HTTP/2 preface or an HTTP/1 method go to hyper
//! (gRPC, HTTP/JSON, Server-Sent Events); anything else is a JSON-lines connection
//! ([`crate::http::lines`]). A TLS record is refused on a plaintext listener; on a TLS
//! listener ([`super::tls`]) everything but a TLS record is refused, and after the handshake
//! the negotiated ALPN protocol (`h2`, `http/1.1`) names HTTP, or, when none was negotiated,
//! the decrypted first bytes are looked at as above.
//!
//! Every connection takes a place in the connection budget ([`super::connections`]) and has
//! `limits.handshake_timeout_ms` to make its protocol known (TLS handshake included); after
//! that, one with no open request or stream is closed after `limits.idle_connection_timeout_ms`
//! ([`super::activity`]).
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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::activity::{Activity, ConnectionService, IdleIo};
use super::connections::{ConnectionBudget, ConnectionLimits, DoorGauge};
use super::peer::PeerIdentity;
use super::tls::{TlsState, peer_identity};
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
/// What an HTTP/1 request on a TLS listener is told before the connection closes.
const SPEAKS_TLS: &str = "this port speaks TLS: use https:// (or a TLS client)\n";

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

/// What every connection of the listener shares.
#[derive(Clone)]
pub(crate) struct Listening {
    /// The router of every HTTP door.
    pub(crate) app: Router,
    /// The JSON doors, for the JSON-lines door.
    pub(crate) doors: Arc<JsonDoors>,
    /// Draining and shutdown.
    pub(crate) lifecycle: Lifecycle,
    /// TLS, when the listener speaks it.
    pub(crate) tls: Option<Arc<TlsState>>,
    /// Timeouts and per-connection limits.
    pub(crate) limits: ConnectionLimits,
}

/// Accepts connections on `listener` until draining begins, then waits for the open ones to
/// close. At most `max_connections` are open at once.
pub(crate) async fn serve(listener: TcpListener, listening: Listening, max_connections: usize) {
    let connections = TaskTracker::new();
    let budget = ConnectionBudget::new(max_connections);
    let refusals = super::refusal::Refusals::default();
    let lifecycle = listening.lifecycle.clone();
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
        // Beyond the budget: counted, logged, told why in its own protocol when that costs
        // little, and closed.
        let Some(slot) = budget.admit() else {
            refusals.refuse(stream, listening.tls.is_some());
            continue;
        };
        // Small frames (deltas) must leave at once.
        let _ = stream.set_nodelay(true);
        let listening = listening.clone();
        connections.spawn(async move {
            connection(stream, listening).await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// A connection whose protocol is known, ready to be served.
enum Ready {
    Plain(Prefixed<TcpStream>, Protocol),
    /// Boxed: a TLS session's state is large beside a plain stream.
    Tls(
        Box<Prefixed<tokio_rustls::server::TlsStream<Prefixed<TcpStream>>>>,
        Protocol,
        Option<PeerIdentity>,
    ),
}

/// Serves one connection in the protocol its first bytes name.
async fn connection(stream: TcpStream, listening: Listening) {
    let lifecycle = listening.lifecycle.clone();
    let opening = tokio::time::timeout(listening.limits.handshake, open(stream, &listening));
    let ready = tokio::select! {
        ready = opening => ready,
        () = lifecycle.draining() => return,
    };
    let ready = match ready {
        Ok(Some(ready)) => ready,
        Ok(None) => return,
        Err(_) => {
            crate::telemetry::metrics::rejected("handshake_timeout");
            tracing::debug!(
                "closing a connection that did not finish its handshake within limits.handshake_timeout_ms"
            );
            return;
        }
    };
    match ready {
        Ready::Plain(io, protocol) => serve_protocol(io, protocol, None, &listening).await,
        Ready::Tls(io, protocol, peer) => serve_protocol(io, protocol, peer, &listening).await,
    }
}

/// Reads until the protocol is known and, on a TLS listener, completes the handshake; `None`
/// for a connection that is refused or went away.
async fn open(mut stream: TcpStream, listening: &Listening) -> Option<Ready> {
    let (start, protocol) = read_protocol(&mut stream).await?;
    let Some(tls) = &listening.tls else {
        if protocol == Protocol::Tls {
            tracing::debug!("closing a TLS connection: this server has no TLS configured");
            return None;
        }
        return Some(Ready::Plain(Prefixed::new(start, stream), protocol));
    };
    if protocol != Protocol::Tls {
        tracing::debug!("closing a plaintext connection: this listener speaks TLS only");
        if protocol == Protocol::Http && !start.starts_with(b"PRI ") {
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n{SPEAKS_TLS}",
                SPEAKS_TLS.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        return None;
    }
    let mut tls_stream = match tls.acceptor().accept(Prefixed::new(start, stream)).await {
        Ok(tls_stream) => tls_stream,
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
    };
    let (_, session) = tls_stream.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let peer = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(peer_identity);
    if let Some(peer) = &peer {
        tracing::debug!(
            common_name = peer.common_name.as_deref().unwrap_or(""),
            uri_sans = ?peer.uri_sans,
            "client certificate verified"
        );
    }
    if alpn.is_some() {
        return Some(Ready::Tls(
            Box::new(Prefixed::new(Vec::new(), tls_stream)),
            Protocol::Http,
            peer,
        ));
    }
    let (start, protocol) = read_protocol(&mut tls_stream).await?;
    if protocol == Protocol::Tls {
        tracing::debug!("closing a TLS connection that sent TLS inside TLS");
        return None;
    }
    Some(Ready::Tls(
        Box::new(Prefixed::new(start, tls_stream)),
        protocol,
        peer,
    ))
}

/// Reads the first bytes until they name a protocol; `None` when the peer went away first.
async fn read_protocol<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(Vec<u8>, Protocol)> {
    let mut start = Vec::with_capacity(16);
    loop {
        if let Some(protocol) = sniff(&start) {
            return Some((start, protocol));
        }
        let mut bytes = [0u8; 16];
        match stream.read(&mut bytes).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => start.extend_from_slice(&bytes[..n]),
        }
    }
}

/// Serves a connection whose protocol is known.
async fn serve_protocol<I>(
    io: I,
    protocol: Protocol,
    peer: Option<PeerIdentity>,
    listening: &Listening,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http => {
            let _gauge = DoorGauge::open("http");
            serve_http(io, peer, listening).await;
        }
        Protocol::JsonLines => {
            let _gauge = DoorGauge::open("lines");
            let io = IdleIo::new(io, listening.limits.idle);
            lines::serve(
                listening.doors.clone(),
                io,
                listening.lifecycle.draining(),
                peer,
            )
            .await;
        }
        Protocol::Tls => {}
    }
}

/// Serves HTTP/1.1 and HTTP/2 (with upgrades) on one connection.
async fn serve_http<I>(io: I, peer: Option<PeerIdentity>, listening: &Listening)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &listening.limits;
    let activity = Activity::new();
    let service = TowerToHyperService::new(ConnectionService::new(
        listening.app.clone(),
        activity.clone(),
        peer,
        limits.request_body,
    ));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        // CONNECT protocol, for WebSockets over HTTP/2.
        .enable_connect_protocol()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let draining = listening.lifecycle.draining();
    tokio::pin!(draining);
    let idle = activity.idle(limits.idle);
    tokio::pin!(idle);
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
            () = &mut idle, if !shutting_down => {
                tracing::debug!("closing an idle connection (limits.idle_connection_timeout_ms)");
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
