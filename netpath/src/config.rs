//! The cluster spec (TOML): the desired state every agent reads. Validation names the
//! field and the value of every mistake.
use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    str::FromStr,
};

use netpath_common::{RedirectMode, RouteMode, DEFAULT_VNI, DEFAULT_VXLAN_PORT, VXLAN_OVERHEAD};
use serde::Deserialize;

use crate::datapath::DEFAULT_BPFFS_ROOT;

/// The spec `cargo xtask run` brings up: three nodes, two on one underlay subnet and
/// one behind a router, so `auto` uses both direct routing and VXLAN.
pub const DEFAULT_SPEC: &str = include_str!("default-cluster.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        value: value.to_string(),
        why: why.into(),
    }
}

/// An IPv4 prefix; `addr` may carry host bits where the field is an interface address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        Self { addr, prefix }
    }
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }
    /// The `n`th address inside the prefix (0 = the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + n)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s.split_once('/').ok_or("expected ADDRESS/PREFIX")?;
        let addr = a.parse().map_err(|_| "not an IPv4 address")?;
        let prefix: u8 = p.parse().map_err(|_| "prefix is not a number")?;
        if prefix > 32 {
            return Err("prefix must be 0-32");
        }
        Ok(Self { addr, prefix })
    }
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
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

/// How nodes reach each other's pods.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    cluster_cidr: String,
    #[serde(default)]
    backend: Backend,
    #[serde(default = "default_vni")]
    vni: u32,
    #[serde(default = "default_port")]
    port: u16,
    mtu: Option<u32>,
    #[serde(default)]
    redirect: Redirect,
    #[serde(default)]
    decap: Decap,
    bpffs_root: Option<PathBuf>,
    #[serde(default)]
    nodes: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    underlay: String,
    pod_cidr: String,
    vtep_mac: Option<String>,
}

fn default_vni() -> u32 {
    DEFAULT_VNI
}
fn default_port() -> u16 {
    DEFAULT_VXLAN_PORT
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// Underlay address with the prefix of its subnet.
    pub underlay: Ipv4Net,
    pub pod_cidr: Ipv4Net,
    /// VTEP MAC: inner destination of VXLAN sent to this node.
    pub vtep_mac: [u8; 6],
}

impl NodeSpec {
    pub fn ip(&self) -> Ipv4Addr {
        self.underlay.addr
    }
}

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
    pub bpffs_root: PathBuf,
    pub nodes: Vec<NodeSpec>,
}

/// A VTEP MAC derived from the underlay address: locally administered, unicast, stable.
pub fn derived_vtep_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0e, 0x6e, o[0], o[1], o[2], o[3]]
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ClusterSpec {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Changes the backend, re-checking what depends on it.
    pub fn with_backend(&self, backend: Backend) -> Result<Self, ConfigError> {
        let mut text = self.to_toml();
        text = text.replacen(
            &format!("backend = \"{}\"", self.backend.name()),
            &format!("backend = \"{}\"", backend.name()),
            1,
        );
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<spec>"),
            message: e.to_string().trim().to_string(),
        })?;
        Self::validate(raw)
    }

    fn validate(raw: RawSpec) -> Result<Self, ConfigError> {
        let cluster_cidr: Ipv4Net = raw
            .cluster_cidr
            .parse()
            .map_err(|why: &str| invalid("cluster_cidr", &raw.cluster_cidr, why))?;
        if cluster_cidr.addr != cluster_cidr.network() {
            return Err(invalid(
                "cluster_cidr",
                &raw.cluster_cidr,
                "host bits are set",
            ));
        }
        if raw.vni == 0 || raw.vni > 0xff_ffff {
            return Err(invalid("vni", raw.vni, "must be 1-16777215 (24 bits)"));
        }
        if raw.port == 0 {
            return Err(invalid("port", raw.port, "must be a UDP port, 1-65535"));
        }
        if let Some(mtu) = raw.mtu {
            if !(576..=9000).contains(&mtu) {
                return Err(invalid("mtu", mtu, "must be 576-9000"));
            }
        }
        let bpffs_root = raw
            .bpffs_root
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BPFFS_ROOT));
        if !bpffs_root.is_absolute() || bpffs_root.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(invalid(
                "bpffs_root",
                bpffs_root.display(),
                "must be an absolute path without NUL bytes",
            ));
        }
        if raw.nodes.is_empty() {
            return Err(invalid(
                "nodes",
                "[]",
                "the cluster needs at least one node",
            ));
        }
        let mut nodes: Vec<NodeSpec> = Vec::with_capacity(raw.nodes.len());
        for (i, n) in raw.nodes.iter().enumerate() {
            let f = |name: &str| format!("nodes[{i}].{name}");
            if !valid_name(&n.name) {
                return Err(invalid(
                    f("name"),
                    &n.name,
                    "must be 1-32 characters of [A-Za-z0-9_-]",
                ));
            }
            let underlay: Ipv4Net = n
                .underlay
                .parse()
                .map_err(|why: &str| invalid(f("underlay"), &n.underlay, why))?;
            if underlay.prefix == 0 || underlay.addr == underlay.network() {
                return Err(invalid(
                    f("underlay"),
                    &n.underlay,
                    "must be the node's own address with its subnet prefix, e.g. 192.168.56.11/24",
                ));
            }
            let pod_cidr: Ipv4Net = n
                .pod_cidr
                .parse()
                .map_err(|why: &str| invalid(f("pod_cidr"), &n.pod_cidr, why))?;
            if pod_cidr.addr != pod_cidr.network() {
                return Err(invalid(f("pod_cidr"), &n.pod_cidr, "host bits are set"));
            }
            if pod_cidr.prefix > 30 {
                return Err(invalid(
                    f("pod_cidr"),
                    &n.pod_cidr,
                    "too small for pods: use /30 or larger",
                ));
            }
            if !cluster_cidr.contains_net(&pod_cidr) {
                return Err(invalid(
                    f("pod_cidr"),
                    &n.pod_cidr,
                    format!("outside cluster_cidr {cluster_cidr}"),
                ));
            }
            if cluster_cidr.contains(underlay.addr) {
                return Err(invalid(f("underlay"), &n.underlay, "inside cluster_cidr"));
            }
            let vtep_mac = match &n.vtep_mac {
                None => derived_vtep_mac(underlay.addr),
                Some(m) => {
                    let mac = parse_mac(m)
                        .ok_or_else(|| invalid(f("vtep_mac"), m, "expected aa:bb:cc:dd:ee:ff"))?;
                    if mac[0] & 1 == 1 || mac == [0; 6] {
                        return Err(invalid(f("vtep_mac"), m, "must be a unicast address"));
                    }
                    mac
                }
            };
            for (j, other) in nodes.iter().enumerate() {
                if other.name == n.name {
                    return Err(invalid(
                        f("name"),
                        &n.name,
                        format!("duplicate of nodes[{j}]"),
                    ));
                }
                if other.underlay.addr == underlay.addr {
                    return Err(invalid(
                        f("underlay"),
                        &n.underlay,
                        format!("same address as nodes[{j}]"),
                    ));
                }
                if other.pod_cidr.overlaps(&pod_cidr) {
                    return Err(invalid(
                        f("pod_cidr"),
                        &n.pod_cidr,
                        format!("overlaps nodes[{j}].pod_cidr {}", other.pod_cidr),
                    ));
                }
            }
            nodes.push(NodeSpec {
                name: n.name.clone(),
                underlay,
                pod_cidr,
                vtep_mac,
            });
        }
        if raw.backend == Backend::Direct {
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
                        Ipv4Net::new(first.underlay.network(), first.underlay.prefix)
                    ),
                ));
            }
        }
        Ok(Self {
            cluster_cidr,
            backend: raw.backend,
            vni: raw.vni,
            port: raw.port,
            mtu: raw.mtu,
            redirect: raw.redirect,
            decap: raw.decap,
            bpffs_root,
            nodes,
        })
    }

    pub fn node(&self, name: &str) -> Result<&NodeSpec, ConfigError> {
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

    /// Renders the spec back to TOML (the lab writes the spec its agents read).
    pub fn to_toml(&self) -> String {
        let mut s = format!(
            "cluster_cidr = \"{}\"\nbackend = \"{}\"\nvni = {}\nport = {}\nredirect = \"{}\"\ndecap = \"{}\"\nbpffs_root = \"{}\"\n",
            self.cluster_cidr,
            self.backend.name(),
            self.vni,
            self.port,
            match self.redirect {
                Redirect::Peer => "peer",
                Redirect::Plain => "plain",
            },
            self.decap.name(),
            self.bpffs_root.display()
        );
        if let Some(m) = self.mtu {
            s += &format!("mtu = {m}\n");
        }
        for n in &self.nodes {
            s += &format!(
                "\n[[nodes]]\nname = \"{}\"\nunderlay = \"{}\"\npod_cidr = \"{}\"\nvtep_mac = \"{}\"\n",
                n.name,
                n.underlay,
                n.pod_cidr,
                crate::cli::mac(&n.vtep_mac)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests;
