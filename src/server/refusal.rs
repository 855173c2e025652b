//! What a connection beyond `limits.max_connections` is told before it is closed.
//!
//! Closing it silently leaves the client to guess (a gRPC client sees a reset, curl an empty
//! reply). So a few refused connections at a time ([`MAX_ANSWERING`]) are answered in their
//! own protocol, from their first bytes and within [`ANSWER_WITHIN`]: HTTP/1 gets a `503`
//! with `Retry-After` and the AIP-193 error body; HTTP/2 (gRPC among it) gets the server's
//! SETTINGS and a GOAWAY (ENHANCE_YOUR_CALM) whose debug data says why, which gRPC clients
//! report as RESOURCE_EXHAUSTED like every other limit; a
//! JSON-lines connection gets one error line. TLS connections, and any beyond those answered
//! at once, are closed without a word: answering them would cost a handshake, which is what
//! the budget guards against.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Refused connections answered at the same time, at most; the rest are closed at once.
pub(crate) const MAX_ANSWERING: usize = 32;
/// How long a refused connection has to send its first bytes and take the answer.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// What the refusal says, in every protocol.
const MESSAGE: &str = "contextd is serving as many connections as limits.max_connections \
                       allows; retry shortly, or reuse an open connection";

/// The HTTP/2 connection preface's start.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// HTTP/2's error code ENHANCE_YOUR_CALM (gRPC clients: RESOURCE_EXHAUSTED).
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Answers refused connections, a few at a time.
#[derive(Debug, Clone)]
pub(crate) struct Refusals {
    answering: Arc<Semaphore>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
        }
    }
}

impl Refusals {
    /// Answers `stream` on a task of its own when fewer than [`MAX_ANSWERING`] are being
    /// answered; otherwise (and on a TLS listener) drops it at once.
    pub(crate) fn refuse(&self, stream: TcpStream, tls: bool) {
        if tls {
            return;
        }
        let Ok(permit) = self.answering.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(ANSWER_WITHIN, answer(stream)).await;
            drop(permit);
        });
    }
}

/// Reads the first bytes of `stream` and answers in the protocol they name.
async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut first = [0u8; H2_PREFACE.len()];
    let mut read = 0;
    while read < first.len() {
        let n = stream.read(&mut first[read..]).await?;
        if n == 0 {
            return Ok(());
        }
        read += n;
        if !H2_PREFACE.starts_with(&first[..read]) {
            break;
        }
    }
    let reply = reply_to(&first[..read]);
    stream.write_all(&reply).await?;
    stream.shutdown().await?;
    // What the client sent meanwhile is read and dropped until it closes (within the answer's
    // time): closing with unread bytes would reset the connection, and the client would see
    // the reset instead of the answer.
    let mut sink = [0u8; 4096];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

/// The refusal for a connection whose first bytes are `first`.
fn reply_to(first: &[u8]) -> Vec<u8> {
    if first.starts_with(H2_PREFACE) {
        let mut reply = frame(0x4, &[]);
        let mut goaway = Vec::with_capacity(8 + MESSAGE.len());
        goaway.extend_from_slice(&0u32.to_be_bytes());
        goaway.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        goaway.extend_from_slice(MESSAGE.as_bytes());
        reply.extend(frame(0x7, &goaway));
        return reply;
    }
    let error = crate::http::error::ApiError::new(tonic::Code::Unavailable, MESSAGE).body();
    if first.first() == Some(&b'{') {
        return format!("{error}\n").into_bytes();
    }
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{error}",
        error.len()
    )
    .into_bytes()
}

/// One HTTP/2 frame on stream 0 with no flags.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_is_answered_in_its_own_terms() {
        let http1 = String::from_utf8(reply_to(b"GET /v1/sessions")).unwrap();
        assert!(http1.starts_with("HTTP/1.1 503 "), "{http1}");
        assert!(http1.contains("retry-after: 1"), "{http1}");
        assert!(http1.ends_with('}'), "{http1}");
        let line = String::from_utf8(reply_to(b"{\"method\"")).unwrap();
        assert!(
            line.starts_with("{\"error\"") && line.ends_with("}\n"),
            "{line}"
        );
        let h2 = reply_to(b"PRI * HTTP/2.0");
        // SETTINGS (empty), then GOAWAY: type 7, last stream 0, ENHANCE_YOUR_CALM, the reason.
        assert_eq!(&h2[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(h2[12], 7);
        assert_eq!(&h2[22..26], &ENHANCE_YOUR_CALM.to_be_bytes());
        assert!(h2.ends_with(MESSAGE.as_bytes()));
    }
}
