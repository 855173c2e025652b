//! Reading what is left of a refused request's body before answering.
//!
//! A request refused before it is served (credentials, rates) is answered at once, but if its
//! body is dropped unread the HTTP/2 stream is reset while the client may still be sending,
//! and clients report that reset ("broken pipe", UNKNOWN) instead of the refusal. Reading a
//! small body to its end first lets the client see the status it was sent. Bodies larger than
//! the bound are not read: such a client was going to be cut off anyway.

use http_body_util::{BodyExt, Limited};

/// How much of a refused request's body is read before answering.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Reads `body` to its end if it is at most [`DRAIN_LIMIT`] bytes; errors are ignored.
pub(crate) async fn drain<B>(body: B)
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = Limited::new(body, DRAIN_LIMIT).collect().await;
}
