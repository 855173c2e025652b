//! Converse over a WebSocket (`GET /v1/sessions/{session_id}:converse`) with a real WebSocket
//! client: text frames of proto3 JSON, binary frames of protobuf, the first-frame rule, turns,
//! a client-side tool round trip, cancel (of a running turn, and of a paused one), queued
//! frames and the close codes.

mod common;

use common::*;
use contextd::api::v1::converse_request::Frame;
use contextd::api::v1::converse_response::Event;
use contextd::api::v1::{ConverseOpen, ConverseRequest, ConverseResponse, ConverseUserMessage};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open_socket(server: &TestServer, session_id: &str) -> Socket {
    let url = format!("ws://{}/v1/sessions/{session_id}:converse", server.addr);
    let (socket, response) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    socket
}

async fn send(socket: &mut Socket, frame: Value) {
    within(
        "sending a frame",
        socket.send(Message::text(frame.to_string())),
    )
    .await
    .expect("send");
}

/// The next JSON event (pings are skipped); panics on anything else.
async fn next(socket: &mut Socket) -> Value {
    loop {
        match within("an event", socket.next()).await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text event, got {other:?}"),
        }
    }
}

/// Events up to and including the end of a turn (`completed` or `error`).
async fn until_end_of_turn(socket: &mut Socket) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let event = next(socket).await;
        let end = event.get("completed").is_some() || event.get("error").is_some();
        events.push(event);
        if end {
            return events;
        }
    }
}

/// The close frame the server ends with.
async fn close_frame(socket: &mut Socket) -> (u16, String) {
    loop {
        match within("the close frame", socket.next()).await {
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                return (u16::from(code), reason.to_string());
            }
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_turns_and_a_normal_close() {
    let server = TestServer::start().await;
    let mut socket = open_socket(&server, "ws-turns").await;
    send(&mut socket, json!({"open": {"systemPrompt": "Be brief."}})).await;
    let opened = next(&mut socket).await;
    assert_eq!(
        opened["opened"]["session"]["sessionId"], "ws-turns",
        "{opened}"
    );
    assert_eq!(opened["opened"]["sessionCreated"], true);

    send(
        &mut socket,
        json!({"userMessage": {"message": "hello socket", "context": {"user": "Ann"}}}),
    )
    .await;
    let events = until_end_of_turn(&mut socket).await;
    assert!(events[0].get("started").is_some(), "{events:?}");
    let turn_id = events[0]["turnId"].as_str().unwrap().to_owned();
    assert!(!turn_id.is_empty());
    assert!(events.iter().filter(|e| e.get("delta").is_some()).count() > 1);
    let done = &events.last().unwrap()["completed"];
    assert!(
        done["response"].as_str().unwrap().contains("hello socket"),
        "{done}"
    );
    assert_eq!(done["updatedContext"], json!({"user": "Ann"}));
    assert_eq!(events.last().unwrap()["turnId"], turn_id.as_str());

    // The turn is the session's, as on every door.
    let mut sessions = server.sessions().await;
    assert_eq!(
        get_session(&mut sessions, "ws-turns").await.message_count,
        2
    );

    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    within("closing", socket.close(Some(normal))).await.unwrap();
    let (code, _) = close_frame(&mut socket).await;
    assert_eq!(code, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tool_round_trip() {
    let server = TestServer::start().await;
    let mut socket = open_socket(&server, "ws-tools").await;
    send(
        &mut socket,
        json!({"open": {"sessionId": "ws-tools", "tools": [{"name": "lookup", "description": "Looks things up.", "inputSchema": {"type": "object"}}]}}),
    )
    .await;
    assert!(next(&mut socket).await.get("opened").is_some());
    send(
        &mut socket,
        json!({"userMessage": {"message": "/call lookup {\"q\": \"rust\"}"}}),
    )
    .await;
    let events = until_end_of_turn(&mut socket).await;
    let call = events
        .iter()
        .find_map(|e| e.get("toolCall"))
        .expect("a toolCall event")
        .clone();
    assert_eq!(call["name"], "lookup");
    let paused = &events.last().unwrap()["completed"];
    assert_eq!(paused["finishReason"], "FINISH_REASON_TOOL_CALLS");

    send(
        &mut socket,
        json!({"toolResults": {"results": [{"toolCallId": call["toolCallId"], "content": "Rust is a language"}]}}),
    )
    .await;
    let events = until_end_of_turn(&mut socket).await;
    let done = &events.last().unwrap()["completed"];
    assert_eq!(done["finishReason"], "FINISH_REASON_STOP");
    assert!(
        done["response"]
            .as_str()
            .unwrap()
            .contains("Tool lookup returned: Rust is a language"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_paused_abandons_the_tool_calls() {
    let server = TestServer::start().await;
    let mut socket = open_socket(&server, "ws-abandon").await;
    send(
        &mut socket,
        json!({"open": {"sessionId": "ws-abandon", "tools": [{"name": "lookup", "description": "Looks things up.", "inputSchema": {"type": "object"}}]}}),
    )
    .await;
    assert!(next(&mut socket).await.get("opened").is_some());
    send(
        &mut socket,
        json!({"userMessage": {"message": "/call lookup {\"q\": \"rust\"}"}}),
    )
    .await;
    let events = until_end_of_turn(&mut socket).await;
    let paused = events.last().unwrap();
    assert_eq!(
        paused["completed"]["finishReason"],
        "FINISH_REASON_TOOL_CALLS"
    );

    send(&mut socket, json!({"cancel": {}})).await;
    let events = until_end_of_turn(&mut socket).await;
    let done = events.last().unwrap();
    assert_eq!(done["completed"]["finishReason"], "FINISH_REASON_CANCELLED");
    assert_eq!(done["turnId"], paused["turnId"], "the paused turn ends");
    assert!(events[0].get("started").is_some(), "{events:?}");

    // The session is idle again: a new message is an ordinary turn.
    send(&mut socket, json!({"userMessage": {"message": "next"}})).await;
    let events = until_end_of_turn(&mut socket).await;
    let done = &events.last().unwrap()["completed"];
    assert_eq!(done["finishReason"], "FINISH_REASON_STOP", "{events:?}");
    let mut sessions = server.sessions().await;
    let messages = all_messages(&mut sessions, "ws-abandon", 0).await;
    assert_eq!(messages[2].content, "cancelled by the client");
    assert!(messages[2].is_error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_queued_frames() {
    let server = TestServer::start().await;
    let mut socket = open_socket(&server, "ws-cancel").await;
    send(&mut socket, json!({"open": {}})).await;
    assert!(next(&mut socket).await.get("opened").is_some());

    // About 100 deltas at 100 ms each if nothing stops it.
    let words = (0..100)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    send(
        &mut socket,
        json!({"userMessage": {"message": format!("/delay 100 {words}")}}),
    )
    .await;
    assert!(next(&mut socket).await.get("started").is_some());
    assert!(next(&mut socket).await.get("delta").is_some());
    send(&mut socket, json!({"cancel": {}})).await;
    let events = until_end_of_turn(&mut socket).await;
    assert_eq!(
        events.last().unwrap()["completed"]["finishReason"],
        "FINISH_REASON_CANCELLED",
        "{events:?}"
    );

    // Two frames at once: answered in order, one turn at a time.
    send(
        &mut socket,
        json!({"userMessage": {"message": "/delay 50 one two"}}),
    )
    .await;
    send(&mut socket, json!({"userMessage": {"message": "three"}})).await;
    let first = until_end_of_turn(&mut socket).await;
    let second = until_end_of_turn(&mut socket).await;
    let reply = |events: &[Value]| {
        events.last().unwrap()["completed"]["response"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        reply(&first).starts_with("You said 'one two'."),
        "{first:?}"
    );
    assert!(
        reply(&second).starts_with("You said 'three'."),
        "{second:?}"
    );

    // A frame that is not a ConverseRequest is an error event, and the stream goes on.
    send(&mut socket, json!({"userMesage": {}})).await;
    let error = next(&mut socket).await;
    assert_eq!(error["error"]["code"], 3, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("userMesage")
    );
    send(
        &mut socket,
        json!({"userMessage": {"message": "still here"}}),
    )
    .await;
    let events = until_end_of_turn(&mut socket).await;
    assert!(reply(&events).contains("still here"));
}

#[tokio::test]
async fn a_bad_first_frame_is_an_error_event_and_close_4003() {
    let server = TestServer::start().await;
    for first in [
        json!({"userMessage": {"message": "no open"}}),
        json!({"open": {"sessionId": "another-session"}}),
        json!({"open": {"nosuch": 1}}),
    ] {
        let mut socket = open_socket(&server, "ws-first").await;
        send(&mut socket, first.clone()).await;
        let error = next(&mut socket).await;
        assert_eq!(error["error"]["code"], 3, "{first}: {error}");
        let message = error["error"]["message"].as_str().unwrap().to_owned();
        let (code, reason) = close_frame(&mut socket).await;
        assert_eq!(code, 4003, "{first}");
        assert!(
            message.starts_with(&reason),
            "{reason:?} is the message ({message:?})"
        );
    }
    let mut sessions = server.sessions().await;
    let missing = sessions
        .get_session(contextd::api::v1::GetSessionRequest {
            session_id: "ws-first".into(),
        })
        .await;
    expect_code(missing, tonic::Code::NotFound);
}

/// The next binary event (pings are skipped); panics on anything else.
async fn next_binary(socket: &mut Socket) -> ConverseResponse {
    loop {
        match within("a binary event", socket.next()).await {
            Some(Ok(Message::Binary(bytes))) => return ConverseResponse::decode(bytes).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a binary event, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_protobuf() {
    let server = TestServer::start().await;
    let mut socket = open_socket(&server, "ws-binary").await;
    let frame =
        |frame: Frame| Message::binary(ConverseRequest { frame: Some(frame) }.encode_to_vec());
    socket
        .send(frame(Frame::Open(ConverseOpen::default())))
        .await
        .unwrap();
    let Some(Event::Opened(opened)) = next_binary(&mut socket).await.event else {
        panic!("opened first");
    };
    assert_eq!(opened.session.unwrap().session_id, "ws-binary");
    socket
        .send(frame(Frame::UserMessage(ConverseUserMessage {
            message: "in protobuf".into(),
            context: None,
            ..Default::default()
        })))
        .await
        .unwrap();
    let mut events = Vec::new();
    loop {
        let event = next_binary(&mut socket).await;
        let done = matches!(event.event, Some(Event::Completed(_)));
        events.push(event);
        if done {
            break;
        }
    }
    assert!(converse_text(&events).contains("in protobuf"));
    socket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_plain_get_is_told_to_use_a_websocket() {
    let server = TestServer::start().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(format!("{}/v1/sessions/s:converse", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WebSocket"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_running_turn_finish_then_closes_4014() {
    let mut server = TestServer::start().await;
    let mut socket = open_socket(&server, "ws-drain").await;
    send(&mut socket, json!({"open": {}})).await;
    assert!(next(&mut socket).await.get("opened").is_some());
    send(
        &mut socket,
        json!({"userMessage": {"message": "/delay 100 a b c"}}),
    )
    .await;
    assert!(next(&mut socket).await.get("started").is_some());
    server.trigger_shutdown();
    let events = until_end_of_turn(&mut socket).await;
    assert_eq!(
        events.last().unwrap()["completed"]["finishReason"],
        "FINISH_REASON_STOP",
        "the running turn finishes: {events:?}"
    );
    let (code, reason) = close_frame(&mut socket).await;
    assert_eq!(code, 4014, "{reason}");
    assert!(server.stop().await);
}

/// Every log line of a WebSocket Converse names its request id: the upgrade's `x-request-id`
/// goes with the socket's task, whose span ends with an `rpc done` line like every RPC's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_name_the_request_id() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut command = common::daemon::contextd_command(&["serve", "--listen", "127.0.0.1:0"]);
    command.env("CONTEXTD_LOG", "info");
    let daemon = common::daemon::Daemon::spawn(command);
    let mut request = format!("ws://{}/v1/sessions/ws-logs:converse", daemon.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-request-id", "ws-log-7f3a".parse().unwrap());
    let (mut socket, response) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("WebSocket handshake");
    assert_eq!(response.headers()["x-request-id"], "ws-log-7f3a");
    send(&mut socket, json!({"open": {"sessionId": ""}})).await;
    assert!(next(&mut socket).await.get("opened").is_some());
    send(&mut socket, json!({"userMessage": {"message": "hello"}})).await;
    let turn = until_end_of_turn(&mut socket).await;
    assert!(turn.last().unwrap().get("completed").is_some(), "{turn:?}");
    socket.close(None).await.unwrap();
    let _ = close_frame_or_end(&mut socket).await;
    let line = daemon
        .log_line(|l| l.contains("rpc done") && l.contains("door=websocket"))
        .await;
    assert!(line.contains("request_id=ws-log-7f3a"), "{line}");
    assert!(line.contains("ws-logs"), "the session: {line}");
    assert!(line.contains("Converse"), "{line}");
}

/// Reads until the server's close frame or the end of the socket.
async fn close_frame_or_end(socket: &mut Socket) -> Option<u16> {
    loop {
        match within("the end of the socket", socket.next()).await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

/// One HTTP/2 stream as a byte pipe, for a WebSocket over extended CONNECT (RFC 8441): what
/// is written goes out as DATA frames, what arrives is read back with its flow-control window
/// released.
struct H2Pipe {
    send: h2::SendStream<bytes::Bytes>,
    recv: h2::RecvStream,
    pending: bytes::Bytes,
}

impl tokio::io::AsyncRead for H2Pipe {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while self.pending.is_empty() {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(std::io::Error::other(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = buf.remaining().min(self.pending.len());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for H2Pipe {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // h2 queues what exceeds the peer's window; these frames are small.
        let sent = self
            .send
            .send_data(bytes::Bytes::copy_from_slice(data), false)
            .map_err(std::io::Error::other);
        std::task::Poll::Ready(sent.map(|()| data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let _ = self.send.send_data(bytes::Bytes::new(), true);
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_over_http2_extended_connect() {
    let server = TestServer::start().await;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (client, connection) = within("the HTTP/2 handshake", h2::client::handshake(tcp))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = within("the server's settings", client.ready())
        .await
        .expect("ready");
    // The server's SETTINGS frame arrives on the connection task, after the handshake.
    within("SETTINGS_ENABLE_CONNECT_PROTOCOL", async {
        while !client.is_extended_connect_protocol_enabled() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{}/v1/sessions/ws-h2:converse", server.addr))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (response, send) = client.send_request(request, false).expect("CONNECT");
    let response = within("the CONNECT response", response)
        .await
        .expect("response");
    assert_eq!(response.status(), 200, "{response:?}");
    let pipe = H2Pipe {
        send,
        recv: response.into_body(),
        pending: bytes::Bytes::new(),
    };
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        pipe,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;

    within(
        "sending open",
        socket.send(Message::text(json!({"open": {}}).to_string())),
    )
    .await
    .expect("send open");
    let opened = loop {
        match within("opened", socket.next()).await {
            Some(Ok(Message::Text(text))) => break serde_json::from_str::<Value>(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected opened, got {other:?}"),
        }
    };
    assert_eq!(
        opened["opened"]["session"]["sessionId"], "ws-h2",
        "{opened}"
    );
    within(
        "sending a message",
        socket.send(Message::text(
            json!({"userMessage": {"message": "over h2"}}).to_string(),
        )),
    )
    .await
    .expect("send");
    let done = loop {
        match within("the turn", socket.next()).await {
            Some(Ok(Message::Text(text))) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                if event.get("completed").is_some() {
                    break event;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected events, got {other:?}"),
        }
    };
    assert!(
        done["completed"]["response"]
            .as_str()
            .unwrap()
            .contains("over h2"),
        "{done}"
    );
    within("closing", socket.close(None)).await.expect("close");
    let mut sessions = server.sessions().await;
    assert_eq!(get_session(&mut sessions, "ws-h2").await.message_count, 2);
}
