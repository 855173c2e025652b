//! `fake-openai`: an OpenAI-compatible upstream for the `gateway` scenario that answers every
//! call at once with the same short reply (see `loadgen::fake_openai` for the wire format):
//! streamed and plain Chat Completions, the Responses API (non-streaming), the model list,
//! a health check, and `GET /fake/stats` (calls and input items received so far).
//!
//! HTTP/1.1 with keep-alive on one thread, `TCP_NODELAY` on every connection. Prints
//! `fake-openai listening on <addr>` on stdout once bound.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use clap::Parser;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use loadgen::fake_openai::{self, Asked};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The allocator contextd uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fake OpenAI-compatible upstream with a fixed, immediate reply.
#[derive(Parser, Debug)]
#[command(name = "fake-openai", version, about)]
struct Cli {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

/// Calls received, by kind, and the input items they carried.
#[derive(Default)]
struct Stats {
    chat_stream: AtomicU64,
    chat: AtomicU64,
    responses: AtomicU64,
    items: AtomicU64,
    request_bytes: AtomicU64,
    ids: AtomicU64,
}

impl Stats {
    fn to_json(&self) -> Value {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        json!({
            "chat_completions_stream": get(&self.chat_stream),
            "chat_completions": get(&self.chat),
            "responses": get(&self.responses),
            "calls": get(&self.chat_stream) + get(&self.chat) + get(&self.responses),
            "input_items": get(&self.items),
            "request_bytes": get(&self.request_bytes),
        })
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_reply(status: StatusCode, value: &Value) -> Response<Body> {
    json_text(status, value.to_string())
}

fn json_text(status: StatusCode, text: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(text)).boxed())
        .expect("static response parts are valid")
}

fn sse_reply(events: Vec<Bytes>) -> Response<Body> {
    let frames = futures_util::stream::iter(
        events
            .into_iter()
            .map(|event| Ok::<_, Infallible>(Frame::data(event))),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(frames).boxed())
        .expect("static response parts are valid")
}

fn bad_request(message: &str, param: Option<&str>) -> Response<Body> {
    json_reply(
        StatusCode::BAD_REQUEST,
        &fake_openai::error(message, "invalid_request_error", param),
    )
}

async fn serve(
    request: Request<Incoming>,
    stats: Arc<Stats>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(bad_request("the request body was cut", None)),
    };
    let reply = match (method, path.as_str()) {
        (Method::POST, "/v1/chat/completions" | "/v1/responses") => {
            let Some(asked) = fake_openai::asked(&body) else {
                return Ok(bad_request("the body is not a JSON object", None));
            };
            stats.items.fetch_add(asked.items, Ordering::Relaxed);
            stats
                .request_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            completion(&path, &asked, &stats)
        }
        (Method::GET, "/v1/models") => json_reply(StatusCode::OK, &fake_openai::models()),
        (Method::GET, "/health" | "/health_generate" | "/v1/health") => {
            json_reply(StatusCode::OK, &json!({"status": "ok"}))
        }
        (Method::GET, "/fake/stats") => json_reply(StatusCode::OK, &stats.to_json()),
        _ => json_reply(
            StatusCode::NOT_FOUND,
            &fake_openai::error(
                &format!("no route {path} on this fake upstream"),
                "invalid_request_error",
                None,
            ),
        ),
    };
    Ok(reply)
}

fn completion(path: &str, asked: &Asked, stats: &Stats) -> Response<Body> {
    let n = stats.next_id();
    if path == "/v1/responses" {
        if asked.stream {
            return bad_request(
                "this fake upstream answers the Responses API without streaming",
                Some("stream"),
            );
        }
        stats.responses.fetch_add(1, Ordering::Relaxed);
        let reply =
            fake_openai::response(asked, &format!("resp_{n:032x}"), &format!("msg_{n:032x}"));
        return json_text(StatusCode::OK, reply);
    }
    let id = format!("chatcmpl-{n:029x}");
    if asked.stream {
        stats.chat_stream.fetch_add(1, Ordering::Relaxed);
        sse_reply(fake_openai::chat_stream(asked, &id))
    } else {
        stats.chat.fetch_add(1, Ordering::Relaxed);
        json_text(StatusCode::OK, fake_openai::chat_completion(asked, &id))
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fake-openai: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind(cli.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("fake-openai: cannot listen on {}: {e}", cli.listen);
                return std::process::ExitCode::FAILURE;
            }
        };
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        println!("fake-openai listening on {addr}");
        let stats = Arc::new(Stats::default());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let stats = stats.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| serve(request, stats.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
