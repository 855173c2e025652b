//! Per-tenant request rates as one tower layer on the gRPC services.
//!
//! Every door reaches the services through this layer: gRPC, gRPC-Web and Connect directly,
//! the JSON doors by their in-process calls (`crate::http::grpc`); `/mcp`, which calls the
//! engine itself, sits behind the same buckets ([`QuotaLayer::for_http`]). So a tenant's rate
//! counts every request it makes, whichever door it comes through. The tenant is the caller's
//! [`Scope`](crate::domain::Scope) in the request's extensions, which the authentication layer
//! outside this one fills (the `default` tenant when nothing does).
//!
//! The rate is a token bucket per tenant (`governor`'s GCRA, which behaves as one): refilled
//! at `limits.tenant_requests_per_second`, holding `limits.tenant_request_burst`. A request
//! over it is answered at once with RESOURCE_EXHAUSTED and `google.rpc.RetryInfo` saying
//! when the next one would pass; nothing waits, so a burst costs the server no queue. Health
//! checks are never limited: a load balancer's probes must not fail because a tenant is busy.
//!
//! Turn concurrency is not counted here but where turns begin
//! ([`crate::engine::Lifecycle::begin_turn`]): a Converse stream or an MCP session runs many
//! turns in one request, and a turn should count while it runs, not while its stream is open.

use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use futures_util::future::Either;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{Request, Response};
use tonic::Code;
use tower::{Layer, Service};

use super::scope::scope_of_extensions;
use super::status::retry_status;
use crate::config::Limits;
use crate::domain::TenantId;
use crate::http::error::ApiError;

/// How often the buckets of tenants that went quiet are dropped, so a stream of tenants that
/// each call once cannot grow the limiter's memory without bound.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(30);

/// Paths never limited: health checks.
const UNLIMITED_PREFIX: &str = "/grpc.health.v1.Health/";

/// The request-rate buckets of every tenant.
pub struct TenantRates {
    limiter: DefaultKeyedRateLimiter<TenantId>,
    per_second: NonZeroU32,
    burst: NonZeroU32,
}

impl TenantRates {
    /// Buckets refilled at `per_second` holding `burst` requests.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::with_quota(
            Quota::per_second(per_second).allow_burst(burst),
            per_second,
            burst,
        )
    }

    /// Buckets of `quota`, described in refusals as `per_second` with bursts of `burst`.
    fn with_quota(quota: Quota, per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota),
            per_second,
            burst,
        }
    }

    /// The buckets `limits` asks for; `None` when the rate limit is off.
    pub fn from_limits(limits: &Limits) -> Option<Self> {
        let per_second = NonZeroU32::new(limits.tenant_requests_per_second)?;
        let burst = NonZeroU32::new(limits.tenant_request_burst).unwrap_or(per_second);
        Some(Self::new(per_second, burst))
    }

    /// Takes one request from `tenant`'s bucket, or says how long until one would pass.
    pub fn check(&self, tenant: &TenantId) -> Result<(), Duration> {
        self.limiter
            .check_key(tenant)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Drops the buckets of tenants whose bucket has refilled (they are as good as new).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// How many tenants have a bucket now.
    pub fn tenants(&self) -> usize {
        self.limiter.len()
    }

    /// The refusal of a request over the rate, asking to retry after `wait`.
    fn refusal(&self, tenant: &TenantId, wait: Duration) -> tonic::Status {
        // A retry sooner than a millisecond is no retry advice at all.
        let wait = wait.max(Duration::from_millis(1));
        retry_status(
            Code::ResourceExhausted,
            format!(
                "tenant '{tenant}' is over its request rate of {} per second with bursts of {} (limits.tenant_requests_per_second, limits.tenant_request_burst); retry in {} ms",
                self.per_second,
                self.burst,
                wait.as_millis().max(1)
            ),
            wait,
        )
    }
}

/// Limits each tenant's request rate (see the module doc).
#[derive(Clone, Default)]
pub struct QuotaLayer {
    rates: Option<Arc<TenantRates>>,
    answer: Answer,
}

/// How a refusal is answered: in the protocol of the service behind the layer.
#[derive(Debug, Clone, Copy, Default)]
enum Answer {
    /// A gRPC status (trailers-only response).
    #[default]
    Grpc,
    /// HTTP 429 with the JSON doors' error body and `Retry-After`.
    Http,
}

impl QuotaLayer {
    /// The layer `limits` asks for (passing everything when the rate limit is off). Starts a
    /// task on the current runtime that forgets idle tenants' buckets; it ends when the last
    /// clone of the layer is dropped.
    pub fn new(limits: &Limits) -> Self {
        let rates = TenantRates::from_limits(limits).map(Arc::new);
        if let Some(rates) = &rates {
            tokio::spawn(forget_idle(Arc::downgrade(rates)));
        }
        Self {
            rates,
            answer: Answer::Grpc,
        }
    }

    /// The same buckets in front of a plain HTTP service (`/mcp`): refusals are HTTP 429
    /// with `Retry-After` instead of a gRPC status.
    pub fn for_http(&self) -> Self {
        Self {
            rates: self.rates.clone(),
            answer: Answer::Http,
        }
    }
}

/// Forgets idle buckets every [`FORGET_IDLE_EVERY`] while the buckets exist.
async fn forget_idle(rates: Weak<TenantRates>) {
    let mut ticks = tokio::time::interval(FORGET_IDLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match rates.upgrade() {
            Some(rates) => rates.forget_idle(),
            None => return,
        }
    }
}

impl<S> Layer<S> for QuotaLayer {
    type Service = QuotaService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QuotaService {
            inner,
            rates: self.rates.clone(),
            answer: self.answer,
        }
    }
}

/// The service of [`QuotaLayer`].
#[derive(Clone)]
pub struct QuotaService<S> {
    inner: S,
    rates: Option<Arc<TenantRates>>,
    answer: Answer,
}

impl<S, B> Service<Request<B>> for QuotaService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<
        std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(rates) = &self.rates
            && !request.uri().path().starts_with(UNLIMITED_PREFIX)
        {
            // Unauthenticated calls are refused behind this layer; until then they share the
            // default tenant's budget.
            let tenant = scope_of_extensions(request.extensions())
                .map(|scope| scope.tenant)
                .unwrap_or_default();
            if let Err(wait) = rates.check(&tenant) {
                crate::telemetry::metrics::rejected("rate_limited");
                let status = rates.refusal(&tenant, wait);
                let response = match self.answer {
                    Answer::Grpc => status.into_http::<Body>(),
                    Answer::Http => ApiError::from(status).into_response(),
                };
                let body = request.into_body();
                return Either::Left(Box::pin(async move {
                    super::drain::drain(body).await;
                    Ok(response)
                }));
            }
        }
        Either::Right(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(per_second: u32, burst: u32) -> TenantRates {
        TenantRates::new(
            NonZeroU32::new(per_second).unwrap(),
            NonZeroU32::new(burst).unwrap(),
        )
    }

    #[test]
    fn tenants_have_their_own_buckets() {
        // One request per hour: nothing refills while the test runs.
        let three = NonZeroU32::new(3).unwrap();
        let hourly = Quota::with_period(Duration::from_secs(3600)).unwrap();
        let rates = TenantRates::with_quota(hourly.allow_burst(three), NonZeroU32::MIN, three);
        let alpha = TenantId::new("alpha");
        let beta = TenantId::new("beta");
        for _ in 0..3 {
            rates.check(&alpha).unwrap();
        }
        let wait = rates.check(&alpha).unwrap_err();
        assert!(wait > Duration::from_secs(3000), "{wait:?}");
        // Alpha's spent bucket leaves beta's full.
        for _ in 0..3 {
            rates.check(&beta).unwrap();
        }
        assert!(rates.check(&beta).is_err());
        assert_eq!(rates.tenants(), 2);
    }

    #[test]
    fn refusals_say_when_to_retry() {
        let rates = rates(5, 1);
        let tenant = TenantId::default();
        rates.check(&tenant).unwrap();
        let wait = rates.check(&tenant).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        let status = rates.refusal(&tenant, wait);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains("limits.tenant_requests_per_second")
        );
        use tonic_types::StatusExt;
        assert!(status.get_details_retry_info().is_some());
    }

    #[test]
    fn idle_tenants_are_forgotten() {
        // A bucket of one refilled at 1000/s: idle again a millisecond after its request.
        let rates = rates(1000, 1);
        for i in 0..1000 {
            rates.check(&TenantId::new(format!("t{i}"))).unwrap();
        }
        assert_eq!(rates.tenants(), 1000);
        std::thread::sleep(Duration::from_millis(20));
        rates.forget_idle();
        assert_eq!(rates.tenants(), 0);
    }

    #[test]
    fn off_unless_configured() {
        assert!(TenantRates::from_limits(&Limits::default()).is_none());
        let limits = Limits {
            tenant_requests_per_second: 7,
            ..Limits::default()
        };
        let rates = TenantRates::from_limits(&limits).unwrap();
        assert_eq!(rates.burst.get(), 7);
    }
}
