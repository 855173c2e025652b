//! `contextd.v1.InteractService`: unary turns, streamed turns, and the bidirectional
//! `Converse` stream.
//!
//! Streams follow one pattern: a spawned producer, a bounded channel, and a
//! `ReceiverStream`. A failed send means the client left, and the producer stops the turn
//! (and so the model call) at once. `Converse` is the engine's [`Conversation`]: this door
//! decodes frames into it and encodes its events.

use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, Span};

use super::logging::record_session;
use super::outbox::{Coalesce, Outbox, outbox};
use super::scope::caller_scope;
use super::status::code_of;
use crate::api::convert::{
    context_to_wire, create_request_from_open, finish_to_wire, new_session_from_wire,
    patch_from_wire, session_to_wire, tool_call_to_wire, tool_result_to_wire,
    tool_results_from_wire, usage_to_wire,
};
use crate::api::v1::{
    self, converse_request::Frame, converse_response, interact_service_server::InteractService,
    stream_response_response,
};
use crate::engine::{
    Conversation, ConverseEnd, ConverseEvent, ConverseFrame, ConverseSink, Engine, EngineError,
    Lifecycle, NoSink, SinkClosed, TurnEvent, TurnOutcome, TurnRequest, TurnSink,
};

/// Implements `InteractService` over the engine.
pub struct InteractApi {
    engine: Arc<Engine>,
    lifecycle: Lifecycle,
}

impl InteractApi {
    /// The service over `engine`, following `lifecycle` for shutdown.
    pub fn new(engine: Arc<Engine>, lifecycle: Lifecycle) -> Self {
        Self { engine, lifecycle }
    }
}

/// A turn error as the client should see it: a turn cancelled because the server closes is
/// UNAVAILABLE, not CANCELLED.
fn turn_status(error: EngineError, lifecycle: &Lifecycle) -> Status {
    if matches!(error, EngineError::Cancelled) && lifecycle.is_closing() {
        return EngineError::ShuttingDown.into();
    }
    error.into()
}

fn completed(outcome: &TurnOutcome) -> v1::InteractResponse {
    v1::InteractResponse {
        session_id: outcome.session_id.clone(),
        response: outcome.response.clone(),
        updated_context: Some(context_to_wire(&outcome.context)),
        finish_reason: finish_to_wire(outcome.finish) as i32,
        tool_calls: outcome.tool_calls.iter().map(tool_call_to_wire).collect(),
        usage: Some(usage_to_wire(&outcome.usage)),
        session_created: outcome.session_created,
        turn_id: outcome.turn_id.clone(),
    }
}

/// The fields `InteractRequest` and `StreamResponseRequest` share, as the engine's request.
struct WireTurn {
    session_id: String,
    message: String,
    context: Option<prost_types::Struct>,
    tool_results: Vec<v1::ToolResult>,
    idempotency_key: String,
    abandon_tool_calls: bool,
}

impl From<v1::InteractRequest> for WireTurn {
    fn from(r: v1::InteractRequest) -> Self {
        Self {
            session_id: r.session_id,
            message: r.message,
            context: r.context,
            tool_results: r.tool_results,
            idempotency_key: r.idempotency_key,
            abandon_tool_calls: r.abandon_tool_calls,
        }
    }
}

impl From<v1::StreamResponseRequest> for WireTurn {
    fn from(r: v1::StreamResponseRequest) -> Self {
        Self {
            session_id: r.session_id,
            message: r.message,
            context: r.context,
            tool_results: r.tool_results,
            idempotency_key: r.idempotency_key,
            abandon_tool_calls: r.abandon_tool_calls,
        }
    }
}

fn turn_request(wire: WireTurn) -> Result<TurnRequest, Status> {
    Ok(TurnRequest {
        session_id: wire.session_id,
        message: wire.message,
        context_patch: patch_from_wire("context", wire.context)?,
        tool_results: tool_results_from_wire(wire.tool_results),
        create: None,
        idempotency_key: wire.idempotency_key,
        abandon_tool_calls: wire.abandon_tool_calls,
    })
}

/// The wire form of a turn event, for either stream kind.
enum WireEvent {
    Started(v1::TurnStarted),
    Delta(v1::TextDelta),
    ToolCall(v1::ToolCall),
    ToolResult(v1::ToolResultEvent),
}

fn wire_event(event: TurnEvent) -> WireEvent {
    match event {
        TurnEvent::Started {
            turn_id,
            session_id,
            session_created,
        } => WireEvent::Started(v1::TurnStarted {
            turn_id,
            session_id,
            session_created,
        }),
        TurnEvent::Delta(text) => WireEvent::Delta(v1::TextDelta { text }),
        TurnEvent::ToolCall(call) => WireEvent::ToolCall(tool_call_to_wire(&call)),
        TurnEvent::ToolResult { call, result } => WireEvent::ToolResult(v1::ToolResultEvent {
            tool_call: Some(tool_call_to_wire(&call)),
            result: Some(tool_result_to_wire(&result)),
        }),
    }
}

/// Sends `StreamResponse` events.
struct StreamSink {
    tx: Outbox<v1::StreamResponseResponse>,
}

impl TurnSink for StreamSink {
    async fn emit(&mut self, event: TurnEvent) -> Result<(), SinkClosed> {
        use stream_response_response::Event;
        let event = match wire_event(event) {
            WireEvent::Started(e) => Event::Started(e),
            WireEvent::Delta(e) => Event::Delta(e),
            WireEvent::ToolCall(e) => Event::ToolCall(e),
            WireEvent::ToolResult(e) => Event::ToolResult(e),
        };
        let response = v1::StreamResponseResponse { event: Some(event) };
        let size = response.encoded_len();
        self.tx.send(Ok(response), size).await
    }
}

impl Coalesce for v1::StreamResponseResponse {
    fn absorb(&mut self, next: &mut Self) -> bool {
        use stream_response_response::Event;
        match (&mut self.event, &mut next.event) {
            (Some(Event::Delta(text)), Some(Event::Delta(more))) => {
                text.text.push_str(&std::mem::take(&mut more.text));
                true
            }
            _ => false,
        }
    }
}

impl Coalesce for v1::ConverseResponse {
    fn absorb(&mut self, next: &mut Self) -> bool {
        use converse_response::Event;
        if self.turn_id != next.turn_id {
            return false;
        }
        match (&mut self.event, &mut next.event) {
            (Some(Event::Delta(text)), Some(Event::Delta(more))) => {
                text.text.push_str(&std::mem::take(&mut more.text));
                true
            }
            _ => false,
        }
    }
}

/// Sends a [`Conversation`]'s events as `ConverseResponse`s.
#[derive(Clone)]
struct ConverseTx(Outbox<v1::ConverseResponse>);

impl ConverseSink for ConverseTx {
    async fn send(&self, event: ConverseEvent) -> Result<(), SinkClosed> {
        let response = converse_response(event);
        let size = response.encoded_len();
        self.0.send(Ok(response), size).await
    }

    async fn closed(&self) {
        self.0.closed().await
    }
}

/// A [`Conversation`]'s event as the `ConverseResponse` every Converse door sends.
pub(crate) fn converse_response(event: ConverseEvent) -> v1::ConverseResponse {
    use converse_response::Event;
    let (turn_id, event) = match event {
        ConverseEvent::Opened { session, created } => (
            String::new(),
            Event::Opened(v1::ConverseOpened {
                session: Some(session_to_wire(&session)),
                session_created: created,
            }),
        ),
        ConverseEvent::Turn { turn_id, event } => {
            let event = match wire_event(event) {
                WireEvent::Started(e) => Event::Started(e),
                WireEvent::Delta(e) => Event::Delta(e),
                WireEvent::ToolCall(e) => Event::ToolCall(e),
                WireEvent::ToolResult(e) => Event::ToolResult(e),
            };
            (turn_id, event)
        }
        ConverseEvent::Completed { turn_id, outcome } => {
            (turn_id, Event::Completed(completed(&outcome)))
        }
        ConverseEvent::Failed { turn_id, error } => (
            turn_id,
            Event::Error(v1::TurnError {
                code: code_of(error.kind()) as i32,
                message: error.to_string(),
            }),
        ),
    };
    v1::ConverseResponse {
        turn_id,
        event: Some(event),
    }
}

/// A `ConverseRequest` as the engine's frame. Decoding problems become
/// [`ConverseFrame::Invalid`], answered in order while the stream goes on.
pub(crate) fn converse_frame(request: v1::ConverseRequest) -> ConverseFrame {
    let turn =
        |message, context, tool_results, idempotency_key| match patch_from_wire("context", context)
        {
            Ok(context_patch) => ConverseFrame::Turn {
                message,
                context_patch,
                tool_results: tool_results_from_wire(tool_results),
                idempotency_key,
            },
            Err(e) => ConverseFrame::Invalid(EngineError::InvalidArgument(e.0)),
        };
    match request.frame {
        Some(Frame::Open(open)) => {
            record_session(&open.session_id);
            match new_session_from_wire("open.", create_request_from_open(open)) {
                Ok(new) => ConverseFrame::Open(new),
                Err(e) => ConverseFrame::Invalid(EngineError::InvalidArgument(e.0)),
            }
        }
        Some(Frame::UserMessage(m)) => turn(m.message, m.context, Vec::new(), m.idempotency_key),
        Some(Frame::ToolResults(r)) => turn(String::new(), None, r.results, String::new()),
        Some(Frame::Cancel(_)) => ConverseFrame::Cancel,
        None => ConverseFrame::Invalid(EngineError::InvalidArgument(
            "empty frame: set one of open, user_message, tool_results, cancel".into(),
        )),
    }
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl InteractService for InteractApi {
    async fn interact(
        &self,
        request: Request<v1::InteractRequest>,
    ) -> Result<Response<v1::InteractResponse>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        record_session(&r.session_id);
        let turn = turn_request(r.into())?;
        let _ticket = self.lifecycle.begin_turn(&scope.tenant)?;
        let cancel = self.lifecycle.turn_token();
        // If the client goes away or its deadline passes, this future is dropped, and the
        // turn with it: nothing is stored.
        let outcome = self
            .engine
            .run_turn(&scope, turn, &mut NoSink, &cancel)
            .await
            .map_err(|e| turn_status(e, &self.lifecycle))?;
        Ok(Response::new(completed(&outcome)))
    }

    type StreamResponseStream = BoxStream<v1::StreamResponseResponse>;

    async fn stream_response(
        &self,
        request: Request<v1::StreamResponseRequest>,
    ) -> Result<Response<Self::StreamResponseStream>, Status> {
        let scope = caller_scope(&request)?;
        let r = request.into_inner();
        record_session(&r.session_id);
        let turn = turn_request(r.into())?;
        let ticket = self.lifecycle.begin_turn(&scope.tenant)?;
        let cancel = self.lifecycle.turn_token();
        let (tx, rx) = outbox(self.engine.limits());
        let engine = self.engine.clone();
        let lifecycle = self.lifecycle.clone();
        let producer = async move {
            let _ticket = ticket;
            let watch = tx.clone();
            let mut sink = StreamSink { tx: tx.clone() };
            let result = tokio::select! {
                result = engine.run_turn(&scope, turn, &mut sink, &cancel) => result,
                // The client left while the model was busy: drop the turn now.
                _ = watch.closed() => return,
            };
            let (item, size) = match result {
                Ok(outcome) => {
                    let response = v1::StreamResponseResponse {
                        event: Some(stream_response_response::Event::Completed(completed(
                            &outcome,
                        ))),
                    };
                    let size = response.encoded_len();
                    (Ok(response), size)
                }
                Err(e) => (Err(turn_status(e, &lifecycle)), 0),
            };
            let _ = tx.send(item, size).await;
        };
        // In the RPC's span, so the producer's log lines name the method and session.
        tokio::spawn(crate::telemetry::request_id::inherit(producer).instrument(Span::current()));
        Ok(Response::new(Box::pin(rx)))
    }

    type ConverseStream = BoxStream<v1::ConverseResponse>;

    async fn converse(
        &self,
        request: Request<Streaming<v1::ConverseRequest>>,
    ) -> Result<Response<Self::ConverseStream>, Status> {
        let scope = caller_scope(&request)?;
        let inbound = request.into_inner().map(|frame| frame.map(converse_frame));
        let (tx, rx) = outbox(self.engine.limits());
        let tx = ConverseTx(tx);
        let conversation = Conversation::new(
            scope,
            self.engine.clone(),
            self.lifecycle.clone(),
            tx.clone(),
        );
        let task = async move {
            let end: Status = match conversation.run(inbound).await {
                ConverseEnd::Finished | ConverseEnd::ClientLeft => return,
                ConverseEnd::ShuttingDown => EngineError::ShuttingDown.into(),
                // The inbound stream is broken (undecodable frame, reset): nothing more can
                // be read, so the stream ends with that status.
                ConverseEnd::Broken(status) => status,
            };
            let _ = tx.0.send(Err(end), 0).await;
        };
        // In the RPC's span: the open frame records the session there, and every later log
        // line of the stream carries it.
        tokio::spawn(crate::telemetry::request_id::inherit(task).instrument(Span::current()));
        Ok(Response::new(Box::pin(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_delta(text: &str) -> v1::StreamResponseResponse {
        v1::StreamResponseResponse {
            event: Some(stream_response_response::Event::Delta(v1::TextDelta {
                text: text.into(),
            })),
        }
    }

    fn converse_delta(turn_id: &str, text: &str) -> v1::ConverseResponse {
        v1::ConverseResponse {
            turn_id: turn_id.into(),
            event: Some(converse_response::Event::Delta(v1::TextDelta {
                text: text.into(),
            })),
        }
    }

    #[test]
    fn stream_deltas_join_and_nothing_else_does() {
        let mut first = stream_delta("Hello, ");
        let mut next = stream_delta("world");
        assert!(first.absorb(&mut next));
        assert_eq!(first, stream_delta("Hello, world"));
        let mut started = v1::StreamResponseResponse {
            event: Some(stream_response_response::Event::Started(
                v1::TurnStarted::default(),
            )),
        };
        assert!(!first.absorb(&mut started));
        assert!(!started.absorb(&mut stream_delta("x")));
        assert_eq!(first, stream_delta("Hello, world"), "left as it was");
    }

    #[test]
    fn converse_deltas_join_only_within_one_turn() {
        let mut first = converse_delta("t-1", "one ");
        assert!(first.absorb(&mut converse_delta("t-1", "two")));
        assert_eq!(first, converse_delta("t-1", "one two"));
        let mut other_turn = converse_delta("t-2", "three");
        assert!(!first.absorb(&mut other_turn));
        assert_eq!(other_turn, converse_delta("t-2", "three"));
        let mut completed = v1::ConverseResponse {
            turn_id: "t-1".into(),
            event: Some(converse_response::Event::Completed(
                v1::InteractResponse::default(),
            )),
        };
        assert!(!first.absorb(&mut completed));
    }
}
