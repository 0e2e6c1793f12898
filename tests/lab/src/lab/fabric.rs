//! The underlay fabric between the lab's nodes: one namespace that connects the nodes
//! of each underlay subnet and routes between subnets, built one of two ways.
//!
//! - `Bridge` (the default): a Linux bridge per subnet carrying the router's address.
//!   A bridge has no `hw_enc_features`, so an encapsulated GSO packet leaving through
//!   it is cut into wire frames there — a NIC or cloud VM without UDP-tunnel
//!   segmentation offload, where most flannel users' clusters are.
//! - `Veth`: a subnet with one host gets no bridge: the router's address sits on the
//!   router's end of that host's veth, so what the router forwards to it leaves veth to
//!   veth and 64 KB packets stay whole to the receiver — NICs with tunnel offload. A
//!   subnet with several hosts keeps its bridge (direct routing needs them on one L2);
//!   the routed hop into a one-host subnet is what the fabric is for.
use anyhow::{bail, Result};
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
    /// Sets up the router for `subnets`, `hosts[k]` of them on subnet `k`; runs
    /// inside the fabric namespace.
    pub(super) fn build(self, subnets: &[Ipv4Net], hosts: &[usize]) -> Result<()> {
        let nl = Nl::new()?;
        for (k, net) in subnets.iter().enumerate() {
            if self == Self::Veth && hosts.get(k) == Some(&1) {
                // Its one host's port gets the address when it is attached.
                continue;
            }
            let br = nl.add_bridge(&format!("ul{k}"))?;
            // A bridge whose MAC was never set takes its lowest port's: a node joining
            // or leaving would change the router's MAC under everyone's ARP entry, and
            // traffic through the router would vanish for seconds.
            nl.set_mac(br, [0x02, 0xfa, 0xb0, 0, 0, k as u8 + 1])?;
            nl.add_address(br, router_ip(net), net.prefix)?;
            nl.set_up(br)?;
        }
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    }

    /// Connects the router's end `port` of a host on subnet `k` (`net`): a bridge
    /// port, or (a one-host subnet of the veth fabric) the router's own interface
    /// there. Runs inside the fabric namespace.
    pub(super) fn attach(self, port: &str, k: usize, net: &Ipv4Net) -> Result<()> {
        let nl = Nl::new()?;
        let p = nl.index(port)?;
        match nl.index(&format!("ul{k}")) {
            Ok(br) => nl.set_master(p, br)?,
            Err(_) => {
                if nl.address_owner(router_ip(net))?.is_some() {
                    bail!(
                        "{net} already has its one host on the veth fabric; a second needs \
                         the bridge fabric"
                    );
                }
                nl.add_address(p, router_ip(net), net.prefix)?;
            }
        }
        nl.set_up(p)
    }
}
