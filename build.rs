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

    symbol_order();

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

/// The node's functions that run at start and at rest, listed in
/// `link/snow-fox.order` (`link/order.sh` writes it), are laid out first
/// and together by lld, so an idle node maps few pages of its code: a
/// page fault maps the 64 KiB around it, and functions the node does run
/// spread over nearly every 64 KiB of a binary in the compiler's order.
/// Only where lld links: rustc 1.90 and later on x86_64-unknown-linux-gnu,
/// unless `SNOW_FOX_NO_SYMBOL_ORDER` is set. A stale list only lays out
/// less well; names it lists that the binary lacks are ignored.
fn symbol_order() {
    println!("cargo:rerun-if-changed=link/snow-fox.order");
    println!("cargo:rerun-if-env-changed=SNOW_FOX_NO_SYMBOL_ORDER");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu"
        || std::env::var_os("SNOW_FOX_NO_SYMBOL_ORDER").is_some()
        || !rustc_links_with_lld()
    {
        return;
    }
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("link/snow-fox.order");
    println!(
        "cargo:rustc-link-arg-bin=snow-fox=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
        order.display()
    );
}

/// Whether this rustc links x86_64 Linux binaries with its own lld by
/// default (1.90 and later).
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|number| number.split('.').nth(1))
        .and_then(|minor| minor.parse::<u32>().ok());
    minor.is_some_and(|minor| minor >= 90)
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
