//! Generates the apiary.v1 messages, server and client from proto/apiary/v1/apiary.proto.
//! protox parses the .proto in Rust, so no protoc is needed on the build machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/apiary/v1/apiary.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // Decoding errors become INVALID_ARGUMENT instead of tonic's INTERNAL (see codec.rs).
        .codec_path("crate::codec::ApiaryCodec")
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
