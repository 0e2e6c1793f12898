//! The cluster spec: the desired state every agent works from. A `SpecDraft` is
//! built in code or read from TOML (`file`); `SpecDraft::validate` is the one place
//! that checks it, naming the field and the value of every mistake.
mod file;

use std::{collections::HashMap, fmt, net::Ipv4Addr, path::PathBuf, str::FromStr};

use netpath_common::{RedirectMode, RouteMode, DEFAULT_VNI, DEFAULT_VXLAN_PORT, VXLAN_OVERHEAD};
use serde::{Deserialize, Serialize};

use crate::net::{Ipv4Net, Mac};

/// The spec `cargo xtask run` brings up: three nodes, two on one underlay subnet and
/// one behind a router, so `auto` uses both direct routing and VXLAN.
pub const DEFAULT_SPEC: &str = include_str!("default-cluster.toml");

/// Where pins live unless the spec says otherwise.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/netpath";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field} = {value:?}: {why}")]
    Invalid {
        field: String,
        value: String,
        why: String,
    },
}

fn invalid(
    field: impl Into<String>,
    value: impl fmt::Display,
    why: impl Into<String>,
) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        value: value.to_string(),
        why: why.into(),
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
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

/// What the node's kernel VXLAN device (`np-vxlan`, metadata mode) carries; with
/// `off` there is no such device and the programs encapsulate and unwrap in place.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Plain IP to the owning node (flannel host-gw); nodes must share an L2 subnet.
    Direct,
    /// VXLAN to every node.
    Vxlan,
    /// Direct within the local underlay subnet, VXLAN across subnets.
    #[default]
    Auto,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Vxlan => "vxlan",
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
            "auto" => Ok(Self::Auto),
            _ => Err(format!("unknown backend {s:?} (direct, vxlan, auto)")),
        }
    }
}

/// A spec as written, not yet checked: build one in code or read one from TOML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecDraft {
    pub cluster_cidr: Ipv4Net,
    pub backend: Backend,
    pub vni: u32,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    pub redirect: Redirect,
    pub decap: Decap,
    pub vxlan_device: VxlanDevice,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpffs_root: Option<PathBuf>,
    pub masquerade: bool,
    pub no_masquerade: Vec<Ipv4Net>,
    pub masquerade_ports: PortRange,
    pub nodes: Vec<NodeDraft>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeDraft {
    pub name: String,
    pub underlay: Ipv4Net,
    pub pod_cidr: Ipv4Net,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<Mac>,
}

impl SpecDraft {
    /// A cluster with the defaults (auto backend, VNI 1, port 8472) and no nodes yet.
    pub fn new(cluster_cidr: Ipv4Net) -> Self {
        Self {
            cluster_cidr,
            backend: Backend::default(),
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            mtu: None,
            redirect: Redirect::default(),
            decap: Decap::default(),
            vxlan_device: VxlanDevice::default(),
            bpffs_root: None,
            masquerade: true,
            no_masquerade: Vec::new(),
            masquerade_ports: PortRange::default(),
            nodes: Vec::new(),
        }
    }

    pub fn node(mut self, name: &str, underlay: Ipv4Net, pod_cidr: Ipv4Net) -> Self {
        self.nodes.push(NodeDraft {
            name: name.to_string(),
            underlay,
            pod_cidr,
            vtep_mac: None,
        });
        self
    }

    /// Checks everything but the nodes (what a cluster holds before any joined);
    /// returns the bpffs root in force.
    pub fn validate_settings(&self) -> Result<PathBuf, SpecError> {
        let cidr = self.cluster_cidr;
        if cidr.addr != cidr.network() {
            return Err(invalid("cluster_cidr", cidr, "host bits are set"));
        }
        if self.vni == 0 || self.vni > 0xff_ffff {
            return Err(invalid("vni", self.vni, "must be 1-16777215 (24 bits)"));
        }
        if self.port == 0 {
            return Err(invalid("port", self.port, "must be a UDP port, 1-65535"));
        }
        if let Some(mtu) = self.mtu {
            if !(576..=9000).contains(&mtu) {
                return Err(invalid("mtu", mtu, "must be 576-9000"));
            }
        }
        for (i, net) in self.no_masquerade.iter().enumerate() {
            if net.addr != net.network() {
                return Err(invalid(
                    format!("no_masquerade[{i}]"),
                    net,
                    "host bits are set",
                ));
            }
        }
        let PortRange { min, max } = self.masquerade_ports;
        if min < 1024 || min > max {
            return Err(invalid(
                "masquerade_ports",
                self.masquerade_ports,
                "must be FIRST-LAST with 1024 <= FIRST <= LAST <= 65535",
            ));
        }
        let bpffs_root = self
            .bpffs_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BPFFS_ROOT));
        if !bpffs_root.is_absolute() || bpffs_root.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(invalid(
                "bpffs_root",
                bpffs_root.display(),
                "must be an absolute path without NUL bytes",
            ));
        }
        Ok(bpffs_root)
    }

    pub fn validate(self) -> Result<ClusterSpec, SpecError> {
        let cidr = self.cluster_cidr;
        let bpffs_root = self.validate_settings()?;
        if self.nodes.is_empty() {
            return Err(invalid(
                "nodes",
                "[]",
                "the cluster needs at least one node",
            ));
        }
        let nodes = self
            .nodes
            .into_iter()
            .enumerate()
            .map(|(i, n)| validate_node(i, n, &cidr))
            .collect::<Result<Vec<_>, _>>()?;
        check_distinct(&nodes)?;
        if self.backend == Backend::Direct {
            // Direct routing hands packets to the peer on the local segment: every node
            // must share the first node's underlay subnet.
            let first = &nodes[0];
            if let Some((i, n)) = nodes
                .iter()
                .enumerate()
                .find(|(_, n)| !first.underlay.contains(n.ip()))
            {
                return Err(invalid(
                    format!("nodes[{i}].underlay"),
                    n.underlay,
                    format!(
                        "backend \"direct\" needs every node on one L2 subnet ({}); use \"auto\" or \"vxlan\"",
                        first.underlay.subnet()
                    ),
                ));
            }
        }
        Ok(ClusterSpec {
            cluster_cidr: cidr,
            backend: self.backend,
            vni: self.vni,
            port: self.port,
            mtu: self.mtu,
            redirect: self.redirect,
            decap: self.decap,
            vxlan_device: self.vxlan_device,
            bpffs_root,
            masquerade: Masquerade {
                enabled: self.masquerade,
                exempt: self.no_masquerade,
                ports: self.masquerade_ports,
            },
            nodes,
        })
    }
}

/// A node name: 1-32 characters of [A-Za-z0-9_-].
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn validate_node(i: usize, n: NodeDraft, cluster_cidr: &Ipv4Net) -> Result<NodeSpec, SpecError> {
    let f = |name: &str| format!("nodes[{i}].{name}");
    if !valid_name(&n.name) {
        return Err(invalid(
            f("name"),
            &n.name,
            "must be 1-32 characters of [A-Za-z0-9_-]",
        ));
    }
    let (underlay, pod_cidr) = (n.underlay, n.pod_cidr);
    if underlay.prefix == 0 || underlay.prefix > 31 || underlay.addr == underlay.network() {
        return Err(invalid(
            f("underlay"),
            underlay,
            "must be the node's own address with its subnet prefix, e.g. 192.168.56.11/24",
        ));
    }
    if pod_cidr.addr != pod_cidr.network() {
        return Err(invalid(f("pod_cidr"), pod_cidr, "host bits are set"));
    }
    if pod_cidr.prefix > 30 {
        return Err(invalid(
            f("pod_cidr"),
            pod_cidr,
            "too small for pods: use /30 or larger",
        ));
    }
    if !cluster_cidr.contains_net(&pod_cidr) {
        return Err(invalid(
            f("pod_cidr"),
            pod_cidr,
            format!("outside cluster_cidr {cluster_cidr}"),
        ));
    }
    if cluster_cidr.contains(underlay.addr) {
        return Err(invalid(f("underlay"), underlay, "inside cluster_cidr"));
    }
    let vtep_mac = n
        .vtep_mac
        .unwrap_or_else(|| derived_vtep_mac(underlay.addr));
    if !vtep_mac.is_unicast() {
        return Err(invalid(
            f("vtep_mac"),
            vtep_mac,
            "must be a unicast address",
        ));
    }
    Ok(NodeSpec {
        name: n.name,
        underlay,
        pod_cidr,
        vtep_mac,
    })
}

/// Names, underlay addresses and pod CIDRs are each used once. Hashed and sorted, not
/// compared pairwise: a 100 000-node spec validates in milliseconds.
fn check_distinct(nodes: &[NodeSpec]) -> Result<(), SpecError> {
    let mut names = HashMap::with_capacity(nodes.len());
    let mut addrs = HashMap::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        if let Some(j) = names.insert(n.name.as_str(), i) {
            let f = format!("nodes[{i}].name");
            return Err(invalid(f, &n.name, format!("duplicate of nodes[{j}]")));
        }
        if let Some(j) = addrs.insert(n.underlay.addr, i) {
            let f = format!("nodes[{i}].underlay");
            return Err(invalid(
                f,
                n.underlay,
                format!("same address as nodes[{j}]"),
            ));
        }
    }
    // CIDR blocks overlap only by nesting. In address order (wider first at the same
    // start), a block overlaps an earlier one exactly when the earlier block reaching
    // furthest contains its start.
    let end = |c: &Ipv4Net| u64::from(u32::from(c.network())) + c.size() - 1;
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| {
        (
            u32::from(nodes[i].pod_cidr.network()),
            nodes[i].pod_cidr.prefix,
        )
    });
    let mut furthest: Option<usize> = None;
    for &i in &order {
        let c = nodes[i].pod_cidr;
        match furthest {
            Some(w) if nodes[w].pod_cidr.overlaps(&c) => {
                let (later, earlier) = (i.max(w), i.min(w));
                return Err(invalid(
                    format!("nodes[{later}].pod_cidr"),
                    nodes[later].pod_cidr,
                    format!(
                        "overlaps nodes[{earlier}].pod_cidr {}",
                        nodes[earlier].pod_cidr
                    ),
                ));
            }
            Some(w) if end(&nodes[w].pod_cidr) >= end(&c) => {}
            _ => furthest = Some(i),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// Underlay address with the prefix of its subnet.
    pub underlay: Ipv4Net,
    pub pod_cidr: Ipv4Net,
    /// VTEP MAC: inner destination of VXLAN sent to this node.
    pub vtep_mac: Mac,
}

impl NodeSpec {
    pub fn ip(&self) -> Ipv4Addr {
        self.underlay.addr
    }
}

/// A validated spec; change one through `to_draft` and `validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub cluster_cidr: Ipv4Net,
    pub backend: Backend,
    pub vni: u32,
    pub port: u16,
    /// Pod MTU override; derived from the underlay when absent.
    pub mtu: Option<u32>,
    pub redirect: Redirect,
    pub decap: Decap,
    pub vxlan_device: VxlanDevice,
    pub bpffs_root: PathBuf,
    pub masquerade: Masquerade,
    pub nodes: Vec<NodeSpec>,
}

/// Source NAT of pods' flows to the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub enabled: bool,
    /// Destinations pods reach with their own address, beside the cluster CIDR and
    /// the nodes.
    pub exempt: Vec<Ipv4Net>,
    pub ports: PortRange,
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

/// A VTEP MAC derived from the underlay address: locally administered, unicast, stable.
pub fn derived_vtep_mac(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    Mac([0x0e, 0x6e, o[0], o[1], o[2], o[3]])
}

impl ClusterSpec {
    /// The draft this spec was validated from (with derived values filled in).
    pub fn to_draft(&self) -> SpecDraft {
        SpecDraft {
            cluster_cidr: self.cluster_cidr,
            backend: self.backend,
            vni: self.vni,
            port: self.port,
            mtu: self.mtu,
            redirect: self.redirect,
            decap: self.decap,
            vxlan_device: self.vxlan_device,
            bpffs_root: Some(self.bpffs_root.clone()),
            masquerade: self.masquerade.enabled,
            no_masquerade: self.masquerade.exempt.clone(),
            masquerade_ports: self.masquerade.ports,
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeDraft {
                    name: n.name.clone(),
                    underlay: n.underlay,
                    pod_cidr: n.pod_cidr,
                    vtep_mac: Some(n.vtep_mac),
                })
                .collect(),
        }
    }

    /// Changes the backend, re-checking what depends on it.
    pub fn with_backend(&self, backend: Backend) -> Result<Self, SpecError> {
        let mut d = self.to_draft();
        d.backend = backend;
        d.validate()
    }

    pub fn node(&self, name: &str) -> Result<&NodeSpec, SpecError> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            invalid(
                "node",
                name,
                format!("not in the spec (nodes: {})", known.join(", ")),
            )
        })
    }

    /// How `local` reaches `peer`'s pods.
    pub fn route_mode(&self, local: &NodeSpec, peer: &NodeSpec) -> RouteMode {
        match self.backend {
            Backend::Direct => RouteMode::Direct,
            Backend::Vxlan => RouteMode::Vxlan,
            Backend::Auto if local.underlay.contains(peer.ip()) => RouteMode::Direct,
            Backend::Auto => RouteMode::Vxlan,
        }
    }

    /// Pod MTU on a node whose underlay has `underlay_mtu`: room for VXLAN unless
    /// every route is direct.
    pub fn pod_mtu(&self, underlay_mtu: u32) -> u32 {
        match (self.mtu, self.backend) {
            (Some(m), _) => m,
            (None, Backend::Direct) => underlay_mtu,
            (None, _) => underlay_mtu - VXLAN_OVERHEAD,
        }
    }
}

#[cfg(test)]
mod tests;
