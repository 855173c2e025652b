//! The HTTP/JSON door: the contract's `google.api.http` routes, Server-Sent Events for
//! streamed turns, the classic `POST /api/mcp/interact` and `GET /health`, on the gRPC port.
//!
//! A JSON request is decoded with the RPC's descriptor ([`json`]), sent in-process to the gRPC
//! service that serves the RPC ([`grpc`]), and its reply encoded back: decode → one call →
//! encode. Errors use one body on every JSON door ([`error`]). The JSON-lines socket door
//! ([`lines`]) is the same transcoding over a raw TCP connection.
//!
//! Requests that are neither for these routes nor gRPC end here too: gRPC-Web
//! (`application/grpc-web*`, for browsers) is translated to gRPC by tonic-web in front of the
//! same services, the Connect protocol on the gRPC paths (`application/json`, `application/proto`,
//! `application/connect+json|+proto`, `GET`) is decoded and called like the JSON routes
//! ([`connect`]), a gRPC path with a content type no door serves is 415 (and nothing runs),
//! anything else 404. Pages of other origins may call every door once `http.cors_origins`
//! allows them ([`cors`]).

pub(crate) mod connect;
mod cors;
pub(crate) mod error;
pub(crate) mod grpc;
pub(crate) mod json;
pub mod lines;
pub(crate) mod rules;
mod sse;
mod websocket;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost_reflect::{DescriptorPool, MessageDescriptor};
use tonic::Code;
use tonic_web::GrpcWebLayer;
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::cors::CorsLayer;
use tower_http::decompression::RequestDecompressionLayer;

use crate::auth::Authenticator;
use crate::config::{Config, StoreKind};
use crate::engine::Engine;
use crate::engine::Lifecycle;
use crate::server::logging::DOOR_HEADER;
use crate::server::scope::scope_of_extensions;
use error::ApiError;
use grpc::{CallOptions, GrpcCaller};
use rules::{Lookup, RouteTable};

/// The protobuf package whose services the HTTP routes serve.
const PACKAGE: &str = "contextd.v1";
/// The gRPC path of `Interact`, which the classic doors call.
const INTERACT_PATH: &str = "/contextd.v1.InteractService/Interact";
/// The OpenAPI 3 document of the HTTP routes, generated from the contract by
/// `scripts/gen-openapi` (CI checks that it is current).
const OPENAPI: &str = include_str!("../../openapi/openapi.json");
/// The header that carries an HTTP request's deadline, in (fractional) seconds.
const TIMEOUT_HEADER: &str = "x-request-timeout";

/// Everything the JSON doors share.
pub struct JsonDoors {
    routes: RouteTable,
    caller: GrpcCaller,
    grpc: Router,
    grpc_web: Router,
    cors: Option<CorsLayer>,
    connect: connect::ConnectMethods,
    interact_request: MessageDescriptor,
    interact_response: MessageDescriptor,
    max_request_bytes: usize,
    default_timeout: Option<Duration>,
    keep_alive: Duration,
    websocket_ping: Duration,
    lifecycle: Lifecycle,
    started: Instant,
    engine: Arc<Engine>,
    store: &'static str,
    mcp: crate::config::McpConfig,
    auth: Arc<Authenticator>,
}

impl JsonDoors {
    /// The JSON doors in front of `grpc` (tonic's routes with their layers), configured by
    /// `config`, reporting health from `lifecycle` and status from `engine`.
    pub(crate) fn new(
        config: &Config,
        grpc: Router,
        lifecycle: Lifecycle,
        engine: Arc<Engine>,
        auth: Arc<Authenticator>,
    ) -> Result<Self, String> {
        let pool = DescriptorPool::decode(crate::api::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("cannot read the descriptors: {e}"))?;
        let message = |name: &str| {
            pool.get_message_by_name(name)
                .ok_or_else(|| format!("the descriptors lack {name}"))
        };
        let routes = RouteTable::from_pool(&pool, PACKAGE)?;
        Ok(Self {
            connect: connect::ConnectMethods::new(&pool, PACKAGE, &routes),
            routes,
            caller: GrpcCaller::new(grpc.clone()),
            // Only gRPC-Web requests pass through tonic-web: it refuses every other HTTP/1
            // request, and the in-process calls of the JSON doors are plain gRPC.
            grpc_web: grpc.clone().layer(GrpcWebLayer::new()),
            grpc,
            cors: cors::layer(&config.http.cors_origins)?,
            interact_request: message("contextd.v1.InteractRequest")?,
            interact_response: message("contextd.v1.InteractResponse")?,
            max_request_bytes: config.limits.max_request_bytes,
            default_timeout: match config.http.default_timeout_ms {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            keep_alive: Duration::from_millis(config.http.sse_keep_alive_ms),
            websocket_ping: websocket::ping_interval(config.http.websocket_ping_ms),
            lifecycle,
            started: Instant::now(),
            engine,
            store: match config.store_kind().map_err(|e| e.to_string())? {
                StoreKind::Memory => "memory",
                StoreKind::Sqlite => "sqlite",
                StoreKind::Postgres(_) => "postgres",
            },
            mcp: config.mcp.clone(),
            auth,
        })
    }

    /// The router of every HTTP request: the JSON routes, and gRPC for everything else.
    pub fn router(self: Arc<Self>) -> Router {
        let cors = self.cors.clone();
        let auth = self.auth.clone();
        let router = Router::new()
            .route("/health", get(health))
            .route("/healthz", get(health))
            .route("/api/mcp/interact", post(classic_interact))
            .route("/openapi.json", get(openapi))
            .route("/api/mcp/status", get(status))
            .route("/v1/{*rest}", any(transcode))
            // Only the JSON routes: gRPC has its own `grpc-encoding`, and the predicate leaves
            // event streams uncompressed so that events leave at once.
            .route_layer(
                CompressionLayer::new()
                    .gzip(true)
                    .compress_when(DefaultPredicate::new().and(NotForUpgrades)),
            )
            .route_layer(RequestDecompressionLayer::new().gzip(true))
            // `/mcp`: contextd as an MCP server (Streamable HTTP, stateless), after the
            // compression layers, which therefore leave its event streams alone.
            .route_service(
                crate::mcp::server::MCP_PATH,
                crate::mcp::server::mcp_service(
                    crate::mcp::catalog::McpCatalog::new(
                        self.engine.clone(),
                        self.lifecycle.clone(),
                        self.mcp.clone(),
                    ),
                    &self.mcp,
                    self.max_request_bytes,
                ),
            )
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(grpc_or_not_found)
            .with_state(self)
            // Every route and the fallback: one decision on who is calling.
            .layer(axum::middleware::from_fn_with_state(
                auth,
                crate::auth::layer::authenticate,
            ));
        // Outside authentication too: preflights are answered before anything else.
        match cors {
            Some(cors) => router.layer(cors),
            None => router,
        }
    }

    /// Runs one classic Interact: `{"sessionId", "message", "context"}` in, the
    /// `InteractResponse` as proto3 JSON out.
    pub(crate) async fn interact_json(
        &self,
        body: &[u8],
        what: &str,
        headers: Option<&HeaderMap>,
        options: CallOptions,
    ) -> Result<String, ApiError> {
        let mut request = json::from_json(self.interact_request.clone(), body, what)?;
        if let Some(headers) = headers {
            json::apply_idempotency_header(&mut request, headers)?;
        }
        let reply = self
            .caller
            .unary(
                INTERACT_PATH,
                &request,
                self.interact_response.clone(),
                options,
            )
            .await?;
        Ok(json::to_json(&reply))
    }

    /// The largest request (HTTP body or JSON line) in bytes.
    pub(crate) fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// The authenticator of every door.
    pub(crate) fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The call options of an HTTP request: its deadline, forwarded headers and the caller's
    /// scope.
    fn call_options(&self, parts: &http::request::Parts) -> Result<CallOptions, ApiError> {
        let headers = &parts.headers;
        let timeout = match headers.get(TIMEOUT_HEADER) {
            Some(value) => Some(parse_timeout(value)?),
            None => self.default_timeout,
        };
        Ok(CallOptions {
            door: "http",
            timeout,
            headers: headers.clone(),
            scope: scope_of_extensions(&parts.extensions),
        })
    }
}

/// Leaves WebSocket upgrades (`101 Switching Protocols`) alone.
#[derive(Clone, Copy)]
struct NotForUpgrades;

impl Predicate for NotForUpgrades {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: http_body::Body,
    {
        response.status() != StatusCode::SWITCHING_PROTOCOLS
    }
}

/// Parses `X-Request-Timeout`: positive (fractional) seconds.
fn parse_timeout(value: &HeaderValue) -> Result<Duration, ApiError> {
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0 && *seconds <= 1e8)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            ApiError::new(
                Code::InvalidArgument,
                "X-Request-Timeout must be a positive number of seconds, such as 2.5",
            )
        })
}

/// Reads a request body of at most `limit` bytes (after decompression).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(e) => Err(ApiError::new(
            Code::InvalidArgument,
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// 413 for a request over `limit` bytes.
pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        Code::ResourceExhausted,
        format!(
            "the request is larger than limits.max_request_bytes ({limit} bytes); send less or \
             raise the limit"
        ),
    )
    .with_http_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// Refuses bodies that do not say they are JSON (an absent content type is taken as JSON).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(
        Code::InvalidArgument,
        format!(
            "content type '{essence}' is not served on this route; send the body as JSON with \
             Content-Type: application/json"
        ),
    )
    .with_http_status(StatusCode::UNSUPPORTED_MEDIA_TYPE))
}

/// `GET /health`, `/healthz`: 200 `{"status": "SERVING"}`, or 503 once draining.
async fn health(State(doors): State<Arc<JsonDoors>>) -> Response {
    let (status, text) = if doors.lifecycle.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING")
    } else {
        (StatusCode::OK, "SERVING")
    };
    json_response(status, serde_json::json!({ "status": text }).to_string())
}

/// `GET /api/mcp/status`: `{"version", "uptimeSeconds", "store", "models", "sessions"}`;
/// `sessions` counts the caller's live sessions (absent for a caller without credentials when
/// the endpoint is open).
async fn status(State(doors): State<Arc<JsonDoors>>, request: Request) -> Response {
    let counted = match scope_of_extensions(request.extensions()) {
        Some(scope) => doors.engine.count_sessions(&scope).await.map(Some),
        None => Ok(None),
    };
    match counted {
        Ok(sessions) => {
            let models: Vec<String> = doors.engine.models().into_iter().map(|m| m.name).collect();
            let body = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptimeSeconds": doors.started.elapsed().as_secs(),
                "store": doors.store,
                "models": models,
                // A count, not a 64-bit id: a JSON number.
                "sessions": sessions,
            });
            json_response(StatusCode::OK, body.to_string())
        }
        Err(error) => ApiError::from(tonic::Status::from(error)).into_response(),
    }
}

/// `GET /openapi.json`.
async fn openapi() -> Response {
    json_response(StatusCode::OK, OPENAPI.to_owned())
}

/// `POST /api/mcp/interact`: the classic guide's Interact.
async fn classic_interact(State(doors): State<Arc<JsonDoors>>, request: Request) -> Response {
    let run = async {
        let (parts, body) = request.into_parts();
        require_json(&parts.headers)?;
        let options = doors.call_options(&parts)?;
        let body = read_body(body, doors.max_request_bytes).await?;
        doors
            .interact_json(&body, "the request body", Some(&parts.headers), options)
            .await
    };
    match run.await {
        Ok(reply) => json_response(StatusCode::OK, reply),
        Err(error) => error.into_response(),
    }
}

/// Every `/v1/…` route of the contract.
async fn transcode(State(doors): State<Arc<JsonDoors>>, request: Request) -> Response {
    // `…:converse` is a WebSocket (GET on HTTP/1.1, CONNECT on HTTP/2), not a JSON route.
    if matches!(*request.method(), http::Method::GET | http::Method::CONNECT)
        && let Some(session_id) = websocket::converse_session(request.uri().path())
    {
        let (parts, _) = request.into_parts();
        return websocket::upgrade(doors, session_id, parts).await;
    }
    match transcode_inner(&doors, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn transcode_inner(doors: &JsonDoors, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let matched = match doors.routes.lookup(&parts.method, parts.uri.path()) {
        Lookup::Found(matched) => matched,
        Lookup::WrongMethod(allowed) => {
            let allow: Vec<_> = allowed.iter().map(|m| m.as_str()).collect();
            let allow = allow.join(", ");
            let mut response = ApiError::new(
                Code::Unimplemented,
                format!(
                    "{} {} is not served; use {allow}",
                    parts.method,
                    parts.uri.path()
                ),
            )
            .with_http_status(StatusCode::METHOD_NOT_ALLOWED)
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return Ok(response);
        }
        Lookup::NotFound => return Err(not_found(parts.uri.path())),
    };
    let options = doors.call_options(&parts)?;
    let body = read_body(body, doors.max_request_bytes).await?;
    if !body.is_empty() {
        require_json(&parts.headers)?;
    }
    let mut message = json::request_message(&matched, parts.uri.query(), &body)?;
    json::apply_idempotency_header(&mut message, &parts.headers)?;
    let route = matched.route;
    let output = route.rpc.output();
    if route.rpc.is_server_streaming() {
        let mut stream = doors
            .caller
            .call(&route.grpc_path, &message, output, options)
            .await?;
        // A failure before the first event is an ordinary HTTP error.
        let first = match stream.next().await {
            Some(Ok(first)) => Some(first),
            Some(Err(error)) => return Err(error),
            None => None,
        };
        return Ok(sse::events(first, stream, doors.keep_alive));
    }
    let reply = doors
        .caller
        .unary(&route.grpc_path, &message, output, options)
        .await?;
    Ok(json_response(StatusCode::OK, json::to_json(&reply)))
}

/// 405 in the AIP-193 format for the fixed routes (`POST /health`, …).
async fn method_not_allowed(request: Request) -> Response {
    ApiError::new(
        Code::Unimplemented,
        format!(
            "{} {} is not served; see /openapi.json for the methods of each route",
            request.method(),
            request.uri().path()
        ),
    )
    .with_http_status(StatusCode::METHOD_NOT_ALLOWED)
    .into_response()
}

/// Whatever no JSON route serves: gRPC when it says so; 415 for a gRPC path in another
/// content type; 404 otherwise.
async fn grpc_or_not_found(State(doors): State<Arc<JsonDoors>>, request: Request) -> Response {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/grpc-web") {
        let mut request = request;
        request
            .headers_mut()
            .insert(DOOR_HEADER, HeaderValue::from_static("grpc-web"));
        return match doors.grpc_web.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    if content_type.starts_with("application/grpc") {
        // Only the JSON doors name a door on their in-process calls.
        let mut request = request;
        request.headers_mut().remove(DOOR_HEADER);
        return match doors.grpc.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    if is_grpc_path(request.uri().path()) && connect::is_connect(request.method(), &content_type) {
        return connect::serve(&doors, request).await;
    }
    if is_grpc_path(request.uri().path()) {
        let shown = if content_type.is_empty() {
            "no content type".to_owned()
        } else {
            format!("content type '{content_type}'")
        };
        return ApiError::new(
            Code::InvalidArgument,
            format!(
                "{} is a gRPC method, served as application/grpc(+proto), \
                 application/grpc-web(+proto), application/grpc-web-text and Connect \
                 (application/json, application/proto, application/connect+json|+proto); \
                 {shown} is not served here (for JSON use the HTTP routes listed in the \
                 README, such as POST /v1/sessions/{{session_id}}:interact)",
                request.uri().path()
            ),
        )
        .with_http_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .into_response();
    }
    not_found(request.uri().path()).into_response()
}

/// The session a Converse WebSocket path (`/v1/sessions/{id}:converse`) names.
pub(crate) fn websocket_session(path: &str) -> Option<String> {
    websocket::converse_session(path)
}

/// Whether `path` has the shape of a gRPC method path, `/package.Service/Method`.
pub(crate) fn is_grpc_path(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(service), Some(method), None) if service.contains('.') && !method.is_empty()
    )
}

/// 404 for a path nothing serves.
fn not_found(path: &str) -> ApiError {
    ApiError::new(
        Code::NotFound,
        format!(
            "no route serves {path}; the HTTP routes are /v1/sessions…, /v1/tools…, /v1/models, \
             /api/mcp/interact and /health (all in /openapi.json)"
        ),
    )
}

/// A JSON response.
fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_is_503_once_draining() {
        let lifecycle = Lifecycle::default();
        let config = Config::default();
        let store = Arc::new(crate::store::memory::MemoryStore::new());
        let engine = Arc::new(crate::server::build_engine(&config, store.clone()).unwrap());
        let auth = Arc::new(crate::auth::Authenticator::new(&config.auth, store).unwrap());
        let doors = Arc::new(
            JsonDoors::new(&config, Router::new(), lifecycle.clone(), engine, auth).unwrap(),
        );
        let health = |doors: Arc<JsonDoors>| async move {
            let request = http::Request::get("/health").body(Body::empty()).unwrap();
            let response = doors.router().oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        };
        assert_eq!(
            health(doors.clone()).await,
            (StatusCode::OK, r#"{"status":"SERVING"}"#.to_owned())
        );
        lifecycle.drain();
        assert_eq!(
            health(doors).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"NOT_SERVING"}"#.to_owned()
            )
        );
    }

    #[test]
    fn grpc_paths() {
        assert!(is_grpc_path("/contextd.v1.InteractService/Interact"));
        assert!(is_grpc_path("/grpc.health.v1.Health/Check"));
        assert!(!is_grpc_path("/v1/sessions"));
        assert!(!is_grpc_path("/health"));
        assert!(!is_grpc_path("/v1/sessions/a/messages"));
    }

    #[test]
    fn timeouts() {
        let ok = |text: &str| parse_timeout(&HeaderValue::from_str(text).unwrap());
        assert_eq!(ok("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(ok(" 1 ").unwrap(), Duration::from_secs(1));
        for bad in ["0", "-1", "soon", "NaN", "inf", "1e9"] {
            assert!(ok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            require_json(&headers)
        };
        assert!(require_json(&HeaderMap::new()).is_ok());
        assert!(with("application/json; charset=utf-8").is_ok());
        assert!(with("application/merge-patch+json").is_ok());
        let error = with("text/plain").unwrap_err();
        assert_eq!(error.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
