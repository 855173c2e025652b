//! What contextd's fuzz targets share.
//!
//! - [`server`]: one contextd server per fuzz process, started in-process on `127.0.0.1:0`
//!   over the in-memory store with the echo model, and a gRPC channel to it. The targets that
//!   drive a door send their decoded input through a real client over loopback, so every
//!   input goes through the same tower layers, validation and engine call as a real caller's.
//!   Starting the server once (not per input) is what makes this fast enough: an input costs
//!   one loopback round trip, not a server start.
//! - [`read_sse`]: a provider's reply body, cut into chunks, read by the same SSE decoder the
//!   HTTP backends use and handed to a provider's parser, the way a model step reads it.
//! - [`http_backend`]: the backend those parsers report errors against.
//!
//! A panic anywhere in the process (a server task included) aborts it: libfuzzer-sys installs
//! a panic hook that does, so a server-side panic is reported as a crash of the input that
//! caused it, not swallowed by tokio.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use contextd::config::{BackendConfig, BackendKind, Config};
use contextd::fuzzing::{HttpBackend, ModelError, ModelEvent, SseParser};
use eventsource_stream::Eventsource;
use futures_util::{FutureExt, StreamExt};
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint};

/// How long one input may wait for its answer before the run counts it as a hang. Far above
/// any normal answer (milliseconds), so only a request that never ends reaches it.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// A contextd server inside the fuzz process.
pub struct InProcessServer {
    /// The runtime the server and the targets' clients run on.
    pub runtime: Runtime,
    /// Where it listens.
    pub addr: SocketAddr,
    /// A gRPC channel to it (clone it per call: clones share the connection).
    pub channel: Channel,
}

/// The process's server, started on first use.
pub fn server() -> &'static InProcessServer {
    static SERVER: OnceLock<InProcessServer> = OnceLock::new();
    SERVER.get_or_init(start_server)
}

fn start_server() -> InProcessServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (addr, channel) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the listener's address");
        let config = Config {
            store: "memory".to_string(),
            listen: addr.to_string(),
            ..Config::default()
        };
        tokio::spawn(async move {
            if let Err(error) =
                contextd::server::serve(listener, config, std::future::pending()).await
            {
                panic!("the in-process server stopped: {error}");
            }
        });
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("an endpoint")
            .connect_timeout(ANSWER_WITHIN)
            .connect()
            .await
            .expect("connect to the in-process server");
        (addr, channel)
    });
    InProcessServer {
        runtime,
        addr,
        channel,
    }
}

/// Awaits `future`, panicking (a crash the fuzzer reports) when it has not finished within
/// [`ANSWER_WITHIN`].
pub async fn answered<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(ANSWER_WITHIN, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {ANSWER_WITHIN:?}"),
    }
}

/// Fails (panics) on a gRPC status that a bad request must never get: UNKNOWN (what tonic
/// reports for a handler that did not answer with a status) or INTERNAL, and on a message
/// that shows a source path.
pub fn check_status(rpc: &str, status: &tonic::Status) {
    assert!(
        !matches!(status.code(), tonic::Code::Unknown | tonic::Code::Internal),
        "{rpc} answered {:?}: {}",
        status.code(),
        status.message()
    );
    assert!(
        !status.message().contains("src/") && !status.message().contains(".rs:"),
        "{rpc} answered with a source path: {}",
        status.message()
    );
}

/// The backend the SSE parsers run against (a name, no connection is ever made).
pub fn http_backend(kind: BackendKind) -> Arc<HttpBackend> {
    static OPENAI: OnceLock<Arc<HttpBackend>> = OnceLock::new();
    static ANTHROPIC: OnceLock<Arc<HttpBackend>> = OnceLock::new();
    let cell = match kind {
        BackendKind::Openai => &OPENAI,
        BackendKind::Anthropic => &ANTHROPIC,
    };
    cell.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = BackendConfig::new(BACKEND_NAME, kind, "http://127.0.0.1:9");
        Arc::new(HttpBackend::new(&config).expect("a backend from a valid config"))
    })
    .clone()
}

/// The name of the fuzzed backends, which every error they report must carry.
pub const BACKEND_NAME: &str = "fuzzed";

/// How reading a reply body ended.
#[derive(Debug)]
pub struct SseOutcome {
    /// The model events, in order.
    pub events: Vec<ModelEvent>,
    /// The error that ended the reply, if one did.
    pub error: Option<ModelError>,
}

/// Reads `body`, delivered in chunks of `chunk` bytes (at least 1), as the HTTP backends do:
/// SSE decoding, one parser call per event, stopping when the parser says the reply is
/// complete or fails, and the parser's end-of-stream check when the body runs out.
pub fn read_sse<P: SseParser>(
    http: &HttpBackend,
    mut parser: P,
    body: &[u8],
    chunk: usize,
) -> SseOutcome {
    let chunks: Vec<Result<bytes::Bytes, std::convert::Infallible>> = body
        .chunks(chunk.max(1))
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let mut stream = futures_util::stream::iter(chunks).eventsource();
    let mut events = Vec::new();
    loop {
        // The source is in memory: every poll is ready, so no runtime is needed.
        let next = stream
            .next()
            .now_or_never()
            .expect("an in-memory stream is always ready");
        let ended = next.is_none();
        let outcome = match next {
            None => parser.on_end(http),
            Some(Err(_)) => {
                // The SSE decoder refused the bytes (not UTF-8): the backend reports a cut
                // stream, which is not the parser's concern.
                return SseOutcome {
                    events,
                    error: None,
                };
            }
            Some(Ok(event)) => parser.on_event(http, event),
        };
        match outcome {
            Ok(more) => events.extend(more),
            Err(error) => {
                return SseOutcome {
                    events,
                    error: Some(error),
                };
            }
        }
        if ended || parser.complete() {
            return SseOutcome {
                events,
                error: None,
            };
        }
    }
}

/// Checks what every reply must satisfy, whatever the bytes: at most one `Finish`, and
/// nothing after it; an error names the backend.
pub fn check_sse_outcome(outcome: &SseOutcome) {
    let finishes = outcome
        .events
        .iter()
        .filter(|e| matches!(e, ModelEvent::Finish(_)))
        .count();
    assert!(finishes <= 1, "more than one Finish: {:?}", outcome.events);
    if finishes == 1 {
        assert!(
            matches!(outcome.events.last(), Some(ModelEvent::Finish(_))),
            "events after Finish: {:?}",
            outcome.events
        );
    }
    if let Some(error) = &outcome.error {
        assert!(
            error.to_string().contains(BACKEND_NAME),
            "an error that does not name the backend: {error}"
        );
    }
}
