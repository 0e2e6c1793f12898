//! The busybox image the lab's runtimes run, built locally from Debian's
//! busybox-static (no registry is reachable): an OCI layout for containerd, the
//! plain rootfs tarball for podman.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Result};

use super::run;

pub const IMAGE: &str = "local/busybox:latest";
/// Applets the image links to busybox.
const APPLETS: &[&str] = &["sh", "sleep", "ip", "ping", "nc", "cat", "echo", "wget"];

fn sha256(path: &Path) -> Result<String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("sha256sum printed nothing"))
}

/// Writes `bytes` as a blob of the OCI layout at `oci`; returns (digest, size).
fn blob(oci: &Path, file: &Path) -> Result<(String, u64)> {
    let hex = sha256(file)?;
    let size = std::fs::metadata(file)?.len();
    std::fs::copy(file, oci.join("blobs/sha256").join(&hex))?;
    Ok((format!("sha256:{hex}"), size))
}

/// A busybox-static image, built locally.
#[derive(Debug, Clone)]
pub struct BusyboxImage {
    /// OCI layout tarball, for `ctr image import`.
    pub oci: PathBuf,
    /// The plain rootfs tarball, for `podman import`.
    pub rootfs: PathBuf,
}

/// Builds the image under `dir`.
pub fn busybox_image(dir: &Path) -> Result<BusyboxImage> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox missing: `cargo xtask` installs busybox-static");
    }
    let root = dir.join("rootfs");
    let oci = dir.join("oci");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(oci.join("blobs/sha256"))?;
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    let layer = dir.join("layer.tar");
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    let (layer_digest, layer_size) = blob(&oci, &layer)?;
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Cmd": ["/bin/sh"] },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        })
        .to_string(),
    )?;
    let (config_digest, config_size) = blob(&oci, &config)?;
    let manifest = dir.join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": config_digest, "size": config_size },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar",
                         "digest": layer_digest, "size": layer_size }],
        })
        .to_string(),
    )?;
    let (manifest_digest, manifest_size) = blob(&oci, &manifest)?;
    std::fs::write(
        oci.join("index.json"),
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": manifest_digest, "size": manifest_size,
                            "annotations": { "org.opencontainers.image.ref.name": "latest" } }],
        })
        .to_string(),
    )?;
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let tarball = dir.join("busybox-oci.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&oci)
        .arg("-cf")
        .arg(&tarball)
        .arg("."))?;
    Ok(BusyboxImage {
        oci: tarball,
        rootfs: layer,
    })
}
