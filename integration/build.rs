//! Builds the server side of the kubelet's PodResources API (the test kubelet) from the same
//! published proto plexusd's client is built from.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../controller/proto/podresources/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_client(false)
        .compile_protos(&[proto], &["../controller/proto"])?;
    Ok(())
}
