//! Points the build at the eBPF object that `cargo xtask` compiles with nightly.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=NETPATH_EBPF_OBJ");
    let obj = match std::env::var_os("NETPATH_EBPF_OBJ") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
            manifest.join("../target/ebpf/bpfel-unknown-none/release/netpath")
        }
    };
    if !obj.exists() {
        panic!(
            "eBPF object {} is missing: build it with `cargo xtask build` (or set NETPATH_EBPF_OBJ)",
            obj.display()
        );
    }
    println!("cargo:rerun-if-changed={}", obj.display());
    println!("cargo:rustc-env=NETPATH_EBPF_OBJ={}", obj.display());
}
