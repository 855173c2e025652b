//! `Converse` over a WebSocket, `GET /v1/sessions/{session_id}:converse`, for browsers and
//! HTTP stacks that cannot send a gRPC request stream.
//!
//! The socket is one more door onto the engine's [`Conversation`], exactly as gRPC's
//! `Converse` is: frames are decoded into the same `ConverseRequest` and then the same
//! [`converse_frame`], events are encoded by the same [`converse_response`], so turns, queued
//! frames, `cancel` and `error` events cannot differ between the doors. What is the socket's
//! own is the framing and the ending:
//!
//! - a text frame is the proto3 JSON of one message, a binary frame its protobuf encoding;
//!   replies use the kind of the client's first frame;
//! - the first frame must be `open`, for the path's session (its `sessionId` empty or equal);
//!   otherwise an `error` event and close 4003;
//! - the server pings every `http.websocket_ping_ms` so that idle proxies keep the socket;
//! - close 1000 when the client closed and everything it sent is answered; 4000 + the gRPC
//!   code, with the message as reason, when the stream ends on an error (4014 at shutdown).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http::{StatusCode, request::Parts};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Code;
use tracing::Instrument;

use super::error::ApiError;
use super::{JsonDoors, json};
use crate::api::v1::{self, converse_request::Frame};
use crate::domain::Scope;
use crate::engine::{Conversation, ConverseEnd, ConverseEvent, ConverseSink, SinkClosed};
use crate::server::interact::{converse_frame, converse_response};
use crate::server::outbox::{Coalesce, Outbox, outbox};
use crate::server::scope::scope_of_extensions;

/// The path's fixed parts: `/v1/sessions/{session_id}:converse`.
const PREFIX: &str = "/v1/sessions/";
const VERB: &str = ":converse";
/// The gRPC method this door stands for, in the RPC metrics.
const CONVERSE_METHOD: &str = "contextd.v1.InteractService/Converse";
/// Close code of a stream the client ended.
const NORMAL: u16 = 1000;
/// Close codes of errors: this plus the gRPC code.
const ERROR_BASE: u16 = 4000;
/// The longest close reason a close frame holds, in bytes.
const MAX_REASON: usize = 123;

/// The session id of a `…:converse` path, or `None` for any other path.
pub(crate) fn converse_session(path: &str) -> Option<String> {
    let id = path.strip_prefix(PREFIX)?.strip_suffix(VERB)?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    Some(
        percent_encoding::percent_decode_str(id)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Upgrades the request to a WebSocket holding a Converse stream on `session_id`.
pub(crate) async fn upgrade(
    doors: Arc<JsonDoors>,
    session_id: String,
    mut parts: Parts,
) -> Response {
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::new(
                Code::InvalidArgument,
                format!(
                    "{} is a WebSocket: connect with a WebSocket client (Upgrade: websocket); \
                     {rejection}",
                    parts.uri.path()
                ),
            )
            .with_http_status(StatusCode::BAD_REQUEST)
            .into_response();
        }
    };
    if doors.lifecycle.is_draining() {
        return ApiError::from(tonic::Status::from(
            crate::engine::EngineError::ShuttingDown,
        ))
        .into_response();
    }
    // `None`: the upgrade carried no credentials; the open frame must.
    let scope = scope_of_extensions(&parts.extensions);
    // The socket outlives this request's task: its request id and log span go with it.
    let request_id = crate::telemetry::request_id::current()
        .unwrap_or_else(crate::telemetry::request_id::RequestId::generate);
    let span = tracing::info_span!(
        "rpc",
        method = %CONVERSE_METHOD,
        door = %"websocket",
        request_id = %request_id,
        // Recorded by the conversation once it opens.
        session = tracing::field::Empty,
    );
    upgrade
        .max_message_size(doors.max_request_bytes)
        .on_upgrade(move |socket| {
            crate::telemetry::request_id::scope(
                request_id,
                converse(doors, session_id, scope, socket).instrument(span),
            )
        })
}

/// What the writer sends. Not boxed here: the outbox boxes every item it buffers.
#[allow(
    clippy::large_enum_variant,
    reason = "each item is boxed once, by the outbox"
)]
enum Outgoing {
    Event(v1::ConverseResponse),
    Close(u16, String),
}

impl Coalesce for Outgoing {
    fn absorb(&mut self, next: &mut Self) -> bool {
        match (self, next) {
            (Outgoing::Event(event), Outgoing::Event(more)) => event.absorb(more),
            _ => false,
        }
    }
}

/// The conversation's sink: events go to the socket's writer through a bounded outbox, so a
/// client that stops reading stalls its stream (closed 4004 after
/// `limits.stream_stall_timeout_ms`) instead of holding its session.
#[derive(Clone)]
struct SocketTx(Outbox<Outgoing>);

impl ConverseSink for SocketTx {
    async fn send(&self, event: ConverseEvent) -> Result<(), SinkClosed> {
        let response = converse_response(event);
        let size = response.encoded_len();
        self.0.send(Ok(Outgoing::Event(response)), size).await
    }

    async fn closed(&self) {
        self.0.closed().await
    }
}

/// How the client frames its messages, and so how replies are framed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    Json,
    Proto,
}

/// The descriptors of the two messages, for proto3 JSON.
#[derive(Clone)]
struct Codec {
    request: MessageDescriptor,
    response: MessageDescriptor,
}

impl Codec {
    fn new(doors: &JsonDoors) -> Option<Self> {
        let pool = doors.interact_request.parent_pool();
        Some(Self {
            request: pool.get_message_by_name("contextd.v1.ConverseRequest")?,
            response: pool.get_message_by_name("contextd.v1.ConverseResponse")?,
        })
    }

    /// Decodes one client frame; `Ok(None)` for frames that carry no message (ping, pong).
    fn decode(
        &self,
        message: &Message,
    ) -> Result<Option<(Framing, v1::ConverseRequest)>, ApiError> {
        match message {
            Message::Text(text) => {
                let dynamic = json::from_json(
                    self.request.clone(),
                    text.as_str().as_bytes(),
                    "the text frame",
                )?;
                let request = dynamic.transcode_to::<v1::ConverseRequest>().map_err(|e| {
                    ApiError::new(Code::InvalidArgument, format!("the text frame: {e}"))
                })?;
                Ok(Some((Framing::Json, request)))
            }
            Message::Binary(bytes) => v1::ConverseRequest::decode(bytes.as_ref())
                .map(|request| Some((Framing::Proto, request)))
                .map_err(|e| {
                    ApiError::new(
                        Code::InvalidArgument,
                        format!("the binary frame is not a protobuf ConverseRequest: {e}"),
                    )
                }),
            _ => Ok(None),
        }
    }

    fn encode(&self, framing: Framing, response: &v1::ConverseResponse) -> Message {
        match framing {
            Framing::Proto => Message::Binary(response.encode_to_vec().into()),
            Framing::Json => {
                let mut dynamic = DynamicMessage::new(self.response.clone());
                // The descriptor is the message's own: transcoding cannot fail.
                let _ = dynamic.transcode_from(response);
                Message::Text(json::to_json(&dynamic).into())
            }
        }
    }
}

/// An `error` event for a frame that started no turn.
fn error_event(code: Code, message: &str) -> v1::ConverseResponse {
    v1::ConverseResponse {
        turn_id: String::new(),
        event: Some(v1::converse_response::Event::Error(v1::TurnError {
            code: code as i32,
            message: message.to_owned(),
        })),
    }
}

/// The close frame of an error: 4000 + its code, its message (cut to fit) as the reason.
fn error_close(code: Code, message: &str) -> Outgoing {
    let mut end = message.len().min(MAX_REASON);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Outgoing::Close(ERROR_BASE + code as u16, message[..end].to_owned())
}

/// Takes `open.authorization` out of a text frame: the credentials of a browser, which cannot
/// set headers on a WebSocket.
fn take_credentials(message: Message) -> (Message, Option<String>) {
    if let Message::Text(text) = &message
        && let Some((credentials, rest)) =
            crate::auth::take_authorization(text.as_str().as_bytes(), Some("open"))
        && let Ok(rest) = String::from_utf8(rest)
    {
        return (Message::Text(rest.into()), Some(credentials));
    }
    (message, None)
}

/// Runs one Converse stream on an upgraded socket, counted as a `Converse` RPC and an open
/// `websocket` stream.
async fn converse(
    doors: Arc<JsonDoors>,
    session_id: String,
    scope: Option<Scope>,
    socket: WebSocket,
) {
    let _open = crate::telemetry::metrics::GaugeGuard::stream("websocket");
    let started = std::time::Instant::now();
    let code = converse_socket(doors, session_id, scope, socket).await;
    let latency = started.elapsed().as_secs_f64();
    crate::telemetry::metrics::rpc_done(
        CONVERSE_METHOD,
        crate::api::code_name(code),
        None,
        latency,
    );
    tracing::info!(
        code = crate::api::code_name(code),
        latency_ms = format!("{:.2}", latency * 1000.0),
        "rpc done"
    );
}

/// [`converse`]'s work; returns the code the stream ended with.
async fn converse_socket(
    doors: Arc<JsonDoors>,
    session_id: String,
    scope: Option<Scope>,
    socket: WebSocket,
) -> Code {
    let Some(codec) = Codec::new(&doors) else {
        return Code::Internal;
    };
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = outbox::<Outgoing>(doors.engine.limits());

    // The first frame, checked before the conversation sees it.
    let first = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            // A socket that never opens does not hold up shutdown.
            () = doors.lifecycle.closed() => return Code::Unavailable,
        };
        match next {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Code::Cancelled,
            Some(Ok(message)) => {
                let (message, credentials) = take_credentials(message);
                match codec.decode(&message) {
                    Ok(Some(decoded)) => break Ok((decoded, credentials)),
                    Ok(None) => continue,
                    Err(error) => break Err(error),
                }
            }
        }
    };
    // Credentials from the upgrade's header, or else from the open frame.
    let first = match (first, scope) {
        (Err(error), _) => Err(error),
        (Ok((decoded, _)), Some(scope)) => Ok((decoded, scope)),
        (Ok((decoded, credentials)), None) => doors
            .auth()
            .authenticate(credentials.as_deref(), None)
            .await
            .map(|scope| (decoded, scope))
            .map_err(|e| ApiError::from(e.status())),
    };
    let (first, scope) = match first {
        Ok(((framing, request), scope)) => (Ok((framing, request)), Some(scope)),
        Err(error) => (Err(error), None),
    };
    let checked = first.and_then(|(framing, mut request)| match &mut request.frame {
        Some(Frame::Open(open)) if open.session_id.is_empty() || open.session_id == session_id => {
            open.session_id = session_id.clone();
            Ok((framing, request))
        }
        Some(Frame::Open(open)) => Err(ApiError::new(
            Code::InvalidArgument,
            format!(
                "the open frame names session '{}' but the path names '{session_id}'; leave \
                 open.sessionId empty or make them equal",
                open.session_id
            ),
        )),
        _ => Err(ApiError::new(
            Code::InvalidArgument,
            "the first frame must be open, such as {\"open\": {}}",
        )),
    });
    let (framing, first) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            // Text unless the client spoke protobuf: an undecodable text frame is the usual case.
            let event = codec.encode(Framing::Json, &error_event(error.code, &error.message));
            let _ = sink.send(event).await;
            let Outgoing::Close(code, reason) = error_close(error.code, &error.message) else {
                return error.code;
            };
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })))
                .await;
            return error.code;
        }
    };

    // Set whenever the first frame was accepted.
    let Some(scope) = scope else {
        return Code::Unauthenticated;
    };

    // The writer: events in order, pings while idle, and the close frame last.
    let ping_every = doors.websocket_ping;
    let writer_codec = codec.clone();
    let writer = tokio::spawn(
        crate::telemetry::request_id::inherit(async move {
            let mut pings =
                tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
            loop {
                let outgoing = tokio::select! {
                    outgoing = rx.next() => outgoing,
                    _ = pings.tick() => {
                        if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let message = match outgoing {
                    Some(Ok(Outgoing::Event(event))) => writer_codec.encode(framing, &event),
                    Some(Err(stalled)) => {
                        let Outgoing::Close(code, reason) =
                            error_close(stalled.code(), stalled.message())
                        else {
                            return;
                        };
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code,
                                reason: reason.into(),
                            })))
                            .await;
                        return;
                    }
                    Some(Ok(Outgoing::Close(code, reason))) => {
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code,
                                reason: reason.into(),
                            })))
                            .await;
                        // When the client closed first, its close is answered (queued by the
                        // reader) here.
                        let _ = sink.close().await;
                        return;
                    }
                    None => {
                        let _ = sink.close().await;
                        return;
                    }
                };
                if sink.send(message).await.is_err() {
                    return;
                }
            }
        })
        .in_current_span(),
    );

    // The reader: the first frame, then every frame until the client closes.
    let inbound = futures_util::stream::once(async move { Ok(converse_frame(first)) }).chain(
        futures_util::stream::unfold(stream, move |mut stream| {
            let codec = codec.clone();
            async move {
                loop {
                    match stream.next().await {
                        None | Some(Ok(Message::Close(_))) => return None,
                        Some(Err(e)) => return Some((Err(e.to_string()), stream)),
                        Some(Ok(message)) => match codec.decode(&message) {
                            Ok(Some((_, request))) => {
                                return Some((Ok(converse_frame(request)), stream));
                            }
                            Ok(None) => continue,
                            Err(error) => {
                                return Some((
                                    Ok(crate::engine::ConverseFrame::Invalid(
                                        crate::engine::EngineError::InvalidArgument(error.message),
                                    )),
                                    stream,
                                ));
                            }
                        },
                    }
                }
            }
        }),
    );
    let tx = SocketTx(tx);
    let conversation = Conversation::new(
        scope,
        doors.engine.clone(),
        doors.lifecycle.clone(),
        tx.clone(),
    );
    let (ended, close) = match conversation.run(Box::pin(inbound)).await {
        ConverseEnd::Finished => (Code::Ok, Some(Outgoing::Close(NORMAL, String::new()))),
        ConverseEnd::ClientLeft => (Code::Cancelled, None),
        ConverseEnd::ShuttingDown => {
            let status = tonic::Status::from(crate::engine::EngineError::ShuttingDown);
            (
                status.code(),
                Some(error_close(status.code(), status.message())),
            )
        }
        ConverseEnd::Broken(reason) => (
            Code::Unavailable,
            Some(error_close(
                Code::Unavailable,
                &format!("the WebSocket broke: {reason}"),
            )),
        ),
    };
    if let Some(close) = close {
        let _ = tx.0.send(Ok(close), 0).await;
    }
    drop(tx);
    let _ = writer.await;
    ended
}

/// How often the server pings an open socket (`http.websocket_ping_ms`).
pub(crate) fn ping_interval(ms: u64) -> Duration {
    Duration::from_millis(ms.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converse_paths() {
        assert_eq!(
            converse_session("/v1/sessions/abc:converse").as_deref(),
            Some("abc")
        );
        assert_eq!(
            converse_session("/v1/sessions/a%20b:converse").as_deref(),
            Some("a b")
        );
        assert_eq!(converse_session("/v1/sessions/:converse"), None);
        assert_eq!(converse_session("/v1/sessions/a/b:converse"), None);
        assert_eq!(converse_session("/v1/sessions/abc:interact"), None);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let Outgoing::Close(code, reason) = error_close(Code::InvalidArgument, &long) else {
            panic!("a close");
        };
        assert_eq!(code, 4003);
        assert!(reason.len() <= MAX_REASON);
    }
}
