//! Scenario 1 over HTTP/JSON: the unary turn of [`super::unary`] (same message, context and
//! one session per worker) sent as `POST /v1/sessions/{session_id}:interact` with a proto3
//! JSON body, which contextd transcodes in-process into its gRPC `Interact`. With `--route
//! classic` it is `POST /api/mcp/interact` with the session id in the body; with `--route
//! connect` the Connect protocol's unary JSON call (`POST /contextd.v1.InteractService/Interact`,
//! `application/json`), and with `--route grpc-web` a gRPC-Web call on the same path
//! (`application/grpc-web+proto`: the protobuf request in one frame, the reply and its trailers
//! in the body) — the browser doors, over the same HTTP/1.1 connections.
//!
//! HTTP/1.1 carries one request at a time, so every worker has a keep-alive connection of its
//! own: `connections × in_flight` connections in all (with the default one in flight, as many
//! as the gRPC scenario opens). A reply counts when it is 200 with a JSON object holding a
//! string `response`; otherwise it counts under its HTTP status, as `BAD_REPLY`, or as
//! `CONNECTION` when the connection failed (the worker then opens a new one).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::ClosedLoop;
use crate::load::{self, Failure, OpResult, Worker};
use crate::probe::ServerProbe;
use crate::workload;

/// Which HTTP route carries the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/sessions/{session_id}:interact`, the contract's `google.api.http` rule.
    V1,
    /// `POST /api/mcp/interact`, `{"sessionId", "message", "context"}`.
    Classic,
    /// The Connect protocol's unary call in JSON.
    Connect,
    /// gRPC-Web in protobuf.
    GrpcWeb,
}

/// The gRPC-Web and Connect path of `Interact`.
const INTERACT_PATH: &str = "/contextd.v1.InteractService/Interact";

impl Route {
    /// The route's name in results: `v1` or `classic`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::Classic => "classic",
            Self::Connect => "connect",
            Self::GrpcWeb => "grpc-web",
        }
    }

    /// The route named `name` (see [`Route::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::V1, Self::Classic, Self::Connect, Self::GrpcWeb]
            .into_iter()
            .find(|route| route.name() == name)
    }

    /// The request's content type.
    fn content_type(self) -> &'static str {
        match self {
            Self::GrpcWeb => "application/grpc-web+proto",
            _ => "application/json",
        }
    }

    /// Whether `body` is a good reply on this route.
    fn is_good(self, body: &[u8]) -> bool {
        match self {
            Self::GrpcWeb => grpc_web_reply(body).is_some(),
            _ => is_reply(body),
        }
    }

    /// The request path and JSON body of a turn on `session_id`.
    pub fn request(self, session_id: &str) -> (String, Bytes) {
        let context = json!({ "user_id": "john_doe" });
        if self == Self::GrpcWeb {
            let request = super::unary::request_on(session_id);
            let message = prost::Message::encode_to_vec(&request);
            let mut framed = Vec::with_capacity(5 + message.len());
            framed.push(0);
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            return (INTERACT_PATH.to_string(), Bytes::from(framed));
        }
        let (path, body) = match self {
            Self::Connect => (
                INTERACT_PATH.to_string(),
                json!({
                    "sessionId": session_id,
                    "message": workload::MESSAGE,
                    "context": context,
                }),
            ),
            Self::GrpcWeb => unreachable!("encoded above"),
            Self::V1 => (
                format!("/v1/sessions/{session_id}:interact"),
                json!({ "message": workload::MESSAGE, "context": context }),
            ),
            Self::Classic => (
                "/api/mcp/interact".to_string(),
                json!({
                    "sessionId": session_id,
                    "message": workload::MESSAGE,
                    "context": context,
                }),
            ),
        };
        (path, Bytes::from(body.to_string()))
    }
}

/// An HTTP/1.1 keep-alive connection to `addr`, with `TCP_NODELAY` as the gRPC scenarios set.
pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake with {addr} failed: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request and its checked reply: the reply's body, or how it failed.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    route: Route,
    host: &str,
    path: &str,
    body: &Bytes,
) -> Result<Bytes, Failure> {
    sender.ready().await.map_err(|_| Failure::Connection)?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, route.content_type());
    if route == Route::Connect {
        request = request.header("connect-protocol-version", "1");
    }
    let request = request
        .body(Full::new(body.clone()))
        .map_err(|_| Failure::BadReply)?;
    let reply = send_for_ok(sender, request).await?;
    if !route.is_good(&reply) {
        return Err(Failure::BadReply);
    }
    Ok(reply)
}

/// Sends `request` on a ready `sender`; the reply's body when the status is 200 OK.
pub async fn send_for_ok(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Bytes, Failure> {
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| Failure::Connection)?;
    let status = response.status();
    let reply = response
        .into_body()
        .collect()
        .await
        .map_err(|_| Failure::Connection)?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(Failure::Http(status.as_u16()));
    }
    Ok(reply)
}

/// The reply message of a gRPC-Web body: its first (data) frame, when the trailer frame that
/// follows says `grpc-status: 0`.
pub fn grpc_web_reply(body: &[u8]) -> Option<&[u8]> {
    let frame = |at: usize| -> Option<(u8, &[u8])> {
        let header = body.get(at..at + 5)?;
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        Some((header[0], body.get(at + 5..at + 5 + length)?))
    };
    let (flags, message) = frame(0)?;
    let (trailer_flags, trailers) = frame(5 + message.len())?;
    let ok = flags == 0
        && trailer_flags & 0x80 != 0
        && String::from_utf8_lossy(trailers).lines().any(|line| {
            line.trim().eq_ignore_ascii_case("grpc-status:0")
                || line.trim().eq_ignore_ascii_case("grpc-status: 0")
        });
    ok.then_some(message)
}

/// Whether `body` is a JSON object with a string `response` member.
pub fn is_reply(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("response").map(Value::is_string))
        .unwrap_or(false)
}

/// One worker: the same turn on its own session and its own connection, again and again.
pub struct HttpWorker {
    addr: SocketAddr,
    route: Route,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    path: String,
    body: Bytes,
}

impl Worker for HttpWorker {
    async fn run_once(&mut self) -> OpResult {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => connect(self.addr).await.map_err(|_| Failure::Connection)?,
        };
        let outcome = send(&mut sender, self.route, &self.host, &self.path, &self.body).await;
        if outcome != Err(Failure::Connection) {
            self.sender = Some(sender);
        }
        outcome.map(|_| 1)
    }
}

/// Runs the scenario.
pub async fn run(
    setup: ClosedLoop,
    route: Route,
    server: Option<&ServerProbe>,
) -> Result<Value, String> {
    let host = setup.addr.to_string();
    let tag = workload::run_tag();

    // One turn first: it proves the server answers, and gives the reply's size on the wire.
    let mut first = connect(setup.addr).await?;
    let (probe_path, probe_body) = route.request(&workload::session_id(&tag, 99_999));
    let reply = send(&mut first, route, &host, &probe_path, &probe_body)
        .await
        .map_err(|f| {
            format!(
                "the first {} {probe_path} failed: {}",
                Method::POST,
                f.name()
            )
        })?;
    drop(first);
    let reply_text = match route {
        Route::GrpcWeb => grpc_web_reply(&reply)
            .and_then(|m| <contextd::api::v1::InteractResponse as prost::Message>::decode(m).ok())
            .map(|r| Value::String(r.response))
            .unwrap_or(Value::Null),
        _ => serde_json::from_slice::<Value>(&reply)
            .map_err(|e| e.to_string())?
            .get("response")
            .cloned()
            .unwrap_or(Value::Null),
    };

    let mut workers = Vec::with_capacity(setup.workers());
    for w in 0..setup.workers() {
        let (path, body) = route.request(&workload::session_id(&tag, w));
        workers.push(HttpWorker {
            addr: setup.addr,
            route,
            host: host.clone(),
            sender: Some(connect(setup.addr).await?),
            path,
            body,
        });
    }
    let result = load::run(workers, setup.plan, server).await;
    let mut out = result.to_json();
    out["setup"] = setup.to_json();
    out["setup"]["route"] = json!(route.name());
    out["setup"]["http_connections"] = json!(setup.workers());
    out["request_path"] = json!(probe_path);
    out["request_bytes"] = json!(probe_body.len());
    out["reply_bytes"] = json!(reply.len());
    out["reply_text"] = reply_text;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_both_routes() {
        let (path, body) = Route::V1.request("bench-x-00001");
        assert_eq!(path, "/v1/sessions/bench-x-00001:interact");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["message"], workload::MESSAGE);
        assert_eq!(body["context"]["user_id"], "john_doe");
        assert!(body.get("sessionId").is_none());

        let (path, body) = Route::Classic.request("bench-x-00001");
        assert_eq!(path, "/api/mcp/interact");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["sessionId"], "bench-x-00001");
        assert_eq!(body["message"], workload::MESSAGE);
    }

    #[test]
    fn browser_routes() {
        let (path, body) = Route::Connect.request("bench-x-00001");
        assert_eq!(path, INTERACT_PATH);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["sessionId"], "bench-x-00001");
        let (path, body) = Route::GrpcWeb.request("bench-x-00001");
        assert_eq!(path, INTERACT_PATH);
        assert_eq!(body[0], 0);
        assert_eq!(
            body.len(),
            5 + u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize
        );
        let reply = [
            &[0u8, 0, 0, 0, 2, 1, 2][..],
            &[0x80, 0, 0, 0, 15],
            b"grpc-status:0\r\n",
        ]
        .concat();
        assert_eq!(grpc_web_reply(&reply), Some(&[1u8, 2][..]));
        let failed = [
            &[0u8, 0, 0, 0, 0][..],
            &[0x80, 0, 0, 0, 15],
            b"grpc-status:5\r\n",
        ]
        .concat();
        assert_eq!(grpc_web_reply(&failed), None);
        for route in [Route::V1, Route::Classic, Route::Connect, Route::GrpcWeb] {
            assert_eq!(Route::from_name(route.name()), Some(route));
        }
    }

    #[test]
    fn replies() {
        assert!(is_reply(br#"{"sessionId":"s","response":"hi"}"#));
        assert!(!is_reply(br#"{"sessionId":"s"}"#));
        assert!(!is_reply(br#"{"response":3}"#));
        assert!(!is_reply(b"not json"));
    }
}
