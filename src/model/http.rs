//! What the HTTP model backends share: the API key, the client, retries with backoff, error
//! mapping, and a server-sent-events stream bounded by the first-token, idle and total
//! timeouts.
//!
//! Retries happen only before the first streamed event: once a provider has started
//! answering, a failure ends the step (the engine then stores nothing), so a reply is never
//! produced twice. Keys travel only in request headers; every text that leaves this module
//! (errors, log lines) is built without them, and provider messages are scrubbed of the key
//! in case a provider echoes it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use tokio::time::Instant;

use super::{ModelError, ModelEvent, ModelStream};
use crate::config::BackendConfig;

/// Longest provider error text kept in a status message.
const MAX_PROVIDER_MESSAGE: usize = 400;
/// Most bytes of an error body read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// An API key. Its `Debug` output never shows it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key, for a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Reads a backend's key from the variable or file its configuration names. `Ok(None)`: none
/// configured.
pub fn load_api_key(config: &BackendConfig) -> Result<Option<ApiKey>, String> {
    let name = &config.name;
    if !config.api_key_env.is_empty() {
        return match std::env::var(&config.api_key_env) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(ApiKey(key.trim().to_string()))),
            _ => Err(format!(
                "backend {name:?}: the environment variable {} (api_key_env) is not set or empty",
                config.api_key_env
            )),
        };
    }
    if let Some(path) = &config.api_key_file {
        return match std::fs::read_to_string(path) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(ApiKey(key.trim().to_string()))),
            Ok(_) => Err(format!(
                "backend {name:?}: the key file {} (api_key_file) is empty",
                path.display()
            )),
            Err(e) => Err(format!(
                "backend {name:?}: cannot read the key file {} (api_key_file): {e}",
                path.display()
            )),
        };
    }
    Ok(None)
}

/// Retry and timeout settings of one backend.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From sending a request to its first streamed event.
    pub first_token: Duration,
    /// Between streamed events.
    pub idle: Duration,
    /// A whole model step.
    pub total: Duration,
    /// Retries before the first event.
    pub max_retries: u32,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

/// A request ready to send (and to send again on a retry).
pub struct Prepared {
    /// Full URL.
    pub url: String,
    /// Headers, including the key.
    pub headers: HeaderMap,
    /// JSON body.
    pub body: Vec<u8>,
}

/// The HTTP side of one configured backend.
pub struct HttpBackend {
    /// Backend name (the model prefix).
    pub name: String,
    /// Endpoint root without a trailing slash.
    pub endpoint: String,
    key: Option<ApiKey>,
    key_source: String,
    client: reqwest::Client,
    timing: Timing,
}

impl std::fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBackend")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl HttpBackend {
    /// Builds the client of a configured backend and loads its key.
    pub fn new(config: &BackendConfig) -> Result<Self, String> {
        // reqwest is built without a bundled crypto provider; ring is installed once for the
        // process (a second install is refused harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = load_api_key(config)?;
        let key_source = if !config.api_key_env.is_empty() {
            format!("environment variable {}", config.api_key_env)
        } else if let Some(path) = &config.api_key_file {
            format!("key file {}", PathBuf::from(path).display())
        } else {
            "no api_key_env or api_key_file configured".to_string()
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                format!(
                    "backend {:?}: cannot build its HTTP client: {e}",
                    config.name
                )
            })?;
        Ok(Self {
            name: config.name.clone(),
            endpoint: config.endpoint(),
            key,
            key_source,
            client,
            timing: Timing {
                first_token: Duration::from_millis(config.first_token_timeout_ms),
                idle: Duration::from_millis(config.idle_timeout_ms),
                total: Duration::from_millis(config.total_timeout_ms),
                max_retries: config.max_retries,
                retry_base: Duration::from_millis(config.retry_base_ms),
                retry_max: Duration::from_millis(config.retry_max_ms.max(config.retry_base_ms)),
            },
        })
    }

    /// The key, if one is configured.
    pub fn key(&self) -> Option<&ApiKey> {
        self.key.as_ref()
    }

    /// The model name the provider knows: the session's model without `<name>/`.
    pub fn provider_model<'a>(&self, model: &'a str) -> &'a str {
        model
            .strip_prefix(self.name.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(model)
    }

    /// `text` with every occurrence of the key replaced.
    pub fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) if !key.0.is_empty() => text.replace(&key.0, "[redacted]"),
            _ => text.to_string(),
        }
    }

    fn unavailable(&self, message: impl Into<String>) -> ModelError {
        ModelError::Unavailable {
            backend: self.name.clone(),
            message: self.redact(&message.into()),
        }
    }

    /// A JSON content-type header map with `extra` headers.
    pub fn headers(&self, extra: &[(&'static str, String)]) -> Result<HeaderMap, ModelError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        for (name, value) in extra {
            let mut value = HeaderValue::from_str(value).map_err(|_| ModelError::Rejected {
                backend: self.name.clone(),
                // Never the value: it may be the key.
                message: format!("the {name} header value is not valid HTTP"),
            })?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), value);
        }
        Ok(headers)
    }

    /// Sends `request` (retrying before the first event) and streams its events through
    /// `parser`. Nothing happens until the stream is polled; dropping it drops the connection.
    pub fn stream<P: SseParser>(self: &Arc<Self>, request: Prepared, parser: P) -> ModelStream {
        let run = Run {
            http: self.clone(),
            request,
            parser,
            events: None,
            pending: VecDeque::new(),
            deadline: None,
            got_first: false,
            done: false,
        };
        Box::pin(futures_util::stream::unfold(run, |mut run| async move {
            let item = run.next().await?;
            Some((item, run))
        }))
    }

    /// Sends the request until it succeeds or fails for good; returns the event stream.
    ///
    /// backon drives the retries: up to `max_retries` more attempts after the first, each
    /// after a jittered exponential delay (see [`retry_delays`]) or the provider's
    /// `Retry-After`, at most `retry_max`, and none that would end past the step's deadline.
    async fn open(&self, request: &Prepared, deadline: Instant) -> Result<EventStream, ModelError> {
        use backon::Retryable;
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let send_once = || async {
            let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            self.attempt(request, deadline, attempt).await
        };
        let retry_max = self.timing.retry_max;
        let result = send_once
            .retry(retry_delays(self.timing))
            .when(|failure: &Failure| failure.retry)
            .adjust(|failure: &Failure, delay| {
                // `None`: every retry was made; the provider's Retry-After adds none.
                let delay = failure.retry_after.unwrap_or(delay?).min(retry_max);
                (Instant::now() + delay < deadline).then_some(delay)
            })
            .notify(|failure: &Failure, delay| {
                tracing::warn!(
                    backend = %self.name,
                    attempt = attempts.load(std::sync::atomic::Ordering::Relaxed),
                    delay_ms = delay.as_millis() as u64,
                    error = %failure.error,
                    detail = %failure.detail,
                    "model request failed; retrying"
                );
            })
            .await;
        result.map_err(|failure| {
            tracing::warn!(
                backend = %self.name,
                error = %failure.error,
                detail = %failure.detail,
                "model request failed"
            );
            failure.error
        })
    }

    /// One attempt at sending the request.
    async fn attempt(
        &self,
        request: &Prepared,
        deadline: Instant,
        attempt: u32,
    ) -> Result<EventStream, Failure> {
        let send = self
            .client
            .post(&request.url)
            .headers(request.headers.clone())
            .body(request.body.clone())
            .send();
        let wait = self
            .timing
            .first_token
            .min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, send).await {
            Err(_) => Err(Failure::fatal(
                self.unavailable(format!(
                    "no response within {} ms (first_token_timeout_ms / total_timeout_ms)",
                    wait.as_millis()
                )),
                format!(
                    "no response from {} within {} ms",
                    self.endpoint,
                    wait.as_millis()
                ),
            )),
            // Where and why only in the log: addresses and OS errors are not for callers.
            Ok(Err(e)) if e.is_connect() => Err(Failure {
                error: self.unavailable("cannot connect to the provider"),
                detail: format!("cannot connect to {}: {}", self.endpoint, error_chain(&e)),
                retry: true,
                retry_after: None,
            }),
            Ok(Err(e)) => Err(Failure::fatal(
                self.unavailable("the request to the provider failed"),
                format!("request to {} failed: {}", self.endpoint, error_chain(&e)),
            )),
            Ok(Ok(response)) if response.status().is_success() => {
                let events: EventStream = Box::pin(response.bytes_stream().eventsource());
                Ok(events)
            }
            Ok(Ok(response)) => {
                let status = response.status();
                let retry_after = retry_after(response.headers());
                let body = read_error_body(response).await;
                Err(Failure {
                    error: self.status_error(status, &body, attempt),
                    detail: format!(
                        "HTTP {} from {}: {}",
                        status.as_u16(),
                        self.endpoint,
                        self.redact(&provider_message(&body))
                    ),
                    retry: retryable(status),
                    retry_after,
                })
            }
        }
    }

    /// Maps a provider's HTTP error to a model error. A refused key becomes "rejected
    /// contextd's credentials" (where the key comes from is logged here, not told); other
    /// 4xx answers are summarized by status, the provider's own text going to the log.
    pub fn status_error(&self, status: StatusCode, body: &str, attempts: u32) -> ModelError {
        let backend = self.name.clone();
        match status.as_u16() {
            // The body of a refused key may quote part of it: it is not used.
            code @ (401 | 403) => {
                tracing::warn!(
                    backend = %self.name,
                    http_status = code,
                    key_source = %self.key_source,
                    "the model provider refused contextd's credentials; check the key configured for this backend"
                );
                if code == 401 {
                    ModelError::Unauthenticated { backend }
                } else {
                    ModelError::PermissionDenied { backend }
                }
            }
            429 => ModelError::RateLimited { backend, attempts },
            code => {
                let message = self.redact(&provider_message(body));
                if is_context_length_error(&message) {
                    ModelError::ContextTooLong { backend, message }
                } else if status.is_server_error() || code == 408 || code == 409 {
                    ModelError::Unavailable {
                        backend,
                        message: format!("HTTP {code} from the provider"),
                    }
                } else {
                    tracing::warn!(
                        backend = %self.name,
                        http_status = code,
                        provider_message = %message,
                        "the model provider refused the request"
                    );
                    ModelError::Rejected {
                        backend,
                        message: format!("HTTP {code}: {}", summarize_4xx(code)),
                    }
                }
            }
        }
    }

    /// Maps an error reported inside the stream (`kind` is the provider's error type, if any).
    pub fn stream_error(&self, kind: &str, message: &str) -> ModelError {
        let message = self.redact(&truncate(message));
        let backend = self.name.clone();
        if is_context_length_error(&message) {
            return ModelError::ContextTooLong { backend, message };
        }
        match kind {
            "authentication_error" | "permission_error" => {
                tracing::warn!(
                    backend = %self.name,
                    key_source = %self.key_source,
                    provider_message = %message,
                    "the model provider refused contextd's credentials mid-stream"
                );
                if kind == "authentication_error" {
                    ModelError::Unauthenticated { backend }
                } else {
                    ModelError::PermissionDenied { backend }
                }
            }
            "rate_limit_error" => ModelError::RateLimited {
                backend,
                attempts: 1,
            },
            "invalid_request_error" => {
                tracing::warn!(
                    backend = %self.name,
                    provider_message = %message,
                    "the model provider refused the request mid-stream"
                );
                ModelError::Rejected {
                    backend,
                    message: summarize_4xx(400).to_owned(),
                }
            }
            _ => ModelError::Unavailable {
                backend,
                message: format!("the provider reported an error mid-stream: {message}"),
            },
        }
    }
}

/// Turns a provider's server-sent events into model events.
pub trait SseParser: Send + 'static {
    /// Handles one event; returns the model events it completes.
    fn on_event(&mut self, http: &HttpBackend, event: Event)
    -> Result<Vec<ModelEvent>, ModelError>;
    /// The stream ended: the remaining events, or an error when the reply is incomplete.
    fn on_end(&mut self, http: &HttpBackend) -> Result<Vec<ModelEvent>, ModelError>;
    /// Whether the provider said the reply is complete (later events are not read).
    fn complete(&self) -> bool;
}

type EventStream = Pin<
    Box<
        dyn Stream<Item = Result<Event, eventsource_stream::EventStreamError<reqwest::Error>>>
            + Send,
    >,
>;

/// One model step in flight.
struct Run<P> {
    http: Arc<HttpBackend>,
    request: Prepared,
    parser: P,
    events: Option<EventStream>,
    pending: VecDeque<ModelEvent>,
    deadline: Option<Instant>,
    got_first: bool,
    done: bool,
}

impl<P: SseParser> Run<P> {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let deadline = *self
                .deadline
                .get_or_insert_with(|| Instant::now() + self.http.timing.total);
            if self.events.is_none() {
                match self.http.open(&self.request, deadline).await {
                    Ok(events) => self.events = Some(events),
                    Err(error) => return Some(self.fail(error)),
                }
            }
            let events = self.events.as_mut()?;
            let (limit, which) = if self.got_first {
                (self.http.timing.idle, "idle_timeout_ms")
            } else {
                (self.http.timing.first_token, "first_token_timeout_ms")
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let (wait, which) = if left < limit {
                (left, "total_timeout_ms")
            } else {
                (limit, which)
            };
            let next = tokio::time::timeout(wait, events.next()).await;
            let ended = matches!(next, Ok(None));
            let outcome = match next {
                Err(_) => Err(self.http.unavailable(format!(
                    "no streamed event within {} ms ({which})",
                    wait.as_millis()
                ))),
                Ok(None) => self.parser.on_end(&self.http),
                Ok(Some(Err(e))) => {
                    tracing::warn!(
                        backend = %self.http.name,
                        detail = %self.http.redact(&stream_error_text(&e)),
                        "the model's stream was cut"
                    );
                    Err(self
                        .http
                        .unavailable("the stream was cut before the reply was complete"))
                }
                Ok(Some(Ok(event))) => {
                    self.got_first = true;
                    self.parser.on_event(&self.http, event)
                }
            };
            match outcome {
                Ok(events) => {
                    self.pending.extend(events);
                    if ended || self.parser.complete() {
                        // Done: release the connection now rather than when the engine drops us.
                        self.done = true;
                        self.events = None;
                    }
                }
                Err(error) => return Some(self.fail(error)),
            }
        }
    }

    fn fail(&mut self, error: ModelError) -> Result<ModelEvent, ModelError> {
        self.done = true;
        self.events = None;
        self.pending.clear();
        Err(error)
    }
}

fn stream_error_text(error: &eventsource_stream::EventStreamError<reqwest::Error>) -> String {
    match error {
        eventsource_stream::EventStreamError::Transport(e) => error_chain(e),
        other => other.to_string(),
    }
}

/// An error with its causes (reqwest's own text is often just "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` in seconds (or an HTTP date), or OpenAI's `retry-after-ms`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let when = httpdate_to_system_time(value)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP servers send.
fn httpdate_to_system_time(value: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    u64::try_from(secs)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
}

/// Why one attempt failed, for the retry loop.
struct Failure {
    /// What the caller is told if this is the last attempt.
    error: ModelError,
    /// What the log is told: the endpoint, the OS error, the provider's text.
    detail: String,
    /// Whether another attempt may succeed.
    retry: bool,
    /// The provider's `Retry-After`, which replaces the backoff delay.
    retry_after: Option<Duration>,
}

impl Failure {
    fn fatal(error: ModelError, detail: String) -> Self {
        Self {
            error,
            detail,
            retry: false,
            retry_after: None,
        }
    }
}

/// The delays between attempts: `max_retries` of them, exponential from `retry_base`
/// (doubling, at most `retry_max`), each a random delay between half and all of that.
fn retry_delays(timing: Timing) -> impl backon::Backoff {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(timing.retry_base)
        .with_max_delay(timing.retry_max)
        .with_factor(2.0)
        .with_max_times(timing.max_retries as usize)
        .build()
        .map(|full| {
            let half = full / 2;
            half + Duration::from_micros(fastrand::u64(0..=half.as_micros() as u64))
        })
}

/// What a provider's 4xx means for the caller, without the provider's own words.
fn summarize_4xx(code: u16) -> &'static str {
    match code {
        400 | 422 => "the provider refused the request as invalid",
        404 => "the provider does not know this model or endpoint; check the session's model name",
        413 => "the request is too large for the provider",
        _ => "the provider refused the request",
    }
}

async fn read_error_body(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_secs(5), chunks.next()).await
    {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The human part of a provider's error body: `error.message` (OpenAI, Anthropic, vLLM,
/// Ollama), or `error` as a string, or the body itself.
pub fn provider_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    });
    let message = message.unwrap_or_else(|| body.trim().to_string());
    if message.is_empty() {
        "(no details)".to_string()
    } else {
        truncate(&message)
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_PROVIDER_MESSAGE {
        return text.to_string();
    }
    let mut end = MAX_PROVIDER_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Whether a provider's message says the prompt is longer than the model's window (the
/// wordings of OpenAI, Anthropic, vLLM, llama.cpp and Ollama).
pub fn is_context_length_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "context length",
        "prompt is too long",
        "context window",
        "exceeds the context",
        "too many tokens",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        let ms = Duration::from_millis;
        let timing = Timing {
            first_token: ms(1),
            idle: ms(1),
            total: ms(1),
            max_retries: 30,
            retry_base: ms(100),
            retry_max: ms(1000),
        };
        for _ in 0..50 {
            let delays: Vec<Duration> = retry_delays(timing).collect();
            assert_eq!(delays.len(), 30);
            assert!(
                delays[0] >= ms(50) && delays[0] <= ms(100),
                "{:?}",
                delays[0]
            );
            assert!(
                delays[2] >= ms(200) && delays[2] <= ms(400),
                "{:?}",
                delays[2]
            );
            assert!(delays.iter().all(|d| *d <= ms(1000)));
        }
        let none = Timing {
            max_retries: 0,
            ..timing
        };
        assert_eq!(retry_delays(none).count(), 0);
    }

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        assert_eq!(
            httpdate_to_system_time("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(std::time::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
    }

    #[test]
    fn provider_messages_and_context_errors() {
        let openai = r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert!(is_context_length_error(&provider_message(openai)));
        let anthropic = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert!(is_context_length_error(&provider_message(anthropic)));
        assert_eq!(
            provider_message(r#"{"error":"model not found"}"#),
            "model not found"
        );
        assert!(!is_context_length_error("model not found"));
    }

    #[test]
    fn keys_are_redacted() {
        let mut config = BackendConfig::new("b", crate::config::BackendKind::Openai, "http://x");
        let path = std::env::temp_dir().join(format!("contextd-key-{}", std::process::id()));
        std::fs::write(&path, "sk-secret-123\n").unwrap();
        config.api_key_file = Some(path.clone());
        let http = HttpBackend::new(&config).unwrap();
        std::fs::remove_file(path).unwrap();
        assert_eq!(http.key().unwrap().expose(), "sk-secret-123");
        assert!(!format!("{http:?}").contains("sk-secret"));
        assert_eq!(http.redact("bad key sk-secret-123!"), "bad key [redacted]!");
        let error = http.status_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided: sk-secret-123",
            1,
        );
        assert!(!error.to_string().contains("sk-secret"));
        assert!(error.to_string().contains("'b'"));
        assert!(
            error
                .to_string()
                .contains("rejected contextd's credentials")
        );
        let error = http.status_error(
            StatusCode::NOT_FOUND,
            r#"{"error":{"message":"see http://internal.example/x"}}"#,
            1,
        );
        assert!(!error.to_string().contains("internal.example"), "{error}");
    }
}
