//! Discovery: the standard gRPC health service and server reflection (both `v1` and
//! `v1alpha`), as generic tools such as grpcurl and load balancers use them.

mod common;

use common::*;
use prost::Message as _;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

const OUR_SERVICES: [&str; 5] = [
    "contextd.v1.SessionService",
    "contextd.v1.InteractService",
    "contextd.v1.ToolService",
    "contextd.v1.ModelService",
    "grpc.health.v1.Health",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    let server = TestServer::start().await;
    let mut health = server.health().await;
    for service in [
        "",
        "contextd.v1.InteractService",
        "contextd.v1.SessionService",
        "contextd.v1.ToolService",
        "contextd.v1.ModelService",
    ] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("Check({service:?}) failed: {s:?}"))
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    expect_code(
        health
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await,
        Code::NotFound,
    );
}

/// Symbols every reflection version must resolve, with the file each lives in: our services,
/// the health service, and a well-known type our messages use.
const SYMBOLS: [(&str, &str); 5] = [
    ("contextd.v1.InteractService", "contextd/v1/interact.proto"),
    ("contextd.v1.ModelService", "contextd/v1/model.proto"),
    ("contextd.v1.SessionService", "contextd/v1/session.proto"),
    ("grpc.health.v1.Health", "health.proto"),
    ("google.protobuf.Struct", "google/protobuf/struct.proto"),
];

/// One reflection test body for both versions: `v1` and `v1alpha` have the same shape in
/// different generated modules.
macro_rules! reflection_test {
    ($name:ident, $version:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, ServerReflectionResponse,
            };

            let server = TestServer::start().await;
            let mut client = ServerReflectionClient::new(server.channel().await);
            let ask = |request: MessageRequest| ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            };
            let mut requests = vec![ask(MessageRequest::ListServices(String::new()))];
            requests.extend(
                SYMBOLS.iter().map(|(symbol, _)| {
                    ask(MessageRequest::FileContainingSymbol(symbol.to_string()))
                }),
            );
            let mut stream = within(
                "ServerReflectionInfo",
                client.server_reflection_info(tokio_stream::iter(requests)),
            )
            .await
            .expect(stringify!($version))
            .into_inner();
            let mut responses: Vec<ServerReflectionResponse> = Vec::new();
            while let Some(response) = within("a reflection answer", stream.message())
                .await
                .expect("reflection stream")
            {
                responses.push(response);
            }
            assert_eq!(responses.len(), 1 + SYMBOLS.len(), "one answer per request");

            let Some(MessageResponse::ListServicesResponse(list)) = &responses[0].message_response
            else {
                panic!(
                    "expected a service list, got {:?}",
                    responses[0].message_response
                );
            };
            let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
            for service in OUR_SERVICES {
                assert!(names.contains(&service), "{service} listed in {names:?}");
            }

            for ((symbol, file), response) in SYMBOLS.iter().zip(&responses[1..]) {
                let Some(MessageResponse::FileDescriptorResponse(files)) =
                    &response.message_response
                else {
                    panic!(
                        "expected descriptors for {symbol}, got {:?}",
                        response.message_response
                    );
                };
                let decoded = decode_files(&files.file_descriptor_proto);
                assert!(
                    decoded.iter().any(|f| f.name() == *file),
                    "{symbol} resolves to {file}"
                );
                if *symbol == "contextd.v1.InteractService" {
                    check_interact_descriptor(&files.file_descriptor_proto);
                }
            }
        }
    };
}

reflection_test!(reflection_v1_lists_services_and_resolves_symbols, v1);
reflection_test!(
    reflection_v1alpha_lists_services_and_resolves_symbols,
    v1alpha
);

fn decode_files(raw: &[Vec<u8>]) -> Vec<prost_types::FileDescriptorProto> {
    raw.iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .expect("a valid FileDescriptorProto")
        })
        .collect()
}

/// The answer for `contextd.v1.InteractService` holds the file that defines it, with its
/// three methods.
fn check_interact_descriptor(raw: &[Vec<u8>]) {
    let files = decode_files(raw);
    let file = files
        .iter()
        .find(|f| f.service.iter().any(|s| s.name() == "InteractService"))
        .unwrap_or_else(|| {
            let names: Vec<&str> = files.iter().map(|f| f.name()).collect();
            panic!("no file defines InteractService: {names:?}")
        });
    assert_eq!(file.package(), "contextd.v1");
    assert_eq!(file.name(), "contextd/v1/interact.proto");
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "InteractService")
        .expect("service");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, ["Interact", "StreamResponse", "Converse"]);
    let converse = &service.method[2];
    assert!(converse.client_streaming() && converse.server_streaming());
}
