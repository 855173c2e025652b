//! `loadgen`: drives one benchmark scenario against a server on this machine and prints its
//! results as one JSON object (stdout or `--out`), plus a one-line summary on stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadgen::load::LoadPlan;
use loadgen::probe::ServerProbe;
use loadgen::scenario::{self, ClosedLoop, check_loopback};
use serde_json::{Value, json};

/// Load generator for contextd's benchmarks (loopback servers only).
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Write the JSON result here instead of stdout.
    #[arg(long, global = true, value_name = "FILE")]
    out: Option<PathBuf>,
    /// A label stored with the result (e.g. which server was measured).
    #[arg(long, global = true, default_value = "")]
    label: String,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Unary Interact turns, one session per worker. `--addr` (and `--pid`) may be given more
    /// than once, for replicas of one service: connections are spread over the addresses and
    /// the servers' CPU time is summed.
    Unary(Target),
    /// Writes many sessions, each with a short history, straight into the SQLite store of a
    /// data directory (as `contextd serve --data-dir` opens it), for `many-sessions`.
    SeedSessions {
        /// The data directory (no server may be running on it).
        #[arg(long)]
        data_dir: PathBuf,
        /// Sessions to write.
        #[arg(long, default_value_t = 1_000)]
        sessions: u64,
        /// Messages in each one's history.
        #[arg(long, default_value_t = 4)]
        messages: u64,
        /// Each session's window, in tokens (small, so a window holds the same number of
        /// messages however many turns a session has had during the run).
        #[arg(long, default_value_t = 512)]
        max_context_tokens: u32,
        /// Commits in flight, and the most written in one transaction.
        #[arg(long, default_value_t = 4_096)]
        batch: usize,
    },
    /// Unary Interact turns on sessions picked at random among the `--sessions` ones
    /// `seed-sessions` stored (each worker has its own share, so turns never queue on one
    /// session).
    ManySessions {
        #[command(flatten)]
        target: Target,
        /// How many sessions were seeded.
        #[arg(long)]
        sessions: u64,
    },
    /// The unary turns as HTTP/JSON (POST /v1/sessions/{id}:interact), one HTTP/1.1
    /// keep-alive connection per worker.
    HttpUnary {
        #[command(flatten)]
        target: Target,
        /// `v1`: POST /v1/sessions/{id}:interact; `classic`: POST /api/mcp/interact;
        /// `connect`: the Connect protocol's unary JSON call; `grpc-web`: gRPC-Web in protobuf.
        #[arg(long, default_value = "v1", value_parser = ["v1", "classic", "connect", "grpc-web"])]
        route: String,
    },
    /// StreamResponse turns of about 200 deltas each; rate in tokens per second.
    Stream(Target),
    /// Converse turns with one client-side tool round trip each.
    Converse(Target),
    /// The Converse turns over a WebSocket (GET /v1/sessions/{id}:converse), one connection
    /// per worker.
    WsConverse {
        #[command(flatten)]
        target: Target,
        /// `json`: text frames of proto3 JSON; `proto`: binary frames of protobuf.
        #[arg(long, default_value = "json", value_parser = ["json", "proto"])]
        frames: String,
    },
    /// Conversations through a gateway that keeps them (contextd's `Interact`, or SMG's
    /// Responses API with `previous_response_id`) in front of `fake-openai`; one conversation
    /// at a time per connection, `--turns` turns each. The gateway's CPU time is its process
    /// tree's; the upstream's is reported apart.
    Gateway {
        #[command(flatten)]
        target: Target,
        /// `contextd` or `smg`.
        #[arg(long, value_parser = ["contextd", "smg"])]
        gateway: String,
        /// Turns per conversation before a worker starts a new one.
        #[arg(long, default_value_t = 10)]
        turns: u64,
        /// The `model` of SMG's requests.
        #[arg(long, default_value = loadgen::fake_openai::DEFAULT_MODEL)]
        model: String,
        /// The fake upstream's address (its call counters are read before and after).
        #[arg(long, value_parser = parse_addr)]
        upstream: Option<SocketAddr>,
        /// The fake upstream's process id (its CPU time is reported apart).
        #[arg(long)]
        upstream_pid: Option<u32>,
    },
    /// Turn latency on a session with a long history ÷ on sessions with a short one.
    History {
        #[command(flatten)]
        server: ServerArgs,
        /// Messages in the long session.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Messages in each short session.
        #[arg(long, default_value_t = 10)]
        small_messages: u64,
        /// Measured turns of each kind.
        #[arg(long, default_value_t = 500)]
        turns: usize,
    },
    /// Many idle Converse streams; server memory per stream.
    Idle {
        #[command(flatten)]
        server: ServerArgs,
        /// Streams to open.
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        /// Connections they share.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Seconds to hold them open before reading memory.
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
    },
    /// A mixed load (Interact, StreamResponse, Converse with a tool round trip, session churn)
    /// at a share of its measured capacity for a long time, sampling the server's RSS, open
    /// fds, data directory size and every kind's p99; judges PASS or FAIL (exit status 1).
    Soak {
        /// Server address (loopback only).
        #[arg(long, value_parser = parse_addr)]
        addr: SocketAddr,
        /// Server process id (its memory and fds are sampled).
        #[arg(long)]
        pid: u32,
        /// The server's data directory (the size of its files is sampled).
        #[arg(long)]
        data_dir: PathBuf,
        /// Length of the soak, e.g. 60s, 30m, 1h (the capacity measurement comes first).
        #[arg(long, value_parser = scenario::soak::parse_duration)]
        duration: Duration,
        /// Seconds between samples.
        #[arg(long, default_value_t = 10.0)]
        sample_every: f64,
        /// Seconds of the closed-loop capacity measurement (after one of warm-up).
        #[arg(long, default_value_t = 5.0)]
        capacity_window: f64,
        /// Share of the measured capacity offered during the soak.
        #[arg(long, default_value_t = 0.5)]
        fraction: f64,
        /// HTTP/2 connections all workers share.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Interact workers.
        #[arg(long, default_value_t = 8)]
        unary: usize,
        /// StreamResponse workers.
        #[arg(long, default_value_t = 2)]
        stream: usize,
        /// Converse workers (one stream each).
        #[arg(long, default_value_t = 4)]
        converse: usize,
        /// Session create/delete churn workers.
        #[arg(long, default_value_t = 2)]
        churn: usize,
    },
    /// Process start to first SERVING health check, many times.
    Coldstart {
        /// Starts to time.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Working directory of the started server.
        #[arg(long, default_value = ".")]
        workdir: PathBuf,
        /// The server command; it must print "... listening on ADDR" first on stdout.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Server address (loopback only). Only `unary` takes more than one (replicas).
    #[arg(long = "addr", value_parser = parse_addr, required = true)]
    addrs: Vec<SocketAddr>,
    /// Server process id, to read its CPU time and memory from /proc; more than one (the
    /// replicas) are summed.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Process id of the database server's main process (PostgreSQL's postmaster): its CPU
    /// time and its backends' are reported apart, per request.
    #[arg(long)]
    db_pid: Option<u32>,
}

#[derive(Args, Debug)]
struct Target {
    #[command(flatten)]
    server: ServerArgs,
    /// Connections: HTTP/2 for gRPC; http-unary opens connections × in-flight HTTP/1.1 ones.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Outstanding requests (or streams) per connection.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most measured requests.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    check_loopback(addr)
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Target {
    fn setup(&self) -> Result<ClosedLoop, String> {
        if self.connections == 0 || self.in_flight == 0 {
            return Err("--connections and --in-flight must be at least 1".into());
        }
        Ok(ClosedLoop {
            addr: self.server.addrs[0],
            connections: self.connections,
            in_flight: self.in_flight,
            plan: LoadPlan {
                warmup: seconds(self.warmup),
                duration: seconds(self.duration),
                max_requests: self.max_requests,
            },
        })
    }
}

impl ServerArgs {
    fn probe(&self) -> Option<ServerProbe> {
        if self.pids.is_empty() {
            return None;
        }
        let probe = ServerProbe::of_all(&self.pids);
        Some(match self.db_pid {
            Some(root) => probe.with_database(root),
            None => probe,
        })
    }

    /// The one address of a scenario that drives a single server.
    fn single(&self) -> Result<&Self, String> {
        if self.addrs.len() > 1 || self.pids.len() > 1 {
            return Err("only the unary scenario takes several --addr or --pid (replicas)".into());
        }
        Ok(self)
    }

    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }
}

async fn run(scenario: Scenario) -> Result<(String, Value), String> {
    Ok(match scenario {
        Scenario::Unary(t) => (
            "unary".into(),
            scenario::unary::run(t.setup()?, &t.server.addrs, t.server.probe().as_ref()).await?,
        ),
        Scenario::SeedSessions {
            data_dir,
            sessions,
            messages,
            max_context_tokens,
            batch,
        } => (
            "seed-sessions".into(),
            scenario::many_sessions::seed(scenario::many_sessions::SeedParams {
                data_dir,
                sessions,
                messages,
                max_context_tokens,
                batch,
            })
            .await?,
        ),
        Scenario::ManySessions {
            target: t,
            sessions,
        } => (
            "many-sessions".into(),
            scenario::many_sessions::run(
                t.server.single().and(t.setup())?,
                sessions,
                t.server.probe().as_ref(),
            )
            .await?,
        ),
        Scenario::HttpUnary { target: t, route } => (
            "http-unary".into(),
            scenario::http_unary::run(
                t.server.single().and(t.setup())?,
                scenario::http_unary::Route::from_name(&route)
                    .ok_or_else(|| format!("unknown route {route:?}"))?,
                t.server.probe().as_ref(),
            )
            .await?,
        ),
        Scenario::Stream(t) => (
            "stream".into(),
            scenario::stream::run(t.server.single().and(t.setup())?, t.server.probe().as_ref())
                .await?,
        ),
        Scenario::Converse(t) => (
            "converse".into(),
            scenario::converse::run(t.server.single().and(t.setup())?, t.server.probe().as_ref())
                .await?,
        ),
        Scenario::WsConverse { target: t, frames } => (
            "ws-converse".into(),
            scenario::ws_converse::run(
                t.server.single().and(t.setup())?,
                scenario::ws_converse::Frames::from_name(&frames)
                    .ok_or_else(|| format!("unknown frames {frames:?}"))?,
                t.server.probe().as_ref(),
            )
            .await?,
        ),
        Scenario::Gateway {
            target: t,
            gateway,
            turns,
            model,
            upstream,
            upstream_pid,
        } => {
            let setup = t.server.single().and(t.setup())?;
            let probe = t.server.probe().map(|probe| {
                let probe = probe.with_children();
                match upstream_pid {
                    Some(pid) => probe.with_upstream(pid),
                    None => probe,
                }
            });
            (
                "gateway".into(),
                scenario::gateway::run(
                    setup,
                    scenario::gateway::GatewayParams {
                        gateway: scenario::gateway::Gateway::from_name(&gateway)
                            .ok_or_else(|| format!("unknown gateway {gateway:?}"))?,
                        turns,
                        model,
                        upstream,
                    },
                    probe.as_ref(),
                )
                .await?,
            )
        }
        Scenario::History {
            server,
            messages,
            small_messages,
            turns,
        } => (
            "history".into(),
            scenario::history::run(
                scenario::history::HistoryParams {
                    addr: server.single()?.addr(),
                    messages,
                    small_messages,
                    turns: turns.max(1),
                },
                server.probe().as_ref(),
            )
            .await?,
        ),
        Scenario::Idle {
            server,
            streams,
            connections,
            hold,
        } => {
            let probe = server
                .probe()
                .ok_or("the idle scenario needs --pid to read the server's memory")?;
            (
                "idle".into(),
                scenario::idle::run(
                    scenario::idle::IdleParams {
                        addr: server.single()?.addr(),
                        streams,
                        connections: connections.max(1),
                        hold: seconds(hold),
                    },
                    &probe,
                )
                .await?,
            )
        }
        Scenario::Soak {
            addr,
            pid,
            data_dir,
            duration,
            sample_every,
            capacity_window,
            fraction,
            connections,
            unary,
            stream,
            converse,
            churn,
        } => {
            if !(fraction > 0.0 && fraction <= 1.0) {
                return Err(format!(
                    "--fraction {fraction}: give a share between 0 and 1, e.g. 0.5"
                ));
            }
            if sample_every < 1.0 {
                return Err(format!(
                    "--sample-every {sample_every}: sample at most once a second"
                ));
            }
            let mix = scenario::soak::Mix {
                unary,
                stream,
                converse,
                churn,
            };
            if unary.min(stream).min(converse).min(churn) == 0 {
                return Err(
                    "--unary, --stream, --converse and --churn must each be at least 1".into(),
                );
            }
            (
                "soak".into(),
                scenario::soak::run(scenario::soak::SoakParams {
                    addr,
                    pid,
                    data_dir,
                    duration,
                    sample_every: seconds(sample_every),
                    capacity_window: seconds(capacity_window.max(1.0)),
                    fraction,
                    connections,
                    mix,
                    limits: scenario::soak::Limits::default(),
                })
                .await?,
            )
        }
        Scenario::Coldstart {
            runs,
            workdir,
            command,
        } => (
            "coldstart".into(),
            scenario::coldstart::run(scenario::coldstart::ColdStartParams {
                command,
                runs: runs.max(1),
                workdir,
            })
            .await?,
        ),
    })
}

/// The one-line summary of a result.
fn summary(name: &str, label: &str, r: &Value) -> String {
    let f = |key: &str| r.pointer(key).map(|v| v.to_string()).unwrap_or_default();
    let head = format!(
        "{name}{}",
        if label.is_empty() {
            String::new()
        } else {
            format!(" [{label}]")
        }
    );
    match name {
        "history" => format!(
            "{head}: {} vs {} messages: p50 {}/{} us, ratio p50 {} p99 {}",
            f("/long_session_messages"),
            f("/short_session_messages"),
            f("/long/p50_us"),
            f("/short/p50_us"),
            f("/ratio_p50"),
            f("/ratio_p99")
        ),
        "idle" => format!(
            "{head}: {} streams open, {} bytes RSS per stream",
            f("/streams_open"),
            f("/rss_per_stream_bytes")
        ),
        "soak" => format!(
            "{head}: {}{}{}",
            if r.pointer("/verdict/pass") == Some(&json!(true)) {
                "PASS"
            } else {
                "FAIL: "
            },
            r.pointer("/verdict/reasons")
                .and_then(Value::as_array)
                .map(|reasons| {
                    reasons
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default(),
            r.pointer("/verdict/notes")
                .and_then(Value::as_array)
                .filter(|notes| !notes.is_empty())
                .map(|notes| {
                    let notes: Vec<_> = notes.iter().filter_map(Value::as_str).collect();
                    format!(" (note: {})", notes.join("; "))
                })
                .unwrap_or_default()
        ),
        "seed-sessions" => format!(
            "{head}: {} sessions of {} messages ({} stored now, {} already) in {} s",
            f("/setup/sessions"),
            f("/setup/messages_per_session"),
            f("/seeded"),
            f("/already_stored"),
            f("/seed_s")
        ),
        "coldstart" => format!(
            "{head}: median {} ms, p90 {} ms over {} runs",
            f("/median_ms"),
            f("/p90_ms"),
            f("/setup/runs")
        ),
        "gateway" => format!(
            "{head}: {} turns/s, p50 {} us, p99 {} us, errors {}, gateway cpu {} us/turn, upstream cpu {} us/turn, {} upstream calls/turn, {} items/call",
            f("/ops_per_s"),
            f("/latency/p50_us"),
            f("/latency/p99_us"),
            f("/errors"),
            f("/server/cpu_us_per_op"),
            f("/server/upstream_cpu_us_per_op"),
            f("/upstream/calls_per_turn"),
            f("/upstream/input_items_per_call")
        ),
        _ => format!(
            "{head}: {} ops/s, {} units/s, p50 {} us, p99 {} us, p99.9 {} us, errors {}, server cpu {} s, peak rss {} KiB",
            f("/ops_per_s"),
            f("/units_per_s"),
            f("/latency/p50_us"),
            f("/latency/p99_us"),
            f("/latency/p999_us"),
            f("/errors"),
            f("/server/cpu_seconds"),
            f("/server/peak_rss_kib")
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (name, mut result) = match runtime.block_on(run(cli.scenario)) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    result["scenario"] = json!(name);
    result["label"] = json!(cli.label);
    eprintln!("{}", summary(&name, &cli.label, &result));
    let text = format!("{result:#}\n");
    match cli.out {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("loadgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => print!("{text}"),
    }
    // A soak that ran but failed its checks says so in its exit status too.
    if result.pointer("/verdict/pass") == Some(&json!(false)) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
