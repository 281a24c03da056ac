// Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed.
#![forbid(unsafe_code)]

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/tollgate.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // The encoded descriptors are what server reflection hands to clients
    // (grpcurl, generated clients), so they need not have the repo.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tollgate_descriptor.bin"), fds.encode_to_vec())?;
    // BTreeMap for `map<>` fields: the model's maps are, and order stays stable.
    tonic_prost_build::configure()
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
