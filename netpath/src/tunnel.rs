//! The node's kernel VXLAN device in metadata mode, `np-vxlan`: the programs hand it
//! packets to encapsulate for peers behind a router (the kernel then writes outer
//! headers with a UDP checksum, so segments stay checksum-partial wherever a hop has
//! to segment them) and leave it the wire-sized frames for local pods (its tunnel GRO
//! merges them before the pods' stacks see them). The wire format is the same VXLAN
//! either way; the device only exists on nodes with an overlay.
use crate::{
    net::Mac,
    netlink::{Netlink, NetlinkError},
};

pub const NAME: &str = "np-vxlan";

/// Creates the device (or takes over the one an earlier agent left, so a restart
/// does not interrupt tunnel traffic), with this node's VTEP MAC, so frames it passes
/// up for the node itself are addressed to it, and `mtu` for the pods' packets.
/// Returns its ifindex.
pub async fn ensure(nl: &Netlink, port: u16, vtep_mac: Mac, mtu: u32) -> Result<u32, NetlinkError> {
    let link = match nl.find_link(NAME).await? {
        Some(l) if l.kind.as_deref() == Some("vxlan") => l,
        Some(other) => {
            // Not ours to reuse (another kind under our name): replace it.
            nl.delete_link(other.index).await?;
            nl.add_vxlan_external(NAME, port).await?;
            nl.link(NAME).await?
        }
        None => {
            nl.add_vxlan_external(NAME, port).await?;
            nl.link(NAME).await?
        }
    };
    nl.set_mac(link.index, vtep_mac).await?;
    nl.set_mtu(link.index, mtu).await?;
    nl.set_up(link.index).await?;
    Ok(link.index)
}

/// Removes the device if it exists.
pub async fn remove(nl: &Netlink) -> Result<(), NetlinkError> {
    if let Some(l) = nl.find_link(NAME).await? {
        nl.delete_link(l.index).await?;
    }
    Ok(())
}
