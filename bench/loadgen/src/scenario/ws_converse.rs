//! Scenario 4 over a WebSocket: the Converse turns of [`super::converse`] (a user message that
//! makes the model call `lookup`, the call and the paused `completed`, the result, the final
//! reply) on `GET /v1/sessions/{session_id}:converse`, the browser agents' door. Frames are the
//! proto3 JSON of each message in text frames (`--frames json`, what a page sends) or their
//! protobuf encoding in binary frames (`--frames proto`).
//!
//! A WebSocket is one TCP connection, so every worker has its own: `connections × in_flight`
//! connections, as many as the gRPC scenario's streams. A turn counts when it ends with the
//! final `completed`; an `error` event counts under its code, and anything else the socket
//! does as `CONNECTION`.

use std::net::SocketAddr;

use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::converse_response::Event;
use contextd::api::v1::{
    ConverseOpen, ConverseRequest, ConverseResponse, ConverseToolResults, ConverseUserMessage,
    FinishReason, ToolResult,
};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{ClosedLoop, code_of};
use crate::load::{self, Failure, OpResult, Worker};
use crate::probe::ServerProbe;
use crate::workload;

/// How messages travel in frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frames {
    /// Text frames of proto3 JSON.
    Json,
    /// Binary frames of protobuf.
    Proto,
}

impl Frames {
    /// The encoding named `name` (`json` or `proto`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Self::Json),
            "proto" => Some(Self::Proto),
            _ => None,
        }
    }

    /// The encoding's name in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Proto => "proto",
        }
    }
}

/// One worker: one open WebSocket on its own session.
pub struct SocketWorker {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    frames: Frames,
}

/// What the worker reads of a server event: only what decides the turn's next step.
enum Step {
    /// A tool call with this id.
    ToolCall(String),
    /// `completed` with this finish reason.
    Completed(FinishReason),
    /// `error` with this gRPC code.
    Error(i32),
    /// Any other event (`started`, `delta`, …).
    Other,
}

impl SocketWorker {
    /// Connects, sends `open` for `session_id` (declaring `lookup`) and waits for `opened`.
    pub async fn open(
        addr: SocketAddr,
        session_id: String,
        frames: Frames,
    ) -> Result<Self, String> {
        let url = format!("ws://{addr}/v1/sessions/{session_id}:converse");
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("WebSocket request: {e}"))?;
        if let Ok(key) = std::env::var("CONTEXTD_API_KEY")
            && !key.is_empty()
        {
            let bearer = format!("Bearer {key}")
                .parse()
                .map_err(|_| "CONTEXTD_API_KEY is not a valid header value".to_string())?;
            request.headers_mut().insert("authorization", bearer);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("WebSocket handshake on {session_id}: {e}"))?;
        let mut worker = Self { socket, frames };
        worker
            .send(Frame::Open(ConverseOpen {
                session_id: String::new(),
                tools: vec![workload::lookup_tool()],
                ..Default::default()
            }))
            .await
            .map_err(|_| format!("sending open on {session_id} failed"))?;
        match worker.socket.next().await {
            Some(Ok(message)) if worker.is_opened(&message) => Ok(worker),
            other => Err(format!("WebSocket open on {session_id} failed: {other:?}")),
        }
    }

    fn is_opened(&self, message: &Message) -> bool {
        match (self.frames, message) {
            (Frames::Json, Message::Text(text)) => {
                serde_json::from_str::<Value>(text).is_ok_and(|event| event.get("opened").is_some())
            }
            (Frames::Proto, Message::Binary(bytes)) => matches!(
                ConverseResponse::decode(bytes.as_ref()),
                Ok(ConverseResponse {
                    event: Some(Event::Opened(_)),
                    ..
                })
            ),
            _ => false,
        }
    }

    async fn send(&mut self, frame: Frame) -> Result<(), Failure> {
        let message = match self.frames {
            Frames::Json => Message::text(json_frame(&frame).to_string()),
            Frames::Proto => {
                Message::binary(ConverseRequest { frame: Some(frame) }.encode_to_vec())
            }
        };
        self.socket
            .send(message)
            .await
            .map_err(|_| Failure::Connection)
    }

    /// The next event's step; pings are answered by the library and skipped here.
    async fn next_step(&mut self) -> Result<Step, Failure> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) if self.frames == Frames::Json => {
                    let event: Value =
                        serde_json::from_str(&text).map_err(|_| Failure::BadReply)?;
                    return Ok(json_step(&event));
                }
                Some(Ok(Message::Binary(bytes))) if self.frames == Frames::Proto => {
                    let event =
                        ConverseResponse::decode(bytes.as_ref()).map_err(|_| Failure::BadReply)?;
                    return Ok(proto_step(event));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return Err(Failure::Connection),
            }
        }
    }
}

/// The proto3 JSON of the two frames a turn sends (the field names of `ConverseRequest`).
fn json_frame(frame: &Frame) -> Value {
    match frame {
        Frame::Open(open) => json!({"open": {
            "sessionId": open.session_id,
            "tools": open.tools.iter().map(|tool| json!({
                "name": tool.name,
                "description": tool.description,
            })).collect::<Vec<_>>(),
        }}),
        Frame::UserMessage(user) => json!({"userMessage": {"message": user.message}}),
        Frame::ToolResults(results) => json!({"toolResults": {"results": results
            .results
            .iter()
            .map(|r| json!({"toolCallId": r.tool_call_id, "content": r.content}))
            .collect::<Vec<_>>()}}),
        other => unreachable!("the scenario sends no {other:?} frame"),
    }
}

fn json_step(event: &Value) -> Step {
    if let Some(call) = event.get("toolCall") {
        Step::ToolCall(call["toolCallId"].as_str().unwrap_or_default().to_owned())
    } else if let Some(done) = event.get("completed") {
        let reason = done["finishReason"].as_str().unwrap_or_default();
        Step::Completed(FinishReason::from_str_name(reason).unwrap_or(FinishReason::Unspecified))
    } else if let Some(error) = event.get("error") {
        Step::Error(error["code"].as_i64().unwrap_or(2) as i32)
    } else {
        Step::Other
    }
}

fn proto_step(event: ConverseResponse) -> Step {
    match event.event {
        Some(Event::ToolCall(call)) => Step::ToolCall(call.tool_call_id),
        Some(Event::Completed(done)) => Step::Completed(
            FinishReason::try_from(done.finish_reason).unwrap_or(FinishReason::Unspecified),
        ),
        Some(Event::Error(error)) => Step::Error(error.code),
        _ => Step::Other,
    }
}

impl Worker for SocketWorker {
    async fn run_once(&mut self) -> OpResult {
        self.send(Frame::UserMessage(ConverseUserMessage {
            message: workload::TOOL_CALL_MESSAGE.to_string(),
            ..Default::default()
        }))
        .await?;
        let mut calls = Vec::new();
        loop {
            match self.next_step().await? {
                Step::ToolCall(id) => calls.push(id),
                Step::Completed(FinishReason::ToolCalls) => {
                    let results = calls
                        .drain(..)
                        .map(|id| ToolResult {
                            tool_call_id: id,
                            content: workload::TOOL_RESULT.to_string(),
                            is_error: false,
                        })
                        .collect();
                    self.send(Frame::ToolResults(ConverseToolResults { results }))
                        .await?;
                }
                Step::Completed(FinishReason::Stop) => return Ok(1),
                Step::Completed(_) => return Err(Failure::BadReply),
                Step::Error(code) => return Err(code_of(code).into()),
                Step::Other => {}
            }
        }
    }
}

/// Runs the scenario.
pub async fn run(
    setup: ClosedLoop,
    frames: Frames,
    server: Option<&ServerProbe>,
) -> Result<Value, String> {
    let tag = workload::run_tag();
    let mut workers = Vec::with_capacity(setup.workers());
    for w in 0..setup.workers() {
        workers.push(SocketWorker::open(setup.addr, workload::session_id(&tag, w), frames).await?);
    }
    let result = load::run(workers, setup.plan, server).await;
    let mut out = result.to_json();
    out["setup"] = setup.to_json();
    out["frames"] = json!(frames.name());
    out["turns_per_s"] = out["ops_per_s"].clone();
    Ok(out)
}
