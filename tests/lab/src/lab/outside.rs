//! A host outside the cluster, behind the fabric router: the stand-in for the
//! internet. The router has no route to pod CIDRs, so pods reach it only through
//! masquerade, with their node's address.
use std::{net::Ipv4Addr, os::fd::AsRawFd, path::Path};

use anyhow::Result;
use netpath::net::Ipv4Net;

use super::{write_sysctl, Lab};
use crate::{check, netns::NetNs, nl::Nl};

/// The outside subnet (TEST-NET-3): the router on .1, the outside host on .10.
pub const OUTSIDE_NET: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(203, 0, 113, 0),
    prefix: 24,
};
pub const OUTSIDE_ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The router's port toward the outside host, in the fabric namespace.
const ROUTER_PORT: &str = "p-outside";

pub struct Outside {
    pub ns: NetNs,
    pub ip: Ipv4Addr,
}

impl Outside {
    pub fn host(&self) -> check::Host<'_> {
        check::Host {
            name: "outside",
            netns: self.ns.path(),
            ip: self.ip,
        }
    }
}

impl Lab {
    /// The outside host on its own link to the fabric router.
    pub(super) fn add_outside(&self) -> Result<Outside> {
        let ns = NetNs::create(&format!("{}-outside", self.prefix))?;
        let fabric = self.fabric.as_ref().expect("fabric exists");
        let fabric_fd = fabric.file()?;
        ns.run(|| {
            let nl = Nl::new()?;
            nl.add_veth("eth0", ROUTER_PORT)?;
            nl.move_to_netns(nl.index(ROUTER_PORT)?, fabric_fd.as_raw_fd())?;
            let eth0 = nl.index("eth0")?;
            nl.add_address(eth0, OUTSIDE_IP, OUTSIDE_NET.prefix)?;
            nl.set_up(eth0)?;
            nl.set_up_by_name("lo")?;
            nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, eth0, Some(OUTSIDE_ROUTER))
        })?;
        fabric.run(|| {
            let nl = Nl::new()?;
            let p = nl.index(ROUTER_PORT)?;
            nl.add_address(p, OUTSIDE_ROUTER, OUTSIDE_NET.prefix)?;
            nl.set_up(p)?;
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        })?;
        Ok(Outside { ns, ip: OUTSIDE_IP })
    }

    pub fn outside(&self) -> &Outside {
        self.outside.as_ref().expect("the lab has its outside host")
    }

    pub fn outside_ns(&self) -> &Path {
        self.outside().ns.path()
    }

    /// Every netpath node's first pod to the outside host over `protos`: the
    /// outside must see the node's underlay address.
    pub fn check_egress(&self, protos: &[check::Proto]) -> Vec<check::CheckResult> {
        let mut out = Vec::new();
        let to = self.outside().host();
        for node in self
            .nodes
            .iter()
            .filter(|n| n.kind == super::NodeKind::Netpath)
        {
            let Some(pod) = node.pods.first() else {
                continue;
            };
            for &proto in protos {
                out.push(check::probe_egress(
                    "e pod->outside",
                    "masquerade",
                    proto,
                    &pod.host(),
                    &to,
                    node.ip(),
                ));
            }
        }
        out
    }

    /// Shrinks the router's side of the outside link: the router then answers bigger
    /// packets toward the outside with ICMP fragmentation-needed, as a smaller-MTU hop
    /// on the internet does. The outside host keeps its MTU, so its MSS does not
    /// spare the sender the discovery.
    pub fn set_outside_mtu(&self, mtu: u32) -> Result<()> {
        self.fabric.as_ref().expect("fabric exists").run(|| {
            let nl = Nl::new()?;
            nl.set_mtu(nl.index(ROUTER_PORT)?, mtu)
        })
    }
}
