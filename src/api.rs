//! The wire contract: generated protobuf and gRPC code for `contextd.v1`, its file
//! descriptor set (for reflection), and the conversions between wire and domain types
//! ([`convert`]), and the same for the vendored MCP gRPC binding ([`mcp`]). Nothing else in the crate includes generated code.

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

/// Generated code for Google's MCP gRPC binding (`model_context_protocol`, vendored under
/// `proto/third_party/mcp`): the `Mcp` service that [`crate::mcp`] serves.
#[allow(
    missing_docs,
    clippy::doc_lazy_continuation,
    clippy::large_enum_variant,
    clippy::enum_variant_names
)]
pub mod mcp {
    tonic::include_proto!("model_context_protocol");
}

/// Encoded `FileDescriptorSet` of the MCP gRPC binding with its imports, served by
/// reflection.
pub const MCP_FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mcp_descriptor");

/// Encoded `FileDescriptorSet` of `proto/` with its imports, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("contextd_descriptor");

/// The canonical upper-case name of a gRPC status code (`NOT_FOUND`), as `google.rpc.Code`
/// spells it: in log lines, client errors and the JSON doors' error bodies.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
