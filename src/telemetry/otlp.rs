//! OpenTelemetry traces over OTLP (HTTP/protobuf), built with the `otlp` feature and switched
//! on by `--otlp-endpoint` (`telemetry.otlp_endpoint`).
//!
//! The `tracing` spans contextd makes are what is exported: `rpc` (the call, with its method,
//! door and request id), `turn`, `model.call`, `tool.call` and `store.commit`. A batch
//! processor on a thread of its own sends them, with a blocking HTTP client, so exporting
//! never runs on the request path and needs no async runtime of its own.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::registry::LookupSpan;

/// Keeps the exporter running; dropping it sends what is still batched.
pub struct OtlpGuard(SdkTracerProvider);

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("contextd: the last traces could not be exported: {e}");
        }
    }
}

/// The URL spans are posted to: `endpoint` itself when it names a path, else its
/// `/v1/traces` (OTLP/HTTP's path for traces), so `http://collector:4318` works as given.
pub fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// A `tracing` layer that exports spans to `endpoint`, and its guard.
pub fn layer<S>(endpoint: &str) -> Result<(impl tracing_subscriber::Layer<S>, OtlpGuard), String>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .build()
        .map_err(|e| format!("cannot export traces to {endpoint}: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("contextd").build())
        .build();
    let tracer = provider.tracer("contextd");
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        OtlpGuard(provider),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_path_is_added_only_when_missing() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://h:1/custom/path"),
            "http://h:1/custom/path"
        );
    }
}
