//! Generates the prost types for the dropsonde v1 and Loggregator v2 schemas.
//! `protox` compiles the `.proto` files in Rust, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/dropsonde.proto", "proto/loggregator_v2.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    prost_build::Config::new()
        // Keep bytes fields as `bytes::Bytes` so encoding a capture copies nothing.
        .bytes(["."])
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
