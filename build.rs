//! Compiles `proto/` with the pure-Rust `protox` compiler and generates the tonic/prost code,
//! so building contextd needs no system `protoc`.
//!
//! Two descriptor sets come out: contextd's own contract (`contextd.v1`, which the HTTP/JSON
//! doors transcode from) and the vendored MCP gRPC binding (`model_context_protocol`), kept
//! apart so the JSON doors never see a package they do not serve.

use std::path::PathBuf;

/// Where contextd's protos live.
const PROTO_ROOT: &str = "proto";
/// Vendored imports (`google/api/annotations.proto`, `google/api/http.proto`).
const THIRD_PARTY_ROOT: &str = "proto/third_party";
/// The vendored MCP gRPC binding (its files import each other from their own directory).
const MCP_ROOT: &str = "proto/third_party/mcp";
/// contextd's own protos.
const PROTO_FILES: &[&str] = &[
    "contextd/v1/common.proto",
    "contextd/v1/session.proto",
    "contextd/v1/interact.proto",
    "contextd/v1/tool.proto",
    "contextd/v1/model.proto",
    "contextd/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `compile_fds` never sees the .proto paths, so cargo must be told what to watch.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    // sqlx::migrate! embeds the migrations at compile time.
    println!("cargo:rerun-if-changed=migrations");

    let mut compiler = protox::Compiler::new([PROTO_ROOT, THIRD_PARTY_ROOT])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTO_FILES)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("contextd_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::api::codec::WireCodec")
        .compile_fds(compiler.file_descriptor_set())?;

    let mut mcp = protox::Compiler::new([MCP_ROOT])?;
    mcp.include_imports(true).include_source_info(true);
    mcp.open_files(["mcp.proto"])?;
    std::fs::write(
        out_dir.join("mcp_descriptor.bin"),
        mcp.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::api::codec::WireCodec")
        .compile_fds(mcp.file_descriptor_set())?;
    Ok(())
}
