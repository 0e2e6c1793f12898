//! The cluster spec: the desired state every agent works from. A `SpecDraft` is
//! built in code or read from TOML (`file`); `SpecDraft::validate` is the one place
//! that checks it, naming the field and the value of every mistake.
mod file;
mod policies;
mod service_checks;
mod services;
mod settings;
mod split;
mod values;

use std::{collections::HashMap, fmt, net::Ipv4Addr, path::PathBuf, sync::Arc};

use netpath_common::{RouteMode, IPIP_OVERHEAD, VXLAN_OVERHEAD};
use serde::Serialize;

pub use self::service_checks::{admit_each, validate_all};
pub use self::services::{
    EndpointPort, EndpointRecord, Protocol, ServicePort, ServiceSpec, ServiceType, SessionAffinity,
    TargetPort, TrafficPolicy, DEFAULT_AFFINITY_TIMEOUT,
};
pub use self::settings::{ClusterSettings, DEFAULT_ASN};
pub use self::values::{
    Backend, BgpPeer, Decap, Encryption, Overlay, PortRange, Redirect, Routing, VxlanDevice,
};
use crate::net::{Ipv4Net, Mac};
use crate::policy::{Namespace, NetworkPolicy, PodRecord, PolicyRecords};
use crate::wireguard::PublicKey;

/// The spec `cargo xtask run` brings up: three nodes, two on one underlay subnet and
/// one behind a router, so `auto` uses both direct routing and VXLAN.
pub const DEFAULT_SPEC: &str = include_str!("default-cluster.toml");

/// Where pins live unless the spec says otherwise.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/netpath";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    // The cause is in the message, not a `source`: `{:#}` would print it twice.
    #[error("read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
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

/// A spec as written, not yet checked: build one in code or read one from TOML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecDraft {
    #[serde(flatten)]
    pub settings: ClusterSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpffs_root: Option<PathBuf>,
    pub nodes: Vec<NodeDraft>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
    /// Service records of the file that did not parse, each named: an error for
    /// `validate`, left out by `validate_admitting`.
    #[serde(skip)]
    pub unparsed: Vec<(usize, String)>,
    /// Records policy is compiled from, shaped like the Kubernetes objects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Namespace>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<NetworkPolicy>,
    /// Namespace, pod and policy records of the file that did not parse (list,
    /// index, message), handled as `unparsed` is.
    #[serde(skip)]
    pub unparsed_records: Vec<policies::Unparsed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeDraft {
    pub name: String,
    pub underlay: Ipv4Net,
    pub pod_cidr: Ipv4Net,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<Mac>,
    /// Its WireGuard public key (with `encryption = "wireguard"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_key: Option<PublicKey>,
}

impl SpecDraft {
    /// A cluster with the defaults (auto backend, VNI 1, port 8472) and no nodes yet.
    pub fn new(cluster_cidr: Ipv4Net) -> Self {
        Self::of(ClusterSettings::new(cluster_cidr))
    }

    /// A cluster with these settings and no nodes yet.
    pub fn of(settings: ClusterSettings) -> Self {
        Self {
            settings,
            bpffs_root: None,
            nodes: Vec::new(),
            services: Vec::new(),
            unparsed: Vec::new(),
            namespaces: Vec::new(),
            pods: Vec::new(),
            policies: Vec::new(),
            unparsed_records: Vec::new(),
        }
    }

    pub fn node(mut self, name: &str, underlay: Ipv4Net, pod_cidr: Ipv4Net) -> Self {
        self.nodes.push(NodeDraft {
            name: name.to_string(),
            underlay,
            pod_cidr,
            vtep_mac: None,
            wireguard_key: None,
        });
        self
    }

    /// The bpffs root in force, checked.
    fn bpffs_root(&self) -> Result<PathBuf, SpecError> {
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

    /// The spec, or the first mistake in it.
    pub fn validate(mut self) -> Result<ClusterSpec, SpecError> {
        if !self.unparsed.is_empty() {
            return Err(file::parse_error(self.unparsed.swap_remove(0).1));
        }
        let unparsed_records = std::mem::take(&mut self.unparsed_records);
        let spec = self.validate_cluster()?;
        validate_all(&spec.services, &spec.settings, &spec.nodes)?;
        policies::validate(&spec, &unparsed_records)?;
        Ok(spec)
    }

    /// The spec with its bad records (services, namespaces, pods, policies) left
    /// out, each named in the second value with its field; the settings and the
    /// nodes must be right.
    pub fn validate_admitting(mut self) -> Result<(ClusterSpec, Vec<String>), SpecError> {
        let unparsed = std::mem::take(&mut self.unparsed);
        let unparsed_records = std::mem::take(&mut self.unparsed_records);
        let mut spec = self.validate_cluster()?;
        // The index each parsed service had in the file, the unparsed ones skipped.
        let mut index = (0..).filter(|i| !unparsed.iter().any(|(u, _)| u == i));
        let services = std::mem::take(&mut spec.services)
            .into_iter()
            .map(|s| (index.next().expect("endless"), s));
        let (services, mut left_out) = admit_each(services, &spec.settings, &spec.nodes);
        spec.services = services;
        left_out.extend(unparsed.iter().map(|(_, e)| format!("left out: {e}")));
        left_out.extend(policies::admit(&mut spec, &unparsed_records));
        Ok((spec, left_out))
    }

    /// Settings and nodes checked; services carried along unchecked.
    fn validate_cluster(self) -> Result<ClusterSpec, SpecError> {
        self.settings.validate()?;
        let bpffs_root = self.bpffs_root()?;
        let cidr = self.settings.cluster_cidr;
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
        // A router that learned the pod routes by BGP carries them between subnets.
        if self.settings.backend == Backend::Direct && self.settings.bgp_peers.is_empty() {
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
        if let Some(range) = self.settings.service_range() {
            if let Some((i, n)) = nodes
                .iter()
                .enumerate()
                .find(|(_, n)| range.contains(n.ip()))
            {
                return Err(invalid(
                    format!("nodes[{i}].underlay"),
                    n.underlay,
                    format!("inside the service range {range} (service_cidr)"),
                ));
            }
        }
        Ok(ClusterSpec {
            settings: self.settings,
            bpffs_root,
            nodes,
            services: self.services,
            policy: Arc::new(PolicyRecords {
                namespaces: self.namespaces,
                pods: self.pods,
                policies: self.policies,
            }),
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
        wireguard_key: n.wireguard_key,
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
    /// Its WireGuard public key; none yet: nothing is sent to its pods while
    /// encryption is on.
    pub wireguard_key: Option<PublicKey>,
}

impl NodeSpec {
    pub fn ip(&self) -> Ipv4Addr {
        self.underlay.addr
    }
}

/// A validated spec; change one through `to_draft` and `validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub settings: ClusterSettings,
    pub bpffs_root: PathBuf,
    pub nodes: Vec<NodeSpec>,
    /// Services with their endpoints, checked against the nodes.
    pub services: Vec<ServiceSpec>,
    /// What network policy is compiled from (`crate::policy::policy_input_from`);
    /// shared, so a spec with thousands of policies clones cheaply.
    pub policy: Arc<PolicyRecords>,
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
            settings: self.settings.clone(),
            bpffs_root: Some(self.bpffs_root.clone()),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeDraft {
                    name: n.name.clone(),
                    underlay: n.underlay,
                    pod_cidr: n.pod_cidr,
                    vtep_mac: Some(n.vtep_mac),
                    wireguard_key: n.wireguard_key,
                })
                .collect(),
            services: self.services.clone(),
            unparsed: Vec::new(),
            namespaces: self.policy.namespaces.clone(),
            pods: self.policy.pods.clone(),
            policies: self.policy.policies.clone(),
            unparsed_records: Vec::new(),
        }
    }

    /// Changes the backend, re-checking what depends on it.
    pub fn with_backend(&self, backend: Backend) -> Result<Self, SpecError> {
        self.with_settings(|s| s.backend = backend)
    }

    /// Changes cluster settings, re-checking the whole spec.
    pub fn with_settings(
        &self,
        change: impl FnOnce(&mut ClusterSettings),
    ) -> Result<Self, SpecError> {
        let mut d = self.to_draft();
        change(&mut d.settings);
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
        match self.settings.backend {
            Backend::Direct => RouteMode::Direct,
            Backend::Auto if local.underlay.contains(peer.ip()) => RouteMode::Direct,
            Backend::Vxlan | Backend::Ipip | Backend::Auto => self.overlay_mode(),
        }
    }

    /// Every route to another node is encapsulated (backend vxlan or ipip).
    pub fn always_overlay(&self) -> bool {
        matches!(self.settings.backend, Backend::Vxlan | Backend::Ipip)
    }

    /// The encapsulation this cluster uses where it encapsulates at all.
    pub fn overlay_mode(&self) -> RouteMode {
        match (self.settings.backend, self.settings.overlay) {
            (Backend::Ipip, _) | (Backend::Auto, Some(Overlay::Ipip)) => RouteMode::Ipip,
            _ => RouteMode::Vxlan,
        }
    }

    /// Pod MTU on a node whose underlay has `underlay_mtu`: room for the overlay's
    /// headers unless every route is direct.
    pub fn pod_mtu(&self, underlay_mtu: u32) -> u32 {
        match (self.settings.mtu, self.settings.backend) {
            (Some(m), _) => m,
            // WireGuard replaces the overlay between nodes.
            (None, _) if self.settings.encryption == Encryption::Wireguard => {
                underlay_mtu - overhead(RouteMode::Wireguard)
            }
            (None, Backend::Direct) => underlay_mtu,
            (None, _) => underlay_mtu - overhead(self.overlay_mode()),
        }
    }
}

/// Bytes a route's mode adds in front of the pod's packet.
pub fn overhead(mode: RouteMode) -> u32 {
    match mode {
        RouteMode::Direct | RouteMode::NoKey => 0,
        RouteMode::Vxlan => VXLAN_OVERHEAD,
        RouteMode::Ipip => IPIP_OVERHEAD,
        RouteMode::Wireguard => crate::wireguard::OVERHEAD_V4,
    }
}

#[cfg(test)]
mod tests;
