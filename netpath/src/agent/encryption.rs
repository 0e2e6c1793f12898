//! The agent's WireGuard step: the node's key, its device — the kernel's where the
//! kernel has WireGuard, else netpath's user-space one —, the device's peers from the
//! spec, and (user space) the process kept running.
use anyhow::{bail, Context, Result};
use netpath_common::TcAttach;

use crate::{
    datapath::Loaded,
    net::Ipv4Net,
    netlink::Netlink,
    spec::{ClusterSpec, Encryption, NodeSpec},
    wireguard::{
        config::{DeviceConfig, Paths, PeerConfig},
        daemon, kernel,
        keys::KeyPair,
        Implementation, PublicKey, WireguardState, DEVICE, OVERHEAD_V4,
    },
};

/// What runs on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub public_key: PublicKey,
    pub ifindex: u32,
    /// The user-space device's process; None: the kernel's device.
    pub pid: Option<u32>,
    /// Why this implementation.
    pub why: String,
    /// Other nodes without a key, as of the last pass.
    pub without_key: Vec<String>,
}

/// Brings the device up when the spec wants encryption, with the programs' receive
/// side on it; removes it when it does not. A user-space device that already serves
/// (an agent restart) is kept, and its sessions with it.
#[allow(clippy::too_many_arguments)]
pub async fn ensure(
    nl: &Netlink,
    loaded: &mut Loaded,
    state_dir: &std::path::Path,
    spec: &ClusterSpec,
    local: &NodeSpec,
    underlay_mtu: u32,
    tc_attach: TcAttach,
    choice: Implementation,
) -> Result<Option<Running>> {
    let paths = Paths::under(state_dir);
    if spec.settings.encryption != Encryption::Wireguard {
        remove(nl, state_dir).await?;
        return Ok(None);
    }
    let pair = KeyPair::load_or_create(state_dir)?;
    let config = device_config(spec, local);
    config.write(&paths.config)?;
    let (pid, why) = match kernel_device(nl, choice).await? {
        Ok(why) => {
            kernel::configure(DEVICE, state_dir, &config)?;
            (None, why)
        }
        Err(why) => {
            let pid = match daemon::running(&paths, state_dir) {
                Some(pid) => pid,
                None => daemon::start(&paths, state_dir, DEVICE)?,
            };
            (Some(pid), why)
        }
    };
    let link = nl.link(DEVICE).await.context("the WireGuard device")?;
    nl.set_mtu(link.index, underlay_mtu - OVERHEAD_V4).await?;
    nl.set_up(link.index).await?;
    loaded.attach_wireguard(DEVICE, tc_attach)?;
    tracing::info!(
        device = DEVICE,
        kernel = pid.is_none(),
        public_key = %pair.public,
        "{why}"
    );
    Ok(Some(Running {
        public_key: pair.public,
        ifindex: link.index,
        pid,
        why,
        without_key: Vec::new(),
    }))
}

/// Makes (or keeps) the kernel's device: Ok(why) when it serves, Err(why not) when
/// netpath's user-space device must.
async fn kernel_device(nl: &Netlink, choice: Implementation) -> Result<Result<String, String>> {
    let existing = nl.find_link(DEVICE).await?;
    if choice == Implementation::UserSpace {
        if let Some(l) = existing.filter(|l| l.kind.as_deref() == Some("wireguard")) {
            nl.delete_link(l.index).await?;
        }
        return Ok(Err(
            "netpath's own user-space device, as --wireguard user-space asks".into(),
        ));
    }
    match existing {
        Some(l) if l.kind.as_deref() == Some("wireguard") => {}
        // A user-space device an earlier agent started: it keeps serving (a switch to
        // the kernel's takes a stop of the agent without --keep-pins first).
        Some(_) => {
            return Ok(Err(
                "netpath's own user-space device, already serving on this node".into(),
            ))
        }
        None => {
            if let Err(e) = nl.add_wireguard(DEVICE).await {
                let why = format!("this kernel has no WireGuard ({e})");
                if choice == Implementation::Kernel {
                    bail!("--wireguard kernel: {why}");
                }
                return Ok(Err(format!("netpath's own user-space device: {why}")));
            }
        }
    }
    if !kernel::tools_present() {
        let why = "`wg` (wireguard-tools) is not installed to configure the kernel's device";
        let l = nl.link(DEVICE).await?;
        nl.delete_link(l.index).await?;
        if choice == Implementation::Kernel {
            bail!("--wireguard kernel: {why}");
        }
        return Ok(Err(format!("netpath's own user-space device: {why}")));
    }
    Ok(Ok("the kernel's WireGuard".into()))
}

/// What status shows of the running device.
pub fn state(state_dir: &std::path::Path, running: &Running) -> WireguardState {
    let stats = match running.pid {
        Some(_) => std::fs::read(Paths::under(state_dir).stats)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok()),
        None => kernel::stats(DEVICE).ok(),
    };
    WireguardState {
        implementation: if running.pid.is_some() {
            "user-space"
        } else {
            "kernel"
        }
        .into(),
        why: running.why.clone(),
        device: DEVICE.into(),
        public_key: running.public_key,
        pid: running.pid,
        stats,
        without_key: running.without_key.clone(),
    }
}

/// A pass over the spec: the device's peers as it says, a user-space device
/// restarted if it died. What stands in the way of encryption, for the node's
/// problems.
pub fn follow(
    state_dir: &std::path::Path,
    spec: &ClusterSpec,
    local: &NodeSpec,
    running: &mut Running,
) -> Vec<String> {
    let paths = Paths::under(state_dir);
    let mut problems = Vec::new();
    let want = device_config(spec, local);
    if DeviceConfig::read(&paths.config).ok().as_ref() != Some(&want) {
        // The kernel's device first: the file records what it holds, so a failed
        // `wg set` is tried again next pass.
        let applied = match running.pid {
            None => kernel::configure(DEVICE, state_dir, &want),
            Some(_) => Ok(()),
        }
        .and_then(|()| want.write(&paths.config));
        if let Err(e) = applied {
            problems.push(format!("{e}"));
        }
    }
    if let Some(pid) = running.pid {
        daemon::reap(pid);
        if daemon::running(&paths, state_dir).is_none() {
            tracing::warn!(
                pid,
                "the WireGuard device process is gone; starting it again"
            );
            match daemon::start(&paths, state_dir, DEVICE) {
                Ok(pid) => running.pid = Some(pid),
                Err(e) => problems.push(format!("{e}")),
            }
        }
    }
    match local.wireguard_key {
        Some(k) if k == running.public_key => {}
        Some(k) => problems.push(format!(
            "the spec names WireGuard key {k} for node {}, but its key is {}: peers cannot \
             reach its pods until its [[nodes]] entry says wireguard_key = \"{}\"",
            local.name, running.public_key, running.public_key
        )),
        None => problems.push(format!(
            "the spec names no WireGuard key for node {}: peers send its pods nothing until \
             its [[nodes]] entry says wireguard_key = \"{}\"",
            local.name, running.public_key
        )),
    }
    running.without_key = spec
        .nodes
        .iter()
        .filter(|n| n.name != local.name && n.wireguard_key.is_none())
        .map(|n| n.name.clone())
        .collect();
    if !running.without_key.is_empty() {
        problems.push(format!(
            "nodes without a WireGuard key get nothing from this node's pods (never in \
             clear): {}",
            running.without_key.join(", ")
        ));
    }
    problems
}

/// The device's peers: every other node with a key, at its underlay address, allowed
/// its pod CIDR and its own address.
pub fn device_config(spec: &ClusterSpec, local: &NodeSpec) -> DeviceConfig {
    DeviceConfig {
        listen_port: spec.settings.wireguard_port,
        peers: spec
            .nodes
            .iter()
            .filter(|n| n.name != local.name)
            .filter_map(|n| {
                Some(PeerConfig {
                    public_key: n.wireguard_key?,
                    endpoint: std::net::SocketAddrV4::new(n.ip(), spec.settings.wireguard_port),
                    allowed_ips: vec![n.pod_cidr, Ipv4Net::new(n.ip(), 32)],
                })
            })
            .collect(),
    }
}

/// Stops a user-space device's process and removes the device, whichever it is (the
/// key stays).
pub async fn remove(nl: &Netlink, state_dir: &std::path::Path) -> Result<()> {
    daemon::stop(&Paths::under(state_dir), state_dir);
    if let Some(l) = nl.find_link(DEVICE).await? {
        nl.delete_link(l.index).await?;
    }
    Ok(())
}
