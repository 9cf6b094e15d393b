//! Compiles the .proto files under `proto/` with protox (a pure-Rust protobuf compiler, so
//! no `protoc` is needed on the build machine) and generates prost messages plus tonic
//! clients and servers for every service.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "raftkvpb/raftkv.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(FILES, [&root])?;
    // The descriptor set itself, for the JSON gateway's proto3 JSON mapping (prost-reflect
    // reads field names and types from it at run time).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Services the server has not implemented yet answer UNIMPLEMENTED by default.
        .generate_default_stubs(true)
        // `bytes::Bytes` for every `bytes` field: decoding from a network buffer and
        // cloning values into responses and watch events then share memory instead of copying.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
