//! Async rtnetlink calls for one network namespace. A netlink socket belongs to the
//! namespace it was opened in: `Netlink::new` opens one where the calling thread is,
//! `Netlink::new_in` one inside another namespace; either way the connection runs on
//! the current tokio runtime, so the agent's one runtime drives every socket.
use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::RawFd,
    path::Path,
    sync::{Arc, Mutex},
};

use futures::TryStreamExt;
use netlink_packet_route::{
    address::AddressAttribute,
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlag, LinkInfo, LinkMessage},
    route::{
        RouteAddress, RouteAttribute, RouteMessage, RouteMessageBuffer, RouteMetric, RouteProtocol,
        RouteScope,
    },
    AddressFamily,
};
use netlink_packet_utils::{
    nla::{DefaultNla, Nla},
    traits::Parseable,
};
use rtnetlink::Handle;

use crate::{
    net::{Ipv4Net, Mac},
    nexthop::{self, Nexthop},
    rtsock::{RtError, RtSocket},
};

/// Route protocol of the routes the agent owns toward other nodes' pods: on start it
/// removes any such route that is no longer desired, also those a killed agent left.
pub const PROTO_AGENT: u8 = 0x6e; // 110, "n"
/// Route protocol of the /32 routes to local pods (owned by endpoint wiring).
pub const PROTO_ENDPOINT: u8 = 0x6f;

const RT_TABLE_MAIN: u8 = 254;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("open rtnetlink socket{0}: {1}")]
    Open(String, std::io::Error),
    #[error("{what}: {cause}")]
    Call {
        what: String,
        cause: Box<rtnetlink::Error>,
    },
    #[error("no link named {0}")]
    NoLink(String),
    #[error("link {0} has no MAC address")]
    NoMac(String),
    #[error(transparent)]
    Raw(#[from] RtError),
}

type Result<T, E = NetlinkError> = std::result::Result<T, E>;

fn call(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |cause| NetlinkError::Call {
        what,
        cause: Box::new(cause),
    }
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// For what rtnetlink lacks (nexthops) or buffers whole (route dumps).
    raw: Arc<Mutex<RtSocket>>,
}

/// What callers need to know about a link.
#[derive(Debug, Clone)]
pub struct LinkSummary {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
}

/// An IPv4 route of the main table, as far as next hops and ownership care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSummary {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub protocol: u8,
    pub mtu: Option<u32>,
    /// The nexthop object it goes through, if it names one.
    pub nh_id: Option<u32>,
}

/// Route attribute RTA_NH_ID (not typed by netlink-packet-route 0.19).
const RTA_NH_ID: u16 = 30;

fn nh_id_attribute(id: u32) -> RouteAttribute {
    RouteAttribute::Other(DefaultNla::new(RTA_NH_ID, id.to_ne_bytes().to_vec()))
}

/// A route to install: `dst via gateway dev oif [mtu]` (link scope without gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: Ipv4Net,
    pub oif: u32,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub protocol: u8,
}

impl Netlink {
    /// A socket in the calling thread's namespace. Call inside a tokio runtime.
    pub fn new() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetlinkError::Open(String::new(), e))?;
        let raw = Arc::new(Mutex::new(RtSocket::open()?));
        tokio::spawn(conn);
        Ok(Self { handle, raw })
    }

    /// A socket inside the namespace at `ns` (opened on a helper thread that enters
    /// it; the socket stays there). Call inside a tokio runtime.
    pub fn new_in(ns: &Path) -> Result<Self> {
        let rt = tokio::runtime::Handle::current();
        let opened = std::thread::scope(|s| {
            s.spawn(|| {
                crate::netns::enter(ns).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
                let _guard = rt.enter();
                let raw = RtSocket::open().map_err(std::io::Error::other)?;
                Ok((rtnetlink::new_connection()?, raw))
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        let ((conn, handle, _), raw) =
            opened.map_err(|e| NetlinkError::Open(format!(" in {}", ns.display()), e))?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            raw: Arc::new(Mutex::new(raw)),
        })
    }

    /// The raw handle, for requests this module does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.handle
            .link()
            .add()
            .veth(name.to_string(), peer.to_string())
            .execute()
            .await
            .map_err(call(format!("create veth {name} <-> {peer}")))
    }

    /// A veth pair whose peer is created right inside another namespace (moving a
    /// link between namespaces waits for the network to synchronize, ~15 ms), both
    /// ends with `mtu`, the local end up.
    pub async fn add_veth_into(
        &self,
        name: &str,
        peer: &str,
        peer_netns: RawFd,
        mtu: u32,
    ) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::Mtu(mtu));
        p.attributes.push(LinkAttribute::NetNsFd(peer_netns));
        let mut req = self.handle.link().add().name(name.to_string());
        let m = req.message_mut();
        m.header.flags.push(LinkFlag::Up);
        m.header.change_mask.push(LinkFlag::Up);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        req.execute().await.map_err(call(format!(
            "create veth {name} <-> {peer} (in another netns)"
        )))
    }

    /// A VXLAN device in metadata mode (`ip link add NAME type vxlan external dstport
    /// PORT nolearning udpcsum`): programs choose peer and VNI per packet.
    pub async fn add_vxlan_external(&self, name: &str, port: u16) -> Result<()> {
        self.handle
            .link()
            .add()
            .vxlan(name.to_string(), 0)
            .collect_metadata(true)
            .port(port)
            .learning(false)
            .udp_csum(true)
            .execute()
            .await
            .map_err(call(format!("create vxlan device {name} on port {port}")))
    }

    /// A kernel WireGuard device (fails where the kernel has no WireGuard).
    pub async fn add_wireguard(&self, name: &str) -> Result<()> {
        self.handle
            .link()
            .add()
            .wireguard(name.to_string())
            .execute()
            .await
            .map_err(call(format!("create WireGuard device {name}")))
    }

    pub async fn set_mac(&self, index: u32, mac: Mac) -> Result<()> {
        self.handle
            .link()
            .set(index)
            .address(mac.octets().to_vec())
            .execute()
            .await
            .map_err(call(format!("set link {index} address {mac}")))
    }

    pub async fn links(&self) -> Result<Vec<LinkSummary>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(call("dump links"))?;
        Ok(msgs.iter().map(summarize).collect())
    }

    /// The link named `name`, or None when there is none.
    pub async fn find_link(&self, name: &str) -> Result<Option<LinkSummary>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(m) => Ok(m.as_ref().map(summarize)),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(call(format!("look up link {name}"))(e)),
        }
    }

    pub async fn link(&self, name: &str) -> Result<LinkSummary> {
        self.find_link(name)
            .await?
            .ok_or_else(|| NetlinkError::NoLink(name.to_string()))
    }

    pub async fn index(&self, name: &str) -> Result<u32> {
        Ok(self.link(name).await?.index)
    }

    pub async fn mac(&self, name: &str) -> Result<Mac> {
        self.link(name)
            .await?
            .mac
            .ok_or_else(|| NetlinkError::NoMac(name.to_string()))
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(index)
            .up()
            .execute()
            .await
            .map_err(call(format!("set link {index} up")))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.handle
            .link()
            .set(index)
            .mtu(mtu)
            .execute()
            .await
            .map_err(call(format!("set link {index} mtu {mtu}")))
    }

    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        self.handle
            .link()
            .set(index)
            .name(name.to_string())
            .execute()
            .await
            .map_err(call(format!("rename link {index} to {name}")))
    }

    pub async fn move_to_netns(&self, index: u32, netns_fd: RawFd) -> Result<()> {
        self.handle
            .link()
            .set(index)
            .setns_by_fd(netns_fd)
            .execute()
            .await
            .map_err(call(format!("move link {index} to another namespace")))
    }

    /// Deletes link `index`; one already gone (a veth whose peer's namespace went,
    /// a concurrent DEL) is deleted as far as the caller is concerned.
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
            r => r.map_err(call(format!("delete link {index}"))),
        }
    }

    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .map_err(call(format!("add address {ip}/{prefix} to link {index}")))
    }

    /// Adds or replaces a main-table IPv4 route.
    pub async fn replace_route(&self, r: &RouteSpec) -> Result<()> {
        let mut req = self
            .handle
            .route()
            .add()
            .v4()
            .replace()
            .destination_prefix(r.dst.addr, r.dst.prefix)
            .output_interface(r.oif)
            .protocol(RouteProtocol::from(r.protocol));
        req = match r.gateway {
            Some(gw) => req.gateway(gw),
            None => req.scope(RouteScope::Link),
        };
        if let Some(mtu) = r.mtu {
            req.message_mut()
                .attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        req.execute().await.map_err(call(format!(
            "add route {} via {:?} dev {}",
            r.dst, r.gateway, r.oif
        )))
    }

    /// Adds or replaces a main-table IPv4 route through the nexthop object of its
    /// gateway (which must exist: `replace_nexthop`); see `nexthop` for why.
    pub async fn replace_route_via_nexthop(&self, r: &RouteSpec) -> Result<()> {
        let Some(gw) = r.gateway else {
            return self.replace_route(r).await;
        };
        let mut req = self
            .handle
            .route()
            .add()
            .v4()
            .replace()
            .destination_prefix(r.dst.addr, r.dst.prefix)
            .protocol(RouteProtocol::from(r.protocol));
        let attrs = &mut req.message_mut().attributes;
        attrs.push(nh_id_attribute(nexthop::id_of(gw)));
        if let Some(mtu) = r.mtu {
            attrs.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        req.execute().await.map_err(call(format!(
            "add route {} via nexthop {} ({gw})",
            r.dst,
            nexthop::id_of(gw)
        )))
    }

    /// Every IPv4 nexthop object with one gateway or device.
    pub fn nexthops(&self) -> Result<Vec<Nexthop>> {
        Ok(nexthop::dump(&mut self.raw())?)
    }

    pub fn replace_nexthop(&self, nh: &Nexthop) -> Result<()> {
        Ok(nexthop::replace(&mut self.raw(), nh)?)
    }

    /// Deletes nexthop object `id` and the routes through it; gone already is fine.
    pub fn delete_nexthop(&self, id: u32) -> Result<()> {
        Ok(nexthop::delete(&mut self.raw(), id)?)
    }

    fn raw(&self) -> std::sync::MutexGuard<'_, RtSocket> {
        // A panic while holding it leaves the socket as usable as before.
        self.raw.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// IPv4 routes of the main table, summarized as the dump is read (a node with
    /// 100 000 routes holds their summaries, never their messages). Blocking: the
    /// kernel answers a dump as fast as it is read.
    pub async fn routes(&self) -> Result<Vec<RouteSummary>> {
        const RTM_NEWROUTE: u16 = 24;
        const RTM_GETROUTE: u16 = 26;
        // rtmsg: family, then lengths, tos, table, protocol, scope, type, flags (any).
        let mut rtmsg = [0u8; 12];
        rtmsg[0] = libc::AF_INET as u8;
        let mut out = Vec::new();
        let mut malformed = 0usize;
        self.raw()
            .dump(RTM_GETROUTE, &rtmsg, "dump routes", |kind, body| {
                if kind != RTM_NEWROUTE {
                    return;
                }
                match RouteMessageBuffer::new_checked(&body).and_then(|b| RouteMessage::parse(&b)) {
                    Ok(m) if m.header.table == RT_TABLE_MAIN => out.push(route_summary(&m)),
                    Ok(_) => {}
                    Err(_) => malformed += 1,
                }
            })?;
        if malformed > 0 {
            tracing::warn!("dump routes: {malformed} routes the parser refused were skipped");
        }
        Ok(out)
    }

    /// Deletes main-table IPv4 routes to exactly `dst` (of `protocol`, when given),
    /// addressed by prefix, without dumping the table: gone already is fine. A route
    /// through a nexthop object needs its id: kernels before the fix "ipv4: Fix route
    /// deletion when nexthop info is not specified" (5.19) match no such route
    /// without it.
    pub async fn delete_route(
        &self,
        dst: Ipv4Net,
        protocol: Option<u8>,
        nh_id: Option<u32>,
    ) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = dst.prefix;
        m.header.table = RT_TABLE_MAIN;
        // Any scope and type; the protocol only when asked for.
        m.header.scope = RouteScope::NoWhere;
        if let Some(p) = protocol {
            m.header.protocol = RouteProtocol::from(p);
        }
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst.addr)));
        m.attributes.extend(nh_id.map(nh_id_attribute));
        // One route per call; several may share the prefix (other protocols, metrics).
        loop {
            match self.handle.route().del(m.clone()).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => {
                    return Ok(());
                }
                Err(e) => return Err(call(format!("delete route {dst}"))(e)),
            }
        }
    }

    /// The IPv4 addresses (with prefix) on link `index`.
    pub async fn addresses_of(&self, index: u32) -> Result<Vec<Ipv4Net>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(call("dump addresses"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .flat_map(|m| {
                m.attributes.iter().filter_map(move |a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => {
                        Some(Ipv4Net::new(*ip, m.header.prefix_len))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// The interface index and prefix of the address `ip`, if a link here holds it.
    pub async fn address_owner(&self, ip: Ipv4Addr) -> Result<Option<(u32, u8)>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(call("dump addresses"))?;
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

fn route_summary(m: &RouteMessage) -> RouteSummary {
    let mut r = RouteSummary {
        dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, m.header.destination_prefix_length),
        gateway: None,
        oif: None,
        protocol: m.header.protocol.into(),
        mtu: None,
        nh_id: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst.addr = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Other(nla) if nla.kind() == RTA_NH_ID => {
                let mut v = [0u8; 4];
                if nla.value_len() == 4 {
                    nla.emit_value(&mut v);
                    r.nh_id = Some(u32::from_ne_bytes(v));
                }
            }
            RouteAttribute::Metrics(ms) => {
                for metric in ms {
                    if let RouteMetric::Mtu(v) = metric {
                        r.mtu = Some(*v);
                    }
                }
            }
            _ => {}
        }
    }
    // With net.ipv4.nexthop_compat_mode=0 the dump names only the object; the
    // agent's objects are named for their gateway.
    if r.protocol == PROTO_AGENT && r.gateway.is_none() {
        r.gateway = r.nh_id.map(Ipv4Addr::from);
    }
    r
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
                s.mac = Some(Mac(mac));
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
