//! One bidirectional `Converse` stream: frames go out through a bounded channel, typed events
//! come back, and an optional [`ToolHandler`] answers client-side tool calls.

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use super::{Error, InteractServiceClient, Transport, patch_to_wire, tool_error, tool_result};
use crate::api::v1;
use crate::api::v1::converse_request::Frame;

pub use v1::converse_response::Event as ConverseEvent;

/// Frames the client may queue before `send_*` waits for the server to take them.
const OUTGOING_FRAMES: usize = 16;

/// Answers one client-side tool call: `Ok(content)` for a result, `Err(message)` for a tool
/// that ran and failed (the model sees the failure).
pub type ToolHandler = Box<dyn FnMut(&v1::ToolCall) -> Result<String, String> + Send>;

/// The session a `Converse` stream attaches to, and the settings it gets if it is new (they
/// are ignored for an existing session).
#[derive(Debug, Clone, Default)]
pub struct ConverseOptions {
    open: v1::ConverseOpen,
    context: Option<Value>,
}

impl ConverseOptions {
    /// Attach to `session_id` (created when it does not exist).
    pub fn new(session_id: impl Into<String>) -> Self {
        Self {
            open: v1::ConverseOpen {
                session_id: session_id.into(),
                ..Default::default()
            },
            context: None,
        }
    }

    /// System prompt for a new session.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.open.system_prompt = prompt.into();
        self
    }

    /// Initial context (a JSON object) for a new session.
    pub fn context(mut self, context: Value) -> Self {
        self.context = Some(context);
        self
    }

    /// Model for a new session; empty: the server's default.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.open.model = model.into();
        self
    }

    /// Declares a client-side tool for a new session (see [`super::tool_definition`]).
    pub fn tool(mut self, tool: v1::ToolDefinition) -> Self {
        self.open.tools.push(tool);
        self
    }

    /// Sets a label on a new session.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.open.labels.insert(key.into(), value.into());
        self
    }

    /// Window size in tokens for a new session; 0: the model's default.
    pub fn max_context_tokens(mut self, tokens: u32) -> Self {
        self.open.max_context_tokens = tokens;
        self
    }

    /// Expiry for a new session (in the future); unset: the server's idle session TTL.
    pub fn expire_time(mut self, time: prost_types::Timestamp) -> Self {
        self.open.expire_time = Some(time);
        self
    }

    /// Window settings for a new session; unset: sliding window.
    pub fn window(mut self, window: v1::WindowSettings) -> Self {
        self.open.window = Some(window);
        self
    }

    /// Server-side tools offered to a new session's model: names or `*` patterns (an empty
    /// list: none); unset: the server's `engine.default_server_tools`.
    pub fn server_tools<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.open.server_tools = Some(v1::ServerToolSelection {
            patterns: patterns.into_iter().map(Into::into).collect(),
        });
        self
    }
}

/// An open `Converse` stream attached to one session.
///
/// Send with [`Conversation::send_message`], [`Conversation::send_tool_results`] and
/// [`Conversation::cancel`]; read with [`Conversation::next_event`], or run a whole turn with
/// [`Conversation::turn`]. With a tool handler set, a turn that pauses for client-side tools
/// is answered automatically and continues under the same turn id.
pub struct Conversation {
    requests: Option<mpsc::Sender<v1::ConverseRequest>>,
    responses: Streaming<v1::ConverseResponse>,
    session: v1::Session,
    session_created: bool,
    handler: Option<ToolHandler>,
    /// A turn was started whose last event has not been read yet.
    running: bool,
    /// The session waits for tool results, as far as the events read so far tell.
    paused: bool,
    /// The running turn is the abandon a [`Conversation::cancel`] started while paused.
    abandoning: bool,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("session_id", &self.session.session_id)
            .field("open", &self.requests.is_some())
            .field("tool_handler", &self.handler.is_some())
            .finish()
    }
}

impl Conversation {
    /// Starts the call, sends `open` and waits for `opened`.
    pub(super) async fn open(
        mut client: InteractServiceClient<Transport>,
        options: ConverseOptions,
    ) -> Result<Self, Error> {
        let mut open = options.open;
        open.context = patch_to_wire("context", options.context)?;
        let (tx, rx) = mpsc::channel(OUTGOING_FRAMES);
        tx.send(v1::ConverseRequest {
            frame: Some(Frame::Open(open)),
        })
        .await
        .map_err(|_| closed())?;
        let mut responses = client.converse(ReceiverStream::new(rx)).await?.into_inner();
        loop {
            let Some(response) = responses.message().await? else {
                return Err(Error::Protocol(
                    "the Converse stream ended before the session was opened".to_string(),
                ));
            };
            match response.event {
                Some(ConverseEvent::Opened(opened)) => {
                    let session = opened.session.ok_or_else(|| {
                        Error::Protocol("the opened event carries no session".to_string())
                    })?;
                    let paused = !session.pending_tool_calls.is_empty();
                    return Ok(Self {
                        requests: Some(tx),
                        responses,
                        session,
                        session_created: opened.session_created,
                        handler: None,
                        running: false,
                        paused,
                        abandoning: false,
                    });
                }
                Some(ConverseEvent::Error(error)) => return Err(turn_error(error)),
                None => continue,
                Some(other) => {
                    return Err(Error::Protocol(format!("expected opened, got {other:?}")));
                }
            }
        }
    }

    /// The session as it was when the stream opened.
    pub fn session(&self) -> &v1::Session {
        &self.session
    }

    /// The session's id.
    pub fn session_id(&self) -> &str {
        &self.session.session_id
    }

    /// True when opening the stream created the session.
    pub fn session_created(&self) -> bool {
        self.session_created
    }

    /// Answers client-side tool calls with `handler` from now on: when a turn pauses for
    /// tools, every call is passed to it and the results are sent back at once.
    pub fn set_tool_handler<F>(&mut self, handler: F)
    where
        F: FnMut(&v1::ToolCall) -> Result<String, String> + Send + 'static,
    {
        self.handler = Some(Box::new(handler));
    }

    /// Stops answering tool calls automatically.
    pub fn clear_tool_handler(&mut self) {
        self.handler = None;
    }

    async fn send(&self, frame: Frame) -> Result<(), Error> {
        let requests = self.requests.as_ref().ok_or_else(closed)?;
        requests
            .send(v1::ConverseRequest { frame: Some(frame) })
            .await
            .map_err(|_| closed())
    }

    /// Starts a turn with `message`, merging `context` (a JSON object) first. A turn whose
    /// events were not read to the end (a dropped [`Conversation::turn`] future, a loop left
    /// early) is cancelled first and its rest read, so the events that follow are this turn's.
    pub async fn send_message(
        &mut self,
        message: &str,
        context: Option<Value>,
    ) -> Result<(), Error> {
        self.send_message_idempotent(message, context, "").await
    }

    /// [`Conversation::send_message`] with an idempotency key: resent on a new stream after
    /// the old one broke, the message gets the first attempt's outcome instead of a second
    /// turn (see [`crate::client::Client::interact_idempotent`]).
    pub async fn send_message_idempotent(
        &mut self,
        message: &str,
        context: Option<Value>,
        idempotency_key: &str,
    ) -> Result<(), Error> {
        let frame = Frame::UserMessage(v1::ConverseUserMessage {
            message: message.to_string(),
            context: patch_to_wire("context", context)?,
            idempotency_key: idempotency_key.to_string(),
        });
        self.begin(frame).await
    }

    /// Continues a paused turn with one result per pending call (ending an unread turn first,
    /// as [`Conversation::send_message`] does).
    pub async fn send_tool_results(&mut self, results: Vec<v1::ToolResult>) -> Result<(), Error> {
        self.begin(Frame::ToolResults(v1::ConverseToolResults { results }))
            .await
    }

    async fn begin(&mut self, frame: Frame) -> Result<(), Error> {
        if self.running && self.abandoning {
            // An abandon takes no model step: read its end rather than cancel it.
            while self.running {
                if self.next_event().await?.is_none() {
                    return Err(Error::Protocol(
                        "the Converse stream ended in the middle of a turn".to_string(),
                    ));
                }
            }
        } else if self.running {
            self.leave_turn().await?;
        }
        self.send(frame).await?;
        self.running = true;
        Ok(())
    }

    /// Cancels the running turn and reads the rest of it. A turn that paused before the
    /// cancel reached it (its events unread) is abandoned by the cancel; a turn whose pause was
    /// read is not running, so it stays paused.
    async fn leave_turn(&mut self) -> Result<(), Error> {
        self.running = false;
        self.send(Frame::Cancel(v1::ConverseCancel {})).await?;
        while let Some(response) = self.responses.message().await? {
            match &response.event {
                // A cancelled continuation leaves the session as it was.
                Some(ConverseEvent::Completed(done))
                    if done.finish_reason() == v1::FinishReason::Cancelled =>
                {
                    break;
                }
                // Finished, or paused and so abandoned by the cancel.
                Some(ConverseEvent::Completed(_)) => {
                    self.paused = false;
                    break;
                }
                Some(ConverseEvent::Error(_)) => break,
                _ => {}
            }
        }
        // The cancel is answered by the `completed` above or, when the turn had ended before
        // it arrived, by a FAILED_PRECONDITION error still to come. An empty frame, answered
        // in order with INVALID_ARGUMENT, marks where those answers end.
        let requests = self.requests.as_ref().ok_or_else(closed)?;
        requests
            .send(v1::ConverseRequest { frame: None })
            .await
            .map_err(|_| closed())?;
        while let Some(response) = self.responses.message().await? {
            if let Some(ConverseEvent::Error(error)) = &response.event
                && response.turn_id.is_empty()
                && error.code == Code::InvalidArgument as i32
            {
                return Ok(());
            }
        }
        Err(closed())
    }

    /// Cancels the running turn: it ends with `completed` and `FINISH_REASON_CANCELLED`, and
    /// nothing of it is stored. While the session waits for tool results (a `completed` with
    /// `FINISH_REASON_TOOL_CALLS` was read and not answered), abandons the paused turn instead:
    /// every pending call gets the error result "cancelled by the client", stored with its
    /// call, and the session is idle again; the abandon's `started` and `completed`
    /// (`FINISH_REASON_CANCELLED`) follow, read with [`Conversation::until_end_of_turn`] (or
    /// left to the next [`Conversation::send_message`], which reads them first).
    pub async fn cancel(&mut self) -> Result<(), Error> {
        self.send(Frame::Cancel(v1::ConverseCancel {})).await?;
        if !self.running && self.paused {
            self.running = true;
            self.abandoning = true;
        }
        Ok(())
    }

    /// Half-closes the stream: no more frames are sent; the server ends the stream once the
    /// running turn is done, and [`Conversation::next_event`] then returns `Ok(None)`.
    pub fn close(&mut self) {
        self.requests = None;
    }

    /// The next event; `Ok(None)` when the stream has ended cleanly, an [`Error::Status`] when
    /// it ended with an error. Event kinds this client does not know are skipped. With a
    /// tool handler set, a `completed` event that pauses for tools is answered before it is
    /// returned.
    pub async fn next_event(&mut self) -> Result<Option<ConverseEvent>, Error> {
        loop {
            let Some(response) = self.responses.message().await? else {
                return Ok(None);
            };
            let Some(event) = response.event else {
                continue;
            };
            match &event {
                ConverseEvent::Completed(done) => {
                    if self.abandoning {
                        self.paused = false;
                    } else if done.finish_reason() != v1::FinishReason::Cancelled {
                        // A cancelled continuation leaves the session paused.
                        self.paused = pauses_for_tools(done) && self.handler.is_none();
                    }
                    if !(pauses_for_tools(done) && self.handler.is_some()) {
                        self.running = false;
                        self.abandoning = false;
                    }
                }
                ConverseEvent::Error(_) => {
                    if self.abandoning {
                        // Refused: the session waits for nothing.
                        self.paused = false;
                    }
                    self.running = false;
                    self.abandoning = false;
                }
                _ => {}
            }
            if let ConverseEvent::Completed(done) = &event
                && pauses_for_tools(done)
                && let Some(handler) = self.handler.as_mut()
            {
                let results = done
                    .tool_calls
                    .iter()
                    .map(|call| match handler(call) {
                        Ok(content) => tool_result(call, content),
                        Err(message) => tool_error(call, message),
                    })
                    .collect();
                self.send(Frame::ToolResults(v1::ConverseToolResults { results }))
                    .await?;
            }
            return Ok(Some(event));
        }
    }

    /// Runs one whole turn: sends `message`, reads to its end and returns the final
    /// `completed`. With a tool handler, tool pauses are answered and the turn continues;
    /// without one, a turn paused for tools is returned as it is (`FINISH_REASON_TOOL_CALLS`).
    /// A turn the server refuses is an [`Error::Status`] with its code.
    pub async fn turn(
        &mut self,
        message: &str,
        context: Option<Value>,
    ) -> Result<v1::InteractResponse, Error> {
        self.send_message(message, context).await?;
        self.until_end_of_turn().await
    }

    /// Reads events up to the end of the current turn (see [`Conversation::turn`]).
    pub async fn until_end_of_turn(&mut self) -> Result<v1::InteractResponse, Error> {
        loop {
            match self.next_event().await? {
                None => {
                    return Err(Error::Protocol(
                        "the Converse stream ended in the middle of a turn".to_string(),
                    ));
                }
                Some(ConverseEvent::Completed(done)) => {
                    if !(pauses_for_tools(&done) && self.handler.is_some()) {
                        return Ok(done);
                    }
                }
                Some(ConverseEvent::Error(error)) => return Err(turn_error(error)),
                Some(_) => {}
            }
        }
    }
}

fn pauses_for_tools(done: &v1::InteractResponse) -> bool {
    done.finish_reason() == v1::FinishReason::ToolCalls
}

/// A `TurnError` event as an error with its status code.
fn turn_error(error: v1::TurnError) -> Error {
    Error::Status(Status::new(Code::from_i32(error.code), error.message))
}

fn closed() -> Error {
    Error::Protocol("the Converse stream is closed for sending".to_string())
}
