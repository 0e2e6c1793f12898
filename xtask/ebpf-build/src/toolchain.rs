//! What the eBPF build needs, installed once: nightly's rust-src and a bpf-linker
//! built against nightly rustc's own LLVM.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into())
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"))
        .join("bin")
}

/// PATH with cargo's bin directory first, so a freshly installed bpf-linker is found.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths = vec![cargo_bin()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).expect("PATH entries are valid")
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    // In a build script, stdout is cargo's instruction channel.
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// The LLVM major version nightly rustc is built with, e.g. 22.
fn nightly_llvm_major() -> Result<u32> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("nightly rustc is required for the eBPF programs")?;
    let line = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` names no LLVM version")?;
    line.split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .with_context(|| format!("unparsable LLVM version {line:?}"))
}

/// Installs nightly's rust-src and bpf-linker when missing.
pub fn ensure() -> Result<()> {
    let mut did = Vec::new();
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("toolchain: adding rust-src to nightly");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        did.push("rust-src");
    }
    let major = nightly_llvm_major()?;
    let stamp = home().join(format!(".cache/netpath/llvm-{major}/bpf-linker.stamp"));
    let linker = cargo_bin().join("bpf-linker");
    let linker_ok = stamp.exists()
        && Command::new(&linker)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !linker_ok {
        install_bpf_linker(major, &stamp)?;
        did.push("bpf-linker");
    }
    if did.is_empty() {
        eprintln!("toolchain ok");
    } else {
        eprintln!("toolchain: installed {}", did.join(", "));
    }
    Ok(())
}

fn install_bpf_linker(major: u32, stamp: &Path) -> Result<()> {
    eprintln!("toolchain: building bpf-linker against nightly's LLVM {major} (about a minute)");
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let lib = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("read {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    // llvm-sys looks for libLLVM.so under $LLVM_PREFIX/lib: point it at rustc's own.
    let prefix = stamp.parent().expect("stamp has a parent").to_path_buf();
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so".to_string(), lib.clone()] {
        let link = prefix_lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&lib), &link)
            .with_context(|| format!("link {}", link.display()))?;
    }
    run(Command::new("cargo")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .env("LLVM_PREFIX", &prefix)
        .args([
            "install",
            "--locked",
            "--force",
            "bpf-linker",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}")))?;
    std::fs::write(stamp, format!("bpf-linker for LLVM {major}\n"))?;
    Ok(())
}
