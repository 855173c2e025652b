//! The protobuf codec of every contextd service: prost's, except that a request the decoder
//! cannot read is INVALID_ARGUMENT (the caller sent it) with a message that says what to fix,
//! rather than prost's INTERNAL.
//!
//! The usual cause is nesting: protobuf decoders stop at 100 nested messages, and a
//! `google.protobuf.Struct` costs three per JSON level, so contexts deeper than about 32 JSON
//! levels cannot be decoded at all (the engine's own depth limit, 32 by default, sits below).
//!
//! Buffers start at [`CODEC_BUFFER_BYTES`] instead of tonic's 8 KiB. tonic allocates one
//! encode and one decode buffer per RPC up front and keeps them while a stream is open, so
//! with 8 KiB each an idle `Converse` stream held 16 KiB of buffers alone; contextd's
//! messages are mostly far smaller, and a larger one grows its buffer as needed.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial size of the per-RPC encode and decode buffers.
pub const CODEC_BUFFER_BYTES: usize = 1024;

/// How many bytes of ready messages a stream batches into one write (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(CODEC_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// prost's codec with caller-facing decode errors and small initial buffers.
#[derive(Debug, Clone)]
pub struct WireCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(ProstDecoder::new(buffer_settings()))
    }
}

/// Decodes like prost, explaining failures.
#[derive(Debug, Clone)]
pub struct WireDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            let message = if status.message().contains("recursion limit") {
                // prost's own text repeats the whole nesting path; say what matters instead.
                "the message is nested more than 100 protobuf levels deep and cannot be decoded; a JSON context, patch or argument object costs 3 levels per level of nesting, so keep them within limits.max_context_depth (32 by default)".to_string()
            } else {
                format!(
                    "the message could not be decoded as protobuf: {}",
                    status.message()
                )
            };
            Status::invalid_argument(message)
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
