//! Scenario 3: `StreamResponse` token relay. Every worker streams turns whose reply is about
//! [`workload::STREAM_WORDS`] words (the echo model emits one delta per word, as fast as it
//! can); units are the words received, so the rate is tokens per second however the server
//! frames them (a reader that falls behind gets several words in one delta).

use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::stream_response_response::Event;
use contextd::api::v1::{FinishReason, StreamResponseRequest};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::ClosedLoop;
use crate::load::{self, OpResult, Worker, round3};
use crate::probe::ServerProbe;
use crate::workload;

/// One worker: a streamed turn on its own session, again and again.
pub struct StreamWorker {
    client: InteractServiceClient<Channel>,
    request: StreamResponseRequest,
}

impl Worker for StreamWorker {
    async fn run_once(&mut self) -> OpResult {
        let mut events = self
            .client
            .stream_response(self.request.clone())
            .await
            .map_err(|s| s.code())?
            .into_inner();
        let mut words = 0u64;
        loop {
            match events.message().await.map_err(|s| s.code())? {
                Some(event) => match event.event {
                    Some(Event::Delta(delta)) => {
                        words += delta.text.split_whitespace().count() as u64
                    }
                    Some(Event::Completed(done)) => {
                        return if done.finish_reason == FinishReason::Stop as i32 {
                            Ok(words)
                        } else {
                            Err(tonic::Code::Unknown.into())
                        };
                    }
                    _ => {}
                },
                // The stream ended without `completed`.
                None => return Err(tonic::Code::Unknown.into()),
            }
        }
    }
}

/// Runs the scenario.
pub async fn run(setup: ClosedLoop, server: Option<&ServerProbe>) -> Result<Value, String> {
    let channels = load::connect(setup.addr, setup.connections).await?;
    let tag = workload::run_tag();
    let message = workload::stream_message();
    let workers = (0..setup.workers())
        .map(|w| StreamWorker {
            client: InteractServiceClient::new(channels[w % channels.len()].clone()),
            request: StreamResponseRequest {
                session_id: workload::session_id(&tag, w),
                message: message.clone(),
                context: None,
                tool_results: Vec::new(),
                idempotency_key: String::new(),
                abandon_tool_calls: false,
            },
        })
        .collect();
    let result = load::run(workers, setup.plan, server).await;
    let mut out = result.to_json();
    out["setup"] = setup.to_json();
    out["streams"] = json!(setup.workers());
    out["tokens_per_s"] = out["units_per_s"].clone();
    if let Some(cpu) = result.server_cpu()
        && result.units > 0
    {
        out["server_cpu_us_per_token"] =
            json!(round3(cpu.as_secs_f64() * 1e6 / result.units as f64));
    }
    Ok(out)
}
