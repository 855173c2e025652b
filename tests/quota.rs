//! Per-tenant request rates and turn concurrency against a real server: a burst of ten times
//! the limit is answered at once (served, or refused with RESOURCE_EXHAUSTED and
//! `google.rpc.RetryInfo`), the JSON doors answer 429 with `Retry-After`, memory stays
//! bounded under a large burst, and running turns are bounded per tenant and per server on
//! every door that begins turns. (Tenants apart from each other: the unit tests of
//! `server::quota` and `engine::lifecycle`, with two tenant ids.)

mod common;

use std::time::Duration;

use common::*;
use contextd::api::v1::{GetSessionRequest, ListSessionsRequest};
use contextd::config::{Config, Limits};
use futures_util::future::join_all;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A server whose tenants may make `per_second` requests a second, `per_second` at once.
async fn rate_limited(per_second: u32) -> TestServer {
    TestServer::start_with(Config {
        limits: Limits {
            tenant_requests_per_second: per_second,
            tenant_request_burst: per_second,
            ..Limits::default()
        },
        ..test_config()
    })
    .await
}

/// The retry delay a refusal carries; fails the test when it has none.
fn retry_delay(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_times_the_limit_is_served_or_refused_with_retry_info() {
    const LIMIT: u32 = 5;
    let server = rate_limited(LIMIT).await;
    let client = server.sessions().await;
    let burst = (0..LIMIT * 10).map(|_| {
        let mut client = client.clone();
        async move { client.list_sessions(ListSessionsRequest::default()).await }
    });
    let results = within("the burst", join_all(burst)).await;
    let mut served = 0;
    let mut refused = 0;
    for result in results {
        match result {
            Ok(_) => served += 1,
            Err(status) => {
                let delay = retry_delay(&status);
                assert!(delay <= Duration::from_secs(1), "{delay:?}");
                assert!(
                    status
                        .message()
                        .contains("limits.tenant_requests_per_second"),
                    "{status:?}"
                );
                refused += 1;
            }
        }
    }
    // The bucket holds LIMIT; fifty requests in well under the ~9 s it would take to refill
    // for all of them leave most refused.
    assert!(served >= LIMIT as usize, "served {served}");
    assert!(refused > 0, "refused none of {}", LIMIT * 10);

    // Health checks are never limited, however spent the bucket.
    let mut health = server.health().await;
    for _ in 0..LIMIT * 2 {
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health is not rate limited");
    }

    // Waiting as advised makes room again.
    let mut client = client.clone();
    let mut tries = 0;
    loop {
        match client.list_sessions(ListSessionsRequest::default()).await {
            Ok(_) => break,
            Err(status) => {
                tries += 1;
                assert!(tries < 50, "never served again: {status:?}");
                tokio::time::sleep(retry_delay(&status)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_doors_answer_429_with_retry_after() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    const LIMIT: u32 = 2;
    let server = rate_limited(LIMIT).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/sessions", server.url());
    let burst = (0..LIMIT * 10).map(|_| http.get(&url).send());
    let responses = within("the HTTP burst", join_all(burst)).await;
    let mut refused = 0;
    for response in responses {
        let response = response.expect("HTTP request");
        if response.status() == 200 {
            continue;
        }
        assert_eq!(response.status(), 429);
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=1).contains(&retry_after), "Retry-After {retry_after}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        let detail = &body["error"]["details"][0];
        assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.RetryInfo");
        assert!(detail["retryDelay"].as_str().unwrap().ends_with('s'));
        refused += 1;
    }
    assert!(refused > 0);
}

/// Resident memory of this process (the server runs in it), in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_a_large_burst() {
    let server = rate_limited(10).await;
    let client = server.sessions().await;
    // A first round warms up the allocator, connections and the tokenizer tables.
    let round = |n: usize| {
        let client = client.clone();
        async move {
            let calls = (0..n).map(|i| {
                let mut client = client.clone();
                async move {
                    let request = GetSessionRequest {
                        session_id: format!("missing-{i}"),
                    };
                    match client.get_session(request).await {
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            retry_delay(&status);
                        }
                        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
                        Ok(_) => panic!("no session exists"),
                    }
                }
            });
            join_all(calls).await;
        }
    };
    within("the warm-up", round(200)).await;
    let before = resident_bytes();
    for _ in 0..50 {
        within("a burst", round(200)).await;
    }
    let after = resident_bytes();
    let grown = after.saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "RSS grew by {} MiB over 10,000 refused requests ({before} → {after} bytes)",
        grown >> 20
    );
}

/// A server running at most `per_tenant` turns per tenant and `total` turns in all.
async fn turn_limited(per_tenant: usize, total: usize) -> TestServer {
    TestServer::start_with(Config {
        limits: Limits {
            tenant_turns_in_flight: per_tenant,
            turns_in_flight: total,
            ..Limits::default()
        },
        ..test_config()
    })
    .await
}

/// Runs `check` until the slow turn ahead of it has ended and it is served: each refusal
/// must carry retry info, and the wait is the advised one.
async fn served_after_retries(
    mut interact: contextd::api::v1::interact_service_client::InteractServiceClient<
        tonic::transport::Channel,
    >,
    session: &str,
) {
    within("a turn after the slow one", async {
        loop {
            match interact
                .interact(interact_request(session, "hello", None))
                .await
            {
                Ok(_) => return,
                Err(status) => tokio::time::sleep(retry_delay(&status)).await,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_turns_are_bounded_per_tenant_on_every_door() {
    let server = turn_limited(1, 0).await;
    let mut interact = server.interact().await;

    // A slow streamed turn holds the tenant's one place while it runs.
    let mut slow = interact
        .stream_response(stream_request("slow", "/delay 5000 one two three", None))
        .await
        .expect("the slow turn starts")
        .into_inner();
    within("the slow turn's first event", slow.message())
        .await
        .expect("first event");

    let status = interact
        .interact(interact_request("other", "hello", None))
        .await
        .expect_err("a second turn of the tenant is refused");
    retry_delay(&status);
    assert!(
        status.message().contains("limits.tenant_turns_in_flight"),
        "{status:?}"
    );
    // A Converse turn counts the same.
    let mut converse = Conversation::start(&mut interact).await;
    converse.open("conv").await;
    converse.send_message("hello", None).await;
    let events = converse.until_end_of_turn().await;
    let error = converse_error(&events);
    assert_eq!(error.code, Code::ResourceExhausted as i32, "{error:?}");

    // Stopping the slow turn frees its place.
    drop(slow);
    served_after_retries(interact.clone(), "other").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_turns_are_bounded_on_the_whole_server() {
    let server = turn_limited(0, 1).await;
    let mut interact = server.interact().await;
    let mut slow = interact
        .stream_response(stream_request("slow", "/delay 5000 one two three", None))
        .await
        .expect("the slow turn starts")
        .into_inner();
    within("the slow turn's first event", slow.message())
        .await
        .expect("first event");
    let status = interact
        .interact(interact_request("other", "hello", None))
        .await
        .expect_err("a second turn is refused");
    retry_delay(&status);
    assert!(
        status.message().contains("limits.turns_in_flight"),
        "{status:?}"
    );
    drop(slow);
    served_after_retries(interact.clone(), "other").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_door_shares_the_tenant_rate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    const LIMIT: u32 = 2;
    let server = rate_limited(LIMIT).await;
    let http = reqwest::Client::new();
    let url = format!("{}/mcp", server.url());
    let burst = (0..LIMIT * 10).map(|i| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#))
            .send()
    });
    let responses = within("the /mcp burst", join_all(burst)).await;
    let mut refused = 0;
    for response in responses {
        let response = response.expect("HTTP request");
        if response.status() != 429 {
            continue;
        }
        assert!(response.headers().contains_key("retry-after"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        refused += 1;
    }
    assert!(refused > 0, "none of {} refused", LIMIT * 10);
}
