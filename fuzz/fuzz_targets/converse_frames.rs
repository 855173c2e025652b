//! Converse frame sequences from arbitrary bytes, sent on one bidirectional stream to a real
//! server.
//!
//! Input: frames, each a length byte and that many bytes of a `ConverseRequest` (a length of
//! 255 takes the rest). Frames prost cannot decode are left out. The client then closes its
//! side; the server must end the stream within a bound, and a failed stream must carry a
//! clear status.
#![no_main]

use contextd::api::v1::ConverseRequest;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd_fuzz::{answered, check_status, server};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Splits the input into the frames it encodes.
fn frames(mut data: &[u8]) -> Vec<ConverseRequest> {
    let mut frames = Vec::new();
    while let Some((&length, rest)) = data.split_first() {
        let length = if length == 255 {
            rest.len()
        } else {
            usize::from(length).min(rest.len())
        };
        let (frame, rest) = rest.split_at(length);
        if let Ok(frame) = ConverseRequest::decode(frame) {
            frames.push(frame);
        }
        data = rest;
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let frames = frames(data);
    if frames.is_empty() {
        return;
    }
    let server = server();
    let channel = server.channel.clone();
    server.runtime.block_on(async move {
        let talk = async {
            let mut replies = InteractServiceClient::new(channel)
                .converse(tokio_stream::iter(frames))
                .await?
                .into_inner();
            while replies.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        };
        if let Err(status) = answered("Converse after the client closed its side", talk).await {
            check_status("Converse", &status);
        }
    });
});
