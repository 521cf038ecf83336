//! Generates the gRPC code from `proto/isobar/v1/*.proto` with `protox`, so no system
//! `protoc` is needed, and writes the descriptor set that gRPC reflection serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "isobar/v1/telemetry.proto",
        "isobar/v1/steering.proto",
        "isobar/v1/placement.proto",
        "isobar/v1/admin.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("isobar_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
