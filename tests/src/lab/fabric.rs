//! The underlay fabric between the lab's nodes: one namespace that connects the nodes
//! of each underlay subnet and routes between subnets, built one of two ways.
//!
//! - `Bridge` (the default): a Linux bridge per subnet carrying the router's address.
//!   A bridge has no `hw_enc_features`, so an encapsulated GSO packet leaving through
//!   it is cut into wire frames there — a NIC or cloud VM without UDP-tunnel
//!   segmentation offload, where most flannel users' clusters are.
//! - `Veth`: no bridge; the router answers for every node (proxy ARP on each port, a
//!   /32 route per node, its own addresses on `lo`) and forwards veth to veth, so
//!   64 KB packets stay whole to the receiver — NICs with tunnel offload.
use std::net::Ipv4Addr;

use anyhow::Result;
use netpath::net::Ipv4Net;

use super::{router_ip, write_sysctl};
use crate::nl::Nl;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fabric {
    #[default]
    Bridge,
    Veth,
}

impl Fabric {
    /// Sets up the router for `subnets`; runs inside the fabric namespace.
    pub(super) fn build(self, subnets: &[Ipv4Net]) -> Result<()> {
        let nl = Nl::new()?;
        for (k, net) in subnets.iter().enumerate() {
            match self {
                Self::Bridge => {
                    let br = nl.add_bridge(&format!("ul{k}"))?;
                    // A bridge whose MAC was never set takes its lowest port's: a node
                    // joining or leaving would change the router's MAC under everyone's
                    // ARP entry, and traffic through the router would vanish for seconds.
                    nl.set_mac(br, [0x02, 0xfa, 0xb0, 0, 0, k as u8 + 1])?;
                    nl.add_address(br, router_ip(net), net.prefix)?;
                    nl.set_up(br)?;
                }
                // Answered on every port (ARP replies for any local address).
                Self::Veth => nl.add_address(nl.index("lo")?, router_ip(net), 32)?,
            }
        }
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    }

    /// Connects the router's end `port` of a host at `ip` on subnet `k`; runs inside
    /// the fabric namespace.
    pub(super) fn attach(self, port: &str, k: usize, ip: Ipv4Addr) -> Result<()> {
        let nl = Nl::new()?;
        let p = nl.index(port)?;
        match self {
            Self::Bridge => nl.set_master(p, nl.index(&format!("ul{k}"))?)?,
            Self::Veth => {
                // Hosts of one subnet reach each other through the router: it answers
                // ARP for every address it routes out of another port.
                write_sysctl(&format!("/proc/sys/net/ipv4/conf/{port}/proxy_arp"), "1")?;
                nl.set_up(p)?;
                nl.replace_route(ip, 32, p, None)?;
            }
        }
        nl.set_up(p)
    }
}
