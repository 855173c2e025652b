//! The JSON-lines door: arbitrary bytes on a plain TCP connection, one request per line.
//!
//! Input: the bytes the client sends before closing its side (inputs that would be taken for
//! TLS or HTTP, those starting with 0x16 or an upper-case letter, are left to the other
//! targets). Checked: the server answers within a bound, every answer is one line of JSON, at
//! most one answer per line sent, and none shows a source path.
#![no_main]

use contextd_fuzz::{answered, server};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    match data.first() {
        None | Some(0x16) | Some(b'A'..=b'Z') => return,
        Some(_) => {}
    }
    let server = server();
    let addr = server.addr;
    let answer = server
        .runtime
        .block_on(answered("the JSON-lines door", async move {
            let mut stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the in-process server");
            // The server may close early (a line over the limit); what it answered still counts.
            let _ = stream.write_all(data).await;
            let _ = stream.shutdown().await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            answer
        }));
    let lines_sent = data.split(|b| *b == b'\n').count();
    let answers: Vec<&[u8]> = answer
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    assert!(
        answers.len() <= lines_sent,
        "{} answers to {lines_sent} lines",
        answers.len()
    );
    for line in answers {
        let text = String::from_utf8_lossy(line);
        assert!(
            serde_json::from_slice::<serde_json::Value>(line).is_ok(),
            "an answer that is not JSON: {text}"
        );
        assert!(
            !text.contains(".rs:"),
            "an answer shows a source path: {text}"
        );
    }
});
