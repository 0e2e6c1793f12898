//! Blocking rtnetlink calls for the namespace of the thread that opens the socket.
//! A netlink socket belongs to the namespace it was created in, so create one per
//! namespace, on a thread that has entered it.
use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::RawFd,
};

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::{
    address::AddressAttribute,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    neighbour::NeighbourFlag,
    route::{RouteAddress, RouteAttribute, RouteFlag, RouteMessage, RouteMetric, RouteScope},
};
use rtnetlink::Handle;

pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

/// What the lab needs to know about a link.
#[derive(Debug, Clone)]
pub struct LinkSummary {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// An IPv4 route of the main table, as far as next-hop selection cares.
#[derive(Debug, Clone)]
pub struct RouteSummary {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

impl Netlink {
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime for netlink")?;
        let (conn, handle, _) = rt
            .block_on(async { rtnetlink::new_connection() })
            .context("open rtnetlink socket")?;
        rt.spawn(conn);
        Ok(Self { rt, handle })
    }

    pub fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.rt
            .block_on(
                self.handle
                    .link()
                    .add()
                    .veth(name.to_string(), peer.to_string())
                    .execute(),
            )
            .with_context(|| format!("create veth {name} <-> {peer}"))
    }

    pub fn add_bridge(&self, name: &str) -> Result<u32> {
        self.rt
            .block_on(self.handle.link().add().bridge(name.to_string()).execute())
            .with_context(|| format!("create bridge {name}"))?;
        self.index(name)
    }

    pub fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.rt
            .block_on(self.handle.link().set(index).controller(master).execute())
            .with_context(|| format!("attach link {index} to {master}"))
    }

    pub fn links(&self) -> Result<Vec<LinkSummary>> {
        let handle = self.handle.clone();
        let msgs: Vec<LinkMessage> = self
            .rt
            .block_on(handle.link().get().execute().try_collect())
            .context("dump links")?;
        Ok(msgs.iter().map(summarize).collect())
    }

    pub fn link(&self, name: &str) -> Result<LinkSummary> {
        let handle = self.handle.clone();
        let msg = self
            .rt
            .block_on(async {
                handle
                    .link()
                    .get()
                    .match_name(name.to_string())
                    .execute()
                    .try_next()
                    .await
            })
            .with_context(|| format!("look up link {name}"))?
            .ok_or_else(|| anyhow!("no link named {name}"))?;
        Ok(summarize(&msg))
    }

    pub fn index(&self, name: &str) -> Result<u32> {
        Ok(self.link(name)?.index)
    }

    pub fn mac(&self, name: &str) -> Result<[u8; 6]> {
        self.link(name)?
            .mac
            .ok_or_else(|| anyhow!("link {name} has no MAC address"))
    }

    pub fn set_up_by_name(&self, name: &str) -> Result<()> {
        let index = self.index(name)?;
        self.set_up(index)
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        self.rt
            .block_on(self.handle.link().set(index).up().execute())
            .with_context(|| format!("set link {index} up"))
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.rt
            .block_on(self.handle.link().set(index).mtu(mtu).execute())
            .with_context(|| format!("set link {index} mtu {mtu}"))
    }

    pub fn rename(&self, index: u32, name: &str) -> Result<()> {
        self.rt
            .block_on(
                self.handle
                    .link()
                    .set(index)
                    .name(name.to_string())
                    .execute(),
            )
            .with_context(|| format!("rename link {index} to {name}"))
    }

    pub fn move_to_netns(&self, index: u32, netns_fd: RawFd) -> Result<()> {
        self.rt
            .block_on(
                self.handle
                    .link()
                    .set(index)
                    .setns_by_fd(netns_fd)
                    .execute(),
            )
            .with_context(|| format!("move link {index} to another namespace"))
    }

    pub fn delete_link(&self, index: u32) -> Result<()> {
        let handle = self.handle.clone();
        self.rt
            .block_on(handle.link().del(index).execute())
            .with_context(|| format!("delete link {index}"))
    }

    pub fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        self.rt
            .block_on(
                self.handle
                    .address()
                    .add(index, IpAddr::V4(ip), prefix)
                    .execute(),
            )
            .with_context(|| format!("add address {ip}/{prefix} to link {index}"))
    }

    /// Adds (or replaces) an IPv4 route; without a gateway it is a link-scope route.
    pub fn replace_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        oif: u32,
        gateway: Option<Ipv4Addr>,
    ) -> Result<()> {
        self.replace_route_mtu(dst, prefix, oif, gateway, None)
    }

    /// As `replace_route`, with a path MTU for the route when given.
    pub fn replace_route_mtu(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        oif: u32,
        gateway: Option<Ipv4Addr>,
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut req = self.route_replace(dst, prefix, oif);
        req = match gateway {
            Some(gw) => req.gateway(gw),
            None => req.scope(RouteScope::Link),
        };
        if let Some(mtu) = mtu {
            req.message_mut()
                .attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        self.rt
            .block_on(req.execute())
            .with_context(|| format!("add route {dst}/{prefix} via {gateway:?} dev {oif}"))
    }
}

/// The kernel's own VXLAN device, configured as flannel's vxlan backend does.
pub struct KernelVxlan<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub underlay: u32,
    pub mac: [u8; 6],
}

impl Netlink {
    pub fn add_kernel_vxlan(&self, v: &KernelVxlan) -> Result<u32> {
        self.rt
            .block_on(
                self.handle
                    .link()
                    .add()
                    .vxlan(v.name.to_string(), v.vni)
                    .link(v.underlay)
                    .local(v.local)
                    .port(v.port)
                    .learning(false)
                    .execute(),
            )
            .with_context(|| format!("create vxlan device {}", v.name))?;
        let index = self.index(v.name)?;
        self.rt
            .block_on(
                self.handle
                    .link()
                    .set(index)
                    .address(v.mac.to_vec())
                    .execute(),
            )
            .with_context(|| format!("set MAC of {}", v.name))?;
        Ok(index)
    }

    /// A permanent neighbour entry (`ip neigh replace IP lladdr MAC dev INDEX`).
    pub fn add_neighbour(&self, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        self.rt
            .block_on(
                self.handle
                    .neighbours()
                    .add(index, IpAddr::V4(ip))
                    .link_local_address(&mac)
                    .replace()
                    .execute(),
            )
            .with_context(|| format!("add neighbour {ip} on link {index}"))
    }

    /// A forwarding entry on a VXLAN device (`bridge fdb append MAC dev INDEX dst IP self permanent`).
    pub fn add_fdb(&self, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()> {
        self.rt
            .block_on(
                self.handle
                    .neighbours()
                    .add_bridge(index, &mac)
                    .flags(vec![NeighbourFlag::Own])
                    .destination(IpAddr::V4(dst))
                    .execute(),
            )
            .with_context(|| format!("add fdb entry for {dst} on link {index}"))
    }

    /// `ip route replace DST/PREFIX via GW dev INDEX onlink`.
    pub fn replace_route_onlink(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        oif: u32,
        gw: Ipv4Addr,
    ) -> Result<()> {
        let mut req = self.route_replace(dst, prefix, oif).gateway(gw);
        req.message_mut().header.flags.push(RouteFlag::Onlink);
        self.rt
            .block_on(req.execute())
            .with_context(|| format!("add route {dst}/{prefix} via {gw} onlink"))
    }

    fn route_replace(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        oif: u32,
    ) -> rtnetlink::RouteAddRequest<Ipv4Addr> {
        self.handle
            .route()
            .add()
            .v4()
            .replace()
            .destination_prefix(dst, prefix)
            .output_interface(oif)
    }

    fn route_messages(&self) -> Result<Vec<RouteMessage>> {
        self.rt
            .block_on(
                self.handle
                    .route()
                    .get(rtnetlink::IpVersion::V4)
                    .execute()
                    .try_collect(),
            )
            .context("dump routes")
    }

    /// IPv4 routes of the main table.
    pub fn routes(&self) -> Result<Vec<RouteSummary>> {
        const RT_TABLE_MAIN: u8 = 254;
        let mut out = Vec::new();
        for m in self.route_messages()? {
            if m.header.table != RT_TABLE_MAIN {
                continue;
            }
            let mut r = RouteSummary {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: m.header.destination_prefix_length,
                gateway: None,
                oif: None,
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
                    RouteAttribute::Oif(i) => r.oif = Some(*i),
                    _ => {}
                }
            }
            out.push(r);
        }
        Ok(out)
    }

    /// Deletes main-table IPv4 routes to exactly `dst/prefix`.
    pub fn delete_route(&self, dst: Ipv4Addr, prefix: u8) -> Result<()> {
        for m in self.route_messages()? {
            let is_it = m.header.destination_prefix_length == prefix
                && m.attributes.iter().any(
                    |a| matches!(a, RouteAttribute::Destination(RouteAddress::Inet(d)) if *d == dst),
                );
            if is_it {
                self.rt
                    .block_on(self.handle.route().del(m).execute())
                    .with_context(|| format!("delete route {dst}/{prefix}"))?;
            }
        }
        Ok(())
    }

    /// The interface index and prefix of the address `ip`, if a link here holds it.
    pub fn address_owner(&self, ip: Ipv4Addr) -> Result<Option<(u32, u8)>> {
        let msgs: Vec<_> = self
            .rt
            .block_on(self.handle.address().get().execute().try_collect())
            .context("dump addresses")?;
        for m in msgs {
            let holds = m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(IpAddr::V4(a)) if *a == ip)
                    || matches!(a, AddressAttribute::Local(IpAddr::V4(a)) if *a == ip)
            });
            if holds {
                return Ok(Some((m.header.index, m.header.prefix_len)));
            }
        }
        Ok(None)
    }
}

/// The gateway the main table would use for `dst` (None: on-link), by longest prefix.
pub fn next_hop(routes: &[RouteSummary], dst: Ipv4Addr) -> Option<Option<Ipv4Addr>> {
    routes
        .iter()
        .filter(|r| {
            let mask = if r.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - r.prefix)
            };
            u32::from(dst) & mask == u32::from(r.dst) & mask
        })
        .max_by_key(|r| r.prefix)
        .map(|r| r.gateway)
}

fn summarize(msg: &LinkMessage) -> LinkSummary {
    let mut s = LinkSummary {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(m) => s.mtu = Some(*m),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0; 6];
                mac.copy_from_slice(a);
                s.mac = Some(mac);
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        s.kind = Some(match kind {
                            InfoKind::Bridge => "bridge".to_string(),
                            InfoKind::Veth => "veth".to_string(),
                            InfoKind::Vxlan => "vxlan".to_string(),
                            other => format!("{other:?}").to_lowercase(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(dst: [u8; 4], prefix: u8, gw: Option<[u8; 4]>) -> RouteSummary {
        RouteSummary {
            dst: dst.into(),
            prefix,
            gateway: gw.map(Ipv4Addr::from),
            oif: Some(2),
        }
    }

    #[test]
    fn next_hop_uses_the_longest_prefix() {
        let table = [
            r([0, 0, 0, 0], 0, Some([192, 168, 56, 1])),
            r([192, 168, 56, 0], 24, None),
            r([10, 244, 3, 0], 24, Some([192, 168, 56, 13])),
        ];
        let hop = |ip: [u8; 4]| next_hop(&table, ip.into());
        assert_eq!(hop([192, 168, 56, 12]), Some(None), "on-link");
        assert_eq!(
            hop([192, 168, 57, 13]),
            Some(Some([192, 168, 56, 1].into())),
            "default"
        );
        assert_eq!(hop([10, 244, 3, 9]), Some(Some([192, 168, 56, 13].into())));
        assert_eq!(
            next_hop(&table[1..2], [8, 8, 8, 8].into()),
            None,
            "unroutable"
        );
    }
}
