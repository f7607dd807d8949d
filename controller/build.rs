//! Builds the client of the kubelet's PodResources API from its published proto.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/podresources/v1/api.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/podresources/v1/api.proto"], &["proto"])?;
    Ok(())
}
