//! The agent's WireGuard step: the node's key, its device (netpath's user-space one
//! here: the kernel device comes where the kernel has WireGuard), the device's peers
//! from the spec, and the process kept running.
use anyhow::{Context, Result};

use netpath_common::TcAttach;

use crate::{
    datapath::Loaded,
    net::Ipv4Net,
    netlink::Netlink,
    spec::{ClusterSpec, Encryption, NodeSpec},
    wireguard::{
        config::{DeviceConfig, Paths, PeerConfig},
        daemon,
        keys::KeyPair,
        PublicKey, DEVICE, OVERHEAD_V4,
    },
};

/// What runs on this node, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub public_key: PublicKey,
    pub ifindex: u32,
    pub pid: u32,
}

/// Brings the device up when the spec wants encryption (starting its process unless
/// one serves already: an agent restart keeps the sessions), with the programs'
/// receive side on it; removes it when it does not.
pub async fn ensure(
    nl: &Netlink,
    loaded: &mut Loaded,
    state_dir: &std::path::Path,
    spec: &ClusterSpec,
    local: &NodeSpec,
    underlay_mtu: u32,
    tc_attach: TcAttach,
) -> Result<Option<Running>> {
    let paths = Paths::under(state_dir);
    if spec.settings.encryption != Encryption::Wireguard {
        remove(nl, state_dir).await?;
        return Ok(None);
    }
    let pair = KeyPair::load_or_create(state_dir)?;
    device_config(spec, local).write(&paths.config)?;
    let pid = match daemon::running(&paths, state_dir) {
        Some(pid) => pid,
        None => daemon::start(&paths, state_dir, DEVICE)?,
    };
    let link = nl
        .link(DEVICE)
        .await
        .context("the WireGuard device the process made")?;
    nl.set_mtu(link.index, underlay_mtu - OVERHEAD_V4).await?;
    nl.set_up(link.index).await?;
    loaded.attach_wireguard(DEVICE, tc_attach)?;
    Ok(Some(Running {
        public_key: pair.public,
        ifindex: link.index,
        pid,
    }))
}

/// A pass over the spec: the device's peers as it says, the process restarted if
/// it died. What stands in the way of encryption, for the node's problems.
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
        if let Err(e) = want.write(&paths.config) {
            problems.push(format!("{e}"));
        }
    }
    daemon::reap(running.pid);
    if daemon::running(&paths, state_dir).is_none() {
        tracing::warn!(
            pid = running.pid,
            "the WireGuard device process is gone; starting it again"
        );
        match daemon::start(&paths, state_dir, DEVICE) {
            Ok(pid) => running.pid = pid,
            Err(e) => problems.push(format!("{e}")),
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
    let keyless: Vec<&str> = spec
        .nodes
        .iter()
        .filter(|n| n.name != local.name && n.wireguard_key.is_none())
        .map(|n| n.name.as_str())
        .collect();
    if !keyless.is_empty() {
        problems.push(format!(
            "nodes without a WireGuard key get nothing from this node's pods (never in \
             clear): {}",
            keyless.join(", ")
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

/// Stops the device process and removes the device (the key stays).
pub async fn remove(nl: &Netlink, state_dir: &std::path::Path) -> Result<()> {
    daemon::stop(&Paths::under(state_dir), state_dir);
    if let Some(l) = nl.find_link(DEVICE).await? {
        nl.delete_link(l.index).await?;
    }
    Ok(())
}
