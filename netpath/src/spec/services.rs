//! Services as the store holds them, shaped like Kubernetes' Service with its
//! EndpointSlice folded in (`endpoints`, `endpoint_ports`), so a watcher of the
//! Kubernetes API could fill the same records. Checked here, every mistake naming
//! its field: `services[2].ports[0].protocol = "SCTP": …`.
use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use super::{invalid, ClusterSettings, NodeSpec, SpecError};

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 h).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: ServiceType,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// Seconds a client keeps its backend (ClientIP affinity).
    #[serde(default = "default_affinity_timeout")]
    pub affinity_timeout: u32,
    /// `Local`: pods reach only backends on their own node.
    #[serde(default)]
    pub internal_traffic_policy: TrafficPolicy,
    /// `Local`: a node port uses only this node's backends and keeps the client's
    /// address; `Cluster`: any backend, a remote one seeing the node as the client.
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// The EndpointSlice's endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointRecord>,
    /// The EndpointSlice's ports: the backend port of each service port by its
    /// name, as the slice's controller resolved a named `target_port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint_ports: Vec<EndpointPort>,
}

fn default_affinity_timeout() -> u32 {
    DEFAULT_AFFINITY_TIMEOUT
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub port: u16,
    /// The backends' port: a number, or a name resolved through `endpoint_ports`;
    /// `port` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRecord {
    pub address: Ipv4Addr,
    /// The node the pod runs on; derived from the pod CIDRs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Takes new connections.
    #[serde(default = "yes")]
    pub ready: bool,
    /// Answers connections (Kubernetes: defaults to `ready`); a terminating endpoint
    /// still serving keeps its connections but gets no new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: bool,
}

fn yes() -> bool {
    true
}

impl EndpointRecord {
    pub fn takes_new(&self) -> bool {
        self.ready && !self.terminating
    }
    pub fn serving(&self) -> bool {
        self.serving.unwrap_or(self.ready)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPort {
    #[serde(default)]
    pub name: String,
    pub port: u16,
}

macro_rules! named_enum {
    ($(#[$m:meta])* $t:ident { $($v:ident = $s:literal),+ $(,)? } default $d:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $t {
            #[default]
            $d,
            $($v),+
        }
        impl $t {
            pub fn name(self) -> &'static str {
                match self {
                    Self::$d => stringify!($d),
                    $(Self::$v => $s),+
                }
            }
        }
        impl From<$t> for &'static str {
            fn from(v: $t) -> Self {
                v.name()
            }
        }
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    stringify!($d) => Ok(Self::$d),
                    $($s => Ok(Self::$v),)+
                    _ => Err(format!(
                        "{s:?} is not one of {}",
                        [stringify!($d), $($s),+].join(", ")
                    )),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_enum!(
    /// SCTP is refused: the programs translate TCP and UDP.
    Protocol { UDP = "UDP" } default TCP
);
named_enum!(ServiceType { NodePort = "NodePort" } default ClusterIP);
named_enum!(SessionAffinity { ClientIP = "ClientIP" } default None);
named_enum!(TrafficPolicy { Local = "Local" } default Cluster);

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Self::TCP => netpath_common::IPPROTO_TCP,
            Self::UDP => netpath_common::IPPROTO_UDP,
        }
    }
}

impl ServicePort {
    /// The backends' port, `None` when a named target port has no resolution.
    pub fn backend_port(&self, endpoint_ports: &[EndpointPort]) -> Option<u16> {
        if let Some(p) = endpoint_ports.iter().find(|p| p.name == self.name) {
            return Some(p.port);
        }
        match &self.target_port {
            None => Some(self.port),
            Some(TargetPort::Number(n)) => Some(*n),
            Some(TargetPort::Name(_)) => None,
        }
    }
}

/// A DNS label (RFC 1123), as Kubernetes names namespaces and services.
fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An IANA service name, as a named port is: 1-15 of [a-z0-9-], a letter in it.
fn port_name(s: &str) -> bool {
    dns_label(s) && s.len() <= 15 && s.bytes().any(|c| c.is_ascii_lowercase())
}

impl ServiceSpec {
    /// Checks `services[i]` alone against the cluster; `validate_all` checks what
    /// services must not share.
    pub fn validate(
        &self,
        i: usize,
        settings: &ClusterSettings,
        nodes: &[NodeSpec],
    ) -> Result<(), SpecError> {
        let f = |name: &str| format!("services[{i}].{name}");
        if !dns_label(&self.namespace) {
            return Err(invalid(
                f("namespace"),
                &self.namespace,
                "must be a DNS label: 1-63 of [a-z0-9-], not starting or ending with -",
            ));
        }
        if !dns_label(&self.name) {
            return Err(invalid(
                f("name"),
                &self.name,
                "must be a DNS label: 1-63 of [a-z0-9-], not starting or ending with -",
            ));
        }
        let Some(range) = settings.service_range() else {
            return Err(invalid(
                f("cluster_ip"),
                self.cluster_ip,
                format!(
                    "the cluster has no service range: cluster_cidr {} overlaps the default {}, set service_cidr",
                    settings.cluster_cidr,
                    super::settings::DEFAULT_SERVICE_CIDR
                ),
            ));
        };
        if !range.contains(self.cluster_ip) {
            let why = if settings.cluster_cidr.contains(self.cluster_ip) {
                format!(
                    "inside cluster_cidr {} (pods' addresses); must be inside service_cidr {range}",
                    settings.cluster_cidr
                )
            } else {
                format!("outside service_cidr {range}")
            };
            return Err(invalid(f("cluster_ip"), self.cluster_ip, why));
        }
        if self.ports.is_empty() {
            return Err(invalid(
                f("ports"),
                "[]",
                "a service needs at least one port",
            ));
        }
        if !(1..=86400).contains(&self.affinity_timeout) {
            return Err(invalid(
                f("affinity_timeout"),
                self.affinity_timeout,
                "must be 1-86400 seconds",
            ));
        }
        let mut seen = HashSet::new();
        let mut names = HashSet::new();
        for (j, p) in self.ports.iter().enumerate() {
            let g = |name: &str| format!("services[{i}].ports[{j}].{name}");
            if p.port == 0 {
                return Err(invalid(g("port"), 0, "must be 1-65535"));
            }
            if !seen.insert((p.port, p.protocol)) {
                return Err(invalid(
                    g("port"),
                    p.port,
                    format!("{} {} listed twice", p.protocol, p.port),
                ));
            }
            if self.ports.len() > 1 && !port_name(&p.name) {
                return Err(invalid(
                    g("name"),
                    &p.name,
                    "a service with several ports names each: 1-15 of [a-z0-9-]",
                ));
            }
            if !p.name.is_empty() && !names.insert(p.name.as_str()) {
                return Err(invalid(g("name"), &p.name, "used by another port"));
            }
            match &p.target_port {
                Some(TargetPort::Number(0)) => {
                    return Err(invalid(
                        g("target_port"),
                        0,
                        "must be 1-65535 or a port name",
                    ))
                }
                Some(TargetPort::Name(n)) if !port_name(n) => {
                    return Err(invalid(
                        g("target_port"),
                        n,
                        "a named port is 1-15 of [a-z0-9-] with a letter",
                    ))
                }
                _ => {}
            }
            match (self.kind, p.node_port) {
                (ServiceType::ClusterIP, Some(n)) => {
                    return Err(invalid(
                        g("node_port"),
                        n,
                        "only type NodePort has node ports",
                    ))
                }
                (ServiceType::NodePort, None) => {
                    return Err(invalid(
                        g("node_port"),
                        "none",
                        format!(
                            "type NodePort needs one, in node_ports {}",
                            settings.node_ports
                        ),
                    ))
                }
                (ServiceType::NodePort, Some(n))
                    if n < settings.node_ports.min || n > settings.node_ports.max =>
                {
                    return Err(invalid(
                        g("node_port"),
                        n,
                        format!("outside node_ports {}", settings.node_ports),
                    ))
                }
                _ => {}
            }
        }
        let mut addresses = HashSet::new();
        for (j, e) in self.endpoints.iter().enumerate() {
            let g = |name: &str| format!("services[{i}].endpoints[{j}].{name}");
            if !settings.cluster_cidr.contains(e.address) {
                return Err(invalid(
                    g("address"),
                    e.address,
                    format!(
                        "outside cluster_cidr {}: a backend is a pod",
                        settings.cluster_cidr
                    ),
                ));
            }
            if !addresses.insert(e.address) {
                return Err(invalid(g("address"), e.address, "listed twice"));
            }
            let owner = nodes.iter().find(|n| n.pod_cidr.contains(e.address));
            if let Some(node) = &e.node {
                match nodes.iter().find(|n| &n.name == node) {
                    None => {
                        return Err(invalid(g("node"), node, "not a node of the spec"));
                    }
                    Some(n) if !n.pod_cidr.contains(e.address) => {
                        return Err(invalid(
                            g("node"),
                            node,
                            format!("{} is not in its pod_cidr {}", e.address, n.pod_cidr),
                        ));
                    }
                    Some(_) => {}
                }
            }
            if owner.is_none() {
                return Err(invalid(g("address"), e.address, "in no node's pod_cidr"));
            }
        }
        for (j, p) in self.endpoint_ports.iter().enumerate() {
            if p.port == 0 {
                return Err(invalid(
                    format!("services[{i}].endpoint_ports[{j}].port"),
                    0,
                    "must be 1-65535",
                ));
            }
        }
        Ok(())
    }

    /// The node a backend runs on: as recorded, or the owner of its pod CIDR.
    pub fn endpoint_node<'a>(e: &'a EndpointRecord, nodes: &'a [NodeSpec]) -> Option<&'a str> {
        match &e.node {
            Some(n) => Some(n.as_str()),
            None => nodes
                .iter()
                .find(|n| n.pod_cidr.contains(e.address))
                .map(|n| n.name.as_str()),
        }
    }
}

/// Every service alone, then what they must not share: a name, a front end (a
/// ClusterIP's port and protocol) or a node port. The first bad one is the error.
pub fn validate_all(
    services: &[ServiceSpec],
    settings: &ClusterSettings,
    nodes: &[NodeSpec],
) -> Result<(), SpecError> {
    let mut taken = Taken::default();
    for (i, s) in services.iter().enumerate() {
        taken.admit(i, s, settings, nodes)?;
    }
    Ok(())
}

/// The services that pass the same checks, each judged alone and against those
/// admitted before it: a bad record is left out (the second value names it and its
/// field) and the rest are kept, so one bad record freezes no other change.
/// Each service comes with its index in the source (what errors name).
pub fn admit_each(
    services: impl IntoIterator<Item = (usize, ServiceSpec)>,
    settings: &ClusterSettings,
    nodes: &[NodeSpec],
) -> (Vec<ServiceSpec>, Vec<String>) {
    let mut taken = Taken::default();
    let (mut admitted, mut left_out) = (Vec::new(), Vec::new());
    for (i, s) in services {
        match taken.admit(i, &s, settings, nodes) {
            Ok(()) => admitted.push(s),
            Err(e) => left_out.push(format!("service {}/{} left out: {e}", s.namespace, s.name)),
        }
    }
    (admitted, left_out)
}

/// What admitted services hold, by the index of the service holding it.
#[derive(Default)]
struct Taken {
    names: HashMap<(String, String), usize>,
    fronts: HashMap<(Ipv4Addr, u16, Protocol), usize>,
    node_ports: HashMap<(u16, Protocol), usize>,
}

impl Taken {
    /// Checks `services[i]` and, when it passes, records what it holds.
    fn admit(
        &mut self,
        i: usize,
        s: &ServiceSpec,
        settings: &ClusterSettings,
        nodes: &[NodeSpec],
    ) -> Result<(), SpecError> {
        s.validate(i, settings, nodes)?;
        let name = (s.namespace.clone(), s.name.clone());
        if let Some(&j) = self.names.get(&name) {
            return Err(invalid(
                format!("services[{i}].name"),
                format!("{}/{}", s.namespace, s.name),
                format!("duplicate of services[{j}]"),
            ));
        }
        let mut own_node_ports = HashSet::new();
        for (k, p) in s.ports.iter().enumerate() {
            if let Some(&j) = self.fronts.get(&(s.cluster_ip, p.port, p.protocol)) {
                return Err(invalid(
                    format!("services[{i}].cluster_ip"),
                    s.cluster_ip,
                    format!("{} {} is services[{j}]'s already", p.protocol, p.port),
                ));
            }
            if let Some(n) = p.node_port {
                let j = match self.node_ports.get(&(n, p.protocol)) {
                    Some(&j) => Some(j),
                    None if !own_node_ports.insert((n, p.protocol)) => Some(i),
                    None => None,
                };
                if let Some(j) = j {
                    return Err(invalid(
                        format!("services[{i}].ports[{k}].node_port"),
                        n,
                        format!("taken by services[{j}]"),
                    ));
                }
            }
        }
        // Checked whole before anything is recorded: a refused service holds nothing.
        self.names.insert(name, i);
        for p in &s.ports {
            self.fronts.insert((s.cluster_ip, p.port, p.protocol), i);
            if let Some(n) = p.node_port {
                self.node_ports.insert((n, p.protocol), i);
            }
        }
        Ok(())
    }
}
