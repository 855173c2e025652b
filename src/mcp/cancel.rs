//! `notifications/cancelled` on the stateless `/mcp`.
//!
//! rmcp's Streamable HTTP server, with no MCP session held, answers every notification
//! POST with 202 and drops it (`handle_post`'s stateless branch ignores
//! `ClientJsonRpcMessage::Notification`): a host that cancels a running `tools/call` would
//! otherwise leave the turn running until it finished on its own. [`CancelBridge`] sits in
//! front of the SDK's service and bridges that gap:
//!
//! - every POST body is read here first, at most `limits.max_request_bytes` (413 above, with a
//!   message naming the bound), then handed on unchanged;
//! - a `notifications/cancelled` body, once the SDK accepted it (202, after its Host and
//!   Origin checks), cancels the calls in flight whose JSON-RPC id is its `requestId`, among
//!   the caller's tenant's calls (another tenant cannot cancel them);
//! - every request carries the shared [`InFlight`] table in its extensions, so the
//!   `tools/call` handler registers its cancellation token under its id for as long as it runs.
//!
//! Request ids are chosen by each host, and stateless hosts are not told apart: two hosts of
//! one tenant running calls with the same id at once are cancelled together. A cancel that
//! arrives before its call registered finds nothing, which MCP allows ("the receiver may
//! ignore it").

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::domain::{Scope, TenantId};

/// A call in flight: the tenant and the JSON text of its JSON-RPC id (`1` and `"1"` differ).
type CallKey = (TenantId, String);

/// The `tools/call` requests running now, by tenant and JSON-RPC id.
///
/// One table for the whole `/mcp` door. A plain mutex: every use is a short map edit with
/// no `.await` under it.
#[derive(Default)]
pub struct InFlight {
    calls: Mutex<HashMap<CallKey, Vec<(u64, CancellationToken)>>>,
    next: AtomicU64,
}

/// Removes its call from the table when dropped (the call finished or was dropped).
pub struct Registered {
    table: Arc<InFlight>,
    key: CallKey,
    serial: u64,
}

impl InFlight {
    /// Registers `token` as the call `id` of `tenant` until the returned guard drops.
    pub fn register(
        self: &Arc<Self>,
        tenant: &TenantId,
        id: &Value,
        token: CancellationToken,
    ) -> Registered {
        let key = (tenant.clone(), id.to_string());
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(key.clone())
            .or_default()
            .push((serial, token));
        Registered {
            table: self.clone(),
            key,
            serial,
        }
    }

    /// Cancels every call of `tenant` whose id is `id`; answers how many there were.
    pub fn cancel(&self, tenant: &TenantId, id: &Value) -> usize {
        let calls = self.lock().remove(&(tenant.clone(), id.to_string()));
        let calls = calls.unwrap_or_default();
        for (_, token) in &calls {
            token.cancel();
        }
        calls.len()
    }

    /// The table; a poisoned lock is taken over (every edit leaves the map whole).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CallKey, Vec<(u64, CancellationToken)>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut calls = self.table.lock();
        if let Some(list) = calls.get_mut(&self.key) {
            list.retain(|(serial, _)| *serial != self.serial);
            if list.is_empty() {
                calls.remove(&self.key);
            }
        }
    }
}

/// The SDK's response type (its body boxed, infallible).
type McpResponse = http::Response<BoxBody<Bytes, Infallible>>;

/// A tower service in front of rmcp's `/mcp` service: bounds and reads each POST body,
/// acts on `notifications/cancelled`, and hands every request on with the [`InFlight`]
/// table in its extensions.
#[derive(Clone)]
pub struct CancelBridge<S> {
    inner: S,
    in_flight: Arc<InFlight>,
    max_request_bytes: usize,
}

impl<S> CancelBridge<S> {
    /// Wraps `inner`; bodies over `max_request_bytes` are refused with 413.
    pub fn new(inner: S, max_request_bytes: usize) -> Self {
        Self {
            inner,
            in_flight: Arc::default(),
            max_request_bytes,
        }
    }
}

impl<S, B> tower::Service<http::Request<B>> for CancelBridge<S>
where
    S: tower::Service<
            http::Request<Full<Bytes>>,
            Response = McpResponse,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = McpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<McpResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone that was made ready serves this request; the fresh clone waits for the
        // next (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let in_flight = self.in_flight.clone();
        let max = self.max_request_bytes;
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let bytes = match Limited::new(body, max).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => return Ok(refusal(&*error, max)),
            };
            let cancel = match (parts.method == http::Method::POST)
                .then(|| cancelled_request_id(&bytes))
                .flatten()
            {
                Some(id) => parts
                    .extensions
                    .get::<Scope>()
                    .map(|scope| (scope.tenant.clone(), id)),
                None => None,
            };
            parts.extensions.insert(in_flight.clone());
            let response = inner
                .call(http::Request::from_parts(parts, Full::new(bytes)))
                .await?;
            // Acted on only once the SDK accepted the notification (202), that is after its
            // Host and Origin checks: a page on a foreign origin cancels nothing.
            if let Some((tenant, id)) = cancel
                && response.status() == http::StatusCode::ACCEPTED
            {
                let cancelled = in_flight.cancel(&tenant, &id);
                tracing::info!(request = %id, cancelled, "MCP host cancelled a request");
            }
            Ok(response)
        })
    }
}

/// The `requestId` of a `notifications/cancelled` body, or `None` for any other body.
fn cancelled_request_id(body: &[u8]) -> Option<Value> {
    // Cheap refusal first: most bodies are requests, not this notification.
    if !body
        .windows(b"notifications/cancelled".len())
        .any(|w| w == b"notifications/cancelled")
    {
        return None;
    }
    let message: Value = serde_json::from_slice(body).ok()?;
    if message.get("id").is_some() || message["method"] != "notifications/cancelled" {
        return None;
    }
    match &message["params"]["requestId"] {
        id @ (Value::String(_) | Value::Number(_)) => Some(id.clone()),
        _ => None,
    }
}

/// 413 for a body over the bound, 400 for a body that could not be read.
fn refusal(error: &(dyn std::error::Error + Send + Sync + 'static), max: usize) -> McpResponse {
    let (status, text) = if error.is::<http_body_util::LengthLimitError>() {
        (
            http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Payload Too Large: the request body exceeds {max} bytes (limits.max_request_bytes)"
            ),
        )
    } else {
        (
            http::StatusCode::BAD_REQUEST,
            "Bad Request: the request body could not be read".to_string(),
        )
    };
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed())
        .expect("a status and a fixed header make a valid response")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_cancelled_notification_names_a_request() {
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 7, "reason": "user"}});
        assert_eq!(
            cancelled_request_id(cancel.to_string().as_bytes()),
            Some(json!(7))
        );
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "notifications/cancelled",
            "params": {"requestId": 7}});
        assert_eq!(cancelled_request_id(request.to_string().as_bytes()), None);
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}});
        assert_eq!(cancelled_request_id(call.to_string().as_bytes()), None);
        assert_eq!(cancelled_request_id(b"notifications/cancelled{"), None);
    }

    #[test]
    fn a_cancel_reaches_only_its_tenants_call_with_that_id() {
        let table = Arc::new(InFlight::default());
        let (a, b) = (TenantId::new("a"), TenantId::new("b"));
        let mine = CancellationToken::new();
        let theirs = CancellationToken::new();
        let other_id = CancellationToken::new();
        let _g1 = table.register(&a, &json!(1), mine.clone());
        let _g2 = table.register(&b, &json!(1), theirs.clone());
        let _g3 = table.register(&a, &json!("1"), other_id.clone());
        assert_eq!(table.cancel(&a, &json!(1)), 1);
        assert!(mine.is_cancelled());
        assert!(!theirs.is_cancelled() && !other_id.is_cancelled());
        // A finished call leaves the table.
        drop(_g2);
        assert_eq!(table.cancel(&b, &json!(1)), 0);
    }
}
