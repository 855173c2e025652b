//! A Converse stream's state machine, the same for every door that holds one: the stream is
//! attached to one session by its first `open` frame (created from the frame's settings when
//! missing), runs one turn at a time, queues the frames that arrive during a turn (bounded by
//! `limits.max_converse_queue`) and answers them in order, and acts on `cancel` at once: it
//! cancels the running turn, or, while the session waits for tool results, abandons the paused
//! turn through the same engine path as `abandon_tool_calls` on a unary turn.
//!
//! A door decodes its wire frames into [`ConverseFrame`]s, hands them to [`Conversation::run`]
//! as a stream, and encodes the [`ConverseEvent`]s its [`ConverseSink`] receives. What ended
//! the stream comes back as a [`ConverseEnd`], for the door to close its side as its protocol
//! says (a gRPC status, a WebSocket close frame).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::lifecycle::Lifecycle;
use super::{Engine, EngineError, NewSession, SinkClosed, TurnEvent, TurnOutcome, TurnRequest};
use crate::domain::Scope;
use crate::domain::session::{Context, FinishReason, Session, ToolResult};

/// One frame from the client, decoded by its door.
#[derive(Debug)]
pub enum ConverseFrame {
    /// Attach the stream to this session, creating it with these settings when missing.
    Open(NewSession),
    /// Run a turn: a user message (and context patch), or tool results for a paused turn.
    Turn {
        /// The user's text (empty when only tool results are sent).
        message: String,
        /// Merge patch for the session context.
        context_patch: Option<Context>,
        /// Results for the pending tool calls.
        tool_results: Vec<ToolResult>,
        /// Makes a retried message safe (see [`super::receipts`]); empty for none.
        idempotency_key: String,
    },
    /// Cancel the running turn, or abandon the paused one.
    Cancel,
    /// A frame the door could not decode into one of the above (an empty frame, a context
    /// that is not an object, …). It is answered with this error in its turn, and the stream
    /// goes on.
    Invalid(EngineError),
}

/// Something to tell the client, in order.
#[derive(Debug)]
pub enum ConverseEvent {
    /// The stream is attached to `session`.
    Opened {
        /// The session as it stands (boxed: it is much larger than the other events).
        session: Box<Session>,
        /// Whether the `open` frame created it.
        created: bool,
    },
    /// Progress of the running turn.
    Turn {
        /// The turn (empty before the turn has started).
        turn_id: String,
        /// What happened.
        event: TurnEvent,
    },
    /// A turn finished: completed, paused for client tools, or cancelled by the client.
    Completed {
        /// The turn.
        turn_id: String,
        /// How it ended.
        outcome: TurnOutcome,
    },
    /// A frame or a turn failed; the stream goes on.
    Failed {
        /// The turn that failed; empty for a frame that started none.
        turn_id: String,
        /// Why.
        error: EngineError,
    },
}

/// Where a conversation sends its events. Cloned into each running turn, so a turn's events
/// and the answers to frames that arrive meanwhile share one ordered channel.
pub trait ConverseSink: Clone + Send + Sync + 'static {
    /// Sends one event; `Err` means the client left.
    fn send(&self, event: ConverseEvent) -> impl Future<Output = Result<(), SinkClosed>> + Send;
    /// Resolves when the client has left.
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

/// Why a conversation ended.
#[derive(Debug)]
pub enum ConverseEnd<E> {
    /// The client half-closed and everything it sent is answered.
    Finished,
    /// The client left (its side of the channel closed).
    ClientLeft,
    /// The server is closing; the door should end the stream as unavailable.
    ShuttingDown,
    /// The inbound stream broke (an undecodable frame, a reset) with the door's own error.
    Broken(E),
}

/// The outcome of a turn on a Converse stream, with the turn id its events carried.
type TurnDone = (Result<TurnOutcome, EngineError>, String);

/// A running turn: its future and the token that cancels it.
struct RunningTurn {
    future: Pin<Box<dyn Future<Output = TurnDone> + Send>>,
    cancel: CancellationToken,
}

/// One Converse stream's state.
pub struct Conversation<S> {
    scope: Scope,
    engine: Arc<Engine>,
    lifecycle: Lifecycle,
    sink: S,
    session_id: Option<String>,
    queue: VecDeque<ConverseFrame>,
    /// Whether the session waits for tool results, as this stream last saw it (at `open`, and
    /// after each turn); a `cancel` with no turn running then abandons the paused turn. The
    /// engine checks again under the session's lock, so a stale value only changes which
    /// error a stray `cancel` gets.
    paused: bool,
}

impl<S: ConverseSink> Conversation<S> {
    /// A conversation of the caller `scope` that answers through `sink`.
    pub fn new(scope: Scope, engine: Arc<Engine>, lifecycle: Lifecycle, sink: S) -> Self {
        Self {
            scope,
            engine,
            lifecycle,
            sink,
            session_id: None,
            queue: VecDeque::new(),
            paused: false,
        }
    }

    /// Reads `inbound` until the client is done, leaves, breaks the stream, or the server
    /// closes; answers every frame on the sink.
    pub async fn run<E>(
        mut self,
        mut inbound: impl Stream<Item = Result<ConverseFrame, E>> + Unpin + Send,
    ) -> ConverseEnd<E> {
        let max_queue = self.engine.limits().max_converse_queue;
        let mut running: Option<RunningTurn> = None;
        let mut inbound_open = true;
        loop {
            while running.is_none() {
                let Some(frame) = self.queue.pop_front() else {
                    break;
                };
                match Box::pin(self.start(frame)).await {
                    Ok(turn) => running = turn,
                    Err(SinkClosed) => return ConverseEnd::ClientLeft,
                }
            }
            if !inbound_open && running.is_none() && self.queue.is_empty() {
                return ConverseEnd::Finished;
            }
            let answered = tokio::select! {
                frame = inbound.next(), if inbound_open => match frame {
                    Some(Ok(ConverseFrame::Cancel)) => {
                        if let Some(turn) = &running {
                            turn.cancel.cancel();
                            Ok(())
                        } else if self.paused {
                            // Nothing is queued when no turn runs: the abandon starts now.
                            Box::pin(self.start_turn(abandon_request())).await.map(|turn| running = turn)
                        } else {
                            Box::pin(self.fail("", EngineError::FailedPrecondition(
                                "no turn is running or paused for tool results; cancel applies to the running turn or to one that waits for tool results".into(),
                            ))).await
                        }
                    }
                    Some(Ok(frame)) if self.queue.len() >= max_queue => {
                        drop(frame);
                        let message = format!(
                            "{} frames are already waiting for the running turn; wait for `completed` before sending more (limits.max_converse_queue)",
                            self.queue.len()
                        );
                        Box::pin(self.fail("", EngineError::ResourceExhausted(message))).await
                    }
                    Some(Ok(frame)) => {
                        self.queue.push_back(frame);
                        Ok(())
                    }
                    Some(Err(error)) => return ConverseEnd::Broken(error),
                    None => {
                        inbound_open = false;
                        Ok(())
                    }
                },
                (result, turn_id) = async { running.as_mut().map(|t| t.future.as_mut()).expect("guarded by if").await }, if running.is_some() => {
                    let cancelled_by_client = running.as_ref().is_some_and(|t| t.cancel.is_cancelled())
                        && !self.lifecycle.is_closing();
                    running = None;
                    // A cancel that reached a turn only as it paused abandons the pause, as a
                    // cancel that came a moment later would have.
                    let paused_anyway = cancelled_by_client
                        && matches!(&result, Ok(outcome) if outcome.finish == FinishReason::ToolCalls);
                    let answered = Box::pin(self.finish(result, turn_id, cancelled_by_client)).await;
                    if answered.is_ok() && paused_anyway {
                        Box::pin(self.start_turn(abandon_request())).await.map(|turn| running = turn)
                    } else {
                        answered
                    }
                }
                () = self.lifecycle.closed() => return ConverseEnd::ShuttingDown,
                () = self.sink.closed() => return ConverseEnd::ClientLeft,
            };
            if answered.is_err() {
                return ConverseEnd::ClientLeft;
            }
        }
    }

    async fn fail(&self, turn_id: &str, error: EngineError) -> Result<(), SinkClosed> {
        self.sink
            .send(ConverseEvent::Failed {
                turn_id: turn_id.to_string(),
                error,
            })
            .await
    }

    /// Handles a queued frame: answers `open` and invalid frames directly, starts a turn for
    /// the others.
    async fn start(&mut self, frame: ConverseFrame) -> Result<Option<RunningTurn>, SinkClosed> {
        match frame {
            ConverseFrame::Open(new) => {
                self.open(new).await?;
                Ok(None)
            }
            ConverseFrame::Invalid(error) => {
                self.fail("", error).await?;
                Ok(None)
            }
            ConverseFrame::Cancel => Ok(None),
            ConverseFrame::Turn {
                message,
                context_patch,
                tool_results,
                idempotency_key,
            } => {
                let request = TurnRequest {
                    message,
                    context_patch,
                    tool_results,
                    idempotency_key,
                    ..TurnRequest::default()
                };
                self.start_turn(request).await
            }
        }
    }

    /// Starts `request` as a turn on the stream's session (refused before `open`).
    async fn start_turn(
        &mut self,
        mut request: TurnRequest,
    ) -> Result<Option<RunningTurn>, SinkClosed> {
        let Some(session_id) = self.session_id.clone() else {
            self.fail(
                "",
                EngineError::FailedPrecondition(
                    "send an open frame first: it names the session this stream works on".into(),
                ),
            )
            .await?;
            return Ok(None);
        };
        let ticket = match self.lifecycle.begin_turn(&self.scope.tenant) {
            Ok(ticket) => ticket,
            Err(error) => {
                self.fail("", error).await?;
                return Ok(None);
            }
        };
        request.session_id = session_id;
        let cancel = self.lifecycle.turn_token();
        let engine = self.engine.clone();
        let scope = self.scope.clone();
        let mut sink = StampedSink {
            sink: self.sink.clone(),
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
    async fn open(&mut self, new: NewSession) -> Result<(), SinkClosed> {
        if let Some(current) = &self.session_id {
            let message = format!(
                "this stream is already attached to session '{current}'; open a new stream for another session"
            );
            return self
                .fail("", EngineError::FailedPrecondition(message))
                .await;
        }
        if new.session_id.is_empty() {
            return self
                .fail(
                    "",
                    EngineError::InvalidArgument(
                        "open.session_id is required: 1 to 128 characters of [A-Za-z0-9._:-]"
                            .into(),
                    ),
                )
                .await;
        }
        match self.engine.open_session(&self.scope, new).await {
            Ok((session, created)) => {
                self.session_id = Some(session.id.clone());
                self.paused = session.pending.is_some();
                self.sink
                    .send(ConverseEvent::Opened {
                        session: Box::new(session),
                        created,
                    })
                    .await
            }
            Err(error) => self.fail("", error).await,
        }
    }

    /// Reports a finished turn. A turn the client cancelled completes with the session as it
    /// stands (still paused, if it was); one cancelled because the server closes fails as
    /// unavailable.
    async fn finish(
        &mut self,
        result: Result<TurnOutcome, EngineError>,
        turn_id: String,
        cancelled_by_client: bool,
    ) -> Result<(), SinkClosed> {
        let outcome = match result {
            Ok(outcome) => {
                self.paused = outcome.finish == FinishReason::ToolCalls;
                outcome
            }
            Err(EngineError::Cancelled) if cancelled_by_client => {
                let session_id = self.session_id.clone().unwrap_or_default();
                self.engine
                    .cancelled_outcome(&self.scope, &session_id, &turn_id)
                    .await
            }
            Err(EngineError::Cancelled) if self.lifecycle.is_closing() => {
                return self.fail(&turn_id, EngineError::ShuttingDown).await;
            }
            Err(error) => return self.fail(&turn_id, error).await,
        };
        self.sink
            .send(ConverseEvent::Completed { turn_id, outcome })
            .await
    }
}

/// The turn a `cancel` starts while the session waits for tool results.
fn abandon_request() -> TurnRequest {
    TurnRequest {
        abandon_tool_calls: true,
        ..TurnRequest::default()
    }
}

/// A running turn's sink: stamps each event with the turn id.
struct StampedSink<S> {
    sink: S,
    turn_id: String,
}

impl<S: ConverseSink> super::TurnSink for StampedSink<S> {
    async fn emit(&mut self, event: TurnEvent) -> Result<(), SinkClosed> {
        if let TurnEvent::Started { turn_id, .. } = &event {
            self.turn_id = turn_id.clone();
        }
        self.sink
            .send(ConverseEvent::Turn {
                turn_id: self.turn_id.clone(),
                event,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::config::Config;
    use crate::engine::ErrorKind;
    use crate::model::ModelRegistry;
    use crate::model::echo::EchoModel;
    use crate::store::memory::MemoryStore;
    use crate::tools::ToolRegistry;

    #[derive(Clone)]
    struct ChannelSink(mpsc::Sender<ConverseEvent>);

    impl ConverseSink for ChannelSink {
        async fn send(&self, event: ConverseEvent) -> Result<(), SinkClosed> {
            self.0.send(event).await.map_err(|_| SinkClosed)
        }
        async fn closed(&self) {
            self.0.closed().await
        }
    }

    fn engine(max_converse_queue: usize) -> Arc<Engine> {
        let mut config = Config::default();
        config.limits.max_converse_queue = max_converse_queue;
        let mut models = ModelRegistry::new();
        models.register(Arc::new(EchoModel::new(
            config.engine.default_max_context_tokens,
        )));
        Arc::new(Engine::new(
            Arc::new(MemoryStore::default()),
            models,
            ToolRegistry::new(),
            config.engine.clone(),
            config.limits.clone(),
        ))
    }

    #[test]
    fn an_idle_conversation_holds_little_state() {
        // Every open Converse stream keeps this future while it waits for a frame: opening a
        // session, starting a turn and answering one are boxed, so their larger states exist
        // only while they run (about 4.7 KiB unboxed, in a debug build).
        let (tx, _rx) = mpsc::channel(1);
        let conversation = Conversation::new(
            Scope::tenant("t"),
            engine(16),
            Lifecycle::default(),
            ChannelSink(tx),
        );
        let idle = conversation.run(tokio_stream::pending::<Result<ConverseFrame, Infallible>>());
        let bytes = std::mem::size_of_val(&idle);
        assert!(
            bytes <= 1536,
            "an idle conversation's future is {bytes} bytes"
        );
    }

    fn turn(message: &str) -> ConverseFrame {
        ConverseFrame::Turn {
            message: message.into(),
            context_patch: None,
            tool_results: Vec::new(),
            idempotency_key: String::new(),
        }
    }

    fn open(id: &str) -> ConverseFrame {
        ConverseFrame::Open(NewSession {
            session_id: id.into(),
            ..NewSession::default()
        })
    }

    /// Runs a conversation over `frames` (then half-closes) and collects what it said.
    async fn converse(
        engine: Arc<Engine>,
        lifecycle: Lifecycle,
        frames: Vec<ConverseFrame>,
    ) -> (Vec<ConverseEvent>, ConverseEnd<Infallible>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let conversation =
            Conversation::new(Scope::tenant("t"), engine, lifecycle, ChannelSink(tx));
        let inbound = tokio_stream::iter(frames.into_iter().map(Ok::<_, Infallible>));
        let end = conversation.run(inbound).await;
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.push(event);
        }
        (events, end)
    }

    fn failure(event: &ConverseEvent) -> Option<ErrorKind> {
        match event {
            ConverseEvent::Failed { error, .. } => Some(error.kind()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn frames_are_answered_in_order_and_the_stream_goes_on() {
        let (events, end) = converse(
            engine(16),
            Lifecycle::default(),
            vec![
                turn("before open"),
                ConverseFrame::Cancel,
                open(""),
                open("s1"),
                ConverseFrame::Invalid(EngineError::InvalidArgument("bad".into())),
                turn("hello"),
                open("s2"),
            ],
        )
        .await;
        assert!(matches!(end, ConverseEnd::Finished));
        let kinds: Vec<_> = events.iter().map(failure).collect();
        // A turn before open, a cancel with nothing running and an open without an id fail;
        // the cancel is answered at once (before the queued frames ahead of it).
        assert_eq!(kinds[0], Some(ErrorKind::FailedPrecondition), "{events:?}");
        assert_eq!(kinds[1], Some(ErrorKind::FailedPrecondition), "{events:?}");
        assert_eq!(kinds[2], Some(ErrorKind::InvalidArgument), "{events:?}");
        assert!(matches!(
            &events[3],
            ConverseEvent::Opened { created: true, session } if session.id == "s1"
        ));
        assert_eq!(kinds[4], Some(ErrorKind::InvalidArgument));
        let completed: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                ConverseEvent::Completed { turn_id, outcome } => Some((turn_id, outcome)),
                _ => None,
            })
            .collect();
        assert_eq!(completed.len(), 1);
        assert!(completed[0].1.response.contains("hello"));
        assert!(!completed[0].0.is_empty());
        // Every event of the turn carries its id.
        for event in &events {
            if let ConverseEvent::Turn { turn_id, .. } = event {
                assert_eq!(turn_id, completed[0].0);
            }
        }
        // A second open on the same stream is refused.
        assert_eq!(
            events.last().and_then(failure),
            Some(ErrorKind::FailedPrecondition)
        );
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        // Queue of 1: the open is dequeued at once; of the turns sent while the first one
        // waits to be picked up, those over the bound are refused.
        let (tx, mut rx) = mpsc::channel(1024);
        let (frames_tx, frames_rx) = mpsc::channel(16);
        let conversation = Conversation::new(
            Scope::tenant("t"),
            engine(1),
            Lifecycle::default(),
            ChannelSink(tx),
        );
        let task =
            tokio::spawn(conversation.run(ReceiverStream::new(frames_rx).map(Ok::<_, Infallible>)));
        frames_tx.send(open("q")).await.unwrap();
        for i in 0..6 {
            frames_tx.send(turn(&format!("m{i}"))).await.unwrap();
        }
        drop(frames_tx);
        assert!(matches!(task.await.unwrap(), ConverseEnd::Finished));
        let mut completed = 0;
        let mut exhausted = 0;
        while let Ok(event) = rx.try_recv() {
            match &event {
                ConverseEvent::Completed { .. } => completed += 1,
                e if failure(e) == Some(ErrorKind::ResourceExhausted) => exhausted += 1,
                _ => {}
            }
        }
        assert_eq!(
            completed + exhausted,
            6,
            "every turn frame is answered once"
        );
        assert!(completed >= 1);
    }

    #[tokio::test]
    async fn draining_refuses_turns_and_closing_ends_the_stream() {
        let lifecycle = Lifecycle::default();
        lifecycle.drain();
        let (events, end) =
            converse(engine(16), lifecycle.clone(), vec![open("d"), turn("x")]).await;
        assert!(matches!(end, ConverseEnd::Finished));
        assert_eq!(
            events.last().and_then(failure),
            Some(ErrorKind::Unavailable)
        );

        lifecycle.close();
        let (tx, _rx) = mpsc::channel(8);
        let conversation =
            Conversation::new(Scope::tenant("t"), engine(16), lifecycle, ChannelSink(tx));
        let end = conversation
            .run(tokio_stream::pending::<Result<ConverseFrame, Infallible>>())
            .await;
        assert!(matches!(end, ConverseEnd::ShuttingDown));
    }

    #[tokio::test]
    async fn a_broken_inbound_stream_ends_the_conversation_with_its_error() {
        let (tx, _rx) = mpsc::channel(8);
        let conversation = Conversation::new(
            Scope::tenant("t"),
            engine(16),
            Lifecycle::default(),
            ChannelSink(tx),
        );
        let inbound = tokio_stream::iter(vec![Ok(open("b")), Err("reset")]);
        assert!(matches!(
            conversation.run(inbound).await,
            ConverseEnd::Broken("reset")
        ));
    }
}
