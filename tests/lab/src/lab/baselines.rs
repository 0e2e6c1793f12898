//! The classic kernel paths netpath is compared with, built by hand the way the seed
//! and flannel build them: a Linux bridge for pods, host-gw routes, the kernel's vxlan
//! device; and the plain veth pair every path is measured against.
use std::{net::Ipv4Addr, os::fd::AsRawFd, path::PathBuf};

use anyhow::{bail, Context, Result};
use netpath::spec::ClusterSpec;

use super::{prefix::reserve_prefix, Node, UNDERLAY_MTU};
use crate::{
    netns::NetNs,
    nl::{KernelVxlan, Nl},
};

/// The pod bridge of the classic paths, with the pod CIDR's gateway address.
pub(super) fn add_pod_bridge(nl: &Nl, node: &Node, mtu: u32) -> Result<()> {
    let cni0 = nl.add_bridge("cni0")?;
    nl.add_address(cni0, node.spec.pod_cidr.nth(1), node.spec.pod_cidr.prefix)?;
    nl.set_mtu(cni0, mtu)?;
    nl.set_up(cni0)
}

/// Two namespaces joined by one veth pair: the limit every other path is measured
/// against.
pub struct VethPair {
    pub a: NetNs,
    pub b: NetNs,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
    workdir: PathBuf,
}

impl VethPair {
    pub fn up() -> Result<Self> {
        let (prefix, workdir) = reserve_prefix()?;
        let a = NetNs::create(&format!("{prefix}-a"))?;
        let b = NetNs::create(&format!("{prefix}-b"))?;
        let (a_ip, b_ip) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2));
        let b_fd = b.file()?;
        a.run(|| {
            let nl = Nl::new()?;
            nl.add_veth("eth0", "peer0")?;
            nl.move_to_netns(nl.index("peer0")?, b_fd.as_raw_fd())?;
            let eth0 = nl.index("eth0")?;
            nl.add_address(eth0, a_ip, 24)?;
            nl.set_up(eth0)
        })?;
        b.run(|| {
            let nl = Nl::new()?;
            let p = nl.index("peer0")?;
            nl.rename(p, "eth0")?;
            nl.add_address(p, b_ip, 24)?;
            nl.set_up(p)
        })?;
        Ok(Self {
            a,
            b,
            a_ip,
            b_ip,
            workdir,
        })
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.workdir);
    }
}

/// flannel's host-gw by hand: pods on bridge `cni0`, a kernel route per other node.
pub(super) fn setup_host_gw_node(node: &Node, spec: &ClusterSpec) -> Result<()> {
    node.ns.run(|| {
        let nl = Nl::new()?;
        add_pod_bridge(&nl, node, UNDERLAY_MTU)?;
        routes_to_peers(&nl, node, spec)
    })
}

/// Calico's kernel path between nodes: the same route per other node, and no
/// bridge (each pod gets its own /32 route when wired: `pods::routed_pod`).
pub(super) fn setup_routed_node(node: &Node, spec: &ClusterSpec) -> Result<()> {
    node.ns.run(|| routes_to_peers(&Nl::new()?, node, spec))
}

/// `<pod cidr> via <node>` for every other node, all on this node's subnet.
fn routes_to_peers(nl: &Nl, node: &Node, spec: &ClusterSpec) -> Result<()> {
    let eth0 = nl.index("eth0")?;
    for peer in spec.nodes.iter().filter(|n| n.name != node.spec.name) {
        if !node.spec.underlay.contains(peer.ip()) {
            bail!("host-gw needs {} on {}'s subnet", peer.name, node.spec.name);
        }
        nl.replace_route(
            peer.pod_cidr.addr,
            peer.pod_cidr.prefix,
            eth0,
            Some(peer.ip()),
        )?;
    }
    Ok(())
}

/// flannel's vxlan backend by hand: pods on bridge `cni0`, a kernel vxlan device with
/// VNI/port from the spec and static neighbour and fdb entries for every other node.
pub(super) fn setup_kernel_vxlan_node(node: &Node, spec: &ClusterSpec) -> Result<()> {
    node.ns.run(|| {
        let nl = Nl::new()?;
        add_pod_bridge(&nl, node, spec.pod_mtu(UNDERLAY_MTU))?;
        let vx = nl.add_kernel_vxlan(&KernelVxlan {
            name: "flannel.1",
            vni: spec.settings.vni,
            port: spec.settings.port,
            local: node.ip(),
            underlay: nl.index("eth0")?,
            mac: node.spec.vtep_mac.octets(),
        })?;
        nl.set_mtu(vx, UNDERLAY_MTU - netpath_common::VXLAN_OVERHEAD)?;
        nl.add_address(vx, node.spec.pod_cidr.network(), 32)?;
        nl.set_up(vx)?;
        for peer in spec.nodes.iter().filter(|n| n.name != node.spec.name) {
            let gw = peer.pod_cidr.network();
            nl.add_neighbour(vx, gw, peer.vtep_mac.octets())?;
            nl.add_fdb(vx, peer.vtep_mac.octets(), peer.ip())?;
            nl.replace_route_onlink(gw, peer.pod_cidr.prefix, vx, gw)?;
        }
        Ok(())
    })
}

/// The kernel's ipip device as flannel's ipip backend names it.
pub const KERNEL_IPIP_DEVICE: &str = "flannel.ipip";

/// Calico's and flannel's ipip overlay by hand: pods on bridge `cni0`, an `ipip`
/// device bound to the underlay with the pod CIDR's network address, and one onlink
/// route per other node through it. A kernel without ipip support fails here, loudly.
pub(super) fn setup_kernel_ipip_node(node: &Node, spec: &ClusterSpec) -> Result<()> {
    node.ns.run(|| {
        let nl = Nl::new()?;
        add_pod_bridge(&nl, node, spec.pod_mtu(UNDERLAY_MTU))?;
        Ok(())
    })?;
    let local = node.ip().to_string();
    let add = [
        "ip",
        "link",
        "add",
        KERNEL_IPIP_DEVICE,
        "type",
        "ipip",
        "local",
        &local,
        "dev",
        "eth0",
    ];
    crate::run_in_ns(node.ns.path(), &add).context(
        "create a kernel ipip device (this kernel has no ipip support: IP-in-IP interop \
         needs CONFIG_NET_IPIP, e.g. the 5.10 VM of `cargo xtask test --kernels 5.10`)",
    )?;
    node.ns.run(|| {
        let nl = Nl::new()?;
        let tun = nl.index(KERNEL_IPIP_DEVICE)?;
        nl.set_mtu(tun, UNDERLAY_MTU - netpath_common::IPIP_OVERHEAD)?;
        nl.add_address(tun, node.spec.pod_cidr.network(), 32)?;
        nl.set_up(tun)?;
        for peer in spec.nodes.iter().filter(|n| n.name != node.spec.name) {
            nl.replace_route_onlink(peer.pod_cidr.addr, peer.pod_cidr.prefix, tun, peer.ip())?;
        }
        Ok(())
    })
}
