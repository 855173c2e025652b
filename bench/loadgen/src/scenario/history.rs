//! Scenario 5: history scaling. The latency of one unary turn on a session whose history holds
//! `messages` messages, divided by the same turn on sessions holding `small_messages`.
//!
//! The long history is seeded fast over one `Converse` stream with several user messages
//! queued at once (the server runs them one after another without waiting for the client).
//! Each measured small-session turn goes to a session of its own, so every one of them sees
//! exactly `small_messages` messages of history; the measured turns alternate between the two
//! kinds on one connection, one at a time, so both see the same machine.

use std::time::{Duration, Instant};

use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::converse_response::Event;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::{
    ConverseOpen, ConverseRequest, ConverseUserMessage, GetSessionRequest, InteractRequest,
};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::start_converse;
use crate::load::{self, latency_json, new_histogram, round1, round3};
use crate::probe::ServerProbe;
use crate::workload;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct HistoryParams {
    /// Server address (loopback).
    pub addr: std::net::SocketAddr,
    /// History of the long session.
    pub messages: u64,
    /// History of each short session.
    pub small_messages: u64,
    /// Measured turns of each kind.
    pub turns: usize,
}

/// Turns the server may have queued on the seeding stream (below its `max_converse_queue`).
const SEED_QUEUE: usize = 8;

/// Adds `turns` turns (two messages each) to `session_id` over one `Converse` stream.
pub async fn seed(channel: Channel, session_id: &str, turns: u64) -> Result<(), String> {
    let open = ConverseOpen {
        session_id: session_id.to_string(),
        ..Default::default()
    };
    let (frames, mut events) = start_converse(channel, open, SEED_QUEUE * 2)
        .await
        .map_err(|e| format!("seeding {session_id}: {e}"))?;
    let frame = |f| ConverseRequest { frame: Some(f) };
    let (mut sent, mut done) = (0u64, 0u64);
    while done < turns {
        while sent < turns && sent - done < SEED_QUEUE as u64 {
            frames
                .send(frame(Frame::UserMessage(ConverseUserMessage {
                    message: format!("seed message {sent}"),
                    context: None,
                    idempotency_key: String::new(),
                })))
                .await
                .map_err(|_| "the seeding stream closed".to_string())?;
            sent += 1;
        }
        let event = events
            .message()
            .await
            .map_err(|s| format!("seeding {session_id}: {s}"))?
            .ok_or_else(|| format!("seeding {session_id}: the stream ended early"))?;
        match event.event {
            Some(Event::Completed(_)) => done += 1,
            Some(Event::Error(e)) => {
                return Err(format!(
                    "seeding {session_id}: turn failed ({}): {}",
                    e.code, e.message
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

async fn message_count(channel: Channel, session_id: &str) -> Result<u64, String> {
    let session = SessionServiceClient::new(channel)
        .get_session(GetSessionRequest {
            session_id: session_id.to_string(),
        })
        .await
        .map_err(|s| format!("GetSession {session_id}: {s}"))?
        .into_inner()
        .session
        .ok_or("GetSession returned no session")?;
    Ok(session.message_count)
}

async fn timed_turn(
    client: &mut InteractServiceClient<Channel>,
    session_id: &str,
    into: &mut Histogram<u64>,
) -> Result<(), String> {
    let request = InteractRequest {
        session_id: session_id.to_string(),
        message: workload::MESSAGE.to_string(),
        context: Some(workload::context()),
        tool_results: Vec::new(),
        idempotency_key: String::new(),
        abandon_tool_calls: false,
    };
    let start = Instant::now();
    client
        .interact(request)
        .await
        .map_err(|s| format!("Interact on {session_id}: {s}"))?;
    into.saturating_record(start.elapsed().as_micros().max(1) as u64);
    Ok(())
}

/// Runs the scenario.
pub async fn run(params: HistoryParams, server: Option<&ServerProbe>) -> Result<Value, String> {
    let channels = load::connect(params.addr, 4).await?;
    let tag = workload::run_tag();
    let big = format!("hist-{tag}-long");

    let started = Instant::now();
    seed(channels[0].clone(), &big, params.messages.div_ceil(2)).await?;
    let seed_long = started.elapsed();
    let big_count = message_count(channels[0].clone(), &big).await?;

    let started = Instant::now();
    let small: Vec<String> = (0..params.turns)
        .map(|i| format!("hist-{tag}-short-{i:05}"))
        .collect();
    let small_turns = params.small_messages.div_ceil(2);
    let mut seeding = Vec::new();
    for (lane, ids) in small.chunks(small.len().div_ceil(8).max(1)).enumerate() {
        let channel = channels[lane % channels.len()].clone();
        let ids = ids.to_vec();
        seeding.push(tokio::spawn(async move {
            for id in ids {
                seed(channel.clone(), &id, small_turns).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in seeding {
        task.await.map_err(|e| e.to_string())??;
    }
    let seed_short = started.elapsed();
    let small_count = match small.first() {
        Some(id) => message_count(channels[0].clone(), id).await?,
        None => 0,
    };

    // Let the seeding's allocations and queues settle before timing single turns.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.and_then(|s| s.read().ok());
    let mut client = InteractServiceClient::new(channels[1].clone());
    let mut long_latency = new_histogram();
    let mut short_latency = new_histogram();
    for (i, id) in small.iter().enumerate() {
        if i % 2 == 0 {
            timed_turn(&mut client, id, &mut short_latency).await?;
            timed_turn(&mut client, &big, &mut long_latency).await?;
        } else {
            timed_turn(&mut client, &big, &mut long_latency).await?;
            timed_turn(&mut client, id, &mut short_latency).await?;
        }
    }
    let after = server.and_then(|s| s.read().ok());

    let ratio = |q: f64| {
        let short = short_latency.value_at_quantile(q).max(1) as f64;
        round3(long_latency.value_at_quantile(q) as f64 / short)
    };
    Ok(json!({
        "setup": {
            "addr": params.addr.to_string(),
            "messages": params.messages,
            "small_messages": params.small_messages,
            "turns": params.turns,
        },
        "long_session_messages": big_count,
        "short_session_messages": small_count,
        "seed_long_s": round3(seed_long.as_secs_f64()),
        "seed_turns_per_s": round1(params.messages.div_ceil(2) as f64 / seed_long.as_secs_f64().max(1e-9)),
        "seed_short_s": round3(seed_short.as_secs_f64()),
        "long": latency_json(&long_latency),
        "short": latency_json(&short_latency),
        "ratio_p50": ratio(0.5),
        "ratio_p99": ratio(0.99),
        "ratio_mean": round3(long_latency.mean() / short_latency.mean().max(1.0)),
        "server": before.zip(after).map(|(_, b)| json!({
            "rss_kib": b.rss_kib,
            "peak_rss_kib": b.peak_rss_kib,
        })),
    }))
}
