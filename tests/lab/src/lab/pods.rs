//! Pods wired into lab nodes: on netpath nodes by the product's endpoint module (the
//! CNI plugin's code path), on flannel-style nodes onto the bridge `cni0`.
use std::{net::Ipv4Addr, os::fd::AsRawFd, path::Path};

use anyhow::{Context, Result};
use netpath::ipam;

use super::{Lab, Node, Pod, UNDERLAY_MTU};
use crate::{netns::NetNs, nl::Nl};

impl Lab {
    /// Wires `n` more pods into node `i`, whose agent runs and holds its pod CIDR.
    pub fn attach_pods(&mut self, i: usize, n: usize) -> Result<()> {
        let mtu = self.spec.pod_mtu(UNDERLAY_MTU);
        let first = self.nodes[i].pods.len() + 1;
        for p in first..first + n {
            let pod = attach_pod(&self.nodes[i], p, mtu, None)?;
            self.nodes[i].pods.push(pod);
        }
        Ok(())
    }

    /// Wires one more pod into node `i` as the Kubernetes pod `namespace/name` (what
    /// containerd's CRI passes the CNI plugin); returns its index on the node.
    pub fn attach_pod_as(&mut self, i: usize, namespace: &str, name: &str) -> Result<usize> {
        let mtu = self.spec.pod_mtu(UNDERLAY_MTU);
        let p = self.nodes[i].pods.len() + 1;
        let pod = attach_pod(&self.nodes[i], p, mtu, Some((namespace, name)))?;
        self.nodes[i].pods.push(pod);
        Ok(p - 1)
    }
}

/// A pod on a flannel-style node: its veth hangs off the bridge `cni0`.
pub(super) fn bridge_pod(node: &Node, p: usize, ip: Ipv4Addr, mtu: u32) -> Result<Pod> {
    let name = format!("{}-pod{p}", node.name);
    let ns = NetNs::create(&name)?;
    let host_ifname = format!("lxc{p}");
    let tmp_peer = format!("tmp{p}");
    let pod_fd = ns.file()?;
    node.ns.run(|| {
        let nl = Nl::new()?;
        nl.add_veth(&host_ifname, &tmp_peer)?;
        nl.move_to_netns(nl.index(&tmp_peer)?, pod_fd.as_raw_fd())?;
        let host = nl.index(&host_ifname)?;
        nl.set_mtu(host, mtu)?;
        nl.set_master(host, nl.index("cni0")?)?;
        nl.set_up(host)
    })?;
    let cidr = node.spec.pod_cidr;
    let mac = ns.run(|| {
        let nl = Nl::new()?;
        let eth0 = nl.index(&tmp_peer)?;
        nl.rename(eth0, "eth0")?;
        nl.set_mtu(eth0, mtu)?;
        nl.add_address(eth0, ip, cidr.prefix)?;
        nl.set_up(eth0)?;
        nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, eth0, Some(cidr.nth(1)))?;
        nl.mac("eth0")
    })?;
    Ok(Pod {
        name,
        ns,
        ip,
        mac,
        host_ifname,
    })
}

/// A pod on a Calico-style node: its veth `cali<p>` has no address and no bridge;
/// the node routes the pod's /32 to it and answers, by proxy ARP without delay, for
/// the pod's gateway 169.254.1.1, which the pod reaches on-link (what Calico's CNI
/// plugin wires).
pub(super) fn routed_pod(node: &Node, p: usize, ip: Ipv4Addr, mtu: u32) -> Result<Pod> {
    let name = format!("{}-pod{p}", node.name);
    let ns = NetNs::create(&name)?;
    let host_ifname = format!("cali{p}");
    let tmp_peer = format!("tmp{p}");
    let pod_fd = ns.file()?;
    node.ns.run(|| {
        let nl = Nl::new()?;
        nl.add_veth(&host_ifname, &tmp_peer)?;
        nl.move_to_netns(nl.index(&tmp_peer)?, pod_fd.as_raw_fd())?;
        let host = nl.index(&host_ifname)?;
        nl.set_mtu(host, mtu)?;
        for (sysctl, value) in [
            (format!("ipv4/conf/{host_ifname}/proxy_arp"), "1"),
            (format!("ipv4/neigh/{host_ifname}/proxy_delay"), "0"),
        ] {
            super::write_sysctl(&format!("/proc/sys/net/{sysctl}"), value)?;
        }
        nl.set_up(host)?;
        nl.replace_route(ip, 32, host, None)
    })?;
    let mac = ns.run(|| {
        let nl = Nl::new()?;
        let eth0 = nl.index(&tmp_peer)?;
        nl.rename(eth0, "eth0")?;
        nl.set_mtu(eth0, mtu)?;
        nl.add_address(eth0, ip, 32)?;
        nl.set_up(eth0)?;
        nl.replace_route_onlink(Ipv4Addr::UNSPECIFIED, 0, eth0, super::POD_GATEWAY)?;
        nl.mac("eth0")
    })?;
    Ok(Pod {
        name,
        ns,
        ip,
        mac,
        host_ifname,
    })
}

/// A pod on a netpath node, wired by the product's endpoint module (as the CNI
/// plugin wires one), from inside the node's namespace, with an address from the
/// node's address book: lab pods and CNI containers never collide.
pub(super) fn attach_pod(
    node: &Node,
    p: usize,
    mtu: u32,
    k8s: Option<(&str, &str)>,
) -> Result<Pod> {
    let name = format!("{}-pod{p}", node.name);
    let ns = NetNs::create(&name)?;
    let req = netpath::pod::PodRequest {
        alloc: ipam::Allocation {
            id: ipam::AttachmentId {
                container_id: name.clone(),
                ifname: "eth0".into(),
            },
            pod_namespace: k8s.map(|(ns, _)| ns.to_string()),
            pod_name: Some(k8s.map_or(name.clone(), |(_, n)| n.to_string())),
            netns: Some(ns.path().display().to_string()),
        },
        netns: ns.path(),
        mtu,
    };
    let state_dir = node.state_dir();
    let (ip, attached) = in_runtime(node.ns.path(), || async {
        Ok(netpath::pod::add(&state_dir, &node.pin_dir, node.spec.pod_cidr, req).await?)
    })
    .with_context(|| format!("attach pod {name}"))?;
    Ok(Pod {
        name,
        ns,
        ip,
        mac: attached.pod_mac.octets(),
        host_ifname: attached.host_ifname,
    })
}

/// Runs an async product call to completion on a thread inside namespace `ns`.
pub fn in_runtime<T: Send, F: std::future::Future<Output = Result<T>>>(
    ns: &Path,
    f: impl FnOnce() -> F + Send,
) -> Result<T> {
    crate::netns::run_in(ns, || netpath::files::one_shot_runtime()?.block_on(f()))
}
