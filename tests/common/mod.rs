//! Shared harness for the integration tests: an in-process contextd server on an ephemeral
//! port, typed clients, JSON <-> protobuf `Struct` conversions and small request shortcuts.
//!
//! Each test file includes this module and uses only part of it.
#![allow(dead_code)]

pub mod backend;
pub mod certs;
pub mod daemon;
pub mod postgres;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::converse_response::Event as ConverseEvent;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::stream_response_response::Event as StreamEvent;
use contextd::api::v1::tool_service_client::ToolServiceClient;
use contextd::api::v1::{
    ConverseOpen, ConverseRequest, ConverseResponse, ConverseToolResults, ConverseUserMessage,
    CreateSessionRequest, GetSessionRequest, InteractRequest, InteractResponse,
    ListMessagesRequest, Message, Session, StreamResponseRequest, StreamResponseResponse,
    ToolDefinition, ToolResult,
};
use contextd::config::Config;
use prost_types::value::Kind;
use serde_json::Value as Json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

/// How long any single wait on the server may take before a test fails instead of hanging.
/// Generous on purpose: the tests run on small shared machines.
pub const WAIT: Duration = Duration::from_secs(20);

/// The default configuration, on the in-memory store (tests of durable stores choose theirs).
pub fn test_config() -> Config {
    Config {
        store: "memory".to_string(),
        ..Config::default()
    }
}

/// A contextd server running inside the test process on `127.0.0.1:<ephemeral>`.
pub struct TestServer {
    /// The address the server listens on.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<bool>>,
}

impl TestServer {
    /// Starts a server with the default configuration on the in-memory store.
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    /// Starts a server with `config` (its `listen` is replaced by the ephemeral address).
    pub async fn start_with(config: Config) -> Self {
        Self::start_over(config, None).await
    }

    /// Starts a server with `config` whose store follows the fault plan `faults`.
    pub async fn start_with_faults(
        config: Config,
        faults: std::sync::Arc<contextd::store_faults::Faults>,
    ) -> Self {
        Self::start_over(config, Some(faults)).await
    }

    async fn start_over(
        mut config: Config,
        faults: Option<std::sync::Arc<contextd::store_faults::Faults>>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        config.listen = addr.to_string();
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let handle = tokio::spawn(async move {
            match faults {
                None => contextd::server::serve(listener, config, shutdown)
                    .await
                    .is_ok(),
                Some(plan) => {
                    contextd::store_faults::serve_with_faults(listener, config, plan, shutdown)
                        .await
                        .is_ok()
                }
            }
        });
        Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new connection to the server.
    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    /// A `SessionService` client on a new connection.
    pub async fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel().await)
    }

    /// An `InteractService` client on a new connection.
    pub async fn interact(&self) -> InteractServiceClient<Channel> {
        InteractServiceClient::new(self.channel().await)
    }

    /// A `ToolService` client on a new connection.
    pub async fn tools(&self) -> ToolServiceClient<Channel> {
        ToolServiceClient::new(self.channel().await)
    }

    /// A `grpc.health.v1.Health` client on a new connection.
    pub async fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel().await)
    }

    /// Asks the server to shut down (as SIGTERM does for the binary).
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts the server down and waits for `serve` to return; true when it returned `Ok`.
    pub async fn stop(mut self) -> bool {
        self.trigger_shutdown();
        let handle = self.handle.take().expect("server task");
        matches!(tokio::time::timeout(WAIT, handle).await, Ok(Ok(true)))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// Connects a channel to `addr`, failing the test after [`WAIT`].
pub async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(WAIT);
    endpoint.connect().await.expect("connect to contextd")
}

/// Awaits `future`, failing the test (instead of hanging) after [`WAIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON <-> protobuf Struct
// ---------------------------------------------------------------------------------------------

/// A JSON value as a protobuf `Value` (JSON `null` becomes `NullValue`).
pub fn to_value(json: &Json) -> prost_types::Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().expect("finite number")),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`. Panics when `json` is not an object.
pub fn to_struct(json: &Json) -> prost_types::Struct {
    match to_value(json).kind {
        Some(Kind::StructValue(s)) => s,
        _ => panic!("not a JSON object: {json}"),
    }
}

/// `Some(to_struct(json))`, for optional request fields.
pub fn ctx(json: Json) -> Option<prost_types::Struct> {
    Some(to_struct(&json))
}

/// A protobuf `Value` as JSON. Whole numbers come back as integers so that they compare equal
/// to `json!(1)`.
pub fn from_value(value: &prost_types::Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::from(*n as i64)
            } else {
                Json::from(*n)
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

/// A protobuf `Struct` as a JSON object.
pub fn from_struct(s: &prost_types::Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect(),
    )
}

/// An optional `Struct` as JSON; absent is `{}`.
pub fn json_of(s: &Option<prost_types::Struct>) -> Json {
    s.as_ref()
        .map(from_struct)
        .unwrap_or_else(|| Json::Object(Default::default()))
}

/// `depth` nested JSON objects: `{}` is 1, `{"x": {}}` is 2, ...
pub fn nested_object(depth: usize) -> Json {
    assert!(depth >= 1);
    let mut value = serde_json::json!({});
    for _ in 1..depth {
        value = serde_json::json!({ "x": value });
    }
    value
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// Asserts that `result` failed with `code`, and returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got OK: {value:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "expected {code:?}, got {:?}: {}",
                status.code(),
                status.message()
            );
            status
        }
    }
}

/// An `InteractRequest` with a message and an optional context patch.
pub fn interact_request(session_id: &str, message: &str, context: Option<Json>) -> InteractRequest {
    InteractRequest {
        session_id: session_id.to_string(),
        message: message.to_string(),
        context: context.map(|c| to_struct(&c)),
        ..Default::default()
    }
}

/// Runs one turn with `Interact` and returns the response, failing the test on an error.
pub async fn say(
    client: &mut InteractServiceClient<Channel>,
    session_id: &str,
    message: &str,
    context: Option<Json>,
) -> InteractResponse {
    let request = interact_request(session_id, message, context);
    within("Interact", client.interact(request))
        .await
        .unwrap_or_else(|s| {
            panic!(
                "Interact {message:?} failed: {:?} {}",
                s.code(),
                s.message()
            )
        })
        .into_inner()
}

/// Sends tool results for a paused turn with `Interact`.
pub async fn send_results(
    client: &mut InteractServiceClient<Channel>,
    session_id: &str,
    results: Vec<ToolResult>,
) -> Result<InteractResponse, Status> {
    let request = InteractRequest {
        session_id: session_id.to_string(),
        message: String::new(),
        context: None,
        tool_results: results,
        ..Default::default()
    };
    within("Interact with tool results", client.interact(request))
        .await
        .map(|r| r.into_inner())
}

/// A successful tool result.
pub fn result(tool_call_id: &str, content: &str) -> ToolResult {
    ToolResult {
        tool_call_id: tool_call_id.to_string(),
        content: content.to_string(),
        is_error: false,
    }
}

/// A client-declared tool definition with an object schema.
pub fn tool_def(name: &str, description: &str) -> ToolDefinition {
    ToolDefinition {
        name: name.to_string(),
        description: description.to_string(),
        input_schema: Some(to_struct(&serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
        }))),
        annotations: None,
    }
}

/// Creates a session with the given id and fields left at their defaults.
pub async fn create_session(
    client: &mut SessionServiceClient<Channel>,
    request: CreateSessionRequest,
) -> Session {
    within("CreateSession", client.create_session(request))
        .await
        .unwrap_or_else(|s| panic!("CreateSession failed: {:?} {}", s.code(), s.message()))
        .into_inner()
        .session
        .expect("CreateSessionResponse.session")
}

/// Returns a session, failing the test when it cannot be read.
pub async fn get_session(client: &mut SessionServiceClient<Channel>, session_id: &str) -> Session {
    within(
        "GetSession",
        client.get_session(GetSessionRequest {
            session_id: session_id.to_string(),
        }),
    )
    .await
    .unwrap_or_else(|s| panic!("GetSession failed: {:?} {}", s.code(), s.message()))
    .into_inner()
    .session
    .expect("GetSessionResponse.session")
}

/// Every stored message of a session, following pages of `page_size`.
pub async fn all_messages(
    client: &mut SessionServiceClient<Channel>,
    session_id: &str,
    page_size: u32,
) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut token = String::new();
    for _ in 0..10_000 {
        let page = within(
            "ListMessages",
            client.list_messages(ListMessagesRequest {
                session_id: session_id.to_string(),
                page_size,
                page_token: token.clone(),
            }),
        )
        .await
        .unwrap_or_else(|s| panic!("ListMessages failed: {:?} {}", s.code(), s.message()))
        .into_inner();
        if page_size > 0 {
            assert!(
                page.messages.len() <= page_size as usize,
                "page of {} messages for page_size {page_size}",
                page.messages.len()
            );
        }
        messages.extend(page.messages);
        if page.next_page_token.is_empty() {
            return messages;
        }
        token = page.next_page_token;
    }
    panic!("ListMessages never returned an empty next_page_token");
}

/// Polls `check` every 50 ms until it returns true, failing the test after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("condition never held within {WAIT:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// StreamResponse
// ---------------------------------------------------------------------------------------------

/// A `StreamResponseRequest` with a message and an optional context patch.
pub fn stream_request(
    session_id: &str,
    message: &str,
    context: Option<Json>,
) -> StreamResponseRequest {
    StreamResponseRequest {
        session_id: session_id.to_string(),
        message: message.to_string(),
        context: context.map(|c| to_struct(&c)),
        ..Default::default()
    }
}

/// Runs a streamed turn to its end and returns every event, failing on an error status.
pub async fn stream_events(
    client: &mut InteractServiceClient<Channel>,
    request: StreamResponseRequest,
) -> Vec<StreamEvent> {
    within("StreamResponse", async {
        let mut stream = client
            .stream_response(request)
            .await
            .unwrap_or_else(|s| panic!("StreamResponse failed: {:?} {}", s.code(), s.message()))
            .into_inner();
        let mut events = Vec::new();
        while let Some(item) = stream.message().await.unwrap_or_else(|s| {
            panic!(
                "StreamResponse stream failed: {:?} {}",
                s.code(),
                s.message()
            )
        }) {
            events.push(item.event.expect("StreamResponseResponse.event"));
        }
        events
    })
    .await
}

/// The status a streamed call fails with, whether it fails at once or as a stream item.
pub async fn stream_status(
    client: &mut InteractServiceClient<Channel>,
    request: StreamResponseRequest,
) -> Status {
    within("StreamResponse error", async {
        let mut stream = match client.stream_response(request).await {
            Err(status) => return status,
            Ok(response) => response.into_inner(),
        };
        loop {
            match stream.message().await {
                Err(status) => return status,
                Ok(Some(StreamResponseResponse { .. })) => continue,
                Ok(None) => panic!("StreamResponse ended OK; an error status was expected"),
            }
        }
    })
    .await
}

/// The concatenated text of the `delta` events.
pub fn stream_text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(d) => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Converse
// ---------------------------------------------------------------------------------------------

/// One open `Converse` stream: frames go in through `tx`, events come out of `rx`.
pub struct Conversation {
    tx: Option<mpsc::Sender<ConverseRequest>>,
    rx: Streaming<ConverseResponse>,
}

impl Conversation {
    /// Starts a `Converse` call (no frame sent yet).
    pub async fn start(client: &mut InteractServiceClient<Channel>) -> Self {
        let (tx, rx) = mpsc::channel(32);
        let response = within("Converse", client.converse(ReceiverStream::new(rx)))
            .await
            .unwrap_or_else(|s| panic!("Converse failed: {:?} {}", s.code(), s.message()));
        Self {
            tx: Some(tx),
            rx: response.into_inner(),
        }
    }

    /// Sends one frame.
    pub async fn send(&self, frame: Frame) {
        self.tx
            .as_ref()
            .expect("request side still open")
            .send(ConverseRequest { frame: Some(frame) })
            .await
            .expect("send Converse frame");
    }

    /// Sends `open` for `session_id` with every other field at its default.
    pub async fn send_open(&self, session_id: &str) {
        self.send(Frame::Open(ConverseOpen {
            session_id: session_id.to_string(),
            ..Default::default()
        }))
        .await;
    }

    /// Sends a `user_message` frame.
    pub async fn send_message(&self, message: &str, context: Option<Json>) {
        self.send(Frame::UserMessage(ConverseUserMessage {
            message: message.to_string(),
            context: context.map(|c| to_struct(&c)),
            ..Default::default()
        }))
        .await;
    }

    /// Sends a `tool_results` frame.
    pub async fn send_results(&self, results: Vec<ToolResult>) {
        self.send(Frame::ToolResults(ConverseToolResults { results }))
            .await;
    }

    /// Closes the request side of the stream (the client is done sending).
    pub fn close_requests(&mut self) {
        self.tx = None;
    }

    /// The next event, failing the test on an error status, on the end of the stream, or
    /// after [`WAIT`].
    pub async fn next(&mut self) -> ConverseResponse {
        match within("a Converse event", self.rx.message()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("Converse stream ended; an event was expected"),
            Err(s) => panic!("Converse stream failed: {:?} {}", s.code(), s.message()),
        }
    }

    /// What the stream does next: an event, its end (`Ok(None)`) or an error status.
    pub async fn next_raw(&mut self) -> Result<Option<ConverseResponse>, Status> {
        within("the Converse stream", self.rx.message()).await
    }

    /// Opens `session_id` and returns the `opened` event.
    pub async fn open(&mut self, session_id: &str) -> contextd::api::v1::ConverseOpened {
        self.send_open(session_id).await;
        let event = self.next().await;
        match event.event {
            Some(ConverseEvent::Opened(opened)) => opened,
            other => panic!("expected an opened event, got {other:?}"),
        }
    }

    /// Reads events up to and including the next `completed` or `error` event.
    pub async fn until_end_of_turn(&mut self) -> Vec<ConverseResponse> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await;
            let last = matches!(
                event.event,
                Some(ConverseEvent::Completed(_)) | Some(ConverseEvent::Error(_))
            );
            events.push(event);
            if last {
                return events;
            }
        }
    }
}

/// The concatenated text of the `delta` events of a Converse turn.
pub fn converse_text(events: &[ConverseResponse]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(ConverseEvent::Delta(d)) => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

/// The `completed` event at the end of a Converse turn.
#[track_caller]
pub fn converse_completed(events: &[ConverseResponse]) -> InteractResponse {
    match events.last().and_then(|e| e.event.clone()) {
        Some(ConverseEvent::Completed(done)) => done,
        other => panic!("expected the turn to end with completed, got {other:?}"),
    }
}

/// The `error` event at the end of a Converse turn.
#[track_caller]
pub fn converse_error(events: &[ConverseResponse]) -> contextd::api::v1::TurnError {
    match events.last().and_then(|e| e.event.clone()) {
        Some(ConverseEvent::Error(error)) => error,
        other => panic!("expected an error event, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A bare HTTP/2 transport
// ---------------------------------------------------------------------------------------------

/// An HTTP/2 connection without tonic's client-side deadline enforcement: a request's
/// `grpc-timeout` is sent to the server and only the server acts on it, so the status a
/// client sees after its deadline is the one the server chose.
#[derive(Clone)]
pub struct BareH2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl BareH2 {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = within("TCP connect", tokio::net::TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        let (send, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        Self(send)
    }

    /// An `InteractService` client over this connection.
    pub fn interact(self, addr: SocketAddr) -> InteractServiceClient<Self> {
        let origin = format!("http://{addr}").parse().expect("origin URI");
        InteractServiceClient::with_origin(self, origin)
    }
}

type BareFuture = Pin<
    Box<
        dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>>
            + Send
            + 'static,
    >,
>;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for BareH2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = BareFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}
