//! Types shared by the eBPF programs and the userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side reads it out of
//! maps, the user side writes it, and bpftool prints it through BTF. Addresses
//! are stored as byte arrays in network order so dumps read as `[10,244,1,2]`.
#![no_std]

mod event;
pub mod maps;
mod net;
mod policy;
mod service;
mod verdict;
pub use event::*;
pub use net::*;
pub use policy::*;
pub use service::*;
pub use verdict::*;

/// Gateway address every pod routes through; the host-side veth answers ARP for it.
pub const POD_GATEWAY: Ipv4 = [169, 254, 1, 1];

/// Name of each map (from [`maps`]) and program, used by both the ELF object and the pins.
pub mod names {
    pub use crate::maps::names::*;
    pub const FROM_POD: &str = "from_pod";
    pub const FROM_UNDERLAY: &str = "from_underlay";
    pub const TO_UNDERLAY: &str = "to_underlay";
    pub const XDP_UNDERLAY: &str = "xdp_underlay";
    pub const FROM_TUNNEL: &str = "from_tunnel";
    pub const FROM_WIREGUARD: &str = "from_wireguard";
    pub const SOCK_CONNECT: &str = "sock_connect";
    pub const SOCK_SENDMSG: &str = "sock_sendmsg";
    pub const SOCK_RECVMSG: &str = "sock_recvmsg";
    pub const SOCK_GETPEERNAME: &str = "sock_getpeername";
}

/// Bytes VXLAN adds in front of the inner IP packet: outer IPv4 + UDP + VXLAN + inner Ethernet.
pub const VXLAN_OVERHEAD: u32 = 20 + 8 + 8 + 14;
/// Bytes IP-in-IP adds in front of the inner IP packet: one outer IPv4 header.
pub const IPIP_OVERHEAD: u32 = 20;
/// flannel's and the Linux kernel's VXLAN defaults.
pub const DEFAULT_VNI: u32 = 1;
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// How packets reach a remote node's pods.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteMode {
    /// Plain IP to the node's underlay address (flannel host-gw): same L2 only.
    Direct = 0,
    /// VXLAN to the node's underlay address.
    Vxlan = 1,
    /// IP-in-IP (protocol 4) to the node's underlay address (Calico's overlay).
    Ipip = 2,
    /// Into the node's WireGuard device (`Settings::wg_ifindex`), which encrypts
    /// it to the owner.
    Wireguard = 3,
    /// Encryption is on and the owner has published no key yet: dropped, never
    /// sent in clear.
    NoKey = 4,
}

impl RouteMode {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Direct),
            1 => Some(Self::Vxlan),
            2 => Some(Self::Ipip),
            3 => Some(Self::Wireguard),
            4 => Some(Self::NoKey),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Vxlan => "vxlan",
            Self::Ipip => "ipip",
            Self::Wireguard => "wireguard",
            Self::NoKey => "no-key",
        }
    }
}

/// A remote pod CIDR, value of the `ROUTES` LPM trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Underlay address of the node that owns the CIDR.
    pub node_ip: Ipv4,
    /// One of [`RouteMode`].
    pub mode: u32,
    /// VXLAN inner destination MAC: the owner's VTEP (a kernel vxlan peer checks it).
    pub vtep_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Underlay next hop toward `node_ip` (the node itself or a router), so the
    /// program skips a FIB lookup per packet; 0.0.0.0 lets the kernel's FIB decide.
    pub next_hop: Ipv4,
}

/// A known node, value of the `NODES` map keyed by its underlay address: the only
/// tunnel peers whose VXLAN is decapsulated.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub vtep_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// A pod on this node, value of the `ENDPOINTS` map keyed by the pod's IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host-side veth of the pod.
    pub ifindex: u32,
    /// MAC of the pod's own interface (destination of frames into the pod).
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth (source of frames into the pod, answer to ARP).
    pub host_mac: [u8; 6],
}

/// What every program reads at every packet (index 0 of the `SETTINGS` array); the
/// agent's reconcile is its only writer, so a spec change reaches the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// How a frame for a local pod is handed over; one of [`RedirectMode`].
    pub redirect_mode: u32,
    /// The node's underlay interface.
    pub underlay_ifindex: u32,
    /// The node's underlay address (outer source of VXLAN).
    pub node_ip: Ipv4,
    /// Cluster CIDR: destinations inside it with no route are dropped, not leaked.
    pub cluster_ip: Ipv4,
    pub cluster_prefix: u32,
    pub vni: u32,
    pub vxlan_port: u16,
    /// This node's VTEP MAC (inner source of VXLAN).
    pub vtep_mac: [u8; 6],
    /// Extra `bpf_skb_adjust_room` flags the running kernel supports for encapsulation.
    pub encap_flags: u32,
    /// How TC programs are attached on this node; one of [`TcAttach`].
    pub tc_attach: u32,
    /// The node's kernel VXLAN device in metadata mode (0: none).
    pub tunnel_ifindex: u32,
    /// Which VXLAN traffic goes through that device: [`TUNNEL_TX_ROUTED`], [`TUNNEL_RX`].
    pub tunnel_use: u32,
    /// 1: pods' flows to destinations outside the cluster and outside `NAT_EXEMPT`
    /// leave with the node's address (source NAT).
    pub masquerade: u32,
    /// Translated source ports (and ICMP echo identifiers), inclusive range.
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// Front ends in `SERVICES` (0: the programs skip every service lookup).
    pub services: u32,
    /// The service range: its addresses are translated or dropped, never forwarded.
    pub service_ip: Ipv4,
    pub service_prefix: u32,
    /// Node ports, inclusive range.
    pub node_port_min: u16,
    pub node_port_max: u16,
    /// The node's own network namespace (`bpf_get_netns_cookie`): the only one whose
    /// sockets the cgroup programs translate; 0 until the agent learned it.
    pub host_netns_cookie: u64,
    /// The compiled policy's revision (0: no policy anywhere, the programs skip
    /// every policy lookup). Connection-table entries of another revision are
    /// judged again at their next packet.
    pub policy_rev: u32,
    /// The node's WireGuard device (0: encryption off): where `RouteMode::Wireguard`
    /// routes send pods' packets.
    pub wg_ifindex: u32,
}

/// A pod's flow to the outside as the pod sent it: key of the `NAT_OUT` map. For ICMP
/// echo, `pod_port` is the identifier and `remote_port` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub pod: Ipv4,
    pub remote: Ipv4,
    /// Ports in network byte order, as on the wire.
    pub pod_port: [u8; 2],
    pub remote_port: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// A translated flow's state: value of `NAT_OUT`. Each flag is a byte of its own so
/// two CPUs setting different ones never lose a write (5.10 has no atomic OR).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last packet either way.
    pub last_seen: u64,
    /// The node-side source port (network byte order).
    pub nat_port: [u8; 2],
    pub seen_reply: u8,
    pub fin_out: u8,
    pub fin_in: u8,
    pub rst: u8,
    /// The closing handshake is over (an ACK after a FIN each way): the translated
    /// port may go to a new flow at once.
    pub closed: u8,
    pub _pad: u8,
    /// The pod's last TCP timestamp value while closing (0: none seen), and the
    /// sequence number after its FIN: what a remote in TIME_WAIT holds against a new
    /// SYN on the same translated tuple.
    pub last_tsval: [u8; 4],
    pub fin_seq: [u8; 4],
}

/// The translated flow as the outside sees it (the node's address implied): key of
/// the `NAT_IN` map, which leads replies back to the pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatKey {
    pub remote: Ipv4,
    pub remote_port: [u8; 2],
    pub nat_port: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Where replies to a translated flow go: value of `NAT_IN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTarget {
    pub pod: Ipv4,
    pub pod_port: [u8; 2],
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// The translated tuple of this flow on `nat_port`.
    pub const fn translated(&self, nat_port: [u8; 2]) -> NatKey {
        NatKey {
            remote: self.remote,
            remote_port: self.remote_port,
            nat_port,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

impl NatKey {
    /// The flow this translated tuple leads back to.
    pub const fn owner(&self, target: &NatTarget) -> FlowKey {
        FlowKey {
            pod: target.pod,
            remote: self.remote,
            pod_port: target.pod_port,
            remote_port: self.remote_port,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPIP: u8 = 4;

/// Flows each NAT map holds (allocated as used).
pub const NAT_CAPACITY: u32 = 65536;
/// Default translated port range: above Linux's default ephemeral range (32768-60999),
/// so the node's own connections never take these ports.
pub const DEFAULT_NAT_PORTS: (u16, u16) = (61000, 65535);

/// Idle timeouts in seconds, one table for the programs and the agent's collector.
pub mod nat_timeout {
    /// TCP before any reply (SYN sent).
    pub const TCP_OPENING: u64 = 30;
    pub const TCP_ESTABLISHED: u64 = 7200;
    /// TCP after a FIN each way: as long as the remote's TIME_WAIT (60 s on Linux),
    /// so a port is not handed on blind while the remote still remembers it.
    pub const TCP_CLOSED: u64 = 60;
    /// TCP after a RST (it ends TIME_WAIT too).
    pub const TCP_RESET: u64 = 10;
    pub const UDP: u64 = 60;
    pub const ICMP: u64 = 30;
}

/// Idle time in seconds after which the agent removes a policy connection-table
/// entry; the connection's next packet is judged again (and a reply is judged as
/// one).
pub mod policy_timeout {
    pub const TCP: u64 = 7200;
    /// TCP after a FIN or RST: a late segment is judged again, so nothing needs
    /// keeping for TIME_WAIT, and a node opening thousands of connections a second
    /// must not fill the table with closed ones.
    pub const TCP_CLOSING: u64 = 5;
    pub const UDP: u64 = 300;
    pub const OTHER: u64 = 60;
}

impl Flow {
    /// A flow just translated to `nat_port`, seen at `now` and nothing else yet.
    pub const fn new(now: u64, nat_port: [u8; 2]) -> Self {
        Self {
            last_seen: now,
            nat_port,
            seen_reply: 0,
            fin_out: 0,
            fin_in: 0,
            rst: 0,
            closed: 0,
            _pad: 0,
            last_tsval: [0; 4],
            fin_seq: [0; 4],
        }
    }

    /// How long this flow may stay idle, in nanoseconds.
    pub const fn timeout_ns(&self, proto: u8) -> u64 {
        let secs = match proto {
            IPPROTO_TCP if self.rst != 0 => nat_timeout::TCP_RESET,
            IPPROTO_TCP if self.fin_out != 0 && self.fin_in != 0 => nat_timeout::TCP_CLOSED,
            IPPROTO_TCP if self.seen_reply == 0 => nat_timeout::TCP_OPENING,
            IPPROTO_TCP => nat_timeout::TCP_ESTABLISHED,
            IPPROTO_UDP => nat_timeout::UDP,
            _ => nat_timeout::ICMP,
        };
        secs * 1_000_000_000
    }

    pub const fn expired(&self, proto: u8, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_seen) > self.timeout_ns(proto)
    }
}

/// Encapsulate for peers behind a router in the kernel's VXLAN device (outer UDP
/// checksum, segments the forwarding path keeps checksum-partial) instead of in place.
pub const TUNNEL_TX_ROUTED: u32 = 1;
/// Hand wire-sized VXLAN frames for local pods to the kernel's VXLAN socket, whose
/// GRO aggregates them before the pod sees them.
pub const TUNNEL_RX: u32 = 4;

/// How the TC programs are attached: TCX links where the kernel has them (6.6+),
/// clsact qdisc filters through netlink before that.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcAttach {
    Netlink = 0,
    Tcx = 1,
}

impl TcAttach {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Netlink),
            1 => Some(Self::Tcx),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Self::Netlink => "netlink (clsact)",
            Self::Tcx => "tcx",
        }
    }
}

/// How the from-pod program hands a frame to another local pod.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectMode {
    /// `bpf_redirect_peer`: straight into the pod's namespace, skipping the host-side backlog.
    Peer = 0,
    /// `bpf_redirect` to the host-side veth's egress.
    Plain = 1,
}

impl RedirectMode {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Peer),
            1 => Some(Self::Plain),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::Plain => "plain",
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without padding-sensitive invariants.
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Route {}
    unsafe impl aya::Pod for super::NetAddr {}
    unsafe impl aya::Pod for super::Peer {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::NatKey {}
    unsafe impl aya::Pod for super::NatTarget {}
    unsafe impl aya::Pod for super::MonitorConfig {}
    unsafe impl aya::Pod for super::MonitorLimit {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::SlotKey {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::Tuple {}
    unsafe impl aya::Pod for super::ServiceFlow {}
    unsafe impl aya::Pod for super::ServiceReply {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::Affinity {}
    unsafe impl aya::Pod for super::SockRevKey {}
    unsafe impl aya::Pod for super::SockProbe {}
    unsafe impl aya::Pod for super::PolicyEndpoint {}
    unsafe impl aya::Pod for super::PolicyPeerKey {}
    unsafe impl aya::Pod for super::PolicyPeer {}
    unsafe impl aya::Pod for super::PolicyPortKey {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtEntry {}
    unsafe impl aya::Pod for super::PolicyScratch {}
    unsafe impl aya::Pod for super::FragKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_expire_by_protocol_and_tcp_state() {
        let s = 1_000_000_000u64;
        let mut f = Flow::new(100 * s, [0; 2]);
        assert!(!f.expired(IPPROTO_TCP, 100 * s + 30 * s));
        assert!(f.expired(IPPROTO_TCP, 100 * s + 31 * s), "unanswered SYN");
        f.seen_reply = 1;
        assert!(!f.expired(IPPROTO_TCP, 100 * s + 3600 * s), "established");
        f.fin_out = 1;
        assert!(!f.expired(IPPROTO_TCP, 100 * s + 3600 * s), "half closed");
        f.fin_in = 1;
        assert!(
            !f.expired(IPPROTO_TCP, 100 * s + 59 * s),
            "closed: the remote's TIME_WAIT"
        );
        assert!(f.expired(IPPROTO_TCP, 100 * s + 61 * s), "closed both ways");
        f.rst = 1;
        assert!(f.expired(IPPROTO_TCP, 100 * s + 11 * s), "reset");
        assert!(f.expired(IPPROTO_UDP, 100 * s + 61 * s));
        assert!(!f.expired(IPPROTO_UDP, 100 * s + 59 * s));
        assert!(f.expired(IPPROTO_ICMP, 100 * s + 31 * s));
        assert!(
            !f.expired(IPPROTO_ICMP, 50 * s),
            "a clock behind last_seen is not expiry"
        );
    }

    #[test]
    fn map_values_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<Route>(), 20);
        assert_eq!(core::mem::size_of::<NetAddr>(), 20);
        assert_eq!(core::mem::size_of::<Peer>(), 8);
        assert_eq!(core::mem::size_of::<Endpoint>(), 16);
        assert_eq!(core::mem::size_of::<Settings>(), 88);
        assert_eq!(core::mem::size_of::<PolicyEndpoint>(), 8);
        assert_eq!(core::mem::size_of::<PolicyPeerKey>(), 28);
        assert_eq!(core::mem::size_of::<PolicyPeer>(), 8);
        assert_eq!(core::mem::size_of::<PolicyPortKey>(), 8);
        assert_eq!(core::mem::size_of::<CtKey>(), 40);
        assert_eq!(core::mem::size_of::<CtEntry>(), 16);
        assert_eq!(core::mem::size_of::<FragKey>(), 12);
        assert_eq!(core::mem::size_of::<SockRevKey>(), 16);
        assert_eq!(core::mem::size_of::<SockProbe>(), 16);
        assert_eq!(core::mem::size_of::<ServiceKey>(), 8);
        assert_eq!(core::mem::size_of::<Service>(), 16);
        assert_eq!(core::mem::size_of::<SlotKey>(), 12);
        assert_eq!(core::mem::size_of::<Backend>(), 8);
        assert_eq!(core::mem::size_of::<BackendKey>(), 16);
        assert_eq!(core::mem::size_of::<Tuple>(), 16);
        assert_eq!(core::mem::size_of::<ServiceFlow>(), 24);
        assert_eq!(core::mem::size_of::<ServiceReply>(), 24);
        assert_eq!(core::mem::size_of::<AffinityKey>(), 12);
        assert_eq!(core::mem::size_of::<Affinity>(), 16);
        assert_eq!(core::mem::size_of::<FlowKey>(), 16);
        assert_eq!(core::mem::size_of::<Flow>(), 24);
        assert_eq!(core::mem::size_of::<NatKey>(), 12);
        assert_eq!(core::mem::size_of::<NatTarget>(), 8);
        assert_eq!(core::mem::size_of::<Event>(), 40);
        assert_eq!(core::mem::size_of::<MonitorConfig>(), 24);
        assert_eq!(core::mem::size_of::<MonitorLimit>(), 40);
    }
}
