//! Blocking netlink for the lab's synchronous code: the product's async `Netlink`
//! driven by a small runtime of its own, plus what only the flannel-style baselines
//! need (bridges, the kernel's vxlan device, neighbour and fdb entries).
use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr},
    os::fd::RawFd,
};

use anyhow::{Context, Result};
use netlink_packet_route::{neighbour::NeighbourFlag, route::RouteFlag};
use netpath::{
    net::Ipv4Net,
    netlink::{LinkSummary, Netlink, RouteSpec},
};

/// Static routes the lab sets up itself (`proto static`).
const PROTO_STATIC: u8 = 4;

pub struct Nl {
    rt: tokio::runtime::Runtime,
    nl: Netlink,
}

impl Nl {
    /// A socket in the calling thread's namespace.
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("runtime for netlink")?;
        let nl = {
            let _g = rt.enter();
            Netlink::new()?
        };
        Ok(Self { rt, nl })
    }

    fn wait<T, E: Into<anyhow::Error>>(&self, f: impl Future<Output = Result<T, E>>) -> Result<T> {
        self.rt.block_on(f).map_err(Into::into)
    }

    pub fn links(&self) -> Result<Vec<LinkSummary>> {
        self.wait(self.nl.links())
    }

    pub fn link(&self, name: &str) -> Result<LinkSummary> {
        self.wait(self.nl.link(name))
    }

    pub fn index(&self, name: &str) -> Result<u32> {
        self.wait(self.nl.index(name))
    }

    pub fn mac(&self, name: &str) -> Result<[u8; 6]> {
        Ok(self.wait(self.nl.mac(name))?.octets())
    }

    pub fn routes(&self) -> Result<Vec<netpath::netlink::RouteSummary>> {
        self.wait(self.nl.routes())
    }

    /// The link and prefix of the address `ip`, if a link here holds it.
    pub fn address_owner(&self, ip: Ipv4Addr) -> Result<Option<(u32, u8)>> {
        self.wait(self.nl.address_owner(ip))
    }

    pub fn nexthops(&self) -> Result<Vec<netpath::nexthop::Nexthop>> {
        Ok(self.nl.nexthops()?)
    }

    /// A route as an agent before nexthop objects put it: gateway inline.
    pub fn replace_route_inline(&self, r: &RouteSpec) -> Result<()> {
        self.wait(self.nl.replace_route(r))
    }

    pub fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.wait(self.nl.add_veth(name, peer))
    }

    pub fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.wait(self.nl.set_mac(index, netpath::net::Mac(mac)))
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        self.wait(self.nl.set_up(index))
    }

    pub fn set_up_by_name(&self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        self.set_up(i)
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.wait(self.nl.set_mtu(index, mtu))
    }

    pub fn rename(&self, index: u32, name: &str) -> Result<()> {
        self.wait(self.nl.rename(index, name))
    }

    pub fn move_to_netns(&self, index: u32, fd: RawFd) -> Result<()> {
        self.wait(self.nl.move_to_netns(index, fd))
    }

    pub fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        self.wait(self.nl.add_address(index, ip, prefix))
    }

    /// `ip route replace DST/PREFIX [via GW] dev OIF [mtu MTU]`.
    pub fn replace_route_mtu(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        oif: u32,
        gateway: Option<Ipv4Addr>,
        mtu: Option<u32>,
    ) -> Result<()> {
        self.wait(self.nl.replace_route(&RouteSpec {
            dst: Ipv4Net::new(dst, prefix),
            oif,
            gateway,
            mtu,
            protocol: PROTO_STATIC,
        }))
    }

    pub fn replace_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        oif: u32,
        gateway: Option<Ipv4Addr>,
    ) -> Result<()> {
        self.replace_route_mtu(dst, prefix, oif, gateway, None)
    }

    pub fn add_bridge(&self, name: &str) -> Result<u32> {
        self.wait(
            self.nl
                .handle()
                .link()
                .add()
                .bridge(name.to_string())
                .execute(),
        )
        .with_context(|| format!("create bridge {name}"))?;
        self.index(name)
    }

    pub fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.wait(
            self.nl
                .handle()
                .link()
                .set(index)
                .controller(master)
                .execute(),
        )
        .with_context(|| format!("attach link {index} to {master}"))
    }

    pub fn add_kernel_vxlan(&self, v: &KernelVxlan) -> Result<u32> {
        let h = self.nl.handle();
        let add = h
            .link()
            .add()
            .vxlan(v.name.to_string(), v.vni)
            .link(v.underlay)
            .local(v.local)
            .port(v.port)
            .learning(false)
            .execute();
        self.wait(add)
            .with_context(|| format!("create vxlan device {}", v.name))?;
        let index = self.index(v.name)?;
        self.wait(h.link().set(index).address(v.mac.to_vec()).execute())
            .with_context(|| format!("set MAC of {}", v.name))?;
        Ok(index)
    }

    /// A permanent neighbour entry (`ip neigh replace IP lladdr MAC dev INDEX`).
    pub fn add_neighbour(&self, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        let req = self
            .nl
            .handle()
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_local_address(&mac)
            .replace()
            .execute();
        self.wait(req)
            .with_context(|| format!("add neighbour {ip} on link {index}"))
    }

    /// A forwarding entry on a VXLAN device (`bridge fdb append MAC dev INDEX dst IP self permanent`).
    pub fn add_fdb(&self, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()> {
        let req = self
            .nl
            .handle()
            .neighbours()
            .add_bridge(index, &mac)
            .flags(vec![NeighbourFlag::Own])
            .destination(IpAddr::V4(dst))
            .execute();
        self.wait(req)
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
        let mut req = self
            .nl
            .handle()
            .route()
            .add()
            .v4()
            .replace()
            .destination_prefix(dst, prefix)
            .output_interface(oif)
            .gateway(gw);
        req.message_mut().header.flags.push(RouteFlag::Onlink);
        self.wait(req.execute())
            .with_context(|| format!("add route {dst}/{prefix} via {gw} onlink"))
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
