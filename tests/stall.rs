//! A client that stops reading a stream never holds a session: past
//! `limits.stream_stall_timeout_ms` its turn stops (nothing stored), the session's lock is
//! released, and the stream ends with DEADLINE_EXCEEDED. The client is a raw HTTP/2 client
//! that never releases flow-control window, exactly as a stalled reader behaves on the wire.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use contextd::api::v1::StreamResponseRequest;
use http::Request;
use prost::Message;
use tokio::net::TcpStream;

/// A gRPC frame: flag, length, message.
fn grpc_frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(body.len() as u32);
    frame.put_slice(&body);
    frame.freeze()
}

#[tokio::test]
async fn a_stalled_reader_releases_the_session_and_stores_nothing() {
    let mut config = test_config();
    config.limits.stream_buffer_bytes = 16 * 1024;
    // Short, so the test is quick; a stalled reader stalls whatever the machine's speed.
    config.limits.stream_stall_timeout_ms = 300;
    let server = TestServer::start_with(config).await;
    let mut interact = server.interact().await;
    say(&mut interact, "held", "first", None).await;

    // A raw HTTP/2 client with a 1 KiB window that it never opens further.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1024)
        .initial_connection_window_size(1024)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = Request::post(format!(
        "http://{}/contextd.v1.InteractService/StreamResponse",
        server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let message = StreamResponseRequest {
        session_id: "held".into(),
        message: "word ".repeat(6_000),
        ..Default::default()
    };
    send.send_data(grpc_frame(&message), true).unwrap();

    // Another client's turn on the same session gets through once the stall is detected.
    let reply = say(&mut interact, "held", "second", None).await;
    assert!(reply.response.contains("second"), "{reply:?}");

    // The stalled stream: whatever was buffered, then DEADLINE_EXCEEDED saying why.
    let response = within("StreamResponse headers", response).await.unwrap();
    let mut body = response.into_body();
    while let Some(chunk) = within("StreamResponse data", body.data()).await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    let trailers = within("StreamResponse trailers", body.trailers())
        .await
        .unwrap()
        .expect("trailers");
    assert_eq!(trailers["grpc-status"], "4", "{trailers:?}");
    let message = trailers["grpc-message"].to_str().unwrap();
    assert!(message.contains("did%20not%20read"), "{message}");

    // The stalled turn stored nothing: two turns of two messages each.
    let mut sessions = server.sessions().await;
    let stored = all_messages(&mut sessions, "held", 100).await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert!(stored.iter().all(|m| !m.content.starts_with("word ")));
}
