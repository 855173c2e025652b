//! Measures what contextd adds per streamed token: the same SSE reply of `TOKENS` chunks from
//! the fake OpenAI-compatible provider is read once directly (reqwest + SSE framing, the
//! floor any reader of the provider pays) and once through contextd (`StreamResponse` over gRPC: turn
//! engine, backend, window, commit). Everything runs in this one process, so the CPU time per
//! token through contextd (fake provider, contextd and the gRPC client together) bounds what
//! contextd adds per streamed token from above. The direct read is printed for reference only:
//! a reader that keeps up with the writer wakes once per chunk and can cost more per token than
//! contextd, which reads chunks in batches when it lags behind.
//!
//! ```sh
//! cargo run --release --example stream_overhead
//! ```

#[path = "../tests/fake_providers/mod.rs"]
mod fake_providers;

use std::time::{Duration, Instant};

use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::stream_response_response::Event;
use contextd::api::v1::{CreateSessionRequest, StreamResponseRequest};
use contextd::config::{BackendConfig, BackendKind, Config};
use eventsource_stream::Eventsource;
use fake_providers::{FakeProvider, Reply, openai_text};
use futures_util::StreamExt;

const TOKENS: usize = 2000;

/// CPU time (user + system) this process has used, from `/proc/self/stat` (Linux; clock
/// ticks of 10 ms, summed over all runs below).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}
const RUNS: usize = 7;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fake = FakeProvider::start().await;
    let pieces: Vec<String> = (0..TOKENS).map(|i| format!(" tok{i}")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let frames = openai_text(&pieces, (10, TOKENS as u64));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        backends: vec![BackendConfig::new(
            "fake",
            BackendKind::Openai,
            &fake.base_url(),
        )],
        ..Config::default()
    };
    tokio::spawn(contextd::server::serve(
        listener,
        config,
        std::future::pending(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut sessions = SessionServiceClient::new(channel.clone());
    let mut interact = InteractServiceClient::new(channel);
    let http = reqwest::Client::new();

    let mut direct = Vec::new();
    let mut through = Vec::new();
    let mut first_direct = Vec::new();
    let mut first_through = Vec::new();
    let (mut cpu_direct, mut cpu_through) = (Duration::ZERO, Duration::ZERO);
    for run in 0..RUNS {
        // Directly from the provider.
        fake.script([Reply::sse(frames.clone())]);
        let cpu = cpu_time();
        let started = Instant::now();
        let response = http
            .post(format!("{}/chat/completions", fake.base_url()))
            .body("{}")
            .send()
            .await
            .unwrap();
        let mut events = response.bytes_stream().eventsource();
        let mut chunks = 0;
        let mut first = None;
        while let Some(event) = events.next().await {
            let event = event.unwrap();
            if event.data == "[DONE]" {
                break;
            }
            // Transport and SSE framing only: what any reader of the provider pays.
            if event.data.contains(r#""content":" tok"#) {
                first.get_or_insert_with(|| started.elapsed());
                chunks += 1;
            }
        }
        assert_eq!(chunks, TOKENS);
        direct.push(started.elapsed());
        cpu_direct += cpu_time() - cpu;
        first_direct.push(first.unwrap());

        // Through contextd.
        let session_id = format!("bench-{run}");
        sessions
            .create_session(CreateSessionRequest {
                session_id: session_id.clone(),
                model: "fake/bench".into(),
                max_context_tokens: 100_000,
                ..Default::default()
            })
            .await
            .unwrap();
        fake.script([Reply::sse(frames.clone())]);
        let cpu = cpu_time();
        let started = Instant::now();
        let mut stream = interact
            .stream_response(StreamResponseRequest {
                session_id,
                message: "Count.".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut deltas = 0;
        let mut first = None;
        while let Some(item) = stream.message().await.unwrap() {
            if let Some(Event::Delta(_)) = item.event {
                first.get_or_insert_with(|| started.elapsed());
                deltas += 1;
            }
        }
        assert_eq!(deltas, TOKENS);
        through.push(started.elapsed());
        cpu_through += cpu_time() - cpu;
        first_through.push(first.unwrap());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (direct, through) = (median(direct), median(through));
    let (first_direct, first_through) = (median(first_direct), median(first_through));
    println!("{TOKENS} streamed tokens, median of {RUNS} runs");
    println!("  provider read directly : {direct:?} (first token after {first_direct:?})");
    println!("  through contextd       : {through:?} (first token after {first_through:?})");
    let all = (RUNS * TOKENS) as f64;
    let per = |d: Duration, n: f64| d.as_secs_f64() * 1e6 / n;
    println!(
        "  through contextd, per token : {:.2} µs wall clock, {:.2} µs CPU",
        per(through, TOKENS as f64),
        per(cpu_through, all)
    );
    println!(
        "  read directly, per token    : {:.2} µs wall clock, {:.2} µs CPU",
        per(direct, TOKENS as f64),
        per(cpu_direct, all)
    );
    println!(
        "  first-token overhead   : {:?}",
        first_through.saturating_sub(first_direct)
    );
}
