//! The Connect protocol (connectrpc.com/docs/protocol) on the gRPC paths, so that `buf curl`,
//! connect-web, connect-node and connect-python reach contextd with their default protocol.
//!
//! No maintained crate serves Connect in front of existing tonic 0.14 services with prost 0.14
//! messages (`connectrpc` and `connectrpc-axum` generate their own handlers and message
//! types, `axum-connect` is on prost 0.13), and Connect over HTTP is small: a request is
//! decoded with the RPC's descriptor — proto3 JSON by [`super::json`], or protobuf — and sent
//! in-process to the same tonic route a gRPC client reaches ([`super::grpc`]), so validation
//! and the engine call stay one path. What is Connect's own is the framing:
//!
//! - unary: `POST` with `application/json` or `application/proto`, the bare message as the
//!   body both ways; failures are an HTTP status with `{"code": "not_found", "message": …}`.
//!   `application/proto` also reaches the other packages' methods (health), unread;
//! - unary `GET` (`?encoding=json&message=…`, `base64=1` for base64url), for the RPCs whose
//!   `google.api.http` rule is a `GET` (side-effect free by that rule);
//! - streams: `POST` with `application/connect+json` or `+proto`, the request and each
//!   response in an envelope (flags byte, 32-bit length), ended by an end-of-stream envelope
//!   (flag `0x02`) holding `{}` or `{"error": …}` as JSON, always under HTTP 200. A Connect
//!   envelope is a gRPC frame, so `+proto` streams of any kind and any service (reflection,
//!   health, client and bidirectional streams over HTTP/2) pass through to the gRPC route as
//!   they are, and only the end of the stream is translated from gRPC's trailers; `+json`
//!   serves contextd's server streams, one decoded request in;
//! - `Connect-Timeout-Ms` is the call's deadline; `Connect-Protocol-Version` (and GET's
//!   `connect`) must say 1 when sent. Requests may be gzip-compressed (`Content-Encoding` on
//!   unary calls, `Connect-Content-Encoding` and the envelope's flag on streams); replies are
//!   sent uncompressed, which every Connect client accepts.
//!
//! A browser cannot send a request stream at all (nor can Connect over HTTP/1.1), so
//! `Converse` from a page needs another door than this one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::Code;
use tower::ServiceExt;

use super::error::ApiError;
use super::grpc::{CallOptions, ResponseStream};
use super::rules::RouteTable;
use super::{JsonDoors, json, read_body};
use crate::server::logging::DOOR_HEADER;

/// The header of the call's deadline, in milliseconds.
const TIMEOUT_HEADER: &str = "connect-timeout-ms";
/// The header naming the protocol version, `1`.
const VERSION_HEADER: &str = "connect-protocol-version";
/// An envelope whose payload is compressed.
const FLAG_COMPRESSED: u8 = 0x01;
/// The end-of-stream envelope.
const FLAG_END_STREAM: u8 = 0x02;

/// How messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Json,
    Proto,
}

impl Codec {
    fn unary_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }
    }

    fn stream_type(self) -> &'static str {
        match self {
            Codec::Json => "application/connect+json",
            Codec::Proto => "application/connect+proto",
        }
    }

    /// Decodes one request message of `descriptor`.
    fn decode(
        self,
        descriptor: MessageDescriptor,
        bytes: &[u8],
    ) -> Result<DynamicMessage, ApiError> {
        match self {
            Codec::Json => json::from_json(descriptor, bytes, "the request message"),
            Codec::Proto => DynamicMessage::decode(descriptor.clone(), bytes).map_err(|e| {
                ApiError::new(
                    Code::InvalidArgument,
                    format!(
                        "the request is not a valid {} protobuf message: {e}",
                        descriptor.full_name()
                    ),
                )
            }),
        }
    }

    fn encode(self, message: &DynamicMessage) -> Bytes {
        match self {
            Codec::Json => Bytes::from(json::to_json(message)),
            Codec::Proto => Bytes::from(json::to_protobuf(message)),
        }
    }
}

/// The shape of a Connect request, from its method and content type.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// A unary `POST`.
    Unary(Codec),
    /// A unary `GET` (the message is in the query string).
    Get,
    /// An enveloped stream.
    Stream(Codec),
}

/// The Connect framing of a request, or `None` when it is not a Connect request.
fn framing(method: &Method, content_type: &str) -> Option<Framing> {
    if method == Method::GET {
        return Some(Framing::Get);
    }
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match essence {
        "application/json" => Some(Framing::Unary(Codec::Json)),
        "application/proto" => Some(Framing::Unary(Codec::Proto)),
        "application/connect+json" => Some(Framing::Stream(Codec::Json)),
        "application/connect+proto" => Some(Framing::Stream(Codec::Proto)),
        _ => None,
    }
}

/// Whether `request` (to a gRPC path) speaks Connect.
pub(crate) fn is_connect(method: &Method, content_type: &str) -> bool {
    framing(method, content_type).is_some()
}

/// The answer to a Connect request refused before it is served (authentication, limits), in
/// its framing: an HTTP status with the error object for unary calls, an end-of-stream
/// envelope under HTTP 200 for streams.
pub(crate) fn refusal(method: &Method, content_type: &str, error: &ApiError) -> Response {
    match framing(method, content_type) {
        Some(Framing::Stream(codec)) => stream_response(codec, end_stream(Some(error))),
        _ => unary_error(error),
    }
}

/// The RPCs Connect serves, by gRPC path.
pub(crate) struct ConnectMethods {
    methods: HashMap<String, ConnectMethod>,
}

struct ConnectMethod {
    rpc: MethodDescriptor,
    /// May be called with `GET`.
    side_effect_free: bool,
}

impl ConnectMethods {
    /// Every unary and server-streaming RPC of `package`; those with a `GET` HTTP rule in
    /// `routes` are side-effect free.
    pub(crate) fn new(pool: &DescriptorPool, package: &str, routes: &RouteTable) -> Self {
        let mut methods = HashMap::new();
        for service in pool.services().filter(|s| s.package_name() == package) {
            for rpc in service.methods().filter(|m| !m.is_client_streaming()) {
                let path = format!("/{}/{}", service.full_name(), rpc.name());
                let side_effect_free = routes
                    .routes()
                    .iter()
                    .any(|route| route.grpc_path == path && route.method == Method::GET);
                methods.insert(
                    path,
                    ConnectMethod {
                        rpc,
                        side_effect_free,
                    },
                );
            }
        }
        Self { methods }
    }
}

/// Serves one Connect request to a gRPC path.
pub(crate) async fn serve(doors: &JsonDoors, request: Request) -> Response {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let Some(framing) = framing(request.method(), &content_type) else {
        return unary_error(&ApiError::new(Code::Internal, "not a Connect request"));
    };
    match framing {
        Framing::Stream(Codec::Proto) => match passthrough(doors, request).await {
            Ok(response) => response,
            Err(error) => stream_response(Codec::Proto, end_stream(Some(&error))),
        },
        Framing::Stream(codec) => match stream(doors, codec, request).await {
            Ok(response) => response,
            // Protocol errors of a stream (wrong RPC, bad envelope) still end the stream
            // properly, so that the client reads them as a status.
            Err(error) => stream_response(codec, end_stream(Some(&error))),
        },
        Framing::Unary(codec) => match unary(doors, codec, request).await {
            Ok(response) => response,
            Err(error) => unary_error(&error),
        },
        Framing::Get => match get(doors, request).await {
            Ok(response) => response,
            Err(error) => unary_error(&error),
        },
    }
}

/// Looks up the RPC at `path`.
fn method<'a>(doors: &'a JsonDoors, path: &str) -> Result<&'a ConnectMethod, ApiError> {
    doors.connect.methods.get(path).ok_or_else(|| {
        ApiError::new(
            Code::Unimplemented,
            format!("{path} is not a unary or server-streaming method of contextd"),
        )
        .with_http_status(StatusCode::NOT_FOUND)
    })
}

/// The call options of a Connect request: its deadline, forwarded headers and the caller's
/// scope.
fn call_options(doors: &JsonDoors, parts: &http::request::Parts) -> Result<CallOptions, ApiError> {
    let headers = &parts.headers;
    if let Some(version) = headers.get(VERSION_HEADER)
        && version.as_bytes() != b"1"
    {
        return Err(ApiError::new(
            Code::InvalidArgument,
            format!(
                "Connect-Protocol-Version {:?} is not served; send 1",
                String::from_utf8_lossy(version.as_bytes())
            ),
        ));
    }
    let timeout = match headers.get(TIMEOUT_HEADER) {
        Some(value) => Some(parse_timeout(value)?),
        None => doors.default_timeout,
    };
    Ok(CallOptions {
        door: "connect",
        timeout,
        headers: headers.clone(),
        scope: crate::server::scope::scope_of_extensions(&parts.extensions),
        peer: None,
    })
}

/// `Connect-Timeout-Ms`: a positive integer of at most 10 digits.
fn parse_timeout(value: &HeaderValue) -> Result<Duration, ApiError> {
    value
        .to_str()
        .ok()
        .filter(|text| {
            !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            ApiError::new(
                Code::InvalidArgument,
                "Connect-Timeout-Ms must be a positive whole number of milliseconds (at most 10 \
                 digits), such as 2500",
            )
        })
}

/// How a request is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Identity,
    Gzip,
}

/// The compression `encoding` (the value of the request's encoding header) names; only gzip
/// is served.
fn compression(encoding: Option<&str>) -> Result<Compression, ApiError> {
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(Compression::Identity),
        Some("gzip") => Ok(Compression::Gzip),
        Some(other) => Err(ApiError::new(
            Code::Unimplemented,
            format!(
                "request compression {other:?} is not served; send it uncompressed or with gzip"
            ),
        )),
    }
}

/// Decompresses a gzip message of at most `limit` bytes.
fn inflate(bytes: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::new(
                Code::InvalidArgument,
                format!("the request is not valid gzip: {e}"),
            )
        })?;
    if out.len() > limit {
        return Err(super::too_large(limit));
    }
    Ok(out)
}

/// `bytes`, decompressed as `compression` says.
fn decompress(compression: Compression, bytes: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    match compression {
        Compression::Identity => Ok(bytes.to_vec()),
        Compression::Gzip => inflate(bytes, limit),
    }
}

/// The value of a request header, if it is text.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A unary `POST`.
async fn unary(doors: &JsonDoors, codec: Codec, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let method = match method(doors, parts.uri.path()) {
        Ok(method) => method,
        // Another package's method (health, …): protobuf needs no descriptor.
        Err(_) if codec == Codec::Proto => return unary_other(doors, parts, body).await,
        Err(error) => return Err(error),
    };
    if method.rpc.is_server_streaming() {
        return Err(wrong_framing(&method.rpc, codec.stream_type()));
    }
    let options = call_options(doors, &parts)?;
    let compression = compression(header_text(&parts.headers, "content-encoding"))?;
    let body = read_body(body, doors.max_request_bytes).await?;
    let body = decompress(compression, &body, doors.max_request_bytes)?;
    let message = codec.decode(method.rpc.input(), &body)?;
    call_unary(doors, &parts.uri, method, codec, &message, options).await
}

/// A unary `application/proto` call of a method outside contextd's package: the message goes
/// to the gRPC route as one frame, unread, and its reply comes back the same way.
async fn unary_other(
    doors: &JsonDoors,
    parts: http::request::Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let options = call_options(doors, &parts)?;
    let compression = compression(header_text(&parts.headers, "content-encoding"))?;
    let body = read_body(body, doors.max_request_bytes).await?;
    let body = decompress(compression, &body, doors.max_request_bytes)?;
    let mut builder = http::Request::builder()
        .method(Method::POST)
        .uri(parts.uri.path())
        .version(http::Version::HTTP_2)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(DOOR_HEADER, "connect");
    if let Some(timeout) = options.timeout {
        let millis = timeout.as_millis().clamp(1, 99_999_999);
        builder = builder.header("grpc-timeout", format!("{millis}m"));
    }
    let request = builder
        .body(Body::from(envelope(0, &body)))
        .map_err(|e| ApiError::new(Code::Internal, format!("cannot build the call: {e}")))?;
    let response = match doors.grpc.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Some(error) = status_error(tonic::Status::from_header_map(response.headers())) {
        return Err(unknown_method(error));
    }
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(Code::Internal, format!("the reply was cut off: {e}")))?;
    if let Some(error) = collected
        .trailers()
        .and_then(|trailers| status_error(tonic::Status::from_header_map(trailers)))
    {
        return Err(unknown_method(error));
    }
    let bytes = collected.to_bytes();
    let (flags, payload) = single_envelope(&bytes)
        .map_err(|_| ApiError::new(Code::Internal, "the reply is not one gRPC message"))?;
    if flags != 0 {
        return Err(ApiError::new(Code::Internal, "the reply is compressed"));
    }
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/proto"),
        )],
        Bytes::copy_from_slice(payload),
    )
        .into_response())
}

/// An UNIMPLEMENTED from the gRPC routes (no such method) is Connect's 404.
fn unknown_method(error: ApiError) -> ApiError {
    if error.code == Code::Unimplemented {
        error.with_http_status(StatusCode::NOT_FOUND)
    } else {
        error
    }
}

/// Runs a unary call and answers its reply.
async fn call_unary(
    doors: &JsonDoors,
    uri: &http::Uri,
    method: &ConnectMethod,
    codec: Codec,
    message: &DynamicMessage,
    options: CallOptions,
) -> Result<Response, ApiError> {
    let reply = doors
        .caller
        .unary(uri.path(), message, method.rpc.output(), options)
        .await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(codec.unary_type()),
        )],
        codec.encode(&reply),
    )
        .into_response())
}

/// A unary `GET`: `?encoding=json|proto&message=…[&base64=1][&compression=identity][&connect=v1]`.
async fn get(doors: &JsonDoors, request: Request) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    let method = method(doors, parts.uri.path())?;
    if !method.side_effect_free {
        return Err(ApiError::new(
            Code::Unimplemented,
            format!(
                "{} may change state, so it is not served with GET; send it as a POST",
                parts.uri.path()
            ),
        )
        .with_http_status(StatusCode::METHOD_NOT_ALLOWED));
    }
    let mut encoding = None;
    let mut message = None;
    let mut base64 = false;
    let mut compression = None;
    for pair in parts.uri.query().unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "encoding" => encoding = Some(value),
            "message" => message = Some(value),
            "base64" => base64 = value == "1",
            "compression" => compression = Some(value),
            "connect" if value != "v1" => {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("connect={value} is not served; send connect=v1"),
                ));
            }
            _ => {}
        }
    }
    let codec = match encoding.as_deref() {
        Some("json") => Codec::Json,
        Some("proto") => Codec::Proto,
        other => {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!(
                    "a Connect GET needs encoding=json or encoding=proto in the query (got {})",
                    other.map_or("none".to_owned(), |e| format!("{e:?}"))
                ),
            ));
        }
    };
    let compression = self::compression(compression.as_deref())?;
    let message = message.unwrap_or_default();
    let bytes = if base64 {
        URL_SAFE_NO_PAD
            .decode(message.trim_end_matches('='))
            .or_else(|_| URL_SAFE.decode(&message))
            .map_err(|e| {
                ApiError::new(
                    Code::InvalidArgument,
                    format!("message is not base64url (base64=1 was given): {e}"),
                )
            })?
    } else {
        message.into_bytes()
    };
    if bytes.len() > doors.max_request_bytes {
        return Err(super::too_large(doors.max_request_bytes));
    }
    let bytes = decompress(compression, &bytes, doors.max_request_bytes)?;
    let options = call_options(doors, &parts)?;
    let decoded = if bytes.is_empty() && codec == Codec::Json {
        codec.decode(method.rpc.input(), b"{}")?
    } else {
        codec.decode(method.rpc.input(), &bytes)?
    };
    call_unary(doors, &parts.uri, method, codec, &decoded, options).await
}

/// A server-streaming call: one enveloped request in, enveloped replies and the end of the
/// stream out.
async fn stream(doors: &JsonDoors, codec: Codec, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let method = method(doors, parts.uri.path())?;
    if !method.rpc.is_server_streaming() {
        return Err(wrong_framing(&method.rpc, codec.unary_type()));
    }
    let options = call_options(doors, &parts)?;
    let compression = compression(header_text(&parts.headers, "connect-content-encoding"))?;
    // The envelope's five bytes come on top of the message limit.
    let body = read_body(body, doors.max_request_bytes + 5).await?;
    let (flags, payload) = single_envelope(&body)?;
    let payload = if flags & FLAG_COMPRESSED != 0 {
        if compression == Compression::Identity {
            return Err(ApiError::new(
                Code::InvalidArgument,
                "the envelope is flagged compressed but Connect-Content-Encoding names none",
            ));
        }
        decompress(compression, payload, doors.max_request_bytes)?
    } else {
        payload.to_vec()
    };
    let message = codec.decode(method.rpc.input(), &payload)?;
    let replies = doors
        .caller
        .call(parts.uri.path(), &message, method.rpc.output(), options)
        .await;
    let body = match replies {
        Ok(replies) => Body::from_stream(envelopes(codec, replies)),
        // The call failed before its first message.
        Err(error) => end_stream(Some(&error)),
    };
    Ok(stream_response(codec, body))
}

/// A `+proto` stream of any RPC: the envelopes go to the gRPC route unchanged and come back
/// unchanged; gRPC's final status becomes the end-of-stream envelope.
async fn passthrough(doors: &JsonDoors, request: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let options = call_options(doors, &parts)?;
    let compression = compression(header_text(&parts.headers, "connect-content-encoding"))?;
    let headers = &mut parts.headers;
    let connect_headers: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("connect-"))
        .cloned()
        .collect();
    for name in connect_headers {
        headers.remove(name);
    }
    // gRPC compression is never asked for: the envelopes go back as they come.
    for name in ["grpc-accept-encoding", "grpc-encoding", "grpc-timeout"] {
        headers.remove(name);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert(DOOR_HEADER, HeaderValue::from_static("connect"));
    // Envelopes flagged compressed are gRPC frames flagged compressed: tonic inflates them.
    if compression == Compression::Gzip {
        headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
    }
    if let Some(timeout) = options.timeout {
        let millis = timeout.as_millis().clamp(1, 99_999_999);
        if let Ok(value) = HeaderValue::from_str(&format!("{millis}m")) {
            headers.insert("grpc-timeout", value);
        }
    }
    parts.version = http::Version::HTTP_2;
    let response = match doors
        .grpc
        .clone()
        .oneshot(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // A trailers-only response carries the status in its headers.
    let early = tonic::Status::from_header_map(response.headers());
    let body = response.into_body();
    let frames = futures_util::stream::unfold(Some((body, early)), |state| async move {
        let (mut body, early) = state?;
        loop {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Some((Ok(data), Some((body, early)))),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let error = status_error(tonic::Status::from_header_map(&trailers));
                        return Some((Ok(end_stream_bytes(error.as_ref())), None));
                    }
                },
                Some(Err(e)) => {
                    let error =
                        ApiError::new(Code::Internal, format!("the reply was cut off: {e}"));
                    return Some((Ok::<_, Infallible>(end_stream_bytes(Some(&error))), None));
                }
                None => {
                    let error = status_error(early);
                    return Some((Ok(end_stream_bytes(error.as_ref())), None));
                }
            }
        }
    });
    Ok(stream_response(Codec::Proto, Body::from_stream(frames)))
}

/// The error of a final gRPC status, `None` when it is OK (or absent).
fn status_error(status: Option<tonic::Status>) -> Option<ApiError> {
    status
        .filter(|status| status.code() != Code::Ok)
        .map(ApiError::from)
}

/// The one message envelope of a server-streaming request: its flags and payload.
fn single_envelope(body: &[u8]) -> Result<(u8, &[u8]), ApiError> {
    let bad = |what: &str| {
        ApiError::new(
            Code::InvalidArgument,
            format!(
                "a Connect streaming request body is one envelope (a flags byte, a 32-bit \
                 big-endian length, the message); {what}"
            ),
        )
    };
    if body.len() < 5 {
        return Err(bad("this one is shorter than 5 bytes"));
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + length {
        return Err(bad(&format!(
            "this one declares {length} bytes but {} follow",
            body.len() - 5
        )));
    }
    Ok((body[0], &body[5..]))
}

/// The replies of a streaming call as envelopes, then the end of the stream.
fn envelopes(
    codec: Codec,
    replies: ResponseStream,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures_util::stream::unfold(Some(replies), move |state| async move {
        let mut replies = state?;
        match replies.next().await {
            Some(Ok(message)) => Some((Ok(envelope(0, &codec.encode(&message))), Some(replies))),
            Some(Err(error)) => Some((Ok(end_stream_bytes(Some(&error))), None)),
            None => Some((Ok(end_stream_bytes(None)), None)),
        }
    })
}

/// One envelope.
fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.extend_from_slice(&[flags]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.freeze()
}

/// The end-of-stream envelope: `{}`, or `{"error": {"code", "message"}}`.
fn end_stream_bytes(error: Option<&ApiError>) -> Bytes {
    let json = match error {
        None => "{}".to_owned(),
        Some(error) => format!("{{\"error\":{}}}", error.connect_body()),
    };
    envelope(FLAG_END_STREAM, json.as_bytes())
}

/// A stream body of only the end of the stream.
fn end_stream(error: Option<&ApiError>) -> Body {
    Body::from(end_stream_bytes(error))
}

/// A streaming response (always HTTP 200: the status is in the end of the stream).
fn stream_response(codec: Codec, body: Body) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(codec.stream_type()),
        )],
        body,
    )
        .into_response()
}

/// A unary failure: the code's HTTP status and the Connect error object.
fn unary_error(error: &ApiError) -> Response {
    (
        error.status(),
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        error.connect_body(),
    )
        .into_response()
}

/// 415 for a unary content type on a streaming RPC, or the reverse.
fn wrong_framing(rpc: &MethodDescriptor, expected: &str) -> ApiError {
    let kind = if rpc.is_server_streaming() {
        "server-streaming"
    } else {
        "unary"
    };
    ApiError::new(
        Code::InvalidArgument,
        format!(
            "{} is a {kind} method: send it as {expected}",
            rpc.full_name()
        ),
    )
    .with_http_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framings() {
        assert_eq!(
            framing(&Method::POST, "application/json; charset=utf-8"),
            Some(Framing::Unary(Codec::Json))
        );
        assert_eq!(
            framing(&Method::POST, "application/proto"),
            Some(Framing::Unary(Codec::Proto))
        );
        assert_eq!(
            framing(&Method::POST, "application/connect+proto"),
            Some(Framing::Stream(Codec::Proto))
        );
        assert_eq!(framing(&Method::GET, ""), Some(Framing::Get));
        assert_eq!(framing(&Method::POST, "application/grpc"), None);
        assert_eq!(framing(&Method::POST, "text/plain"), None);
    }

    #[test]
    fn timeouts() {
        let parse = |text: &str| parse_timeout(&HeaderValue::from_str(text).unwrap());
        assert_eq!(parse("2500").unwrap(), Duration::from_millis(2500));
        for bad in ["0", "-1", "1.5", "12345678901", "soon", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let framed = envelope(0, b"abc");
        assert_eq!(&framed[..], &[0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(single_envelope(&framed).unwrap(), (0, &b"abc"[..]));
        assert!(single_envelope(&framed[..6]).is_err());
        assert_eq!(
            single_envelope(&envelope(FLAG_COMPRESSED, b"x")).unwrap(),
            (FLAG_COMPRESSED, &b"x"[..])
        );
        let end = end_stream_bytes(Some(&ApiError::new(Code::NotFound, "gone")));
        assert_eq!(end[0], FLAG_END_STREAM);
        let json: serde_json::Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(json["error"]["code"], "not_found");
        assert_eq!(&end_stream_bytes(None)[5..], b"{}");
    }
}
