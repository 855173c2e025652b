//! The soak run: a mixed load at about half of the measured capacity for a long time, with the
//! server's resources and the latency of every operation kind sampled at a fixed interval, and
//! a verdict on whether anything drifted.
//!
//! Four kinds of operation run side by side on their own workers:
//!
//! - `unary`: an `Interact` turn;
//! - `stream`: a `StreamResponse` turn of about [`workload::STREAM_WORDS`] deltas;
//! - `converse`: a `Converse` turn with one client-side tool round trip (the `converse`
//!   scenario's [`ConverseWorker`]);
//! - `churn`: `CreateSession`, one `Interact`, `DeleteSession`, then `GetSession`, which must
//!   answer NOT_FOUND (the one error this load asks for: it is counted under `expected`).
//!
//! The run has two phases. First the capacity of this mix: every kind in a closed loop at
//! once (the load generator's [`load::run`]), giving each kind's operations per second. Then
//! the soak itself: the same workers paced (an open loop), each kind offered `fraction` of its
//! measured rate. A paced worker sends when its next slot is due; latency is measured from that
//! slot, so a stalled server shows up as latency and is not hidden by the worker waiting
//! (coordinated omission). Slots a worker is more than one period behind are skipped and
//! counted as `missed`.
//!
//! Sessions do not grow without bound: every worker moves to a fresh session after
//! [`TURNS_PER_SESSION`] turns and deletes the old one, outside the timed operation. Otherwise
//! the last minute's turns would run on longer histories than the first minute's, and the p99
//! comparison would measure history length rather than drift.
//!
//! Every `sample_every` the sampler reads the server's `VmRSS`, its open file descriptors
//! (`/proc/PID/fd`), the size of every file under the data directory, and per kind the p99 of
//! the operations that finished in that interval. [`judge`] turns the samples into PASS or
//! FAIL; its thresholds are [`Limits`].
//!
//! Each sample also holds how contended the CPUs were in its interval: the CPU other processes
//! used (all busy time in `/proc/stat` less the server's and the load generator's own), and the
//! time the server's and the load generator's threads spent runnable but waiting for a CPU
//! (`/proc/PID/task/*/schedstat`), as threads waiting on average. On a shared machine a
//! neighbour's build multiplies every latency for as long as it runs, and once the machine is
//! saturated the neighbours' CPU no longer tells how much they took from us; the run-queue wait
//! does. The p99 check therefore compares the first minute only with later samples whose wait
//! was within [`Limits::quiet_wait_factor`] (or [`Limits::quiet_wait_slack`]) of the first
//! minute's. When no later sample was that quiet the check cannot be made and the verdict says
//! so (it does not fail: the server's own resources and errors are still judged).

mod sample;
mod verdict;
mod workers;

pub use sample::{
    KindSample, MachineCpu, Sample, file_sizes, open_fds, run_queue_wait_ns, table_header,
    table_row,
};
pub use verdict::{Limits, P99Pair, Verdict, judge, quiet_samples};
pub use workers::{Rotating, SoakWorker};

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::load::{self, LoadPlan, new_histogram, round1};
use crate::probe::ServerProbe;
use crate::workload;

/// Turns a worker makes on one session before it moves to a fresh one and deletes the old.
pub const TURNS_PER_SESSION: u64 = 100;

/// The kinds of operation, in the order they are reported.
pub const KINDS: [Kind; 4] = [Kind::Unary, Kind::Stream, Kind::Converse, Kind::Churn];

/// One kind of operation of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Interact`.
    Unary,
    /// `StreamResponse`.
    Stream,
    /// `Converse` with a client-side tool round trip.
    Converse,
    /// Create, one turn, delete, and a read that must find nothing.
    Churn,
}

impl Kind {
    /// The name in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::Stream => "stream",
            Self::Converse => "converse",
            Self::Churn => "churn",
        }
    }

    fn index(self) -> usize {
        KINDS
            .iter()
            .position(|k| *k == self)
            .expect("every kind is in KINDS")
    }
}

/// How many workers of each kind (the same in both phases).
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// `Interact` workers.
    pub unary: usize,
    /// `StreamResponse` workers.
    pub stream: usize,
    /// `Converse` workers (one open stream each).
    pub converse: usize,
    /// Session churn workers.
    pub churn: usize,
}

impl Mix {
    fn workers(&self, kind: Kind) -> usize {
        match kind {
            Kind::Unary => self.unary,
            Kind::Stream => self.stream,
            Kind::Converse => self.converse,
            Kind::Churn => self.churn,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakParams {
    /// Server address (loopback).
    pub addr: SocketAddr,
    /// Server process id: its memory and file descriptors are sampled.
    pub pid: u32,
    /// The server's data directory: the size of its files is sampled.
    pub data_dir: PathBuf,
    /// Length of the soak phase (the capacity phase comes before it).
    pub duration: Duration,
    /// Time between samples.
    pub sample_every: Duration,
    /// Length of the capacity measurement (after a one-second warm-up).
    pub capacity_window: Duration,
    /// Share of the measured capacity offered during the soak, e.g. 0.5.
    pub fraction: f64,
    /// HTTP/2 connections the workers share.
    pub connections: usize,
    /// Workers per kind.
    pub mix: Mix,
    /// Pass/fail thresholds.
    pub limits: Limits,
}

/// Parses a duration such as `60s`, `30m`, `1h` or `90` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 60s, 30m or 1h"))?;
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use s, m or h (e.g. 60s, 30m, 1h)"
            ));
        }
    };
    let seconds = value * scale;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("{text:?}: the duration must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

// --- the paced loop --------------------------------------------------------------------------

/// What one kind did in one sampling interval.
struct Window {
    latency: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    missed: u64,
}

impl Window {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
            missed: 0,
        }
    }
}

/// The current interval's windows, one per kind. One lock for all: a worker holds it only to
/// add one finished operation (no `.await` under it), the sampler only to swap the windows out,
/// and a few thousand operations a second do not contend on it.
struct Windows(Mutex<Vec<Window>>);

impl Windows {
    fn new() -> Self {
        Self(Mutex::new(KINDS.iter().map(|_| Window::new()).collect()))
    }

    fn with(&self, kind: Kind, f: impl FnOnce(&mut Window)) {
        let mut windows = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut windows[kind.index()]);
    }

    fn take(&self) -> Vec<Window> {
        let mut windows = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *windows, KINDS.iter().map(|_| Window::new()).collect())
    }
}

/// Runs `worker` paced: one operation every `period` from `first` until `end`.
async fn pace(
    mut worker: SoakWorker,
    kind: Kind,
    period: Duration,
    first: Instant,
    end: Instant,
    windows: Arc<Windows>,
) {
    let mut due = first;
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        let start = match worker.upkeep().await {
            Ok(true) => Instant::now().max(due),
            Ok(false) => due,
            Err(failure) => {
                windows.with(kind, |w| *w.errors.entry(failure.name()).or_default() += 1);
                Instant::now().max(due)
            }
        };
        let outcome = worker.operate().await;
        let micros = start.elapsed().as_micros().max(1) as u64;
        windows.with(kind, |w| match outcome {
            Ok(_) => {
                w.ok += 1;
                w.latency.saturating_record(micros);
            }
            Err(failure) => *w.errors.entry(failure.name()).or_default() += 1,
        });
        if matches!(outcome, Err(failure) if failure.is_unavailable()) {
            // No connection: back off a little instead of spinning on connection errors.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        due += period;
        let now = Instant::now();
        if now > due + period {
            // More than a slot behind: skip the slots that passed (sending them all at once
            // would be a burst the plan never asked for) and count them.
            let behind = ((now - due).as_nanos() / period.as_nanos().max(1)) as u32;
            due += period * behind;
            windows.with(kind, |w| w.missed += u64::from(behind));
        }
    }
}

// --- the run ---------------------------------------------------------------------------------

async fn open_workers(
    kind: Kind,
    count: usize,
    channels: &[Channel],
    tag: &str,
) -> Result<Vec<SoakWorker>, String> {
    let mut workers = Vec::with_capacity(count);
    for w in 0..count {
        let channel = channels[(kind.index() + w) % channels.len()].clone();
        workers.push(SoakWorker::open(kind, channel, tag, w).await?);
    }
    Ok(workers)
}

/// Runs the capacity phase and the soak, printing a table row per sample on stderr.
pub async fn run(params: SoakParams) -> Result<Value, String> {
    let probe = ServerProbe::new(params.pid);
    let channels = load::connect(params.addr, params.connections.max(1)).await?;
    let before = probe
        .read()
        .map_err(|e| format!("cannot read the server's /proc entry: {e}"))?;
    let db_before = file_sizes(&params.data_dir).values().sum::<u64>();

    // Phase 1: every kind in a closed loop at once, so each kind's rate is its share of what
    // the server does with this mix.
    let tag = workload::run_tag();
    let plan = LoadPlan {
        warmup: Duration::from_secs(1),
        duration: params.capacity_window,
        max_requests: u64::MAX,
    };
    let mut runs = Vec::new();
    for kind in KINDS {
        let workers = open_workers(kind, params.mix.workers(kind), &channels, &tag).await?;
        runs.push(tokio::spawn(async move {
            (kind, load::run(workers, plan, None).await)
        }));
    }
    let mut capacity = BTreeMap::new();
    let mut capacity_json = serde_json::Map::new();
    for handle in runs {
        let (kind, result) = handle
            .await
            .map_err(|e| format!("a capacity worker failed: {e}"))?;
        if result.ok == 0 {
            return Err(format!(
                "capacity: no {} operation succeeded (errors: {:?})",
                kind.name(),
                result.errors
            ));
        }
        capacity.insert(kind.index(), result.rate());
        capacity_json.insert(kind.name().to_string(), result.to_json());
    }
    eprintln!(
        "capacity ({:.0} s closed loop): {}",
        params.capacity_window.as_secs_f64(),
        KINDS
            .iter()
            .map(|k| format!("{} {:.0}/s", k.name(), capacity[&k.index()]))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Phase 2: the same workers, paced at `fraction` of each kind's rate.
    let tag = workload::run_tag();
    let windows = Arc::new(Windows::new());
    let start = Instant::now();
    let end = start + params.duration;
    let mut offered = serde_json::Map::new();
    let mut tasks = Vec::new();
    for kind in KINDS {
        let count = params.mix.workers(kind);
        if count == 0 {
            continue;
        }
        let rate = capacity[&kind.index()] * params.fraction;
        let period = Duration::from_secs_f64(count as f64 / rate.max(0.01));
        offered.insert(kind.name().to_string(), json!(round1(rate)));
        for (w, worker) in open_workers(kind, count, &channels, &tag)
            .await?
            .into_iter()
            .enumerate()
        {
            // Staggered, so a kind's workers do not all send at the same instant.
            let first = start + period.mul_f64(w as f64 / count as f64);
            tasks.push(tokio::spawn(pace(
                worker,
                kind,
                period,
                first,
                end,
                windows.clone(),
            )));
        }
    }
    eprintln!(
        "soak: {:.0} s at {:.0} % of capacity: {}",
        params.duration.as_secs_f64(),
        params.fraction * 100.0,
        KINDS
            .iter()
            .map(|k| format!("{} {}/s", k.name(), offered[k.name()]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!("{}", table_header());

    // The reference period is the first minute; a run of a minute or less has only that, so
    // it compares its first sample with all later ones instead.
    let reference_s = if params.duration > Duration::from_secs(60) {
        60.0
    } else {
        params.sample_every.as_secs_f64()
    };
    let compare_samples = (60.0 / params.sample_every.as_secs_f64()).ceil().max(1.0) as usize;
    let mut first: Vec<Histogram<u64>> = KINDS.iter().map(|_| new_histogram()).collect();
    let mut first_wait = Vec::new();
    // The last minute's samples: run-queue wait, and each kind's latencies.
    let mut last: VecDeque<(f64, Vec<Histogram<u64>>)> = VecDeque::new();
    let me = ServerProbe::this_process();
    let mut cpu_then = (
        MachineCpu::read().unwrap_or_default(),
        probe.read().map(|r| r.cpu).unwrap_or_default(),
        me.read().map(|r| r.cpu).unwrap_or_default(),
        Instant::now(),
    );
    let mut wait_then = run_queue_wait_ns(params.pid) + run_queue_wait_ns(std::process::id());
    let mut total: Vec<Histogram<u64>> = KINDS.iter().map(|_| new_histogram()).collect();
    let mut totals_ok = [0u64; KINDS.len()];
    let mut samples = Vec::new();
    let mut samples_json = Vec::new();
    let mut server_lost = None;
    let mut tick = start;
    loop {
        tick = (tick + params.sample_every).min(end);
        tokio::time::sleep_until(tick.into()).await;
        let windows_now = windows.take();
        let at_s = tick.duration_since(start).as_secs_f64();
        let reading = probe.read();
        let fds = open_fds(params.pid);
        let (rss_kib, fds, server_cpu) = match (reading, fds) {
            (Ok(r), Ok(f)) => (r.rss_kib, f, r.cpu),
            (Err(e), _) | (_, Err(e)) => {
                server_lost = Some(e.to_string());
                (0, 0, cpu_then.1)
            }
        };
        let cpu_now = (
            MachineCpu::read().unwrap_or_default(),
            server_cpu,
            me.read().map(|r| r.cpu).unwrap_or_default(),
            Instant::now(),
        );
        let ours = (cpu_now.1.saturating_sub(cpu_then.1) + cpu_now.2.saturating_sub(cpu_then.2))
            .as_secs_f64()
            / cpu_now.3.duration_since(cpu_then.3).as_secs_f64().max(1e-3);
        let others_cores = (cpu_now.0.busy_cores_since(&cpu_then.0) - ours).max(0.0);
        let wait_now = run_queue_wait_ns(params.pid) + run_queue_wait_ns(std::process::id());
        let waiting_threads = wait_now.saturating_sub(wait_then) as f64
            / cpu_now.3.duration_since(cpu_then.3).as_nanos().max(1) as f64;
        wait_then = wait_now;
        cpu_then = cpu_now;
        let db_files = file_sizes(&params.data_dir);
        let mut kinds = Vec::new();
        let mut hists = Vec::new();
        for (i, w) in windows_now.into_iter().enumerate() {
            kinds.push(KindSample {
                ok: w.ok,
                p50_us: w.latency.value_at_quantile(0.50),
                p99_us: w.latency.value_at_quantile(0.99),
                max_us: w.latency.max(),
                errors: w.errors,
                missed: w.missed,
            });
            total[i].add(&w.latency).expect("histograms share bounds");
            totals_ok[i] += w.ok;
            if at_s <= reference_s + 1e-6 {
                first[i].add(&w.latency).expect("histograms share bounds");
            }
            hists.push(w.latency);
        }
        if at_s <= reference_s + 1e-6 {
            first_wait.push(waiting_threads);
        } else {
            last.push_back((waiting_threads, hists));
            if last.len() > compare_samples {
                last.pop_front();
            }
        }
        let sample = Sample {
            at_s,
            rss_kib,
            fds,
            db_bytes: db_files.values().sum(),
            others_cores,
            waiting_threads,
            kinds,
        };
        eprintln!("{}", table_row(&sample));
        samples_json.push(sample.to_json(&db_files));
        samples.push(sample);
        if tick >= end || server_lost.is_some() {
            break;
        }
    }
    for task in tasks {
        // A worker still inside its last operation finishes it; its result lands in a window
        // no sample reads any more.
        let _ = task.await;
    }

    let last_wait: Vec<f64> = last.iter().map(|(wait, _)| *wait).collect();
    let quiet = quiet_samples(
        &first_wait,
        &last_wait,
        params.limits.quiet_wait_factor,
        params.limits.quiet_wait_slack,
    );
    let mut p99 = Vec::new();
    let mut latency_json = serde_json::Map::new();
    for kind in KINDS {
        let i = kind.index();
        let mut compared = new_histogram();
        for &q in &quiet {
            compared
                .add(&last[q].1[i])
                .expect("histograms share bounds");
        }
        let pair = P99Pair {
            first_us: first[i].value_at_quantile(0.99),
            last_us: compared.value_at_quantile(0.99),
            last_ops: compared.len(),
        };
        latency_json.insert(
            kind.name().to_string(),
            json!({
                "ok": totals_ok[i],
                "p99_first_us": pair.first_us,
                "p99_last_us": pair.last_us,
                "whole_run": load::latency_json(&total[i]),
            }),
        );
        p99.push((kind, pair));
    }
    let verdict = judge(
        &samples,
        params.duration,
        (!quiet.is_empty()).then_some(p99.as_slice()),
        server_lost.as_deref(),
        &params.limits,
    );
    let missed: u64 = samples
        .iter()
        .flat_map(|s| s.kinds.iter().map(|k| k.missed))
        .sum();
    let expected_not_found = totals_ok[Kind::Churn.index()];
    let baseline = samples
        .iter()
        .find(|s| (s.at_s - verdict.baseline_at_s).abs() < 1e-6);
    let last_sample = samples.last();
    let limits = &params.limits;
    Ok(json!({
        "setup": {
            "addr": params.addr.to_string(),
            "duration_s": params.duration.as_secs_f64(),
            "sample_every_s": params.sample_every.as_secs_f64(),
            "capacity_window_s": params.capacity_window.as_secs_f64(),
            "fraction": params.fraction,
            "connections": params.connections,
            "workers": {
                "unary": params.mix.unary,
                "stream": params.mix.stream,
                "converse": params.mix.converse,
                "churn": params.mix.churn,
            },
            "turns_per_session": TURNS_PER_SESSION,
            "limits": {
                "warmup_fraction": limits.warmup_fraction,
                "warmup_min_s": limits.warmup_min.as_secs_f64(),
                "rss_fraction": limits.rss_fraction,
                "rss_floor_kib": limits.rss_floor_kib,
                "fd_fraction": limits.fd_fraction,
                "fd_slack": limits.fd_slack,
                "p99_factor": limits.p99_factor,
                "p99_floor_us": limits.p99_floor_us,
            },
        },
        "capacity": capacity_json,
        "offered_per_s": offered,
        "server_before_load": { "rss_kib": before.rss_kib, "db_bytes": db_before },
        "samples": samples_json,
        "latency": latency_json,
        "expected_errors": { "NOT_FOUND": expected_not_found },
        "missed_slots": missed,
        "summary": {
            "rss_kib": { "baseline": baseline.map(|s| s.rss_kib), "end": last_sample.map(|s| s.rss_kib) },
            "fds": { "baseline": baseline.map(|s| s.fds), "end": last_sample.map(|s| s.fds) },
            "db_bytes": { "first": samples.first().map(|s| s.db_bytes), "end": last_sample.map(|s| s.db_bytes) },
        },
        "p99_compared_samples": quiet.iter().map(|&q| samples[samples.len() - last.len() + q].at_s).collect::<Vec<_>>(),
        "verdict": {
            "pass": verdict.pass,
            "reasons": verdict.reasons,
            "notes": verdict.notes,
            "baseline_at_s": verdict.baseline_at_s,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        assert!(parse_duration("soon").is_err());
    }
}
