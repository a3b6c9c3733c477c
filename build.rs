//! Compiles `proto/*.proto` into Rust with prost, parsing them with protox
//! so that no system `protoc` is needed, and bakes the git commit and dirty
//! flag into the binary for `NodeInfoResponse.node.version`.

use std::process::Command;

const PROTOS: [&str; 6] = [
    "proto/public_api.proto",
    "proto/daemon_manager.proto",
    "proto/daemon_spawner.proto",
    "proto/manager_spawner.proto",
    "proto/manager_cluster.proto",
    "proto/log_keeper.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    prost_build::Config::new()
        // The definition is much larger than any other payload: boxed, it
        // does not make every message as large.
        .boxed(".sf.core.protocol.public_api.Message.payload.service_definition_response")
        .compile_fds(descriptors)?;

    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let taint = match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if changes.is_empty() => "clean",
        Some(_) => "dirty",
        None => "unknown",
    };
    println!("cargo:rustc-env=SNOW_FOX_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=SNOW_FOX_GIT_TAINT={taint}");
    Ok(())
}

/// Runs git in the crate's directory; `None` when git or the repository is
/// not there (a build from a tarball).
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
