//! The one recipe for netpath's eBPF object, shared by `cargo xtask` and by the
//! `netpath` crate's build script (so `cargo build -p netpath` works on a fresh
//! checkout): nightly with `build-std=core` for `bpfel-unknown-none`, linked by
//! bpf-linker, with BTF so bpftool prints typed map entries.
mod toolchain;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

pub use toolchain::{ensure as ensure_toolchain, path_with_cargo_bin};

/// Where the object lands under a target dir.
pub const OBJECT: &str = "bpfel-unknown-none/release/netpath";

/// Builds the eBPF crate (`<root>/netpath-ebpf`) into `target_dir` with extra cargo
/// arguments (features), installing rust-src and bpf-linker first when missing;
/// returns the object's path.
pub fn build(root: &Path, target_dir: &Path, extra: &[&str]) -> Result<PathBuf> {
    toolchain::ensure()?;
    let mut cmd = Command::new("cargo");
    // The outer cargo's settings belong to the host build, not to the BPF one; from
    // a build script they include the host's CARGO_CFG_*, TARGET, PROFILE and more,
    // which would make this build differ from xtask's and rebuild every time.
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        let outer = (name.starts_with("CARGO") && name != "CARGO_HOME")
            || name.starts_with("RUSTC")
            || name.starts_with("RUSTDOC")
            || name.starts_with("DEP_")
            || [
                "RUSTUP_TOOLCHAIN",
                "RUSTFLAGS",
                "TARGET",
                "HOST",
                "OUT_DIR",
                "PROFILE",
                "OPT_LEVEL",
                "DEBUG",
                "NUM_JOBS",
                "MAKEFLAGS",
                "MFLAGS",
            ]
            .contains(&name.as_ref());
        if outer {
            cmd.env_remove(var);
        }
    }
    cmd.current_dir(root.join("netpath-ebpf"))
        .args([
            "+nightly",
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(target_dir)
        .args(extra)
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env("PATH", path_with_cargo_bin())
        // In a build script, stdout is cargo's instruction channel.
        .stdout(std::io::stderr());
    let status = cmd
        .status()
        .context("run cargo +nightly for the eBPF crate")?;
    if !status.success() {
        bail!("building the eBPF programs failed");
    }
    Ok(target_dir.join(OBJECT))
}
