//! The closed loop: every worker sends a request, waits for its answer and sends the next, so
//! the offered load is `connections × in_flight` outstanding requests and never more.
//!
//! A run has a warm-up (requests sent and answered, not recorded), then a measuring window of
//! fixed length that also ends early once `max_requests` measured requests were sent. Only
//! requests sent after the warm-up and answered before the window closed are counted. The
//! server's CPU time is read at both ends of the window.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};

use crate::probe::{Reading, ServerProbe};

/// How much load, for how long.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Length of the measuring window.
    pub duration: Duration,
    /// Most measured requests; the window closes early when they are sent.
    pub max_requests: u64,
}

/// What one operation produced: how many units of work (1 for a request, the number of
/// tokens for a streamed turn), or how it failed.
pub type OpResult = Result<u64, Failure>;

/// How an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A gRPC call ended with this status code.
    Grpc(tonic::Code),
    /// An HTTP request was answered with this status (not 200).
    Http(u16),
    /// An HTTP request was answered 200 with a body that is not the expected reply.
    BadReply,
    /// The HTTP connection failed or closed before the answer.
    Connection,
}

impl From<tonic::Code> for Failure {
    fn from(code: tonic::Code) -> Self {
        Self::Grpc(code)
    }
}

impl Failure {
    /// Whether there was no connection to send on (the worker then backs off a little).
    pub fn is_unavailable(self) -> bool {
        matches!(
            self,
            Self::Grpc(tonic::Code::Unavailable) | Self::Connection
        )
    }

    /// The name errors are counted under: a status code name such as `UNAVAILABLE`, or
    /// `HTTP_503`, `BAD_REPLY`, `CONNECTION`.
    pub fn name(self) -> String {
        match self {
            Self::Grpc(code) => code_name(code),
            Self::Http(status) => format!("HTTP_{status}"),
            Self::BadReply => "BAD_REPLY".to_string(),
            Self::Connection => "CONNECTION".to_string(),
        }
    }
}

/// One closed-loop worker: an operation run again and again.
pub trait Worker: Send + 'static {
    /// Runs the operation once.
    fn run_once(&mut self) -> impl Future<Output = OpResult> + Send;
}

/// The outcome of a closed-loop run.
#[derive(Debug)]
pub struct LoadResult {
    /// Operations answered successfully in the window.
    pub ok: u64,
    /// Units of work in those operations.
    pub units: u64,
    /// Failed operations by [`Failure::name`].
    pub errors: BTreeMap<String, u64>,
    /// Latency of successful operations, microseconds.
    pub latency: Histogram<u64>,
    /// Length of the window.
    pub elapsed: Duration,
    /// The server's counters at both ends of the window, if a server pid was given.
    pub server: Option<(Reading, Reading)>,
    /// The load generator's own CPU time in the window.
    pub client_cpu: Duration,
}

/// A new latency histogram: 1 µs to 100 s, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("static histogram bounds are valid")
}

/// Opens `n` HTTP/2 connections to `addr` (one tonic `Channel` each).
pub async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<Channel>, String> {
    connect_all(&[addr], n).await
}

/// Opens `n` HTTP/2 connections spread over `addrs` (replicas of one service): connection
/// `i` goes to `addrs[i % addrs.len()]`.
pub async fn connect_all(addrs: &[SocketAddr], n: usize) -> Result<Vec<Channel>, String> {
    if addrs.is_empty() {
        return Err("no server address given".into());
    }
    let mut channels = Vec::with_capacity(n);
    for i in 0..n {
        let addr = addrs[i % addrs.len()];
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

struct Shared {
    warm_end: Instant,
    recording: AtomicBool,
    stop: AtomicBool,
    issued: AtomicU64,
    max_requests: u64,
    running: AtomicUsize,
    all_done: Notify,
}

struct WorkerTally {
    ok: u64,
    units: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
}

/// Runs `workers` in a closed loop under `plan`, reading `server` at the window's ends.
pub async fn run<W: Worker>(
    workers: Vec<W>,
    plan: LoadPlan,
    server: Option<&ServerProbe>,
) -> LoadResult {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        warm_end: start + plan.warmup,
        recording: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        issued: AtomicU64::new(0),
        max_requests: plan.max_requests,
        running: AtomicUsize::new(workers.len()),
        all_done: Notify::new(),
    });
    let handles: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(drive(worker, shared.clone())))
        .collect();

    tokio::time::sleep_until(shared.warm_end.into()).await;
    let me = ServerProbe::this_process();
    let client0 = me.read().unwrap_or_default();
    let server0 = server.and_then(|s| s.read().ok());
    let t0 = Instant::now();
    shared.recording.store(true, Ordering::SeqCst);
    tokio::select! {
        _ = tokio::time::sleep(plan.duration) => {}
        _ = shared.all_done.notified() => {}
    }
    shared.stop.store(true, Ordering::SeqCst);
    let elapsed = t0.elapsed();
    let server1 = server.and_then(|s| s.read().ok());
    let client1 = me.read().unwrap_or_default();

    let mut result = LoadResult {
        ok: 0,
        units: 0,
        errors: BTreeMap::new(),
        latency: new_histogram(),
        elapsed,
        server: server0.zip(server1),
        client_cpu: client1.cpu.saturating_sub(client0.cpu),
    };
    for handle in handles {
        let Ok(tally) = handle.await else { continue };
        result.ok += tally.ok;
        result.units += tally.units;
        for (code, n) in tally.errors {
            *result.errors.entry(code).or_default() += n;
        }
        result
            .latency
            .add(&tally.latency)
            .expect("histograms share bounds");
    }
    result
}

async fn drive<W: Worker>(mut worker: W, shared: Arc<Shared>) -> WorkerTally {
    let mut tally = WorkerTally {
        ok: 0,
        units: 0,
        errors: BTreeMap::new(),
        latency: new_histogram(),
    };
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let sent = Instant::now();
        let measured = shared.recording.load(Ordering::Relaxed) && sent >= shared.warm_end;
        if measured && shared.issued.fetch_add(1, Ordering::Relaxed) >= shared.max_requests {
            break;
        }
        let outcome = worker.run_once().await;
        if matches!(outcome, Err(failure) if failure.is_unavailable()) {
            // No connection: back off a little instead of spinning on connection errors.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !measured || shared.stop.load(Ordering::Relaxed) {
            continue;
        }
        match outcome {
            Ok(units) => {
                tally.ok += 1;
                tally.units += units;
                let micros = sent.elapsed().as_micros().max(1) as u64;
                tally.latency.saturating_record(micros);
            }
            Err(failure) => *tally.errors.entry(failure.name()).or_default() += 1,
        }
    }
    if shared.running.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.all_done.notify_one();
    }
    tally
}

/// The canonical name of a status code, e.g. `UNAVAILABLE`.
pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
        .chars()
        .fold(String::new(), |mut out, c| {
            if c.is_uppercase() && !out.is_empty() {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
            out
        })
}

/// p50/p90/p99/p99.9/max and mean of a histogram, in microseconds.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "mean_us": round1(h.mean()),
        "p50_us": h.value_at_quantile(0.50),
        "p90_us": h.value_at_quantile(0.90),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

/// Rounds to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl LoadResult {
    /// Completed operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Units (e.g. tokens) per second.
    pub fn unit_rate(&self) -> f64 {
        self.units as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU seconds spent in the window.
    pub fn server_cpu(&self) -> Option<Duration> {
        self.server.map(|(a, b)| b.cpu.saturating_sub(a.cpu))
    }

    /// The common JSON fields of every closed-loop scenario.
    pub fn to_json(&self) -> Value {
        let server = self.server.map(|(a, b)| {
            let cpu = b.cpu.saturating_sub(a.cpu).as_secs_f64();
            let per_op = |cpu: f64| {
                if self.ok > 0 {
                    round1(cpu * 1e6 / self.ok as f64)
                } else {
                    0.0
                }
            };
            let mut server = json!({
                "cpu_seconds": round3(cpu),
                "cpu_cores": round3(cpu / self.elapsed.as_secs_f64().max(1e-9)),
                "cpu_us_per_op": per_op(cpu),
                "rss_kib": b.rss_kib,
                "peak_rss_kib": b.peak_rss_kib,
            });
            if let (Some(a), Some(b)) = (a.database_cpu, b.database_cpu) {
                let cpu = b.saturating_sub(a).as_secs_f64();
                server["database_cpu_seconds"] = json!(round3(cpu));
                server["database_cpu_us_per_op"] = json!(per_op(cpu));
            }
            if let (Some(a), Some(b)) = (a.upstream_cpu, b.upstream_cpu) {
                let cpu = b.saturating_sub(a).as_secs_f64();
                server["upstream_cpu_seconds"] = json!(round3(cpu));
                server["upstream_cpu_us_per_op"] = json!(per_op(cpu));
            }
            server
        });
        json!({
            "ok": self.ok,
            "units": self.units,
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            "ops_per_s": round1(self.rate()),
            "units_per_s": round1(self.unit_rate()),
            "latency": latency_json(&self.latency),
            "errors": self.errors,
            "server": server,
            "client_cpu_seconds": round3(self.client_cpu.as_secs_f64()),
        })
    }
}

/// Rounds to three decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_names() {
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }

    #[test]
    fn failure_names() {
        assert_eq!(Failure::from(tonic::Code::Internal).name(), "INTERNAL");
        assert_eq!(Failure::Http(503).name(), "HTTP_503");
        assert_eq!(Failure::BadReply.name(), "BAD_REPLY");
        assert_eq!(Failure::Connection.name(), "CONNECTION");
        assert!(Failure::Connection.is_unavailable());
        assert!(Failure::from(tonic::Code::Unavailable).is_unavailable());
        assert!(!Failure::Http(503).is_unavailable());
    }

    struct Counter(u64);

    impl Worker for Counter {
        async fn run_once(&mut self) -> OpResult {
            self.0 += 1;
            tokio::task::yield_now().await;
            if self.0.is_multiple_of(2) {
                Ok(3)
            } else {
                Err(tonic::Code::Aborted.into())
            }
        }
    }

    #[tokio::test]
    async fn stops_at_the_request_bound() {
        let plan = LoadPlan {
            warmup: Duration::from_millis(10),
            duration: Duration::from_secs(30),
            max_requests: 100,
        };
        let result = run(vec![Counter(0), Counter(0)], plan, None).await;
        let errors = result.errors.get("ABORTED").copied().unwrap_or(0);
        // The bound ends the window long before its 30 s; every measured request counted.
        assert_eq!(result.ok + errors, 100);
        assert_eq!(result.units, result.ok * 3);
        assert_eq!(result.latency.len(), result.ok);
    }
}
