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

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::stream_response_response::Event;
use contextd::api::v1::{
    CreateSessionRequest, DeleteSessionRequest, FinishReason, GetSessionRequest,
    StreamResponseRequest,
};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::converse::ConverseWorker;
use super::unary;
use crate::load::{self, Failure, LoadPlan, OpResult, Worker, new_histogram, round1};
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

// --- workers ---------------------------------------------------------------------------------

/// A worker of one kind, usable in the closed loop (capacity) and the paced loop (soak).
pub enum SoakWorker {
    /// `Interact` turns on a session that changes every [`TURNS_PER_SESSION`] turns.
    Unary(Rotating),
    /// `StreamResponse` turns, likewise.
    Stream(Rotating),
    /// A `Converse` stream, reopened on a fresh session every [`TURNS_PER_SESSION`] turns.
    Converse {
        /// Its session and turn count.
        session: Rotating,
        /// The open stream (boxed: it is far larger than the other variants).
        stream: Box<ConverseWorker>,
    },
    /// Session churn: every operation makes and deletes a session of its own.
    Churn(Rotating),
}

/// A worker's current session and how many turns it has made on it.
pub struct Rotating {
    channel: Channel,
    prefix: String,
    generation: u64,
    turns: u64,
}

impl Rotating {
    fn new(channel: Channel, tag: &str, kind: Kind, worker: usize) -> Self {
        Self {
            channel,
            prefix: format!("soak-{tag}-{}{worker:03}", kind.name()),
            generation: 0,
            turns: 0,
        }
    }

    fn session_id(&self) -> String {
        format!("{}-{:06}", self.prefix, self.generation)
    }

    /// Moves to a fresh session when this one has had its turns; returns the old one's id.
    fn rotate(&mut self) -> Option<String> {
        if self.turns < TURNS_PER_SESSION {
            return None;
        }
        let old = self.session_id();
        self.generation += 1;
        self.turns = 0;
        Some(old)
    }

    fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel.clone())
    }

    async fn delete(&self, session_id: String) -> Result<(), Failure> {
        self.sessions()
            .delete_session(workload::authorized(DeleteSessionRequest {
                session_id,
                etag: String::new(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| s.code().into())
    }
}

impl SoakWorker {
    /// Opens a worker of `kind` (a `Converse` worker opens its stream now).
    pub async fn open(
        kind: Kind,
        channel: Channel,
        tag: &str,
        worker: usize,
    ) -> Result<Self, String> {
        let session = Rotating::new(channel.clone(), tag, kind, worker);
        Ok(match kind {
            Kind::Unary => Self::Unary(session),
            Kind::Stream => Self::Stream(session),
            Kind::Converse => {
                let stream = Box::new(ConverseWorker::open(channel, session.session_id()).await?);
                Self::Converse { session, stream }
            }
            Kind::Churn => Self::Churn(session),
        })
    }

    /// Untimed upkeep before an operation: moving to a fresh session and deleting the old
    /// one. Returns whether it did anything (the operation then starts late, and its latency
    /// is counted from when it could start).
    pub async fn upkeep(&mut self) -> Result<bool, Failure> {
        match self {
            Self::Unary(session) | Self::Stream(session) => match session.rotate() {
                Some(old) => session.delete(old).await.map(|()| true),
                None => Ok(false),
            },
            Self::Converse { session, stream } => {
                let Some(old) = session.rotate() else {
                    return Ok(false);
                };
                // The new stream first: dropping the old one (by replacing it) ends it, and
                // the session can then be deleted with no stream attached.
                **stream = ConverseWorker::open(session.channel.clone(), session.session_id())
                    .await
                    .map_err(|_| Failure::Grpc(tonic::Code::Unavailable))?;
                session.delete(old).await.map(|()| true)
            }
            Self::Churn(_) => Ok(false),
        }
    }

    /// The timed operation.
    pub async fn operate(&mut self) -> OpResult {
        match self {
            Self::Unary(session) => {
                session.turns += 1;
                InteractServiceClient::new(session.channel.clone())
                    .interact(workload::authorized(unary::request_on(
                        &session.session_id(),
                    )))
                    .await
                    .map(|_| 1)
                    .map_err(|s| s.code().into())
            }
            Self::Stream(session) => {
                session.turns += 1;
                stream_turn(session.channel.clone(), session.session_id()).await
            }
            Self::Converse { session, stream } => {
                session.turns += 1;
                stream.run_once().await
            }
            Self::Churn(session) => {
                session.generation += 1;
                churn(session).await
            }
        }
    }
}

impl Worker for SoakWorker {
    async fn run_once(&mut self) -> OpResult {
        self.upkeep().await?;
        self.operate().await
    }
}

/// One `StreamResponse` turn; its units are the deltas received.
async fn stream_turn(channel: Channel, session_id: String) -> OpResult {
    let request = StreamResponseRequest {
        session_id,
        message: workload::stream_message(),
        context: None,
        tool_results: Vec::new(),
        idempotency_key: String::new(),
        abandon_tool_calls: false,
    };
    let mut events = InteractServiceClient::new(channel)
        .stream_response(workload::authorized(request))
        .await
        .map_err(|s| s.code())?
        .into_inner();
    let mut deltas = 0;
    while let Some(event) = events.message().await.map_err(|s| s.code())? {
        match event.event {
            Some(Event::Delta(_)) => deltas += 1,
            Some(Event::Completed(done)) if done.finish_reason == FinishReason::Stop as i32 => {
                return Ok(deltas);
            }
            Some(Event::Completed(_)) => return Err(Failure::BadReply),
            _ => {}
        }
    }
    // The stream ended without `completed`.
    Err(Failure::BadReply)
}

/// Creates a session, makes one turn on it, deletes it, and reads it back: the read must
/// answer NOT_FOUND, and anything else is an error.
async fn churn(session: &Rotating) -> OpResult {
    let session_id = session.session_id();
    let mut sessions = session.sessions();
    sessions
        .create_session(workload::authorized(CreateSessionRequest {
            session_id: session_id.clone(),
            ..Default::default()
        }))
        .await
        .map_err(|s| s.code())?;
    InteractServiceClient::new(session.channel.clone())
        .interact(workload::authorized(unary::request_on(&session_id)))
        .await
        .map_err(|s| s.code())?;
    session.delete(session_id.clone()).await?;
    match sessions
        .get_session(workload::authorized(GetSessionRequest { session_id }))
        .await
    {
        Err(status) if status.code() == tonic::Code::NotFound => Ok(1),
        Err(status) => Err(status.code().into()),
        // A deleted session that can still be read is a wrong answer, not a transport error.
        Ok(_) => Err(Failure::BadReply),
    }
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

// --- sampling --------------------------------------------------------------------------------

/// The server's open file descriptors.
pub fn open_fds(pid: u32) -> std::io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The machine's CPU counters from `/proc/stat`: busy and total ticks of all CPUs, and how many
/// CPUs there are.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// Ticks not idle and not waiting for I/O.
    pub busy: u64,
    /// All ticks.
    pub total: u64,
    /// Online CPUs.
    pub cpus: usize,
}

impl MachineCpu {
    /// Reads `/proc/stat` now.
    pub fn read() -> std::io::Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "cannot parse /proc/stat")
        })
    }

    /// Parses the text of `/proc/stat`.
    pub fn parse(stat: &str) -> Option<Self> {
        let mut lines = stat.lines();
        let fields: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user already).
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        let cpus = lines
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        Some(Self {
            busy: total.saturating_sub(idle),
            total,
            cpus: cpus.max(1),
        })
    }

    /// Cores kept busy on average between `earlier` and `self`.
    pub fn busy_cores_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64 * self.cpus as f64
    }
}

/// Nanoseconds the threads of process `pid` have spent runnable but waiting for a CPU (the
/// second field of each `/proc/PID/task/TID/schedstat`). Threads that ended take their share
/// with them, so this can fall; the caller clamps differences at zero.
pub fn run_queue_wait_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Rounds to two decimals.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The sizes of the files under `dir` (recursively), by path relative to `dir`.
pub fn file_sizes(dir: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // A file may vanish between listing and reading (SQLite's journal): skip it.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap_or(&path);
                out.insert(name.display().to_string(), meta.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// One sample: the server's resources at its end and every kind's interval.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the soak phase started.
    pub at_s: f64,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Bytes of all files in the data directory.
    pub db_bytes: u64,
    /// Cores other processes kept busy on average during the interval.
    pub others_cores: f64,
    /// Threads of the server and the load generator runnable but waiting for a CPU, on
    /// average during the interval.
    pub waiting_threads: f64,
    /// Per kind (in [`KINDS`] order): operations, p99 in µs, errors, missed slots.
    pub kinds: Vec<KindSample>,
}

/// What one kind did in one interval.
#[derive(Debug, Clone, Default)]
pub struct KindSample {
    /// Operations answered as expected.
    pub ok: u64,
    /// Their p50, µs.
    pub p50_us: u64,
    /// Their p99, µs.
    pub p99_us: u64,
    /// Their slowest, µs.
    pub max_us: u64,
    /// Unexpected errors by name.
    pub errors: BTreeMap<String, u64>,
    /// Slots skipped because the worker was more than a period behind.
    pub missed: u64,
}

impl Sample {
    fn to_json(&self, db_files: &BTreeMap<String, u64>) -> Value {
        let kinds: serde_json::Map<String, Value> = KINDS
            .iter()
            .zip(&self.kinds)
            .map(|(kind, k)| {
                (
                    kind.name().to_string(),
                    json!({
                        "ok": k.ok,
                        "p50_us": k.p50_us,
                        "p99_us": k.p99_us,
                        "max_us": k.max_us,
                        "errors": k.errors,
                        "missed": k.missed,
                    }),
                )
            })
            .collect();
        json!({
            "at_s": round1(self.at_s),
            "rss_kib": self.rss_kib,
            "fds": self.fds,
            "db_bytes": self.db_bytes,
            "db_files": db_files,
            "others_cores": round2(self.others_cores),
            "waiting_threads": round2(self.waiting_threads),
            "kinds": kinds,
        })
    }
}

/// The header of the table of samples.
pub fn table_header() -> String {
    let mut line = format!(
        "{:>7} {:>9} {:>5} {:>10} {:>6} {:>5}",
        "t(s)", "rss(KiB)", "fds", "db(KiB)", "others", "wait"
    );
    for kind in KINDS {
        line += &format!(" {:>16}", format!("{} ops/p99ms", kind.name()));
    }
    line + "  errors"
}

/// One row of the table of samples.
pub fn table_row(sample: &Sample) -> String {
    let mut line = format!(
        "{:>7.1} {:>9} {:>5} {:>10} {:>6.2} {:>5.2}",
        sample.at_s,
        sample.rss_kib,
        sample.fds,
        sample.db_bytes / 1024,
        sample.others_cores,
        sample.waiting_threads
    );
    let mut errors = Vec::new();
    for (kind, k) in KINDS.iter().zip(&sample.kinds) {
        line += &format!(
            " {:>16}",
            format!("{}/{:.2}", k.ok, k.p99_us as f64 / 1000.0)
        );
        for (name, n) in &k.errors {
            errors.push(format!("{}:{name}={n}", kind.name()));
        }
        if k.missed > 0 {
            errors.push(format!("{}:missed={}", kind.name(), k.missed));
        }
    }
    line + "  " + &errors.join(" ")
}

// --- the verdict -----------------------------------------------------------------------------

/// Pass/fail thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Share of the run that is warm-up: RSS and fds are compared with the first sample at or
    /// after it.
    pub warmup_fraction: f64,
    /// The shortest warm-up.
    pub warmup_min: Duration,
    /// RSS may move this share of its post-warm-up value either way...
    pub rss_fraction: f64,
    /// ...or this many KiB, whichever is more. On a short run the warm-up ends before the
    /// allocator's arenas and SQLite's page caches (2 MiB per pooled connection by default)
    /// have reached their plateau, and 10 % of a 20–40 MiB server is only 2–4 MiB: without a
    /// floor a healthy 60 s run fails on caches filling up. A leak of even a few hundred
    /// bytes per operation passes 8 MiB within minutes at this load.
    pub rss_floor_kib: u64,
    /// Open fds may move this share either way...
    pub fd_fraction: f64,
    /// ...or this many, whichever is more. A server holds a few dozen fds, so 10 % is two or
    /// three; SQLite opens its WAL and shared-memory files and pool connections lazily, and a
    /// client connection being replaced briefly counts twice. A leak per operation exceeds
    /// this within the first second.
    pub fd_slack: usize,
    /// A kind's p99 in the last minute may be at most this multiple of its first minute's...
    pub p99_factor: f64,
    /// ...or the first minute's plus this many µs, whichever is more. On two shared cores a
    /// p99 of a millisecond or two doubles whenever another process takes a core for one
    /// scheduler slice (a few ms); that is the machine, not drift.
    pub p99_floor_us: u64,
    /// A later sample counts for the p99 comparison when its run-queue wait (threads waiting
    /// for a CPU) is at most this multiple of the first minute's...
    pub quiet_wait_factor: f64,
    /// ...or the first minute's plus this many waiting threads, whichever is more. A quarter
    /// of a thread waiting all the time is a quarter of a core taken from a load that uses
    /// about one and a half: enough to move p99 by itself.
    pub quiet_wait_slack: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            warmup_fraction: 0.2,
            warmup_min: Duration::from_secs(10),
            rss_fraction: 0.10,
            rss_floor_kib: 8 * 1024,
            fd_fraction: 0.10,
            fd_slack: 8,
            p99_factor: 2.0,
            p99_floor_us: 5_000,
            quiet_wait_factor: 1.5,
            quiet_wait_slack: 0.25,
        }
    }
}

/// The first and last latency of one kind, as compared by [`judge`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct P99Pair {
    /// p99 of the reference period (the first minute, or the first sample of a short run), µs.
    pub first_us: u64,
    /// p99 of the compared period (the last minute, or every later sample of a short run), µs.
    pub last_us: u64,
    /// Operations in the compared period (none: nothing to compare).
    pub last_ops: u64,
}

/// Which of the compared samples are quiet enough to judge latency by: those whose run-queue
/// wait is at most `factor` times, or `slack` above, the mean over the reference samples.
pub fn quiet_samples(reference: &[f64], compared: &[f64], factor: f64, slack: f64) -> Vec<usize> {
    let base = if reference.is_empty() {
        0.0
    } else {
        reference.iter().sum::<f64>() / reference.len() as f64
    };
    compared
        .iter()
        .enumerate()
        .filter(|(_, wait)| **wait <= (base * factor).max(base + slack))
        .map(|(i, _)| i)
        .collect()
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether every check held.
    pub pass: bool,
    /// Why not (empty on a pass).
    pub reasons: Vec<String>,
    /// What could not be judged, and why (does not fail the run).
    pub notes: Vec<String>,
    /// The sample RSS and fds were compared against.
    pub baseline_at_s: f64,
}

fn band(base: f64, fraction: f64, floor: f64) -> f64 {
    (base * fraction).max(floor)
}

/// Judges a run: resources flat after the warm-up, every kind's p99 within its bound, no
/// unexpected errors, and the server alive throughout. `p99` is `None` when no compared
/// sample was quiet enough (see [`quiet_samples`]).
pub fn judge(
    samples: &[Sample],
    duration: Duration,
    p99: Option<&[(Kind, P99Pair)]>,
    server_lost: Option<&str>,
    limits: &Limits,
) -> Verdict {
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    if let Some(why) = server_lost {
        reasons.push(format!("the server stopped answering /proc reads: {why}"));
    }
    let warmup = duration
        .mul_f64(limits.warmup_fraction)
        .max(limits.warmup_min)
        .as_secs_f64();
    let baseline = samples
        .iter()
        .position(|s| s.at_s + 1e-6 >= warmup)
        .filter(|&i| i + 1 < samples.len());
    let baseline_at_s = baseline.map_or(0.0, |i| samples[i].at_s);
    match baseline {
        None => reasons.push(format!(
            "too few samples ({}) to compare anything after a {warmup:.0} s warm-up",
            samples.len()
        )),
        Some(i) => {
            let base = &samples[i];
            let rss_band = band(
                base.rss_kib as f64,
                limits.rss_fraction,
                limits.rss_floor_kib as f64,
            );
            let fd_band = band(base.fds as f64, limits.fd_fraction, limits.fd_slack as f64);
            for s in &samples[i + 1..] {
                let drift = s.rss_kib as f64 - base.rss_kib as f64;
                if drift.abs() > rss_band {
                    reasons.push(format!(
                        "RSS moved from {} KiB at {:.0} s to {} KiB at {:.0} s ({:+.0} KiB; allowed ±{:.0})",
                        base.rss_kib, base.at_s, s.rss_kib, s.at_s, drift, rss_band
                    ));
                    break;
                }
            }
            for s in &samples[i + 1..] {
                let drift = s.fds as f64 - base.fds as f64;
                if drift.abs() > fd_band {
                    reasons.push(format!(
                        "open fds moved from {} at {:.0} s to {} at {:.0} s ({:+.0}; allowed ±{:.0})",
                        base.fds, base.at_s, s.fds, s.at_s, drift, fd_band
                    ));
                    break;
                }
            }
        }
    }
    if p99.is_none() {
        notes.push(format!(
            "p99 not compared: in every later sample more threads waited for a CPU than {}× or {:+} of the first minute's (the machine was busier)",
            limits.quiet_wait_factor, limits.quiet_wait_slack
        ));
    }
    for (kind, pair) in p99.unwrap_or_default() {
        if pair.last_ops == 0 {
            reasons.push(format!(
                "{}: no operation finished in the compared period",
                kind.name()
            ));
            continue;
        }
        let allowed = (pair.first_us as f64 * limits.p99_factor)
            .max((pair.first_us + limits.p99_floor_us) as f64);
        if pair.last_us as f64 > allowed {
            reasons.push(format!(
                "{}: p99 rose from {:.2} ms to {:.2} ms (allowed {:.2} ms)",
                kind.name(),
                pair.first_us as f64 / 1000.0,
                pair.last_us as f64 / 1000.0,
                allowed / 1000.0
            ));
        }
    }
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for s in samples {
        for (kind, k) in KINDS.iter().zip(&s.kinds) {
            for (name, n) in &k.errors {
                *errors.entry(format!("{} {name}", kind.name())).or_default() += n;
            }
        }
    }
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|(k, n)| format!("{k} × {n}")).collect();
        reasons.push(format!("unexpected errors: {}", list.join(", ")));
    }
    Verdict {
        pass: reasons.is_empty(),
        reasons,
        notes,
        baseline_at_s,
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

    fn sample(at_s: f64, rss_kib: u64, fds: usize) -> Sample {
        Sample {
            at_s,
            rss_kib,
            fds,
            db_bytes: 0,
            others_cores: 0.0,
            waiting_threads: 0.0,
            kinds: KINDS.iter().map(|_| KindSample::default()).collect(),
        }
    }

    fn steady(p99: u64) -> Vec<(Kind, P99Pair)> {
        KINDS
            .iter()
            .map(|&k| {
                (
                    k,
                    P99Pair {
                        first_us: p99,
                        last_us: p99,
                        last_ops: 100,
                    },
                )
            })
            .collect()
    }

    fn minute(rss: impl Fn(f64) -> u64, fds: impl Fn(f64) -> usize) -> Vec<Sample> {
        (1..=6)
            .map(|i| {
                let t = i as f64 * 10.0;
                sample(t, rss(t), fds(t))
            })
            .collect()
    }

    const MINUTE: Duration = Duration::from_secs(60);

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

    #[test]
    fn a_flat_run_passes() {
        let samples = minute(|t| 30_000 + t as u64, |_| 40);
        let v = judge(
            &samples,
            MINUTE,
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert!(v.pass, "{:?}", v.reasons);
        // 20 % of 60 s is 12 s: the first sample at or after it is the one at 20 s.
        assert_eq!(v.baseline_at_s, 20.0);
    }

    #[test]
    fn growth_during_the_warm_up_is_not_counted() {
        let samples = minute(|t| if t < 20.0 { 10_000 } else { 40_000 }, |_| 40);
        assert!(
            judge(
                &samples,
                MINUTE,
                Some(&steady(2_000)),
                None,
                &Limits::default()
            )
            .pass
        );
    }

    #[test]
    fn rss_growth_beyond_the_band_fails() {
        // Baseline 100 MiB: the band is 10 MiB (10 % beats the 8 MiB floor); +11 MiB fails.
        let samples = minute(
            |t| {
                if t < 60.0 {
                    102_400
                } else {
                    102_400 + 11 * 1024
                }
            },
            |_| 40,
        );
        let v = judge(
            &samples,
            MINUTE,
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert!(!v.pass);
        assert!(v.reasons[0].starts_with("RSS moved"), "{:?}", v.reasons);
    }

    #[test]
    fn small_rss_moves_stay_under_the_floor() {
        // +7 MiB on a 30 MiB server is 23 %, but under the 8 MiB floor.
        let samples = minute(
            |t| if t < 60.0 { 30_720 } else { 30_720 + 7 * 1024 },
            |_| 40,
        );
        assert!(
            judge(
                &samples,
                MINUTE,
                Some(&steady(2_000)),
                None,
                &Limits::default()
            )
            .pass
        );
    }

    #[test]
    fn an_fd_leak_fails_and_a_few_fds_do_not() {
        let leak = minute(|_| 30_000, |t| 40 + t as usize);
        let v = judge(
            &leak,
            MINUTE,
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert!(
            v.reasons.iter().any(|r| r.starts_with("open fds")),
            "{:?}",
            v.reasons
        );
        let wobble = minute(|_| 30_000, |t| if t > 40.0 { 45 } else { 40 });
        assert!(
            judge(
                &wobble,
                MINUTE,
                Some(&steady(2_000)),
                None,
                &Limits::default()
            )
            .pass
        );
    }

    #[test]
    fn p99_bounds() {
        let samples = minute(|_| 30_000, |_| 40);
        let limits = Limits::default();
        let with = |first_us, last_us| {
            vec![(
                Kind::Unary,
                P99Pair {
                    first_us,
                    last_us,
                    last_ops: 10,
                },
            )]
        };
        // Twice 20 ms is the bound: 40 ms passes, 41 ms fails.
        assert!(judge(&samples, MINUTE, Some(&with(20_000, 40_000)), None, &limits).pass);
        let v = judge(&samples, MINUTE, Some(&with(20_000, 41_000)), None, &limits);
        assert!(
            v.reasons[0].starts_with("unary: p99 rose"),
            "{:?}",
            v.reasons
        );
        // A 1 ms p99 may reach 6 ms (the floor), not 7.
        assert!(judge(&samples, MINUTE, Some(&with(1_000, 6_000)), None, &limits).pass);
        assert!(!judge(&samples, MINUTE, Some(&with(1_000, 7_000)), None, &limits).pass);
        // Nothing finished at the end: that is a failure, not a pass by default.
        let none = vec![(
            Kind::Churn,
            P99Pair {
                first_us: 1_000,
                last_us: 0,
                last_ops: 0,
            },
        )];
        assert!(!judge(&samples, MINUTE, Some(&none), None, &limits).pass);
    }

    #[test]
    fn errors_and_a_lost_server_fail() {
        let mut samples = minute(|_| 30_000, |_| 40);
        samples[3].kinds[Kind::Stream.index()]
            .errors
            .insert("UNAVAILABLE".into(), 2);
        let v = judge(
            &samples,
            MINUTE,
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert_eq!(v.reasons, vec!["unexpected errors: stream UNAVAILABLE × 2"]);
        let samples = minute(|_| 30_000, |_| 40);
        let v = judge(
            &samples,
            MINUTE,
            Some(&steady(2_000)),
            Some("No such file or directory"),
            &Limits::default(),
        );
        assert!(!v.pass);
    }

    #[test]
    fn noisy_neighbours_void_the_latency_check_only() {
        // Reference 0.2 threads waiting: up to 0.45 is quiet (the slack beats 1.5×).
        assert_eq!(
            quiet_samples(&[0.1, 0.3], &[0.5, 0.45, 1.5, 0.2], 1.5, 0.25),
            vec![1, 3]
        );
        // Reference 1.0: up to 1.5 (the factor beats the slack).
        assert_eq!(quiet_samples(&[1.0], &[1.5, 1.6], 1.5, 0.25), vec![0]);
        assert!(quiet_samples(&[0.0], &[0.9, 1.2], 1.5, 0.25).is_empty());
        let samples = minute(|_| 30_000, |_| 40);
        let v = judge(&samples, MINUTE, None, None, &Limits::default());
        assert!(v.pass);
        assert!(v.notes[0].starts_with("p99 not compared"));
        let leak = minute(|_| 30_000, |t| 40 + t as usize);
        assert!(!judge(&leak, MINUTE, None, None, &Limits::default()).pass);
    }

    #[test]
    fn machine_cpu() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        let a = MachineCpu::parse(stat).unwrap();
        assert_eq!(
            a,
            MachineCpu {
                busy: 150,
                total: 1000,
                cpus: 2
            }
        );
        let b = MachineCpu {
            busy: 650,
            total: 2000,
            cpus: 2,
        };
        // 500 busy of 1000 ticks on 2 CPUs: one core busy.
        assert!((b.busy_cores_since(&a) - 1.0).abs() < 1e-9);
        assert!(MachineCpu::read().unwrap().total > 0);
        assert!(std::fs::read_dir(format!("/proc/{}/task", std::process::id())).is_ok());
    }

    #[test]
    fn too_short_a_run_cannot_pass() {
        let samples = vec![sample(10.0, 30_000, 40)];
        let v = judge(
            &samples,
            Duration::from_secs(10),
            Some(&steady(2_000)),
            None,
            &Limits::default(),
        );
        assert!(!v.pass);
        assert!(v.reasons[0].starts_with("too few samples"));
    }

    #[test]
    fn reads_this_process_and_a_directory() {
        assert!(open_fds(std::process::id()).unwrap() >= 3);
        let dir = std::env::temp_dir().join(format!("soak-sizes-{}", workload::run_tag()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.db"), [0u8; 10]).unwrap();
        std::fs::write(dir.join("sub").join("b"), [0u8; 5]).unwrap();
        let sizes = file_sizes(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(sizes.get("a.db"), Some(&10));
        assert_eq!(sizes.get("sub/b"), Some(&5));
        assert_eq!(sizes.values().sum::<u64>(), 15);
    }
}
