//! Embeds the eBPF object: the one `cargo xtask` built (it passes NETPATH_EBPF_OBJ),
//! or, for a plain `cargo build -p netpath`, one built here by the same recipe.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=NETPATH_EBPF_OBJ");
    let obj = match std::env::var_os("NETPATH_EBPF_OBJ") {
        Some(p) => PathBuf::from(p),
        None => build_here(),
    };
    if !obj.exists() {
        panic!(
            "eBPF object {} is missing (NETPATH_EBPF_OBJ names a file that is not there)",
            obj.display()
        );
    }
    println!("cargo:rerun-if-changed={}", obj.display());
    println!("cargo:rustc-env=NETPATH_EBPF_OBJ={}", obj.display());
}

/// Builds the object into the workspace's `target/ebpf`, where xtask builds it too,
/// so whichever runs second finds it fresh.
fn build_here() -> PathBuf {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().expect("netpath lives in the workspace");
    for src in [
        "netpath-ebpf/src",
        "netpath-ebpf/Cargo.toml",
        "netpath-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(src).display());
    }
    match netpath_ebpf_build::build(root, &root.join("target/ebpf"), &[]) {
        Ok(obj) => obj,
        Err(e) => panic!("{}", explain(root, &e)),
    }
}

fn explain(root: &Path, e: &anyhow::Error) -> String {
    format!(
        "building the eBPF object failed: {e:#}\n\
         it needs the nightly toolchain (`rustup toolchain install nightly`); \
         `cargo xtask build` in {} installs the rest and says what is missing",
        root.display()
    )
}
