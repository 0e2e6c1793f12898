//! The value types of the cluster settings: each parses, prints and names itself
//! the same way in the spec file, etcd's config and `cluster init`'s flags.
use std::str::FromStr;

use netpath_common::RedirectMode;
use serde::{Deserialize, Serialize};

use crate::net::Ipv4Net;

/// Where nodes learn each other's pod CIDRs.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// From the store (spec file or etcd), as flannel does.
    #[default]
    Store,
    /// From BGP, as Calico does.
    Bgp,
}

impl Routing {
    pub fn name(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Bgp => "bgp",
        }
    }
}

/// A BGP router the nodes peer with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeer {
    pub address: std::net::Ipv4Addr,
    pub asn: u32,
    /// Only these nodes peer with it (all when absent), e.g. the nodes of one rack:
    /// each entry a node's name, or a subnet (`192.168.56.0/24`) whose nodes peer —
    /// also those that join later, which a store like etcd cannot name in advance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

impl BgpPeer {
    pub fn serves(&self, node: &super::NodeSpec) -> bool {
        self.nodes.as_ref().is_none_or(|entries| {
            entries.iter().any(|e| match e.parse::<Ipv4Net>() {
                Ok(subnet) => subnet.contains(node.ip()),
                Err(_) => *e == node.name,
            })
        })
    }
}

impl FromStr for BgpPeer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let address = parts.next().unwrap_or_default();
        let address = address.parse().map_err(|_| {
            format!("{address:?} in {s:?} is not an IPv4 address (ADDRESS:ASN[:NODE,...])")
        })?;
        let asn = parts
            .next()
            .ok_or_else(|| format!("{s:?} has no ASN (ADDRESS:ASN[:NODE,...])"))?;
        let asn = asn
            .parse()
            .map_err(|_| format!("{asn:?} in {s:?} is not an AS number"))?;
        let nodes = parts
            .next()
            .map(|n| n.split(',').map(str::to_string).collect());
        Ok(Self {
            address,
            asn,
            nodes,
        })
    }
}

/// An AS number a session can use: not 0, not AS_TRANS (23456), not 4294967295.
pub(super) fn valid_asn(asn: u32) -> bool {
    asn != 0 && asn != 23456 && asn != u32::MAX
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Redirect {
    #[default]
    Peer,
    Plain,
}

impl From<Redirect> for RedirectMode {
    fn from(r: Redirect) -> Self {
        match r {
            Redirect::Peer => RedirectMode::Peer,
            Redirect::Plain => RedirectMode::Plain,
        }
    }
}

/// Where VXLAN from other nodes is unwrapped.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Decap {
    /// In `from_underlay` (TC ingress), on the skb: GSO super-packets stay whole.
    #[default]
    Tc,
    /// In `xdp_underlay`, before an skb exists; `from_underlay` delivers the result.
    Xdp,
}

impl Decap {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tc => "tc",
            Self::Xdp => "xdp",
        }
    }
}

/// Whether pods' traffic between nodes is encrypted.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// In clear, as the backend carries it.
    #[default]
    Off,
    /// WireGuard between nodes: the kernel's where it has it, else netpath's own
    /// user-space device; pods' packets to other nodes never leave in clear.
    Wireguard,
}

impl Encryption {
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Wireguard => "wireguard",
        }
    }
}

/// What the node's kernel VXLAN device (`np-vxlan`, metadata mode) carries; with
/// `off` there is no such device and the programs encapsulate and unwrap in place.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VxlanDevice {
    /// Everything in place (the fastest here, see the bench report).
    #[default]
    Off,
    /// Wire-sized frames for local pods go through the kernel's tunnel GRO first.
    Receive,
    /// Peers behind a router get packets the kernel encapsulates (outer UDP checksum).
    Send,
    /// Both.
    Both,
}

impl VxlanDevice {
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Receive => "receive",
            Self::Send => "send",
            Self::Both => "both",
        }
    }

    /// The `TUNNEL_*` bits the programs read.
    pub fn tunnel_use(self) -> u32 {
        use netpath_common::{TUNNEL_RX, TUNNEL_TX_ROUTED};
        match self {
            Self::Off => 0,
            Self::Receive => TUNNEL_RX,
            Self::Send => TUNNEL_TX_ROUTED,
            Self::Both => TUNNEL_RX | TUNNEL_TX_ROUTED,
        }
    }
}

/// How nodes reach each other's pods.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Plain IP to the owning node (flannel host-gw); nodes must share an L2 subnet.
    Direct,
    /// VXLAN to every node.
    Vxlan,
    /// IP-in-IP to every node (Calico's overlay).
    Ipip,
    /// Direct within the local underlay subnet, the `overlay` across subnets (Calico's
    /// `CrossSubnet`).
    #[default]
    Auto,
}

/// The encapsulation `auto` uses between subnets.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Overlay {
    #[default]
    Vxlan,
    Ipip,
}

impl Overlay {
    pub fn name(self) -> &'static str {
        match self {
            Self::Vxlan => "vxlan",
            Self::Ipip => "ipip",
        }
    }
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Vxlan => "vxlan",
            Self::Ipip => "ipip",
            Self::Auto => "auto",
        }
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(Self::Direct),
            "vxlan" => Ok(Self::Vxlan),
            "ipip" => Ok(Self::Ipip),
            "auto" => Ok(Self::Auto),
            _ => Err(format!("unknown backend {s:?} (direct, vxlan, ipip, auto)")),
        }
    }
}

/// An inclusive port range, written `FIRST-LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        let (min, max) = netpath_common::DEFAULT_NAT_PORTS;
        Self { min, max }
    }
}

impl PortRange {
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.min <= other.max && other.min <= self.max
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not FIRST-LAST"))?;
        let port = |t: &str| {
            t.trim()
                .parse::<u16>()
                .map_err(|_| format!("{t:?} is not a port (0-65535)"))
        };
        Ok(Self {
            min: port(a)?,
            max: port(b)?,
        })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}
