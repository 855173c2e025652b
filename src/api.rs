//! The wire contract: generated protobuf and gRPC code for `contextd.v1`, its file
//! descriptor set (for reflection), and the conversions between wire and domain types
//! ([`convert`]). Nothing else in the crate includes generated code.

pub mod codec;
pub mod convert;

/// Generated code for the `contextd.v1` package (messages, clients, servers).
#[allow(
    missing_docs,
    clippy::doc_lazy_continuation,
    clippy::large_enum_variant
)]
pub mod v1 {
    tonic::include_proto!("contextd.v1");
}

/// Encoded `FileDescriptorSet` of `proto/` with its imports, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("contextd_descriptor");
