//! The `gateway` scenario: contextd against a peer gateway (SMG, SGLang's model gateway), both
//! in front of the same fake OpenAI-compatible upstream (`fake-openai`), each keeping the
//! conversations itself.
//!
//! Every worker holds one conversation at a time on a connection of its own and runs its
//! turns one after the other; after `turns` turns it starts a new conversation, so histories
//! stay as long as a chat's and every run measures the same mix of short and longer ones.
//!
//! - **contextd**: unary `Interact` on a session per conversation (created by its first turn,
//!   with the server's default model, which the harness's config points at the fake); one
//!   HTTP/2 connection per worker.
//! - **SMG**: the OpenAI Responses API over HTTP/1.1 (one keep-alive connection per worker):
//!   `POST /v1/responses` with `store: true`, non-streaming, and from the second turn on
//!   `previous_response_id` of the conversation's last response, so SMG loads the earlier
//!   items from its history store and sends them upstream.
//!
//! A turn counts when its reply is the fake's text ([`fake_openai::REPLY`]): a reply from any
//! other model is `BAD_REPLY`. With `--upstream` the fake's own counters
//! (`GET /fake/stats`) are read before the first turn and after the last, for the upstream
//! calls each turn made and the input items (messages) each call carried; the fake's CPU
//! time (`--upstream-pid`) is reported apart from the gateway's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use contextd::api::v1::InteractRequest;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, header};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::ClosedLoop;
use super::http_unary::connect;
use crate::fake_openai;
use crate::load::{self, Failure, OpResult, Worker};
use crate::probe::ServerProbe;
use crate::workload;

/// Which gateway is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    /// contextd's gRPC `Interact`.
    Contextd,
    /// SMG's Responses API.
    Smg,
}

impl Gateway {
    /// The gateway's name in results: `contextd` or `smg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Contextd => "contextd",
            Self::Smg => "smg",
        }
    }

    /// The gateway named `name` (see [`Gateway::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Contextd, Self::Smg]
            .into_iter()
            .find(|g| g.name() == name)
    }
}

/// What the scenario needs beyond the closed loop's settings.
#[derive(Debug, Clone)]
pub struct GatewayParams {
    /// Which gateway is at `setup.addr`.
    pub gateway: Gateway,
    /// Turns per conversation before a worker starts a new one.
    pub turns: u64,
    /// The `model` of SMG's requests (contextd's sessions take the server's default model).
    pub model: String,
    /// The fake upstream's address, to read its counters.
    pub upstream: Option<SocketAddr>,
}

/// A conversation's place: which one (per worker) and how many turns it has had.
#[derive(Debug, Default)]
struct Place {
    conversation: u64,
    turn: u64,
}

impl Place {
    /// Moves to a new conversation when this one has had `turns` turns; whether it did.
    fn next(&mut self, turns: u64) -> bool {
        if self.turn >= turns {
            self.conversation += 1;
            self.turn = 0;
            return true;
        }
        false
    }
}

/// One contextd worker: its conversations are sessions `gw-<tag>-<worker>-<n>`.
pub struct ContextdWorker {
    client: InteractServiceClient<Channel>,
    prefix: String,
    place: Place,
    turns: u64,
    done: Arc<AtomicU64>,
}

impl ContextdWorker {
    fn session_id(&self) -> String {
        format!("{}-{:06}", self.prefix, self.place.conversation)
    }
}

impl Worker for ContextdWorker {
    async fn run_once(&mut self) -> OpResult {
        self.place.next(self.turns);
        let request = InteractRequest {
            session_id: self.session_id(),
            message: workload::MESSAGE.to_string(),
            ..Default::default()
        };
        let reply = self
            .client
            .interact(workload::authorized(request))
            .await
            .map_err(|status| Failure::from(status.code()))?
            .into_inner();
        if reply.response != fake_openai::REPLY {
            return Err(Failure::BadReply);
        }
        self.place.turn += 1;
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(1)
    }
}

/// The body of a Responses API turn.
pub fn responses_body(model: &str, previous: Option<&str>) -> Bytes {
    let mut body = json!({
        "model": model,
        "input": workload::MESSAGE,
        "store": true,
        "stream": false,
    });
    if let Some(previous) = previous {
        body["previous_response_id"] = json!(previous);
    }
    Bytes::from(body.to_string())
}

/// The id of a Responses API reply whose text is the fake's.
pub fn checked_response(body: &[u8]) -> Result<String, Failure> {
    let reply: Value = serde_json::from_slice(body).map_err(|_| Failure::BadReply)?;
    if fake_openai::response_text(&reply).as_deref() != Some(fake_openai::REPLY) {
        return Err(Failure::BadReply);
    }
    reply
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(Failure::BadReply)
}

/// One Responses API call; the reply's body.
async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    body: Bytes,
) -> Result<Bytes, Failure> {
    sender.ready().await.map_err(|_| Failure::Connection)?;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/responses")
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|_| Failure::BadReply)?;
    super::http_unary::send_for_ok(sender, request).await
}

/// One SMG worker: a conversation is a chain of stored responses.
pub struct SmgWorker {
    addr: SocketAddr,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    model: String,
    previous: Option<String>,
    place: Place,
    turns: u64,
    done: Arc<AtomicU64>,
}

impl Worker for SmgWorker {
    async fn run_once(&mut self) -> OpResult {
        if self.place.next(self.turns) {
            self.previous = None;
        }
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => connect(self.addr).await.map_err(|_| Failure::Connection)?,
        };
        let body = responses_body(&self.model, self.previous.as_deref());
        let outcome = post(&mut sender, &self.host, body).await;
        if outcome != Err(Failure::Connection) {
            self.sender = Some(sender);
        }
        let id = checked_response(&outcome?)?;
        self.previous = Some(id);
        self.place.turn += 1;
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(1)
    }
}

/// The fake upstream's counters (`GET /fake/stats`).
async fn upstream_stats(addr: SocketAddr) -> Result<Value, String> {
    let mut sender = connect(addr).await?;
    let request = Request::builder()
        .method(Method::GET)
        .uri("/fake/stats")
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let reply = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET /fake/stats on {addr}: {e}"))?
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&reply).map_err(|e| format!("GET /fake/stats on {addr}: {e}"))
}

/// What turns `turns` cost upstream: calls and input items per turn, from two readings of
/// the fake's counters.
pub fn upstream_per_turn(before: &Value, after: &Value, turns: u64) -> Value {
    let delta = |key: &str| {
        after[key].as_u64().unwrap_or(0) as f64 - before[key].as_u64().unwrap_or(0) as f64
    };
    let per_turn = |key: &str| {
        if turns == 0 {
            0.0
        } else {
            load::round3(delta(key) / turns as f64)
        }
    };
    json!({
        "turns": turns,
        "calls": delta("calls"),
        "calls_per_turn": per_turn("calls"),
        "input_items_per_call": if delta("calls") > 0.0 {
            load::round3(delta("input_items") / delta("calls"))
        } else {
            0.0
        },
        "request_bytes_per_turn": per_turn("request_bytes"),
        "by_kind": {
            "chat_completions_stream": delta("chat_completions_stream"),
            "chat_completions": delta("chat_completions"),
            "responses": delta("responses"),
        },
    })
}

/// The first turn of a conversation, tried for up to ten seconds (a gateway may still be
/// registering its upstream when it starts answering): the reply's size.
async fn first_turn(
    setup: &ClosedLoop,
    params: &GatewayParams,
    tag: &str,
) -> Result<usize, String> {
    let mut last = String::new();
    for _ in 0..100 {
        let outcome = match params.gateway {
            Gateway::Contextd => {
                let channel = load::connect(setup.addr, 1).await?.remove(0);
                let request = InteractRequest {
                    session_id: format!("gw-{tag}-probe"),
                    message: workload::MESSAGE.to_string(),
                    ..Default::default()
                };
                match InteractServiceClient::new(channel)
                    .interact(workload::authorized(request))
                    .await
                {
                    Ok(reply) if reply.get_ref().response == fake_openai::REPLY => {
                        return Ok(prost::Message::encoded_len(reply.get_ref()));
                    }
                    Ok(reply) => {
                        format!("the reply {:?} is not the fake's", reply.get_ref().response)
                    }
                    Err(status) => status.to_string(),
                }
            }
            Gateway::Smg => {
                let mut sender = connect(setup.addr).await?;
                let body = responses_body(&params.model, None);
                match post(&mut sender, &setup.addr.to_string(), body).await {
                    Ok(reply) => match checked_response(&reply) {
                        Ok(_) => return Ok(reply.len()),
                        Err(_) => format!(
                            "the reply {} is not the fake's",
                            String::from_utf8_lossy(&reply)
                        ),
                    },
                    Err(failure) => failure.name(),
                }
            }
        };
        last = outcome;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(format!(
        "the first {} turn failed: {last}",
        params.gateway.name()
    ))
}

/// Runs the scenario.
pub async fn run(
    setup: ClosedLoop,
    params: GatewayParams,
    server: Option<&ServerProbe>,
) -> Result<Value, String> {
    if params.turns == 0 {
        return Err("--turns must be at least 1".into());
    }
    let tag = workload::run_tag();
    let reply_bytes = first_turn(&setup, &params, &tag).await?;
    let before = match params.upstream {
        Some(addr) => Some(upstream_stats(addr).await?),
        None => None,
    };
    let done = Arc::new(AtomicU64::new(0));
    let result = match params.gateway {
        Gateway::Contextd => {
            let channels = load::connect(setup.addr, setup.connections).await?;
            let workers = (0..setup.workers())
                .map(|w| ContextdWorker {
                    client: InteractServiceClient::new(channels[w % channels.len()].clone()),
                    prefix: format!("gw-{tag}-{w:04}"),
                    place: Place::default(),
                    turns: params.turns,
                    done: done.clone(),
                })
                .collect();
            load::run(workers, setup.plan, server).await
        }
        Gateway::Smg => {
            let mut workers = Vec::with_capacity(setup.workers());
            for _ in 0..setup.workers() {
                workers.push(SmgWorker {
                    addr: setup.addr,
                    host: setup.addr.to_string(),
                    sender: Some(connect(setup.addr).await?),
                    model: params.model.clone(),
                    previous: None,
                    place: Place::default(),
                    turns: params.turns,
                    done: done.clone(),
                });
            }
            load::run(workers, setup.plan, server).await
        }
    };
    let mut out = result.to_json();
    out["setup"] = setup.to_json();
    out["setup"]["gateway"] = json!(params.gateway.name());
    out["setup"]["conversations"] = json!(setup.workers());
    out["setup"]["turns_per_conversation"] = json!(params.turns);
    if params.gateway == Gateway::Smg {
        out["setup"]["model"] = json!(params.model);
        out["setup"]["api"] = json!("POST /v1/responses, store: true, previous_response_id");
    } else {
        out["setup"]["api"] = json!("contextd.v1.InteractService/Interact");
    }
    if let Some(server) = server {
        out["setup"]["pids"] = json!(server.pids());
    }
    if let (Some(addr), Some(before)) = (params.upstream, before) {
        let after = upstream_stats(addr).await?;
        out["upstream"] = upstream_per_turn(&before, &after, done.load(Ordering::Relaxed));
    }
    out["reply_bytes"] = json!(reply_bytes);
    out["reply_text"] = json!(fake_openai::REPLY);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_end_after_their_turns() {
        let mut place = Place::default();
        let mut started = 0;
        for _ in 0..25 {
            if place.next(10) {
                started += 1;
            }
            place.turn += 1;
        }
        assert_eq!(started, 2);
        assert_eq!(place.conversation, 2);
        assert_eq!(place.turn, 5);
    }

    #[test]
    fn responses_bodies() {
        let first: Value = serde_json::from_slice(&responses_body("m", None)).unwrap();
        assert_eq!(first["model"], "m");
        assert_eq!(first["store"], true);
        assert_eq!(first["stream"], false);
        assert!(first.get("previous_response_id").is_none());
        let next: Value = serde_json::from_slice(&responses_body("m", Some("resp_1"))).unwrap();
        assert_eq!(next["previous_response_id"], "resp_1");
        assert_eq!(next["input"], workload::MESSAGE);
    }

    #[test]
    fn checks_replies() {
        let asked = fake_openai::asked(br#"{"input":"x"}"#).unwrap();
        let good = fake_openai::response(&asked, "resp_7", "msg_7");
        assert_eq!(checked_response(good.as_bytes()), Ok("resp_7".to_string()));
        let other = good.replace("twenty short words", "other words");
        assert_eq!(checked_response(other.as_bytes()), Err(Failure::BadReply));
        assert_eq!(checked_response(b"{}"), Err(Failure::BadReply));
    }

    #[test]
    fn upstream_counts_per_turn() {
        let before = json!({"calls": 10, "input_items": 10, "request_bytes": 100, "responses": 10});
        let after = json!({"calls": 30, "input_items": 70, "request_bytes": 500, "responses": 30});
        let u = upstream_per_turn(&before, &after, 20);
        assert_eq!(u["calls_per_turn"], 1.0);
        assert_eq!(u["input_items_per_call"], 3.0);
        assert_eq!(u["request_bytes_per_turn"], 20.0);
        assert_eq!(u["by_kind"]["responses"], 20.0);
        assert_eq!(Gateway::from_name("smg"), Some(Gateway::Smg));
        assert_eq!(Gateway::from_name("x"), None);
    }
}
