//! Scenario 6: idle `Converse` streams. Opens `streams` streams spread over `connections`
//! connections, each attached (`open`) to a session of its own, then holds them open without
//! traffic and reads the server's resident memory. Memory per stream is the growth from
//! before the first connection to after the last `opened`, divided by the number of streams:
//! it includes the connections and the sessions the streams created.

use std::time::{Duration, Instant};

use contextd::api::v1::ConverseOpen;
use serde_json::{Value, json};

use super::{ConverseStream, open_converse};
use crate::load::{self, round1, round3};
use crate::probe::ServerProbe;
use crate::workload;

/// What to open.
#[derive(Debug, Clone, Copy)]
pub struct IdleParams {
    /// Server address (loopback).
    pub addr: std::net::SocketAddr,
    /// Streams to open.
    pub streams: usize,
    /// Connections they share (HTTP/2 servers cap concurrent streams per connection; hyper's
    /// default is 200).
    pub connections: usize,
    /// How long to hold them open before reading memory again.
    pub hold: Duration,
}

/// Runs the scenario.
pub async fn run(params: IdleParams, server: &ServerProbe) -> Result<Value, String> {
    let base = server
        .read()
        .map_err(|e| format!("reading the server: {e}"))?;
    let channels = load::connect(params.addr, params.connections).await?;
    let tag = workload::run_tag();
    let started = Instant::now();

    // Open in parallel lanes, one per connection.
    let per_lane = params.streams.div_ceil(params.connections.max(1));
    let mut lanes = Vec::new();
    for (lane, channel) in channels.iter().enumerate() {
        let channel = channel.clone();
        let tag = tag.clone();
        let first = lane * per_lane;
        let last = ((lane + 1) * per_lane).min(params.streams);
        lanes.push(tokio::spawn(async move {
            let mut open: Vec<ConverseStream> = Vec::with_capacity(last.saturating_sub(first));
            for i in first..last {
                let open_frame = ConverseOpen {
                    session_id: workload::session_id(&tag, i),
                    ..Default::default()
                };
                let stream = open_converse(channel.clone(), open_frame, 1)
                    .await
                    .map_err(|e| format!("stream {i}: {e}"))?;
                open.push(stream);
            }
            Ok::<_, String>(open)
        }));
    }
    let mut open = Vec::with_capacity(params.streams);
    for lane in lanes {
        open.extend(lane.await.map_err(|e| e.to_string())??);
    }
    let opened_in = started.elapsed();
    let cpu_after_open = server.read().map_err(|e| e.to_string())?.cpu;
    tokio::time::sleep(params.hold).await;
    let held = server.read().map_err(|e| e.to_string())?;
    let idle_cpu = held.cpu.saturating_sub(cpu_after_open);

    let streams = open.len();
    let growth_kib = held.rss_kib.saturating_sub(base.rss_kib);
    let per_stream_bytes = if streams > 0 {
        growth_kib as f64 * 1024.0 / streams as f64
    } else {
        0.0
    };
    drop(open);
    Ok(json!({
        "setup": {
            "addr": params.addr.to_string(),
            "streams": params.streams,
            "connections": params.connections,
            "hold_s": params.hold.as_secs_f64(),
        },
        "streams_open": streams,
        "open_s": round3(opened_in.as_secs_f64()),
        "rss_before_kib": base.rss_kib,
        "rss_open_kib": held.rss_kib,
        "peak_rss_kib": held.peak_rss_kib,
        "rss_per_stream_bytes": round1(per_stream_bytes),
        "rss_per_stream_kib": round3(per_stream_bytes / 1024.0),
        "server_cpu_while_idle_s": round3(idle_cpu.as_secs_f64()),
    }))
}
