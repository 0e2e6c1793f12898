//! Everything of a cluster that is not per node, declared once: the spec file's
//! top level, etcd's cluster config and `netpath cluster init`'s flags are all this
//! type, with the same defaults and the same validation.
use netpath_common::{DEFAULT_VNI, DEFAULT_VXLAN_PORT};
use serde::{Deserialize, Serialize};

use super::{
    invalid,
    values::{
        valid_asn, Backend, BgpPeer, Decap, Encryption, Overlay, PortRange, Redirect, Routing,
        VxlanDevice,
    },
    SpecError,
};
use crate::net::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The pods' address range; every node's pod CIDR lies inside it.
    #[arg(long)]
    pub cluster_cidr: Ipv4Net,
    /// How nodes reach each other's pods.
    #[serde(default)]
    #[arg(long, value_enum, default_value_t)]
    pub backend: Backend,
    /// The encapsulation `backend = "auto"` uses across subnets (vxlan when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_enum)]
    pub overlay: Option<Overlay>,
    /// VXLAN network identifier (flannel's default, 1).
    #[serde(default = "default_vni")]
    #[arg(long, default_value_t = DEFAULT_VNI)]
    pub vni: u32,
    /// VXLAN UDP port (flannel's and the kernel's default, 8472).
    #[serde(default = "default_port")]
    #[arg(long, default_value_t = DEFAULT_VXLAN_PORT)]
    pub port: u16,
    /// Pod MTU; derived from the underlay when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub mtu: Option<u32>,
    /// How packets enter a local pod.
    #[serde(default)]
    #[arg(long, value_enum, default_value_t)]
    pub redirect: Redirect,
    /// Where VXLAN from other nodes is unwrapped.
    #[serde(default)]
    #[arg(long, value_enum, default_value_t)]
    pub decap: Decap,
    /// What the node's kernel VXLAN device carries.
    #[serde(default)]
    #[arg(long, value_enum, default_value_t)]
    pub vxlan_device: VxlanDevice,
    /// Pods' flows to the outside leave with the node's address (source NAT);
    /// `--no-masquerade` keeps the pod's address.
    #[serde(default = "yes")]
    #[arg(long = "no-masquerade", action = clap::ArgAction::SetFalse)]
    pub masquerade: bool,
    /// Destinations pods reach with their own address even with masquerade on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[arg(long = "masquerade-exempt", value_delimiter = ',')]
    pub no_masquerade: Vec<Ipv4Net>,
    /// Translated source ports, FIRST-LAST.
    #[serde(default)]
    #[arg(long, default_value_t = PortRange::default())]
    pub masquerade_ports: PortRange,
    /// Where a node learns the other nodes' pod CIDRs: the store, or BGP (a BIRD
    /// daemon per node announcing its own CIDR; the store still assigns them).
    #[serde(default)]
    #[arg(long, value_enum, default_value_t)]
    pub routing: Routing,
    /// The nodes' BGP autonomous system (Calico's default, 64512).
    #[serde(default = "default_asn")]
    #[arg(long, default_value_t = DEFAULT_ASN)]
    pub asn: u32,
    /// A full iBGP mesh among the nodes; off when routers (`bgp_peers`) carry the
    /// routes instead.
    #[serde(default = "yes")]
    #[arg(long = "no-bgp-mesh", action = clap::ArgAction::SetFalse)]
    pub bgp_mesh: bool,
    /// Routers every node (or the nodes named) peers with, such as a top-of-rack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[arg(long = "bgp-peer", value_name = "ADDRESS:ASN[:NODE,...]")]
    pub bgp_peers: Vec<BgpPeer>,
    /// Services' virtual addresses (ClusterIPs): translated by the programs, never
    /// masqueraded and never forwarded as they are. Kubernetes' 10.96.0.0/12 when
    /// absent, unless the cluster CIDR overlaps it (then the cluster has no service
    /// range until one is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub service_cidr: Option<Ipv4Net>,
    /// Ports a NodePort service may take on every node's address, FIRST-LAST.
    #[serde(default = "default_node_ports")]
    #[arg(long, default_value = DEFAULT_NODE_PORTS)]
    pub node_ports: PortRange,
    /// Pods' traffic between nodes encrypted (WireGuard) or not.
    #[serde(default, skip_serializing_if = "is_off")]
    #[arg(long, value_enum, default_value_t)]
    pub encryption: Encryption,
    /// WireGuard's UDP port on every node.
    #[serde(
        default = "default_wireguard_port",
        skip_serializing_if = "is_default_wireguard_port"
    )]
    #[arg(long, default_value_t = crate::wireguard::DEFAULT_PORT)]
    pub wireguard_port: u16,
}

fn is_off(e: &Encryption) -> bool {
    *e == Encryption::Off
}

fn default_wireguard_port() -> u16 {
    crate::wireguard::DEFAULT_PORT
}

fn is_default_wireguard_port(p: &u16) -> bool {
    *p == crate::wireguard::DEFAULT_PORT
}

/// Kubernetes' default service range and node port range.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
pub const DEFAULT_NODE_PORTS: &str = "30000-32767";

fn default_node_ports() -> PortRange {
    DEFAULT_NODE_PORTS.parse().expect("a valid range")
}

/// Calico's private AS for the nodes.
pub const DEFAULT_ASN: u32 = 64512;

fn default_asn() -> u32 {
    DEFAULT_ASN
}

fn yes() -> bool {
    true
}

fn default_vni() -> u32 {
    DEFAULT_VNI
}

fn default_port() -> u16 {
    DEFAULT_VXLAN_PORT
}

impl ClusterSettings {
    /// The service range in force: as set, else the default where it fits.
    pub fn service_range(&self) -> Option<Ipv4Net> {
        let default: Ipv4Net = DEFAULT_SERVICE_CIDR.parse().expect("a valid CIDR");
        self.service_cidr
            .or_else(|| (!default.overlaps(&self.cluster_cidr)).then_some(default))
    }

    /// A cluster with every default (auto backend over VXLAN, VNI 1, port 8472,
    /// masquerade on).
    pub fn new(cluster_cidr: Ipv4Net) -> Self {
        Self {
            cluster_cidr,
            backend: Backend::default(),
            overlay: None,
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            mtu: None,
            redirect: Redirect::default(),
            decap: Decap::default(),
            vxlan_device: VxlanDevice::default(),
            masquerade: true,
            no_masquerade: Vec::new(),
            masquerade_ports: PortRange::default(),
            routing: Routing::default(),
            asn: DEFAULT_ASN,
            bgp_mesh: true,
            bgp_peers: Vec::new(),
            service_cidr: None,
            node_ports: default_node_ports(),
            encryption: Encryption::Off,
            wireguard_port: crate::wireguard::DEFAULT_PORT,
        }
    }

    /// The one check of every setting, naming the field and the value of a mistake.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_forwarding()?;
        self.validate_masquerade()?;
        self.validate_bgp()?;
        self.validate_services()
    }

    /// The pod range, the backend and its encapsulation.
    fn validate_forwarding(&self) -> Result<(), SpecError> {
        let cidr = self.cluster_cidr;
        if cidr.addr != cidr.network() {
            return Err(invalid("cluster_cidr", cidr, "host bits are set"));
        }
        if let (Some(overlay), backend) = (self.overlay, self.backend) {
            if backend != Backend::Auto {
                return Err(invalid(
                    "overlay",
                    overlay.name(),
                    format!(
                        "only backend \"auto\" picks an overlay (backend is \"{}\")",
                        backend.name()
                    ),
                ));
            }
        }
        let ipip = self.backend == Backend::Ipip || self.overlay == Some(Overlay::Ipip);
        if ipip && self.vxlan_device != VxlanDevice::Off {
            return Err(invalid(
                "vxlan_device",
                format!("{:?}", self.vxlan_device).to_lowercase(),
                "the overlay is IP-in-IP: there is no VXLAN device to use",
            ));
        }
        if self.vni == 0 || self.vni > 0xff_ffff {
            return Err(invalid("vni", self.vni, "must be 1-16777215 (24 bits)"));
        }
        if self.port == 0 {
            return Err(invalid("port", self.port, "must be a UDP port, 1-65535"));
        }
        if self.wireguard_port == 0 {
            return Err(invalid(
                "wireguard_port",
                self.wireguard_port,
                "must be a UDP port, 1-65535",
            ));
        }
        if self.encryption == Encryption::Wireguard && self.wireguard_port == self.port {
            return Err(invalid(
                "wireguard_port",
                self.wireguard_port,
                "is the VXLAN port too",
            ));
        }
        if let Some(mtu) = self.mtu {
            if !(576..=9000).contains(&mtu) {
                return Err(invalid("mtu", mtu, "must be 576-9000"));
            }
        }
        Ok(())
    }

    /// Exempt destinations and the translated ports.
    fn validate_masquerade(&self) -> Result<(), SpecError> {
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
        Ok(())
    }

    /// The AS numbers, the peers and whether any node would learn a route.
    fn validate_bgp(&self) -> Result<(), SpecError> {
        if !valid_asn(self.asn) {
            return Err(invalid(
                "asn",
                self.asn,
                "must be 1-4294967294, not 23456 (AS_TRANS)",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.bgp_peers.iter().enumerate() {
            if !valid_asn(p.asn) {
                return Err(invalid(
                    format!("bgp_peers[{i}].asn"),
                    p.asn,
                    "must be 1-4294967294, not 23456 (AS_TRANS)",
                ));
            }
            if !seen.insert(p.address) {
                return Err(invalid(
                    format!("bgp_peers[{i}].address"),
                    p.address,
                    "listed twice",
                ));
            }
            let selects = |e: &String| {
                super::valid_name(e) || e.parse::<Ipv4Net>().is_ok_and(|n| n.addr == n.network())
            };
            if let Some(bad) = p.nodes.iter().flatten().find(|e| !selects(e)) {
                return Err(invalid(
                    format!("bgp_peers[{i}].nodes"),
                    bad,
                    "neither a node name (1-32 of A-Z a-z 0-9 _ -) nor a subnet (192.168.56.0/24)",
                ));
            }
        }
        if self.routing == Routing::Store && (!self.bgp_peers.is_empty() || !self.bgp_mesh) {
            return Err(invalid(
                "routing",
                self.routing.name(),
                "bgp_peers and bgp_mesh need routing = \"bgp\"",
            ));
        }
        if self.routing == Routing::Bgp && !self.bgp_mesh && self.bgp_peers.is_empty() {
            return Err(invalid(
                "bgp_mesh",
                false,
                "with no mesh and no bgp_peers no node would learn any route",
            ));
        }
        Ok(())
    }

    /// The service range and the node ports.
    fn validate_services(&self) -> Result<(), SpecError> {
        let cidr = self.cluster_cidr;
        if let Some(svc) = self.service_cidr {
            if svc.addr != svc.network() {
                return Err(invalid("service_cidr", svc, "host bits are set"));
            }
            if svc.overlaps(&cidr) {
                return Err(invalid(
                    "service_cidr",
                    svc,
                    format!("overlaps cluster_cidr {cidr}"),
                ));
            }
        }
        let ports = self.node_ports;
        if ports.min == 0 || ports.min > ports.max {
            return Err(invalid(
                "node_ports",
                ports,
                "must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535",
            ));
        }
        if ports.overlaps(&self.masquerade_ports) {
            return Err(invalid(
                "node_ports",
                ports,
                format!(
                    "overlaps masquerade_ports {} (the node's translated ports)",
                    self.masquerade_ports
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: ClusterSettings,
    }

    #[test]
    fn flags_file_and_json_share_the_defaults() {
        let cidr: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let flags = Flags::try_parse_from(["x", "--cluster-cidr", "10.244.0.0/16"]).unwrap();
        let file: ClusterSettings = toml::from_str("cluster_cidr = \"10.244.0.0/16\"").unwrap();
        let json: ClusterSettings =
            serde_json::from_str(r#"{"cluster_cidr": "10.244.0.0/16"}"#).unwrap();
        let new = ClusterSettings::new(cidr);
        assert_eq!(flags.settings, new);
        assert_eq!(file, new);
        assert_eq!(json, new);
        let set = Flags::try_parse_from([
            "x",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--backend",
            "vxlan",
            "--no-masquerade",
            "--masquerade-exempt",
            "192.0.2.0/24,198.51.100.0/24",
            "--masquerade-ports",
            "40000-41000",
            "--vxlan-device",
            "receive",
        ])
        .unwrap()
        .settings;
        assert_eq!(set.backend, Backend::Vxlan);
        assert!(!set.masquerade);
        assert_eq!(set.no_masquerade.len(), 2);
        assert_eq!(
            set.masquerade_ports,
            PortRange {
                min: 40000,
                max: 41000
            }
        );
        assert_eq!(set.vxlan_device, VxlanDevice::Receive);
        // What one writes, another reads back the same.
        let text = serde_json::to_string(&set).unwrap();
        assert_eq!(serde_json::from_str::<ClusterSettings>(&text).unwrap(), set);
        assert!(Flags::try_parse_from(["x", "--cluster-cidr", "nope"]).is_err());
        let bgp = Flags::try_parse_from([
            "x",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--routing",
            "bgp",
            "--asn",
            "65010",
            "--no-bgp-mesh",
            "--bgp-peer",
            "192.168.56.1:65000:node1,node2",
        ])
        .unwrap()
        .settings;
        bgp.validate().unwrap();
        assert_eq!(
            (bgp.routing, bgp.asn, bgp.bgp_mesh),
            (Routing::Bgp, 65010, false)
        );
        assert_eq!(
            bgp.bgp_peers[0].nodes.as_deref(),
            Some(&["node1".to_string(), "node2".to_string()][..])
        );
    }
}
