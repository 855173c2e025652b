//! Scenario 1 (and 2, and the baselines): unary `Interact` turns with the echo model, one
//! session per worker, so turns never wait for each other's session lock.

use std::net::SocketAddr;

use contextd::api::v1::InteractRequest;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use prost::Message;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::ClosedLoop;
use crate::load::{self, OpResult, Worker};
use crate::probe::ServerProbe;
use crate::workload;

/// One worker: the same turn on its own session, again and again.
pub struct UnaryWorker {
    client: InteractServiceClient<Channel>,
    request: InteractRequest,
}

impl Worker for UnaryWorker {
    async fn run_once(&mut self) -> OpResult {
        match self
            .client
            .interact(workload::authorized(self.request.clone()))
            .await
        {
            Ok(_) => Ok(1),
            Err(status) => Err(status.code().into()),
        }
    }
}

/// The request of worker `worker`.
pub fn request(tag: &str, worker: usize) -> InteractRequest {
    request_on(&workload::session_id(tag, worker))
}

/// The turn of every unary scenario, on `session_id`.
pub fn request_on(session_id: &str) -> InteractRequest {
    InteractRequest {
        session_id: session_id.to_string(),
        message: workload::MESSAGE.to_string(),
        context: Some(workload::context()),
        ..Default::default()
    }
}

/// Runs the scenario against the servers at `addrs` (replicas of one service sharing a
/// store; `setup.addr` is the first): connection `i` goes to `addrs[i % addrs.len()]`.
pub async fn run(
    setup: ClosedLoop,
    addrs: &[SocketAddr],
    server: Option<&ServerProbe>,
) -> Result<Value, String> {
    let channels = load::connect_all(addrs, setup.connections).await?;
    let tag = workload::run_tag();

    // One turn first: it proves the server answers, and gives the reply's size on the wire.
    let mut client = InteractServiceClient::new(channels[0].clone());
    let probe_request = request(&tag, 99_999);
    let reply = client
        .interact(workload::authorized(probe_request.clone()))
        .await
        .map_err(|s| format!("the first Interact failed: {s}"))?
        .into_inner();

    let workers = (0..setup.workers())
        .map(|w| UnaryWorker {
            client: InteractServiceClient::new(channels[w % channels.len()].clone()),
            request: request(&tag, w),
        })
        .collect();
    let result = load::run(workers, setup.plan, server).await;
    let mut out = result.to_json();
    out["setup"] = setup.to_json();
    out["setup"]["replicas"] = json!(addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    if let Some(server) = server {
        out["setup"]["pids"] = json!(server.pids());
    }
    out["request_bytes"] = json!(probe_request.encoded_len());
    out["reply_bytes"] = json!(reply.encoded_len());
    out["reply_text"] = json!(reply.response);
    Ok(out)
}
