//! Pod wiring: a veth pair from the node into the pod's namespace, the pod's /32
//! with a default route via the link-local gateway that `from_pod` answers, the MTU,
//! `from_pod` on the host side, the pod's `ENDPOINTS` entry and the node's /32 route
//! to it. Used by the CNI plugin and by the lab; runs in the node's namespace.
use std::{
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use netpath_common::{Endpoint, NetAddr, PolicyEndpoint, POD_GATEWAY};

use crate::{
    datapath::{self, Pinned},
    net::{Ipv4Net, Mac},
    netlink::{Netlink, RouteSpec, PROTO_ENDPOINT},
};

/// One pod interface to wire: the container's netns, the interface name inside it
/// and its address.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Who the attachment belongs to (CNI container id; the lab's pod name).
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mtu: u32,
}

/// What `attach` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub host_mac: Mac,
    pub pod_mac: Mac,
}

/// The host-side veth name of an attachment: a pure function of (container id,
/// ifname), so DEL finds it without stored state, and at most 15 bytes (IFNAMSIZ).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let h = crate::files::fnv1a(container_id.bytes().chain([0]).chain(ifname.bytes()));
    format!("np{:011x}", h & 0xfff_ffff_ffff)
}

impl Attachment {
    pub fn host_ifname(&self) -> String {
        host_ifname(&self.container_id, &self.ifname)
    }

    fn check(&self) -> Result<()> {
        if self.ifname.is_empty()
            || self.ifname.len() > 15
            || self.ifname.contains(['/', '\0', ' '])
        {
            bail!("invalid interface name {:?}", self.ifname);
        }
        if !(68..=65535).contains(&self.mtu) {
            bail!("MTU {} out of range (68-65535)", self.mtu);
        }
        Ok(())
    }
}

/// Wires the pod in. An earlier attachment with the same (container id, ifname) is
/// replaced. Must run on a thread in the node's namespace, inside a tokio runtime.
pub async fn attach(pin_dir: &Path, a: &Attachment) -> Result<Attached> {
    a.check()?;
    let host = a.host_ifname();
    let node = Netlink::new()?;
    if let Some(old) = node.find_link(&host).await? {
        node.delete_link(old.index).await?;
    }
    let pod_ns = std::fs::File::open(&a.netns)
        .with_context(|| format!("open container netns {}", a.netns.display()))?;
    node.add_veth_into(&host, &a.ifname, pod_ns.as_raw_fd(), a.mtu)
        .await?;
    let wired = wire(&node, pin_dir, a, &host).await;
    if wired.is_err() {
        // Half-wired pods are worse than none: the veth (and its peer) go.
        if let Ok(Some(l)) = node.find_link(&host).await {
            let _ = node.delete_link(l.index).await;
        }
    }
    wired
}

async fn wire(node: &Netlink, pin_dir: &Path, a: &Attachment, host: &str) -> Result<Attached> {
    let h = node.link(host).await?;
    let pod = Netlink::new_in(&a.netns)?;
    let eth = pod.index(&a.ifname).await?;
    pod.add_address(eth, a.ip, 32).await?;
    pod.set_up(eth).await?;
    let gw = Ipv4Addr::from(POD_GATEWAY);
    let route = |dst, gateway| RouteSpec {
        dst,
        oif: eth,
        gateway,
        mtu: None,
        protocol: PROTO_ENDPOINT,
    };
    pod.replace_route(&route(Ipv4Net::new(gw, 32), None))
        .await?;
    pod.replace_route(&route(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0), Some(gw)))
        .await?;
    let pod_mac = pod.mac(&a.ifname).await?;

    let host_mac = h.mac.with_context(|| format!("{host} has no MAC"))?;
    datapath::attach::attach_from_pod(pin_dir, host)?;
    let mut pinned = Pinned::open(pin_dir)?;
    if pinned.settings()?.policy_rev != 0 {
        // Closed until the agent has judged which policies select it: a pod must
        // not receive a packet its policy would refuse.
        pinned.set_policy_endpoint(NetAddr::v4(a.ip.octets()), PolicyEndpoint::CLOSED)?;
    }
    pinned.insert_endpoint(
        a.ip,
        Endpoint {
            ifindex: h.index,
            pod_mac: pod_mac.octets(),
            host_mac: host_mac.octets(),
        },
    )?;
    node.replace_route(&RouteSpec {
        dst: Ipv4Net::new(a.ip, 32),
        oif: h.index,
        gateway: None,
        mtu: None,
        protocol: PROTO_ENDPOINT,
    })
    .await?;
    // The per-packet path serves a pod the socket programs do not know.
    let at_socket = datapath::register_pod(pin_dir, &a.netns, a.ip).unwrap_or_else(|e| {
        tracing::warn!(ip = %a.ip, "pod's connections stay translated per packet: {e:#}");
        false
    });
    tracing::debug!(ip = %a.ip, veth = %host, at_socket, "endpoint attached");
    Ok(Attached {
        host_ifname: host.to_string(),
        host_ifindex: h.index,
        host_mac,
        pod_mac,
    })
}

/// Waits until the agent has judged the pod at `ip` (its entry no longer
/// [`PolicyEndpoint::CLOSED`]): the promise of CNI ADD that a pod a policy selects
/// receives nothing its policy refuses, and a pod no policy selects is open.
pub async fn wait_judged(pin_dir: &Path, ip: Ipv4Addr, within: std::time::Duration) -> Result<()> {
    let started = std::time::Instant::now();
    let addr = NetAddr::v4(ip.octets());
    loop {
        let closed = Pinned::open(pin_dir)?
            .policy_endpoint(addr)
            .is_some_and(|e| e == PolicyEndpoint::CLOSED);
        if !closed {
            return Ok(());
        }
        if started.elapsed() >= within {
            bail!(
                "the agent did not judge the pod's network policy within {:?} (the pod stays closed)",
                within
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Unwires an attachment: its map entry, its TCX link pin and its veth (the pod side
/// and the node's /32 route go with it). Idempotent: whatever is already gone —
/// the veth, the netns, the entry — is skipped. Returns whether anything was removed.
pub async fn detach(
    pin_dir: &Path,
    container_id: &str,
    ifname: &str,
    ip: Option<Ipv4Addr>,
) -> Result<bool> {
    let host = host_ifname(container_id, ifname);
    let node = Netlink::new()?;
    let link = node.find_link(&host).await?;
    let mut removed = false;
    let mut link_pins = Vec::new();
    if let Ok(mut pinned) = Pinned::open(pin_dir) {
        let mut gone: Vec<(Ipv4Addr, u32)> = Vec::new();
        for (eip, ep) in pinned.endpoints()? {
            let ours = link.as_ref().is_some_and(|l| l.index == ep.ifindex) || Some(eip) == ip;
            if ours {
                gone.push((eip, ep.ifindex));
            }
        }
        for (eip, ifindex) in gone {
            // Its cookie is never reused: an entry left behind only takes room.
            if let Err(e) = datapath::unregister_pod(pin_dir, eip) {
                tracing::warn!(ip = %eip, "forget the pod's namespace: {e:#}");
            }
            pinned.remove_endpoint(eip)?;
            pinned.remove_policy_endpoint(NetAddr::v4(eip.octets()))?;
            link_pins.push(datapath::attach::link_pin(
                pin_dir,
                ifindex,
                aya::programs::TcAttachType::Ingress,
            ));
            removed = true;
        }
    }
    if let Some(l) = link {
        node.delete_link(l.index).await?;
        removed = true;
    }
    // After the device: releasing a TCX link that is still attached waits for an
    // RCU grace period; one whose device is gone is released at once.
    for pin in &link_pins {
        crate::files::remove_file_if_present(pin)
            .with_context(|| format!("remove {}", pin.display()))?;
    }
    tracing::debug!(veth = %host, removed, "endpoint detached");
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = host_ifname("0123456789abcdef", "eth0");
        assert_eq!(a, host_ifname("0123456789abcdef", "eth0"));
        assert!(a.len() <= 15 && a.starts_with("np"), "{a}");
        assert_ne!(a, host_ifname("0123456789abcdef", "eth1"));
        assert_ne!(a, host_ifname("0123456789abcdee", "eth0"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(host_ifname("ab", "c"), host_ifname("a", "bc"));
    }
}
