//! Cross-origin access for web pages (CORS), so that a page served from another origin can
//! call gRPC-Web, Connect and the JSON routes.
//!
//! Off unless `http.cors_origins` names origins: a server nobody configured for browsers
//! answers no preflight and sends no `Access-Control-*` headers, so browsers keep refusing
//! cross-origin calls as they do by default. The allowed and exposed headers are the ones the
//! gRPC-Web and Connect protocols carry their metadata, deadlines and statuses in; without
//! them exposed a page could not read a call's `grpc-status`.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(7200);

/// Request headers a cross-origin page may send.
const ALLOWED_HEADERS: [&str; 19] = [
    "content-type",
    "authorization",
    "x-request-id",
    "traceparent",
    "x-request-timeout",
    // gRPC-Web
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    // Connect
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
    "content-encoding",
    "accept-encoding",
    // gRPC metadata a client may forward as is
    "grpc-message",
    "grpc-status",
    "grpc-status-details-bin",
];

/// Response headers a cross-origin page may read.
const EXPOSED_HEADERS: [&str; 9] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
    "grpc-accept-encoding",
    "connect-content-encoding",
    "connect-accept-encoding",
    "content-encoding",
    "x-request-id",
];

/// The CORS layer for `origins` (`http.cors_origins`, already validated), or `None` when no
/// origin is allowed.
pub(crate) fn layer(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| {
                HeaderValue::from_str(origin)
                    .map_err(|_| format!("http.cors_origins: {origin:?} is not a valid origin"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    let names = |list: &[&'static str]| -> Vec<HeaderName> {
        list.iter()
            .map(|name| HeaderName::from_static(name))
            .collect()
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers(names(&ALLOWED_HEADERS))
            .expose_headers(names(&EXPOSED_HEADERS))
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_origins() {
        assert!(layer(&[]).unwrap().is_none());
        assert!(layer(&["*".to_owned()]).unwrap().is_some());
        assert!(
            layer(&["https://app.example.com".to_owned()])
                .unwrap()
                .is_some()
        );
    }
}
