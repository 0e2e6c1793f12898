//! podman 4.3 with its CNI backend, as a second runtime driving the plugin.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use netpath::cni::install::{self, InstallOptions};

use super::{eth0_address, run, BusyboxImage};

/// podman 4.3 with its CNI backend, private storage and configuration, running
/// containers in one lab node (`nsenter --net`: podman needs the host's /sys for
/// cgroups, which `ip netns exec` would hide). The plugin and conflist go into the
/// private directory through the product's installer: podman takes plugin and
/// config directories as options.
pub struct Podman {
    dir: PathBuf,
    node_ns: PathBuf,
    names: Vec<String>,
}

pub const PODMAN_NETWORK: &str = "netpath-lab";

impl Podman {
    pub fn new(
        dir: &Path,
        netpath_bin: &Path,
        node_ns: &Path,
        image: &BusyboxImage,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        install::install(
            netpath_bin,
            &InstallOptions {
                bin_dir: dir.join("bin"),
                conf_dir: dir.join("net.d"),
                network: PODMAN_NETWORK.into(),
                node: None,
                state_root: None,
            },
        )?;
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
runtime = "runc"
tmp_dir = "{d}/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{d}/bin"]
network_config_dir = "{d}/net.d"
"#,
                d = dir.display()
            ),
        )?;
        let me = Self {
            dir: dir.to_path_buf(),
            node_ns: node_ns.to_path_buf(),
            names: Vec::new(),
        };
        me.podman(&[
            "import",
            &image.rootfs.display().to_string(),
            "local/busybox",
        ])?;
        Ok(me)
    }

    pub fn podman(&self, args: &[&str]) -> Result<String> {
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.node_ns.display()))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(["--storage-driver", "vfs", "--network-backend", "cni"])
            .arg("--cni-config-dir")
            .arg(self.dir.join("net.d"))
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            // containers/storage stages imports under $TMPDIR (default /var/tmp).
            .env("TMPDIR", self.dir.join("tmp")))
    }

    /// Starts a detached container on the netpath network; returns its task's
    /// PID and its address.
    pub fn run(&mut self, name: &str) -> Result<(u32, Ipv4Addr)> {
        self.names.push(name.to_string());
        self.podman(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            PODMAN_NETWORK,
            // Fully qualified: no short-name resolution (and its cache file).
            "localhost/local/busybox:latest",
            "sleep",
            "1000000",
        ])?;
        let pid: u32 = self
            .podman(&["inspect", "-f", "{{.State.Pid}}", name])?
            .trim()
            .parse()
            .context("podman inspect: PID")?;
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let ip = eth0_address(&netns).with_context(|| format!("podman container {name}"))?;
        Ok((pid, ip))
    }

    /// `podman rm -f`: stops the container; podman calls CNI DEL.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        self.podman(&["rm", "-f", "-t", "0", name])?;
        self.names.retain(|n| n != name);
        Ok(())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for n in std::mem::take(&mut self.names) {
            if let Err(e) = self.podman(&["rm", "-f", "-t", "0", &n]) {
                tracing::warn!("podman rm {n}: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
