//! Scenario 4: `Converse` with a client-side tool round trip in every turn. Each worker keeps
//! one stream on its own session (which declares the `lookup` tool); a turn is: send a user
//! message that makes the model call `lookup`, receive the call and the paused `completed`,
//! send the result, receive the final reply. Latency is the whole turn, round trip included.

use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::converse_response::Event;
use contextd::api::v1::{
    ConverseOpen, ConverseRequest, ConverseResponse, ConverseToolResults, ConverseUserMessage,
    FinishReason, ToolResult,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::Channel;

use super::{ClosedLoop, code_of, open_converse};
use crate::load::{self, OpResult, Worker};
use crate::probe::ServerProbe;
use crate::workload;

/// One worker: one open `Converse` stream.
pub struct ConverseWorker {
    frames: mpsc::Sender<ConverseRequest>,
    events: Streaming<ConverseResponse>,
}

fn frame(frame: Frame) -> ConverseRequest {
    ConverseRequest { frame: Some(frame) }
}

impl ConverseWorker {
    /// Opens a stream on `session_id`, creating the session with the `lookup` tool.
    pub async fn open(channel: Channel, session_id: String) -> Result<Self, String> {
        let open = ConverseOpen {
            session_id,
            tools: vec![workload::lookup_tool()],
            ..Default::default()
        };
        let (frames, events) = open_converse(channel, open, 4).await?;
        Ok(Self { frames, events })
    }

    async fn send(&self, f: Frame) -> Result<(), tonic::Code> {
        self.frames
            .send(frame(f))
            .await
            .map_err(|_| tonic::Code::Unavailable)
    }
}

impl Worker for ConverseWorker {
    async fn run_once(&mut self) -> OpResult {
        self.send(Frame::UserMessage(ConverseUserMessage {
            message: workload::TOOL_CALL_MESSAGE.to_string(),
            context: None,
            idempotency_key: String::new(),
        }))
        .await?;
        let mut calls = Vec::new();
        loop {
            let event = self
                .events
                .message()
                .await
                .map_err(|s| s.code())?
                .ok_or(tonic::Code::Unavailable)?;
            match event.event {
                Some(Event::ToolCall(call)) => calls.push(call.tool_call_id),
                Some(Event::Completed(done)) => {
                    if done.finish_reason == FinishReason::ToolCalls as i32 {
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
                    } else if done.finish_reason == FinishReason::Stop as i32 {
                        return Ok(1);
                    } else {
                        return Err(tonic::Code::Unknown.into());
                    }
                }
                Some(Event::Error(e)) => return Err(code_of(e.code).into()),
                _ => {}
            }
        }
    }
}

/// Runs the scenario.
pub async fn run(setup: ClosedLoop, server: Option<&ServerProbe>) -> Result<Value, String> {
    let channels = load::connect(setup.addr, setup.connections).await?;
    let tag = workload::run_tag();
    let mut workers = Vec::with_capacity(setup.workers());
    for w in 0..setup.workers() {
        workers.push(
            ConverseWorker::open(
                channels[w % channels.len()].clone(),
                workload::session_id(&tag, w),
            )
            .await?,
        );
    }
    let result = load::run(workers, setup.plan, server).await;
    let mut out = result.to_json();
    out["setup"] = setup.to_json();
    out["turns_per_s"] = out["ops_per_s"].clone();
    Ok(out)
}
