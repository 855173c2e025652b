//! The Prometheus recorder and the names of every metric contextd exports.
//!
//! Everything is recorded through the `metrics` facade; [`install`] puts one Prometheus
//! recorder behind it per process (a second call, as when tests start several servers in one
//! process, returns the same handle) and [`render`] gives the text exposition format that
//! `GET /metrics` serves. Label sets are bounded: methods are the served gRPC methods (any
//! other path is `unknown`), codes the 17 gRPC codes, backends and tools the configured ones,
//! models the listed ones — except under a prefix backend (`openai/<model>`), where the model
//! is whatever name a session gives; the tenant label is off unless `metrics.tenant_labels`
//! is set.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// RPCs answered, by gRPC `method` (`contextd.v1.SessionService/GetSession`) and `code`
/// (`OK`, `NOT_FOUND`, …), on every door.
pub const RPC_REQUESTS_TOTAL: &str = "contextd_rpc_requests_total";
/// How long RPCs took until their last byte (streams: until they ended), by `method`.
pub const RPC_DURATION_SECONDS: &str = "contextd_rpc_duration_seconds";
/// Turns running now.
pub const TURNS_IN_FLIGHT: &str = "contextd_turns_in_flight";
/// Turns ended, by `model` and `finish_reason` (`stop`, `length`, `tool_calls`, `cancelled`,
/// `failed`, …).
pub const TURNS_TOTAL: &str = "contextd_turns_total";
/// Model tokens, by `backend` and `direction` (`input`, `output`).
pub const MODEL_TOKENS_TOTAL: &str = "contextd_model_tokens_total";
/// How long each model call took, from the request to its last event, by `backend`.
pub const MODEL_REQUEST_DURATION_SECONDS: &str = "contextd_model_request_duration_seconds";
/// Server-side tool calls, by `tool` and `outcome` (`ok`, `error`).
pub const TOOL_CALLS_TOTAL: &str = "contextd_tool_calls_total";
/// How long store operations took, by `store` (`memory`, `sqlite`, `postgres`) and
/// `operation` (the `SessionStore` method).
pub const STORE_OPERATION_DURATION_SECONDS: &str = "contextd_store_operation_duration_seconds";
/// Streams open now, by `kind` (`grpc`, `grpc-web`, `sse`, `lines`, `websocket`).
pub const STREAMS_OPEN: &str = "contextd_streams_open";
/// Connections open now, by `door` (`h2`, `http1`, `lines`, …).
pub const CONNECTIONS_OPEN: &str = "contextd_connections_open";
/// Requests and connections refused before any work, by `reason` (`max_connections`,
/// `handshake_timeout`, `rate_limited`, `unauthenticated`, `request_too_large`, …).
pub const REJECTED_TOTAL: &str = "contextd_rejected_total";

/// Upper bounds of the latency histograms, in seconds: from a cached read (sub-millisecond)
/// to a long model turn (minutes).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    120.0,
];

/// The process's recorder: `None` when another recorder was installed first (then nothing
/// contextd records is seen here, and `/metrics` says so).
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once for the process and describes every metric.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// How often histogram observations are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds the recorded histogram observations into their buckets every [`UPKEEP_EVERY`], on a
/// thread of its own (the recorder outlives any one runtime, as in tests). The recorder keeps
/// each observation until then: with nothing scraping `/metrics`, they piled up for ever —
/// about 170 bytes of RSS per model step, found by the soak run.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded only when /metrics is read");
    }
}

/// The metrics in Prometheus's text exposition format: `None` when no server of this process
/// installed the recorder (`metrics.enabled = false`), empty when another recorder was first.
pub fn render() -> Option<String> {
    match HANDLE.get()? {
        Some(handle) => {
            handle.run_upkeep();
            Some(handle.render())
        }
        None => Some(String::new()),
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RPC_REQUESTS_TOTAL,
        "RPCs answered, by gRPC method and code, on every door"
    );
    describe_histogram!(
        RPC_DURATION_SECONDS,
        Unit::Seconds,
        "RPC latency until the last byte, by gRPC method"
    );
    describe_gauge!(TURNS_IN_FLIGHT, "Turns running now");
    describe_counter!(TURNS_TOTAL, "Turns ended, by model and finish reason");
    describe_counter!(MODEL_TOKENS_TOTAL, "Model tokens, by backend and direction");
    describe_histogram!(
        MODEL_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Model call latency, by backend"
    );
    describe_counter!(
        TOOL_CALLS_TOTAL,
        "Server-side tool calls, by tool and outcome"
    );
    describe_histogram!(
        STORE_OPERATION_DURATION_SECONDS,
        Unit::Seconds,
        "Store operation latency, by store and operation"
    );
    describe_gauge!(STREAMS_OPEN, "Streams open now, by kind");
    describe_gauge!(CONNECTIONS_OPEN, "Connections open now, by door");
    describe_counter!(
        REJECTED_TOTAL,
        "Requests and connections refused before any work, by reason"
    );
}

/// Metric handles kept by their label values (one or two), so that a hot path finds its
/// counter or histogram instead of registering it on every call (building the key, owning
/// its label strings and hashing them into the recorder's registry: about 5 % of an
/// in-memory turn's CPU across the handful of metrics a turn records).
///
/// Only handles of contextd's own recorder are kept. Before [`install`] ran, or when another
/// recorder was installed first, each call registers with whatever recorder is there, as the
/// macros do: a handle from no recorder records nothing, for ever. The recorder keeps every
/// metric for the life of the process (no idle timeout), so a kept handle never goes stale.
/// Each distinct pair of label values is kept once, up to [`MAX_KEPT_HANDLES`] pairs per
/// metric (a model name under a prefix backend is the client's choice); pairs beyond those
/// register on every call.
pub struct Handles<H> {
    kept: LazyLock<RwLock<KeptHandles<H>>>,
}

/// Most label pairs whose handles one [`Handles`] keeps.
pub const MAX_KEPT_HANDLES: usize = 1024;

/// The handles of one [`Handles`], by their first and second label values.
struct KeptHandles<H> {
    by_labels: HashMap<String, HashMap<String, H>>,
    count: usize,
}

impl<H: Clone> KeptHandles<H> {
    fn find(&self, first: &str, second: &str) -> Option<H> {
        self.by_labels.get(first)?.get(second).cloned()
    }
}

impl<H> Default for KeptHandles<H> {
    fn default() -> Self {
        Self {
            by_labels: HashMap::new(),
            count: 0,
        }
    }
}

impl<H: Clone> Handles<H> {
    /// No handles yet; usable in a `static`.
    pub const fn new() -> Self {
        Self {
            kept: LazyLock::new(Default::default),
        }
    }

    /// The handle for labels `(first, second)` (`second` empty for a metric with one
    /// dynamic label), registered by `register` the first time.
    pub fn get(&self, first: &str, second: &str, register: impl FnOnce() -> H) -> H {
        if !matches!(HANDLE.get(), Some(Some(_))) {
            return register();
        }
        let found = self
            .kept
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .find(first, second);
        if let Some(handle) = found {
            return handle;
        }
        let mut kept = self.kept.write().unwrap_or_else(|e| e.into_inner());
        // Another caller may have registered it meanwhile.
        if let Some(handle) = kept.find(first, second) {
            return handle;
        }
        let handle = register();
        if kept.count < MAX_KEPT_HANDLES {
            kept.count += 1;
            kept.by_labels
                .entry(first.to_owned())
                .or_default()
                .insert(second.to_owned(), handle.clone());
        }
        handle
    }
}

impl<H: Clone> Default for Handles<H> {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts one refusal with `reason` in [`REJECTED_TOTAL`].
pub fn rejected(reason: &'static str) {
    metrics::counter!(REJECTED_TOTAL, "reason" => reason).increment(1);
}

/// Raises a gauge for as long as it lives (a stream, a turn).
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    /// Raises `gauge` by one until the guard is dropped.
    pub fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }

    /// A guard on [`STREAMS_OPEN`] of `kind`.
    pub fn stream(kind: &'static str) -> Self {
        Self::new(metrics::gauge!(STREAMS_OPEN, "kind" => kind))
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Records one RPC that ended with `code` after `seconds`, under the label set the caller
/// chose (`method`, and `tenant` when enabled).
pub fn rpc_done(method: &str, code: &str, tenant: Option<&str>, seconds: f64) {
    static REQUESTS: Handles<metrics::Counter> = Handles::new();
    static DURATIONS: Handles<metrics::Histogram> = Handles::new();
    match tenant {
        // Tenants come and go: their handles are not kept.
        Some(tenant) => {
            let (method, tenant) = (method.to_owned(), tenant.to_owned());
            metrics::counter!(RPC_REQUESTS_TOTAL, "method" => method.clone(), "code" => code.to_owned(), "tenant" => tenant.clone())
                .increment(1);
            metrics::histogram!(RPC_DURATION_SECONDS, "method" => method, "tenant" => tenant)
                .record(seconds);
        }
        None => {
            REQUESTS
                .get(method, code, || {
                    metrics::counter!(RPC_REQUESTS_TOTAL, "method" => method.to_owned(), "code" => code.to_owned())
                })
                .increment(1);
            DURATIONS
                .get(
                    method,
                    "",
                    || metrics::histogram!(RPC_DURATION_SECONDS, "method" => method.to_owned()),
                )
                .record(seconds);
        }
    }
}

/// The gRPC methods contextd serves, `package.Service/Method`, read once from the
/// descriptors: the only values the `method` label takes besides `unknown`.
/// Each maps to whether it streams (either way).
fn served_methods() -> &'static std::collections::HashMap<String, bool> {
    static METHODS: OnceLock<std::collections::HashMap<String, bool>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut methods: std::collections::HashMap<String, bool> = [
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(|m| (m.to_owned(), true))
        .collect();
        for set in [
            crate::api::FILE_DESCRIPTOR_SET,
            crate::api::MCP_FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            if let Ok(pool) = prost_reflect::DescriptorPool::decode(set) {
                for service in pool.services() {
                    for method in service.methods() {
                        methods.insert(
                            format!("{}/{}", service.full_name(), method.name()),
                            method.is_client_streaming() || method.is_server_streaming(),
                        );
                    }
                }
            }
        }
        methods
    })
}

/// The `method` label of a request path: `package.Service/Method` when contextd serves it,
/// `unknown` otherwise (so that random paths cannot grow the label set).
pub fn method_label(path: &str) -> String {
    method_of(path).0
}

/// [`method_label`] and whether the method streams.
pub fn method_of(path: &str) -> (String, bool) {
    let method = path.trim_start_matches('/');
    match served_methods().get(method) {
        Some(streams) => (method.to_owned(), *streams),
        None => ("unknown".to_owned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            method_label("/contextd.v1.SessionService/GetSession"),
            "contextd.v1.SessionService/GetSession"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/x.Y/Z"), "unknown");
        assert_eq!(method_label("/contextd.v1.SessionService/Nope"), "unknown");
    }

    #[test]
    fn handles_are_kept_per_label_pair_up_to_a_bound() {
        assert!(install().is_some(), "contextd's recorder");
        let handles: Handles<metrics::Counter> = Handles::new();
        let registered = std::cell::Cell::new(0);
        let register = || {
            registered.set(registered.get() + 1);
            metrics::counter!("contextd_test_handles_total")
        };
        for _ in 0..3 {
            handles.get("a", "b", register).increment(1);
        }
        assert_eq!(registered.get(), 1, "registered once, then found");
        handles.get("a", "c", register).increment(1);
        handles.get("a", "c", register).increment(1);
        assert_eq!(registered.get(), 2, "another pair is another handle");
        for i in 2..MAX_KEPT_HANDLES {
            handles.get(&i.to_string(), "", register).increment(1);
        }
        assert_eq!(registered.get(), MAX_KEPT_HANDLES);
        // Full: a new pair registers on every call; the kept ones are still found.
        handles.get("new", "", register).increment(1);
        handles.get("new", "", register).increment(1);
        handles.get("a", "b", register).increment(1);
        assert_eq!(registered.get(), MAX_KEPT_HANDLES + 2);
    }
}
