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
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    route::RouteScope,
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
        let mut req = self
            .handle
            .route()
            .add()
            .v4()
            .replace()
            .destination_prefix(dst, prefix)
            .output_interface(oif);
        req = match gateway {
            Some(gw) => req.gateway(gw),
            None => req.scope(RouteScope::Link),
        };
        self.rt
            .block_on(req.execute())
            .with_context(|| format!("add route {dst}/{prefix} via {gateway:?} dev {oif}"))
    }
}

fn summarize(msg: &LinkMessage) -> LinkSummary {
    let mut s = LinkSummary {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => s.name = n.clone(),
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
