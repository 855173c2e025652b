//! The HTTP door's proto3 JSON decoding: arbitrary request bodies on the routes that take a
//! body, sent over HTTP/1.1 to a real server.
//!
//! Input: a selector byte (which route) and the body. Checked: every body gets an answer
//! within a bound, never a 500 (a body a client got wrong is the client's error, 4xx), and
//! no answer shows a source path.
#![no_main]

use contextd_fuzz::{answered, server};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The routes whose body is decoded as a request message.
const ROUTES: [(&str, &str); 8] = [
    ("POST", "/v1/sessions"),
    ("POST", "/v1/sessions/fuzz:interact"),
    ("POST", "/v1/sessions/fuzz:stream"),
    ("PATCH", "/v1/sessions/fuzz"),
    ("POST", "/v1/sessions/fuzz:preview"),
    ("POST", "/v1/tools/context_get:call"),
    ("POST", "/v1/keys"),
    ("POST", "/api/mcp/interact"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[usize::from(selector) % ROUTES.len()];
    let server = server();
    let addr = server.addr;
    let answer = server.runtime.block_on(answered(path, async move {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the in-process server");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: fuzz\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .expect("send the head");
        stream.write_all(body).await.expect("send the body");
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .expect("read the answer");
        answer
    }));
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {text:?}"));
    assert_ne!(status, "500", "{method} {path} answered 500: {text}");
    assert!(
        !text.contains(".rs:"),
        "{method} {path} shows a source path: {text}"
    );
});
