//! The benchmark scenarios. Each returns one JSON object; the closed-loop ones share
//! [`ClosedLoop`] for their connection, concurrency and timing settings.

pub mod coldstart;
pub mod converse;
pub mod gateway;
pub mod history;
pub mod http_unary;
pub mod idle;
pub mod many_sessions;
pub mod soak;
pub mod stream;
pub mod unary;
pub mod ws_converse;

use std::net::SocketAddr;

use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::converse_response::Event;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::{ConverseOpen, ConverseRequest, ConverseResponse};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::load::LoadPlan;

/// A `Converse` stream: the sender of its frames and its events. Dropping it closes it.
pub type ConverseStream = (mpsc::Sender<ConverseRequest>, Streaming<ConverseResponse>);

/// Starts a `Converse` stream whose first frame is `open`, with room for `queue` frames.
pub async fn start_converse(
    channel: Channel,
    open: ConverseOpen,
    queue: usize,
) -> Result<ConverseStream, String> {
    let (frames, rx) = mpsc::channel(queue);
    frames
        .send(ConverseRequest {
            frame: Some(Frame::Open(open)),
        })
        .await
        .map_err(|_| "the request stream closed".to_string())?;
    let events = InteractServiceClient::new(channel)
        .converse(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("Converse failed: {s}"))?
        .into_inner();
    Ok((frames, events))
}

/// [`start_converse`], then waits for the server's `opened`.
pub async fn open_converse(
    channel: Channel,
    open: ConverseOpen,
    queue: usize,
) -> Result<ConverseStream, String> {
    let session_id = open.session_id.clone();
    let (frames, mut events) = start_converse(channel, open, queue).await?;
    match events.message().await {
        Ok(Some(ConverseResponse {
            event: Some(Event::Opened(_)),
            ..
        })) => Ok((frames, events)),
        other => Err(format!("Converse open on {session_id} failed: {other:?}")),
    }
}

/// Connections, concurrency and timing of a closed-loop scenario.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    /// Server address (loopback).
    pub addr: SocketAddr,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Outstanding requests (or streams) per connection.
    pub in_flight: usize,
    /// Warm-up, window and request bound.
    pub plan: LoadPlan,
}

impl ClosedLoop {
    /// Workers in all: `connections × in_flight`.
    pub fn workers(&self) -> usize {
        self.connections * self.in_flight
    }

    /// The settings as JSON, for the results file.
    pub fn to_json(&self) -> Value {
        json!({
            "addr": self.addr.to_string(),
            "connections": self.connections,
            "in_flight": self.in_flight,
            "warmup_s": self.plan.warmup.as_secs_f64(),
            "duration_s": self.plan.duration.as_secs_f64(),
            "max_requests": self.plan.max_requests,
        })
    }
}

/// Refuses addresses off this machine: the harness loads loopback servers only.
pub fn check_loopback(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "{addr} is not a loopback address: the load generator only targets servers on this machine (127.0.0.0/8 or ::1)"
        ))
    }
}

/// The gRPC status code of a `TurnError` event, as a `tonic::Code`.
pub fn code_of(number: i32) -> tonic::Code {
    tonic::Code::from_i32(number)
}
