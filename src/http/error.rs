//! Errors on the JSON doors, in Google's JSON error format (AIP-193):
//! `{"error": {"code": 404, "status": "NOT_FOUND", "message": "…", "details": [...]}}`.
//!
//! Every JSON door (HTTP/JSON, Server-Sent Events, JSON lines) answers failures with this one
//! body. The HTTP status comes from the gRPC code through [`http_status`], the one table of the
//! `google.rpc.Code` mapping, so a failure reads the same on every door.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::api::code_name;

/// The HTTP status of a gRPC code, as `google/rpc/code.proto` documents it.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The Connect protocol's name of a gRPC code (`not_found`, …). Connect answers each code with
/// the same HTTP status as [`http_status`] (its table is `google.rpc.Code`'s), so this is the
/// only Connect-specific part of the mapping.
pub(crate) fn connect_code(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A failed call on a JSON door.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// The canonical code.
    pub(crate) code: Code,
    /// What went wrong and what to fix.
    pub(crate) message: String,
    /// `google.rpc` detail messages (the call's request id is added when rendered).
    pub(crate) details: Vec<Detail>,
    /// The HTTP status when it is more precise than the code's (413, 415, …).
    pub(crate) http_status: Option<StatusCode>,
    /// How long to wait before retrying, when the refusal says (`Retry-After`).
    pub(crate) retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            http_status: None,
            retry_after: None,
        }
    }

    /// INVALID_ARGUMENT about one field, with a `google.rpc.BadRequest` detail naming it.
    pub(crate) fn bad_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut error = Self::new(Code::InvalidArgument, message.clone());
        error.details.push(Detail::BadRequest {
            field: field.to_owned(),
            description: message,
        });
        error
    }

    /// The same error answered with `status` instead of the code's own HTTP status.
    pub(crate) fn with_http_status(mut self, status: StatusCode) -> Self {
        self.http_status = Some(status);
        self
    }

    /// The HTTP status this error is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        self.http_status.unwrap_or_else(|| http_status(self.code))
    }

    /// The Connect protocol's error object: `{"code": "not_found", "message": "…", "details":
    /// [...]}`. Each detail is `{type, value, debug}`: its full message name, its protobuf
    /// encoding (base64, unpadded) and the same in JSON; the call's request id comes last as a
    /// `google.rpc.RequestInfo`.
    pub(crate) fn connect_body(&self) -> String {
        let mut body = json!({ "code": connect_code(self.code), "message": self.message });
        let details: Vec<Value> = self
            .details_with_request_id()
            .iter()
            .map(Detail::connect)
            .collect();
        if !details.is_empty() {
            body["details"] = Value::Array(details);
        }
        body.to_string()
    }

    /// The error's details followed by the call's request id, when there is one.
    fn details_with_request_id(&self) -> Vec<Detail> {
        let mut details = self.details.clone();
        if let Some(id) = crate::telemetry::request_id::current() {
            details.push(Detail::RequestInfo(id.as_str().to_owned()));
        }
        details
    }

    /// The AIP-193 body: `{"error": {"code", "status", "message", "details"}}`, in that order;
    /// the details end with the call's request id as a `google.rpc.RequestInfo`.
    pub(crate) fn body(&self) -> String {
        let details: Vec<Value> = self
            .details_with_request_id()
            .iter()
            .map(Detail::json)
            .collect();
        let error = ErrorBody {
            code: self.status().as_u16(),
            status: code_name(self.code),
            message: &self.message,
            details: &details,
        };
        // A struct keeps the documented member order (a JSON map would sort it).
        serde_json::to_string(&Envelope { error }).unwrap_or_default()
    }
}

/// A `google.rpc` detail of an error, rendered in each door's form: AIP-193's JSON with
/// `@type`, or Connect's `{type, value, debug}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Detail {
    /// Which request field is wrong and why (`google.rpc.BadRequest`).
    BadRequest {
        /// The field's path, as the caller spelled it.
        field: String,
        /// What is wrong with it.
        description: String,
    },
    /// How long to wait before retrying (`google.rpc.RetryInfo`).
    RetryInfo(Duration),
    /// The call's request id, to quote when asking about it (`google.rpc.RequestInfo`).
    RequestInfo(String),
}

impl Detail {
    /// The message's full name (`google.rpc.BadRequest`, …).
    fn type_name(&self) -> &'static str {
        match self {
            Detail::BadRequest { .. } => "google.rpc.BadRequest",
            Detail::RetryInfo(_) => "google.rpc.RetryInfo",
            Detail::RequestInfo(_) => "google.rpc.RequestInfo",
        }
    }

    /// The message in proto3 JSON, without `@type`.
    fn fields(&self) -> Value {
        match self {
            Detail::BadRequest { field, description } => json!({
                "fieldViolations": [{ "field": field, "description": description }],
            }),
            Detail::RetryInfo(delay) => json!({
                "retryDelay": format!("{}.{:03}s", delay.as_secs(), delay.subsec_millis()),
            }),
            Detail::RequestInfo(id) => json!({ "requestId": id }),
        }
    }

    /// The message in protobuf's wire format.
    fn encode(&self) -> Vec<u8> {
        use prost::Message;
        use tonic_types::pb;
        match self {
            Detail::BadRequest { field, description } => pb::BadRequest {
                field_violations: vec![pb::bad_request::FieldViolation {
                    field: field.clone(),
                    description: description.clone(),
                    ..Default::default()
                }],
            }
            .encode_to_vec(),
            Detail::RetryInfo(delay) => pb::RetryInfo {
                retry_delay: prost_types::Duration::try_from(*delay).ok(),
            }
            .encode_to_vec(),
            Detail::RequestInfo(id) => pb::RequestInfo {
                request_id: id.clone(),
                serving_data: String::new(),
            }
            .encode_to_vec(),
        }
    }

    /// AIP-193's form: `{"@type": "type.googleapis.com/<name>", …fields}`.
    fn json(&self) -> Value {
        let mut value = json!({ "@type": format!("type.googleapis.com/{}", self.type_name()) });
        if let (Value::Object(object), Value::Object(fields)) = (&mut value, self.fields()) {
            object.extend(fields);
        }
        value
    }

    /// Connect's form: `{"type": <name>, "value": <base64 protobuf>, "debug": <JSON>}`.
    fn connect(&self) -> Value {
        use base64::Engine;
        json!({
            "type": self.type_name(),
            "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.encode()),
            "debug": self.fields(),
        })
    }
}

/// `{"error": …}`.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    error: ErrorBody<'a>,
}

/// The members of an AIP-193 error.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    code: u16,
    status: &'static str,
    message: &'a str,
    details: &'a [Value],
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let mut error = Self::new(status.code(), status.message());
        if let Some(bad) = status.get_details_bad_request() {
            error
                .details
                .extend(
                    bad.field_violations
                        .into_iter()
                        .map(|violation| Detail::BadRequest {
                            field: violation.field,
                            description: violation.description,
                        }),
                );
        }
        if let Some(delay) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
            error.details.push(Detail::RetryInfo(delay));
            error.retry_after = Some(delay);
        }
        error
    }
}

/// `Retry-After` for `delay`: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_header(delay: Duration) -> HeaderValue {
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(delay) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_header(delay));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_documented_status() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    /// The Connect protocol's table (connectrpc.com/docs/protocol, "Error codes"): its HTTP
    /// statuses are the ones [`http_status`] gives.
    #[test]
    fn connect_codes_and_statuses() {
        let table = [
            (Code::Cancelled, "canceled", 499),
            (Code::Unknown, "unknown", 500),
            (Code::InvalidArgument, "invalid_argument", 400),
            (Code::DeadlineExceeded, "deadline_exceeded", 504),
            (Code::NotFound, "not_found", 404),
            (Code::AlreadyExists, "already_exists", 409),
            (Code::PermissionDenied, "permission_denied", 403),
            (Code::ResourceExhausted, "resource_exhausted", 429),
            (Code::FailedPrecondition, "failed_precondition", 400),
            (Code::Aborted, "aborted", 409),
            (Code::OutOfRange, "out_of_range", 400),
            (Code::Unimplemented, "unimplemented", 501),
            (Code::Internal, "internal", 500),
            (Code::Unavailable, "unavailable", 503),
            (Code::DataLoss, "data_loss", 500),
            (Code::Unauthenticated, "unauthenticated", 401),
        ];
        for (code, name, status) in table {
            assert_eq!(connect_code(code), name);
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
        let body: Value =
            serde_json::from_str(&ApiError::new(Code::NotFound, "no session s").connect_body())
                .unwrap();
        assert_eq!(
            body,
            json!({"code": "not_found", "message": "no session s"})
        );
    }

    #[tokio::test]
    async fn bodies_carry_the_request_id() {
        use crate::telemetry::request_id::{RequestId, scope};
        let id = RequestId::from_header(Some(&http::HeaderValue::from_static("req-7")));
        let (body, connect) = scope(id, async {
            let error = ApiError::new(Code::NotFound, "no session s");
            (error.body(), error.connect_body())
        })
        .await;
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["message"], "no session s");
        assert_eq!(body["error"]["details"][0]["requestId"], "req-7");
        let connect: Value = serde_json::from_str(&connect).unwrap();
        assert_eq!(connect["code"], "not_found");
        assert_eq!(connect["details"][0]["type"], "google.rpc.RequestInfo");
        assert_eq!(connect["details"][0]["value"], "CgVyZXEtNw");
        assert_eq!(connect["details"][0]["debug"]["requestId"], "req-7");
        assert_eq!(
            Detail::RequestInfo("x".repeat(128)).encode()[..3],
            [0x0a, 0x80, 0x01]
        );
    }

    #[test]
    fn retry_info_becomes_a_detail_and_retry_after() {
        let status = crate::server::status::retry_status(
            Code::ResourceExhausted,
            "slow down",
            Duration::from_millis(1200),
        );
        let response = ApiError::from(status).into_response();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let error = ApiError::from(crate::server::status::retry_status(
            Code::ResourceExhausted,
            "slow down",
            Duration::from_millis(1200),
        ));
        let body: Value = serde_json::from_str(&error.body()).unwrap();
        assert_eq!(body["error"]["details"][0]["retryDelay"], "1.200s");
    }

    /// Every detail reaches Connect callers as `{type, value, debug}`, and the value decodes
    /// as the named message (what connect-es's `findDetails` does).
    #[test]
    fn connect_details_are_typed_and_decodable() {
        use base64::Engine;
        use prost::Message;
        let mut error = ApiError::from(crate::server::status::retry_status(
            Code::ResourceExhausted,
            "slow down",
            Duration::from_millis(1500),
        ));
        error.details.insert(
            0,
            Detail::BadRequest {
                field: "message".into(),
                description: "too long".into(),
            },
        );
        let body: Value = serde_json::from_str(&error.connect_body()).unwrap();
        let details = body["details"].as_array().expect("details");
        assert_eq!(details.len(), 2, "{body}");
        assert_eq!(details[0]["type"], "google.rpc.BadRequest");
        assert_eq!(
            details[0]["debug"]["fieldViolations"][0]["field"],
            "message"
        );
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(details[0]["value"].as_str().unwrap())
            .unwrap();
        let bad = tonic_types::pb::BadRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(bad.field_violations[0].description, "too long");
        assert_eq!(details[1]["type"], "google.rpc.RetryInfo");
        assert_eq!(details[1]["debug"]["retryDelay"], "1.500s");
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(details[1]["value"].as_str().unwrap())
            .unwrap();
        let retry = tonic_types::pb::RetryInfo::decode(bytes.as_slice()).unwrap();
        assert_eq!(retry.retry_delay.unwrap().nanos, 500_000_000);
    }

    #[test]
    fn body_has_the_aip_193_shape() {
        let text = ApiError::bad_field("page_size", "page_size must be a number").body();
        assert!(text.starts_with(r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","#));
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["code"], 400);
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(body["error"]["message"], "page_size must be a number");
        assert_eq!(
            body["error"]["details"][0]["fieldViolations"][0]["field"],
            "page_size"
        );
        let body = ApiError::new(Code::InvalidArgument, "too big")
            .with_http_status(StatusCode::PAYLOAD_TOO_LARGE)
            .body();
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], 413);
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    }
}
