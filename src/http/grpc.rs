//! Calls into the gRPC services in-process, for the JSON doors.
//!
//! A JSON door decodes its request into the RPC's protobuf message and sends it, framed as
//! gRPC, straight to the same tonic services and layers a gRPC client reaches (logging,
//! deadlines): no second server, no network hop, one validation path and one engine call. A
//! turn behaves the same on every door because it *is* the same handler. When the JSON
//! caller goes away, dropping the call drops the handler's future (unary) or the response
//! stream (streaming), exactly as a gRPC client's cancel does.

use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Code;
use tower::ServiceExt;

use super::error::ApiError;
use super::json;
use crate::server::logging::DOOR_HEADER;
use crate::server::peer::PeerIdentity;

/// Headers a JSON request carries through to the gRPC services.
const FORWARDED: [&str; 3] = ["authorization", "x-request-id", "traceparent"];

/// The in-process client of the gRPC services.
#[derive(Clone)]
pub(crate) struct GrpcCaller {
    services: axum::Router,
}

/// How one call is made.
pub(crate) struct CallOptions {
    /// The door the call comes through, for the RPC's log line.
    pub(crate) door: &'static str,
    /// The call's deadline, sent as `grpc-timeout`.
    pub(crate) timeout: Option<Duration>,
    /// The caller's request headers; those in [`FORWARDED`] are passed on.
    pub(crate) headers: HeaderMap,
    /// The caller's scope, as the door authenticated it (`None`: not authenticated, and the
    /// handler refuses the call).
    pub(crate) scope: Option<crate::domain::Scope>,
    /// The verified TLS client certificate's identity, passed on as a request extension: the
    /// JSON-lines door's (an HTTP request has it in its own extensions, where the edge reads it).
    pub(crate) peer: Option<PeerIdentity>,
}

impl GrpcCaller {
    /// A caller of `services` (tonic's routes with their layers).
    pub(crate) fn new(services: axum::Router) -> Self {
        Self { services }
    }

    /// Sends `request` to `grpc_path` and returns the response stream (its first message is
    /// not read yet).
    pub(crate) async fn call(
        &self,
        grpc_path: &str,
        request: &DynamicMessage,
        output: MessageDescriptor,
        options: CallOptions,
    ) -> Result<ResponseStream, ApiError> {
        let payload = json::to_protobuf(request);
        let mut frame = BytesMut::with_capacity(5 + payload.len());
        frame.extend_from_slice(&[0]);
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);

        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(grpc_path)
            .version(http::Version::HTTP_2)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .header(DOOR_HEADER, options.door);
        for name in FORWARDED {
            if let Some(value) = options.headers.get(name) {
                builder = builder.header(name, value);
            }
        }
        if let Some(timeout) = options.timeout {
            builder = builder.header("grpc-timeout", grpc_timeout(timeout));
        }
        if let Some(peer) = options.peer {
            builder = builder.extension(peer);
        }
        let mut request = builder
            .body(Body::from(frame.freeze()))
            .map_err(|e| ApiError::new(Code::Internal, format!("cannot build the call: {e}")))?;
        if let Some(scope) = options.scope {
            request.extensions_mut().insert(scope);
        }
        let response = match self.services.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        // A trailers-only response: the call failed before any message.
        if let Some(status) = tonic::Status::from_header_map(response.headers())
            && status.code() != Code::Ok
        {
            return Err(status.into());
        }
        Ok(ResponseStream {
            body: response.into_body(),
            buffer: BytesMut::new(),
            output,
            done: false,
        })
    }

    /// A unary call: the one response message.
    pub(crate) async fn unary(
        &self,
        grpc_path: &str,
        request: &DynamicMessage,
        output: MessageDescriptor,
        options: CallOptions,
    ) -> Result<DynamicMessage, ApiError> {
        let mut stream = self.call(grpc_path, request, output, options).await?;
        let message = stream.next().await.ok_or_else(|| {
            ApiError::new(Code::Internal, "the call ended without a response message")
        })??;
        // Read to the end for the final status (a unary call's trailers say OK).
        if let Some(Err(error)) = stream.next().await {
            return Err(error);
        }
        Ok(message)
    }
}

/// `grpc-timeout` for `timeout`: milliseconds, at most the 8 digits the header allows.
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    let millis = timeout.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{millis}m")).unwrap_or(HeaderValue::from_static("1m"))
}

/// The messages of one gRPC response, decoded as the RPC's output type.
pub(crate) struct ResponseStream {
    body: Body,
    buffer: BytesMut,
    output: MessageDescriptor,
    done: bool,
}

impl ResponseStream {
    /// The next message; `None` once the call ended well; an error when it failed (then the
    /// stream ends).
    pub(crate) async fn next(&mut self) -> Option<Result<DynamicMessage, ApiError>> {
        loop {
            if self.done {
                return None;
            }
            match self.take_message() {
                Ok(Some(bytes)) => {
                    return Some(json::from_protobuf(self.output.clone(), &bytes));
                }
                Ok(None) => {}
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        self.done = true;
                        let trailers = frame.into_trailers().unwrap_or_default();
                        return match tonic::Status::from_header_map(&trailers) {
                            Some(status) if status.code() != Code::Ok => Some(Err(status.into())),
                            _ => None,
                        };
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(ApiError::new(
                        Code::Internal,
                        format!("the reply was cut off: {e}"),
                    )));
                }
                None => {
                    self.done = true;
                    if !self.buffer.is_empty() {
                        return Some(Err(ApiError::new(
                            Code::Internal,
                            "the reply ended inside a message",
                        )));
                    }
                    return None;
                }
            }
        }
    }

    /// Splits one whole length-prefixed message off the buffer.
    fn take_message(&mut self) -> Result<Option<Bytes>, ApiError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            // Compression is never asked for on in-process calls.
            return Err(ApiError::new(
                Code::Internal,
                "the reply was compressed although no compression was asked for",
            ));
        }
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(self.buffer.split_to(length).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_fit_the_header() {
        assert_eq!(grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(grpc_timeout(Duration::from_micros(10)), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(10_000_000)), "99999999m");
    }
}
