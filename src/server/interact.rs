//! `contextd.v1.InteractService`: unary turns, streamed turns, and the bidirectional
//! `Converse` stream.
//!
//! Streams follow one pattern: a spawned producer, a bounded channel, and a
//! `ReceiverStream`. A failed send means the client left, and the producer stops the turn
//! (and so the model call) at once.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};

use super::logging::record_session;
use super::scope::caller_scope;
use super::shutdown::{Lifecycle, shutting_down};
use crate::api::convert::{
    context_to_wire, create_request_from_open, finish_to_wire, new_session_from_wire,
    patch_from_wire, session_to_wire, tool_call_to_wire, tool_result_to_wire,
    tool_results_from_wire, usage_to_wire,
};
use crate::api::v1::{
    self, converse_request::Frame, converse_response, interact_service_server::InteractService,
    stream_response_response,
};
use crate::domain::Scope;
use crate::engine::{
    Engine, EngineError, NoSink, SinkClosed, TurnEvent, TurnOutcome, TurnRequest, TurnSink,
};

/// Events buffered per stream before the producer waits for the client.
const STREAM_BUFFER: usize = 32;

/// What a stream's channel carries. Events are boxed: tokio allocates a channel's first block
/// of slots up front, and 32 unboxed `ConverseResponse`s (440 bytes each) made that block
/// 14 KiB for every open stream, idle or not.
type Outgoing<T> = Result<Box<T>, Status>;

/// The response stream of a channel's receiver.
fn response_stream<T: Send + 'static>(rx: mpsc::Receiver<Outgoing<T>>) -> BoxStream<T> {
    Box::pin(ReceiverStream::new(rx).map(|item| item.map(|event| *event)))
}

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
        return shutting_down();
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

fn turn_request(
    session_id: String,
    message: String,
    context: Option<prost_types::Struct>,
    tool_results: Vec<v1::ToolResult>,
) -> Result<TurnRequest, Status> {
    Ok(TurnRequest {
        session_id,
        message,
        context_patch: patch_from_wire("context", context)?,
        tool_results: tool_results_from_wire(tool_results),
        create: None,
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
    tx: mpsc::Sender<Outgoing<v1::StreamResponseResponse>>,
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
        self.tx
            .send(Ok(Box::new(v1::StreamResponseResponse {
                event: Some(event),
            })))
            .await
            .map_err(|_| SinkClosed)
    }
}

/// Sends `Converse` events, stamping each with its turn id.
struct ConverseSink {
    tx: ConverseTx,
    turn_id: String,
}

type ConverseTx = mpsc::Sender<Outgoing<v1::ConverseResponse>>;

impl TurnSink for ConverseSink {
    async fn emit(&mut self, event: TurnEvent) -> Result<(), SinkClosed> {
        use converse_response::Event;
        if let TurnEvent::Started { turn_id, .. } = &event {
            self.turn_id = turn_id.clone();
        }
        let event = match wire_event(event) {
            WireEvent::Started(e) => Event::Started(e),
            WireEvent::Delta(e) => Event::Delta(e),
            WireEvent::ToolCall(e) => Event::ToolCall(e),
            WireEvent::ToolResult(e) => Event::ToolResult(e),
        };
        send_converse(&self.tx, &self.turn_id, event)
            .await
            .map_err(|_| SinkClosed)
    }
}

async fn send_converse(
    tx: &ConverseTx,
    turn_id: &str,
    event: converse_response::Event,
) -> Result<(), SinkClosed> {
    tx.send(Ok(Box::new(v1::ConverseResponse {
        turn_id: turn_id.to_string(),
        event: Some(event),
    })))
    .await
    .map_err(|_| SinkClosed)
}

fn error_event(code: Code, message: impl Into<String>) -> converse_response::Event {
    converse_response::Event::Error(v1::TurnError {
        code: code as i32,
        message: message.into(),
    })
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl InteractService for InteractApi {
    async fn interact(
        &self,
        request: Request<v1::InteractRequest>,
    ) -> Result<Response<v1::InteractResponse>, Status> {
        let scope = caller_scope(&request);
        let r = request.into_inner();
        record_session(&r.session_id);
        let turn = turn_request(r.session_id, r.message, r.context, r.tool_results)?;
        let _ticket = self.lifecycle.begin_turn()?;
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
        let scope = caller_scope(&request);
        let r = request.into_inner();
        record_session(&r.session_id);
        let turn = turn_request(r.session_id, r.message, r.context, r.tool_results)?;
        let ticket = self.lifecycle.begin_turn()?;
        let cancel = self.lifecycle.turn_token();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let engine = self.engine.clone();
        let lifecycle = self.lifecycle.clone();
        tokio::spawn(async move {
            let _ticket = ticket;
            let watch = tx.clone();
            let mut sink = StreamSink { tx: tx.clone() };
            let result = tokio::select! {
                result = engine.run_turn(&scope, turn, &mut sink, &cancel) => result,
                // The client left while the model was busy: drop the turn now.
                _ = watch.closed() => return,
            };
            let item = match result {
                Ok(outcome) => Ok(Box::new(v1::StreamResponseResponse {
                    event: Some(stream_response_response::Event::Completed(completed(
                        &outcome,
                    ))),
                })),
                Err(e) => Err(turn_status(e, &lifecycle)),
            };
            let _ = tx.send(item).await;
        });
        Ok(Response::new(response_stream(rx)))
    }

    type ConverseStream = BoxStream<v1::ConverseResponse>;

    async fn converse(
        &self,
        request: Request<Streaming<v1::ConverseRequest>>,
    ) -> Result<Response<Self::ConverseStream>, Status> {
        let scope = caller_scope(&request);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let conversation = Conversation {
            scope,
            engine: self.engine.clone(),
            lifecycle: self.lifecycle.clone(),
            tx,
            session_id: None,
            queue: VecDeque::new(),
            max_queue: self.engine.limits().max_converse_queue,
        };
        tokio::spawn(conversation.run(inbound));
        Ok(Response::new(response_stream(rx)))
    }
}

/// The outcome of a turn on a Converse stream, with the turn id its events carried.
type TurnDone = (Result<TurnOutcome, EngineError>, String);

/// A running Converse turn: its future and the token that cancels it.
struct RunningTurn {
    future: Pin<Box<dyn Future<Output = TurnDone> + Send>>,
    cancel: CancellationToken,
}

/// One Converse stream: reads frames, runs one turn at a time, queues frames that arrive
/// during a turn, and acts on `cancel` at once.
struct Conversation {
    scope: Scope,
    engine: Arc<Engine>,
    lifecycle: Lifecycle,
    tx: ConverseTx,
    session_id: Option<String>,
    queue: VecDeque<Frame>,
    max_queue: usize,
}

impl Conversation {
    async fn run(mut self, mut inbound: Streaming<v1::ConverseRequest>) {
        let mut running: Option<RunningTurn> = None;
        let mut inbound_open = true;
        loop {
            while running.is_none() {
                let Some(frame) = self.queue.pop_front() else {
                    break;
                };
                match self.start(frame).await {
                    Ok(turn) => running = turn,
                    Err(SinkClosed) => return,
                }
            }
            if !inbound_open && running.is_none() && self.queue.is_empty() {
                return; // The client half-closed and everything it sent is answered.
            }
            tokio::select! {
                frame = inbound.message(), if inbound_open => match frame {
                    Ok(Some(v1::ConverseRequest { frame: Some(Frame::Cancel(_)) })) => {
                        match &running {
                            Some(turn) => turn.cancel.cancel(),
                            None => {
                                if self.send("", error_event(Code::FailedPrecondition, "no turn is running; cancel applies to the running turn")).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Ok(Some(v1::ConverseRequest { frame: Some(frame) })) => {
                        if self.queue.len() >= self.max_queue {
                            let message = format!(
                                "{} frames are already waiting for the running turn; wait for `completed` before sending more (limits.max_converse_queue)",
                                self.queue.len()
                            );
                            if self.send("", error_event(Code::ResourceExhausted, message)).await.is_err() {
                                return;
                            }
                        } else {
                            self.queue.push_back(frame);
                        }
                    }
                    Ok(Some(v1::ConverseRequest { frame: None })) => {
                        if self.send("", error_event(Code::InvalidArgument, "empty frame: set one of open, user_message, tool_results, cancel")).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => inbound_open = false,
                    Err(status) => {
                        // The inbound stream is broken (undecodable frame, reset): nothing
                        // more can be read, so end the stream with that status.
                        let _ = self.tx.send(Err(status)).await;
                        return;
                    }
                },
                (result, turn_id) = async { running.as_mut().map(|t| t.future.as_mut()).expect("guarded by if").await }, if running.is_some() => {
                    let cancelled_by_client = running.as_ref().is_some_and(|t| t.cancel.is_cancelled()) && !self.lifecycle.is_closing();
                    running = None;
                    if self.finish(result, turn_id, cancelled_by_client).await.is_err() {
                        return;
                    }
                }
                _ = self.lifecycle.closed() => {
                    let _ = self.tx.send(Err(shutting_down())).await;
                    return;
                }
                _ = self.tx.closed() => return,
            }
        }
    }

    async fn send(&self, turn_id: &str, event: converse_response::Event) -> Result<(), SinkClosed> {
        send_converse(&self.tx, turn_id, event).await
    }

    /// Handles a queued frame: answers `open` directly, starts a turn for the others.
    async fn start(&mut self, frame: Frame) -> Result<Option<RunningTurn>, SinkClosed> {
        let (message, context, results) = match frame {
            Frame::Open(open) => {
                self.open(open).await?;
                return Ok(None);
            }
            Frame::UserMessage(m) => (m.message, m.context, Vec::new()),
            Frame::ToolResults(r) => (String::new(), None, r.results),
            Frame::Cancel(_) => return Ok(None),
        };
        let Some(session_id) = self.session_id.clone() else {
            self.send(
                "",
                error_event(
                    Code::FailedPrecondition,
                    "send an open frame first: it names the session this stream works on",
                ),
            )
            .await?;
            return Ok(None);
        };
        let request = match turn_request(session_id, message, context, results) {
            Ok(request) => request,
            Err(status) => {
                self.send("", error_event(status.code(), status.message()))
                    .await?;
                return Ok(None);
            }
        };
        let ticket = match self.lifecycle.begin_turn() {
            Ok(ticket) => ticket,
            Err(status) => {
                self.send("", error_event(status.code(), status.message()))
                    .await?;
                return Ok(None);
            }
        };
        let cancel = self.lifecycle.turn_token();
        let engine = self.engine.clone();
        let scope = self.scope.clone();
        let mut sink = ConverseSink {
            tx: self.tx.clone(),
            turn_id: String::new(),
        };
        let turn_cancel = cancel.clone();
        let future = Box::pin(async move {
            let _ticket = ticket;
            let result = engine
                .run_turn(&scope, request, &mut sink, &turn_cancel)
                .await;
            (result, sink.turn_id)
        });
        Ok(Some(RunningTurn { future, cancel }))
    }

    /// Attaches the stream to a session, creating it when missing.
    async fn open(&mut self, open: v1::ConverseOpen) -> Result<(), SinkClosed> {
        if let Some(current) = &self.session_id {
            let message = format!(
                "this stream is already attached to session '{current}'; open a new stream for another session"
            );
            return self
                .send("", error_event(Code::FailedPrecondition, message))
                .await;
        }
        record_session(&open.session_id);
        match self.get_or_create(open).await {
            Ok((session, created)) => {
                self.session_id = Some(session.id.clone());
                let opened = v1::ConverseOpened {
                    session: Some(session_to_wire(&session)),
                    session_created: created,
                };
                self.send("", converse_response::Event::Opened(opened))
                    .await
            }
            Err(status) => {
                self.send("", error_event(status.code(), status.message()))
                    .await
            }
        }
    }

    /// The session an `open` frame names, created from its settings when missing.
    async fn get_or_create(
        &self,
        open: v1::ConverseOpen,
    ) -> Result<(crate::domain::session::Session, bool), Status> {
        if open.session_id.is_empty() {
            return Err(Status::invalid_argument(
                "open.session_id is required: 1 to 128 characters of [A-Za-z0-9._:-]",
            ));
        }
        let new = new_session_from_wire("open.", create_request_from_open(open))?;
        Ok(self.engine.open_session(&self.scope, new).await?)
    }

    /// Reports a finished turn.
    async fn finish(
        &self,
        result: Result<TurnOutcome, EngineError>,
        turn_id: String,
        cancelled_by_client: bool,
    ) -> Result<(), SinkClosed> {
        match result {
            Ok(outcome) => {
                self.send(
                    &turn_id,
                    converse_response::Event::Completed(completed(&outcome)),
                )
                .await
            }
            Err(EngineError::Cancelled) if cancelled_by_client => {
                let session_id = self.session_id.clone().unwrap_or_default();
                let outcome = self
                    .engine
                    .cancelled_outcome(&self.scope, &session_id, &turn_id)
                    .await;
                self.send(
                    &turn_id,
                    converse_response::Event::Completed(completed(&outcome)),
                )
                .await
            }
            Err(e) => {
                let status = turn_status(e, &self.lifecycle);
                self.send(&turn_id, error_event(status.code(), status.message()))
                    .await
            }
        }
    }
}
