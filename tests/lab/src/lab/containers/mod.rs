//! Real containers on lab nodes: one private containerd per node (own root, state,
//! socket under the lab's work dir), a busybox image built here from Debian's
//! busybox-static (no registry is reachable), and `ip netns exec NODE ctr run --cni`
//! — ctr runs the CNI plugins itself, from the fixed host paths /opt/cni/bin and
//! /etc/cni/net.d, where [`HostCniInstall`] puts netpath under a lock and from
//! where it removes exactly what it put. podman, with its CNI backend, is the second
//! runtime.
mod containerd;
mod host_cni;
mod image;
mod podman;

pub use containerd::{Container, Containerd};
pub use host_cni::HostCniInstall;
pub use image::{busybox_image, BusyboxImage};
pub use podman::Podman;

use std::{net::Ipv4Addr, path::Path, process::Command};

use anyhow::{anyhow, bail, Context, Result};

use super::{Lab, LabConfig};

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The IPv4 address a runtime's CNI call gave `eth0` inside a container's namespace.
fn eth0_address(netns: &Path) -> Result<Ipv4Addr> {
    let addr = crate::run_in_ns(netns, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
    addr.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .ok_or_else(|| anyhow!("no IPv4 address on eth0: {addr}"))
}

impl Lab {
    /// Runs a busybox container on node `i` through its containerd and the CNI
    /// plugin (`ip netns exec NODE ctr run --rm --cni …`); returns its index in
    /// `containers`. The first call installs the plugin and starts containerd.
    pub fn run_container(&mut self, i: usize, name: &str, cfg: &LabConfig) -> Result<usize> {
        if self.host_cni.is_none() {
            self.host_cni = Some(HostCniInstall::new(&cfg.agent_bin)?);
        }
        let image = match &self.image {
            Some(i) => i.clone(),
            None => self
                .image
                .insert(busybox_image(&self.workdir.join("image"))?)
                .clone(),
        };
        self.runtimes.resize_with(self.nodes.len(), || None);
        let node = &self.nodes[i];
        if self.runtimes[i].is_none() {
            let dir = self.workdir.join(format!("containerd-{}", node.spec.name));
            self.runtimes[i] = Some(Containerd::start(&dir, i, node.ns.name(), &image)?);
        }
        let id = format!("{}-{}", node.name, name);
        let runtime = self.runtimes[i].as_ref().expect("started above");
        let c = runtime.run_container(&id, &["sleep", "1000000"])?;
        self.containers.push(c);
        Ok(self.containers.len() - 1)
    }

    /// The lab's busybox image, built on first use.
    pub fn image(&mut self) -> Result<BusyboxImage> {
        if let Some(i) = &self.image {
            return Ok(i.clone());
        }
        let built = busybox_image(&self.workdir.join("image"))?;
        Ok(self.image.insert(built).clone())
    }

    /// A private podman for node `i` (state under the lab's work dir).
    pub fn podman(&mut self, i: usize, cfg: &LabConfig) -> Result<Podman> {
        let image = self.image()?;
        let node = &self.nodes[i];
        let dir = self.workdir.join(format!("podman-{}", node.spec.name));
        Podman::new(&dir, &cfg.agent_bin, node.ns.path(), &image)
    }

    /// Node `i`'s containerd, once a container ran there.
    pub fn containerd(&self, i: usize) -> Option<&Containerd> {
        self.runtimes.get(i)?.as_ref()
    }
}
