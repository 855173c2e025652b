//! OpenTelemetry traces over OTLP (built with `--features otlp`): the real binary exports to
//! a small OTLP/HTTP receiver inside the test, which decodes each `ExportTraceServiceRequest`;
//! one turn yields the call's, the turn's, the model call's and the store commit's spans.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::daemon::Daemon;
use common::*;
use contextd::api::v1::CreateSessionRequest;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;

/// Span names received, with their string attributes.
type Received = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

async fn receive(State(received): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an ExportTraceServiceRequest");
    let mut received = received.lock().unwrap();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        AnyValue::StringValue(text) => Some((kv.key.clone(), text.clone())),
                        _ => None,
                    })
                    .collect();
                received.push((span.name, attributes));
            }
        }
    }
    ""
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_is_traced_from_the_call_to_the_store() {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut daemon = Daemon::start_with(&["--otlp-endpoint".into(), format!("http://{collector}")]);
    let channel = connect(daemon.addr).await;
    create_session(
        &mut SessionServiceClient::new(channel.clone()),
        CreateSessionRequest {
            session_id: "traced".into(),
            ..Default::default()
        },
    )
    .await;
    let mut interact = InteractServiceClient::new(channel);
    let mut request = tonic::Request::new(interact_request("traced", "hi", None));
    request
        .metadata_mut()
        .insert("x-request-id", "req-otlp-1".parse().unwrap());
    within("Interact", interact.interact(request))
        .await
        .expect("Interact");

    // Shutting down exports what is still batched.
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{}", daemon.stderr());

    let received = received.lock().unwrap().clone();
    let names: Vec<&str> = received.iter().map(|(name, _)| name.as_str()).collect();
    for expected in ["rpc", "turn", "model.call", "store.commit"] {
        assert!(names.contains(&expected), "no {expected} span in {names:?}");
    }
    assert!(
        received.iter().any(|(name, attributes)| name == "rpc"
            && attributes.get("request_id").map(String::as_str) == Some("req-otlp-1")
            && attributes.get("method").map(String::as_str)
                == Some("/contextd.v1.InteractService/Interact")),
        "{received:?}"
    );
    assert!(
        received
            .iter()
            .any(|(name, attributes)| name == "model.call"
                && attributes.get("backend").map(String::as_str) == Some("echo")),
        "{received:?}"
    );
}
