//! Generates the csi.v1 messages, servers and clients from proto/csi/v1/csi.proto. protox
//! parses the .proto in Rust (with the well-known types built in), so no protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/csi/v1/csi.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
