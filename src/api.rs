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
