//! The JSON-lines door: the classic guide's raw socket clients.
//!
//! A connection that is neither TLS nor HTTP (see `server::accept`) speaks newline-delimited
//! JSON: each line is one Interact request (`{"sessionId", "message", "context"}`), answered
//! by one line, the `InteractResponse` in the same proto3 JSON as HTTP. Many lines per
//! connection are answered in order. A line that is not a JSON object (the guide's Node client
//! first sends `MCP_INIT: SESSION_ID=101`) is answered with an AIP-193 error line and the
//! connection stays usable. With authentication on, each line carries its credentials in an
//! `authorization` member (`"Bearer ctxd_…"`), which the door takes out before decoding. A
//! line is bounded by `limits.max_request_bytes`: a longer one is
//! skipped to its end and answered with an error line.

use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tonic::Code;

use super::JsonDoors;
use super::error::ApiError;
use super::grpc::CallOptions;
use crate::server::peer::PeerIdentity;

/// What reading one line found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A whole line (without its newline), or the last bytes before the end.
    Text(Vec<u8>),
    /// A line over the limit, skipped to its newline.
    TooLong,
    /// The peer closed the connection.
    End,
}

/// Serves one JSON-lines connection until the peer closes it or `stop` resolves (then the
/// line being answered is finished first). `peer` is the verified TLS client certificate's
/// identity, which every line's call carries.
pub async fn serve<S>(
    doors: Arc<JsonDoors>,
    io: S,
    stop: impl Future<Output = ()>,
    peer: Option<PeerIdentity>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(io);
    let mut reader = BufReader::new(read);
    let limit = doors.max_request_bytes();
    tokio::pin!(stop);
    loop {
        let line = tokio::select! {
            line = read_line(&mut reader, limit) => line,
            () = &mut stop => return,
        };
        let answer = match line {
            Ok(Line::Text(text)) if text.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Line::Text(text)) => {
                // Each line is a call of its own, with its own request id.
                let id = crate::telemetry::request_id::RequestId::generate();
                crate::telemetry::request_id::scope(id, answer(&doors, &text, peer.as_ref())).await
            }
            Ok(Line::TooLong) => super::too_large(limit).body(),
            Ok(Line::End) | Err(_) => return,
        };
        let mut out = answer.into_bytes();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
}

/// The answer line (without its newline) to one request line.
async fn answer(doors: &JsonDoors, line: &[u8], peer: Option<&PeerIdentity>) -> String {
    let starts_as_object = line
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !starts_as_object {
        return ApiError::new(
            Code::InvalidArgument,
            "each line must be one JSON object, such as {\"sessionId\": \"s1\", \"message\": \
             \"hello\", \"context\": {\"user\": \"Alice\"}}",
        )
        .body();
    }
    // Credentials travel in the line itself: a socket has no headers.
    let (credentials, line) = match crate::auth::take_authorization(line, None) {
        Some((credentials, rest)) => (Some(credentials), std::borrow::Cow::Owned(rest)),
        None => (None, std::borrow::Cow::Borrowed(line)),
    };
    let scope = match doors
        .auth()
        .authenticate(credentials.as_deref(), peer)
        .await
    {
        Ok(scope) => scope,
        Err(error) => {
            crate::telemetry::metrics::rejected(error.reason());
            return ApiError::from(error.status()).body();
        }
    };
    match doors
        .interact_json(
            &line,
            "the line",
            None,
            CallOptions {
                door: "lines",
                timeout: None,
                headers: crate::telemetry::request_id::current_headers(),
                scope: Some(scope),
                peer: peer.cloned(),
            },
        )
        .await
    {
        Ok(reply) => reply,
        Err(error) => error.body(),
    }
}

/// Reads one line of at most `limit` bytes; a longer one is consumed to its newline and
/// reported as [`Line::TooLong`], so the next line starts clean.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, limit: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::End,
                (false, false) => Line::Text(line),
            });
        }
        let (taken, found_newline) = match buffer.iter().position(|b| *b == b'\n') {
            Some(at) => (at, true),
            None => (buffer.len(), false),
        };
        if !too_long {
            if line.len() + taken > limit {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(&buffer[..taken]);
            }
        }
        reader.consume(taken + usize::from(found_newline));
        if found_newline {
            if too_long {
                return Ok(Line::TooLong);
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Line::Text(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], limit: usize) -> Vec<Line> {
        // A tiny buffer, so lines arrive in pieces.
        let mut reader = BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut reader, limit).await.unwrap();
            let end = line == Line::End;
            out.push(line);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_are_split_bounded_and_resynchronised() {
        let got = lines(b"{\"a\":1}\r\n0123456789abc\n{}\nlast", 8).await;
        assert_eq!(
            got,
            [
                Line::Text(b"{\"a\":1}".to_vec()),
                Line::TooLong,
                Line::Text(b"{}".to_vec()),
                Line::Text(b"last".to_vec()),
                Line::End,
            ]
        );
    }
}
