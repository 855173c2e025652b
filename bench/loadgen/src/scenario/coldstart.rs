//! Scenario 7: cold start. Starts the server process again and again and times the span from
//! just before `spawn` to the first health check answered SERVING. The server must print
//! `... listening on <addr>` as its first line on stdout (contextd and the ceiling do), which
//! is how a port-0 server tells its address.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::load::round3;

/// What to start.
#[derive(Debug, Clone)]
pub struct ColdStartParams {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// How many starts.
    pub runs: usize,
    /// Working directory of the server (a scratch directory: a durable store writes there).
    pub workdir: PathBuf,
}

/// The longest a start may take before the run counts as failed.
const START_LIMIT: Duration = Duration::from_secs(20);

async fn serving(addr: SocketAddr) -> bool {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    matches!(
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await,
        Ok(reply) if reply.get_ref().status == ServingStatus::Serving as i32
    )
}

/// Starts the server once; returns the time to SERVING.
async fn one_start(params: &ColdStartParams) -> Result<Duration, String> {
    let (program, args) = params.command.split_first().ok_or("no command given")?;
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(&params.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    // The first line comes from a blocking pipe: read it off the async threads.
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let outcome = async {
        let line = tokio::time::timeout(START_LIMIT, line)
            .await
            .map_err(|_| "no address printed in time".to_string())?
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("cannot read an address in {line:?}"))?;
        loop {
            if serving(addr).await {
                return Ok(started.elapsed());
            }
            if started.elapsed() > START_LIMIT {
                return Err("not SERVING in time".to_string());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// Runs the scenario.
pub async fn run(params: ColdStartParams) -> Result<Value, String> {
    let mut times = Vec::with_capacity(params.runs);
    for _ in 0..params.runs {
        times.push(one_start(&params).await?);
    }
    times.sort();
    let ms = |d: Duration| round3(d.as_secs_f64() * 1000.0);
    let pick = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Ok(json!({
        "setup": { "command": params.command, "runs": params.runs },
        "median_ms": ms(pick(0.5)),
        "p90_ms": ms(pick(0.9)),
        "min_ms": ms(times.first().copied().unwrap_or_default()),
        "max_ms": ms(times.last().copied().unwrap_or_default()),
        "runs_ms": times.iter().map(|&d| ms(d)).collect::<Vec<_>>(),
    }))
}
