//! Compiles proto/ with protox (pure Rust): no system protoc needed. Also compiles the tests'
//! own copies of ORLY's database subset and sync service (tests/proto/, written from ORLY's
//! field list) into OUT_DIR/orly_api/, where only the integration tests include them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/orlysync/common/v1/types.proto",
        "proto/orlysync/negentropy/v1/service.proto",
        "proto/orlydb/v1/service.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("orly_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;

    let orly_api = [
        "tests/proto/orly/database.proto",
        "tests/proto/orly/common.proto",
        "tests/proto/orly/negentropy.proto",
    ];
    for f in &orly_api {
        println!("cargo:rerun-if-changed={f}");
    }
    let dir = out.join("orly_api");
    std::fs::create_dir_all(&dir)?;
    tonic_prost_build::configure()
        .out_dir(dir)
        .compile_fds(protox::compile(orly_api, ["tests/proto"])?)?;
    Ok(())
}
