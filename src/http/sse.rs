//! Server-Sent Events for streamed turns.
//!
//! Framing (part of the contract): `event:` is the name of the `StreamResponseResponse`
//! oneof field that is set, in proto3 JSON (`started`, `delta`, `toolCall`, `toolResult`,
//! `completed`); `data:` is the whole message as one line of proto3 JSON. A failure after the
//! first event is `event: error` with the AIP-193 error object, and the stream ends. While the
//! model is slow, a `: keep-alive` comment goes out every `http.sse_keep_alive_ms`. A client
//! that disconnects drops this stream, which drops the gRPC response stream and so cancels
//! the turn: nothing of it is stored.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use prost_reflect::DynamicMessage;

use super::grpc::ResponseStream;
use super::json;

/// What the event stream still has to send.
struct Pending {
    first: Option<DynamicMessage>,
    rest: ResponseStream,
    ended: bool,
}

/// The event stream of a server-streaming call whose first message (if any) was read.
pub(super) fn events(
    first: Option<DynamicMessage>,
    rest: ResponseStream,
    keep_alive: Duration,
) -> Response {
    let pending = Pending {
        first,
        rest,
        ended: false,
    };
    let events = stream::unfold(pending, |mut pending| async move {
        if pending.ended {
            return None;
        }
        let next = match pending.first.take() {
            Some(first) => Some(Ok(first)),
            None => pending.rest.next().await,
        };
        let event = match next? {
            Ok(message) => event_of(&message),
            Err(error) => {
                pending.ended = true;
                Event::default().event("error").data(error.body())
            }
        };
        Some((Ok::<_, Infallible>(event), pending))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response()
}

/// One message as an event named after its set oneof field.
fn event_of(message: &DynamicMessage) -> Event {
    let name = message
        .fields()
        .next()
        .map(|(field, _)| field.json_name().to_owned())
        .unwrap_or_else(|| "message".to_owned());
    Event::default().event(name).data(json::to_json(message))
}
