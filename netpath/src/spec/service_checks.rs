//! The checks a service record passes, every mistake naming its field
//! (`services[2].ports[0].protocol = "SCTP": …`): each record alone, then what
//! records must not share (a name, a front end, a node port).
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use super::{
    invalid, ClusterSettings, EndpointRecord, NodeSpec, Protocol, ServicePort, ServiceSpec,
    ServiceType, SpecError, TargetPort,
};

const DNS_LABEL: &str = "must be a DNS label: 1-63 of [a-z0-9-], not starting or ending with -";

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
            return Err(invalid(f("namespace"), &self.namespace, DNS_LABEL));
        }
        if !dns_label(&self.name) {
            return Err(invalid(f("name"), &self.name, DNS_LABEL));
        }
        self.check_cluster_ip(settings)
            .map_err(|why| invalid(f("cluster_ip"), self.cluster_ip, why))?;
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
        self.check_ports(i, settings)?;
        self.check_endpoints(i, settings, nodes)?;
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

    /// The ClusterIP lies in the service range (which must exist).
    fn check_cluster_ip(&self, settings: &ClusterSettings) -> Result<(), String> {
        let Some(range) = settings.service_range() else {
            return Err(format!(
                "the cluster has no service range: cluster_cidr {} overlaps the default {}, set service_cidr",
                settings.cluster_cidr,
                super::settings::DEFAULT_SERVICE_CIDR
            ));
        };
        if range.contains(self.cluster_ip) {
            return Ok(());
        }
        Err(if settings.cluster_cidr.contains(self.cluster_ip) {
            format!(
                "inside cluster_cidr {} (pods' addresses); must be inside service_cidr {range}",
                settings.cluster_cidr
            )
        } else {
            format!("outside service_cidr {range}")
        })
    }

    /// Each port alone, and no port or name twice.
    fn check_ports(&self, i: usize, settings: &ClusterSettings) -> Result<(), SpecError> {
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
            check_target_port(p).map_err(|(value, why)| invalid(g("target_port"), value, why))?;
            self.check_node_port(p, settings)
                .map_err(|(value, why)| invalid(g("node_port"), value, why))?;
        }
        Ok(())
    }

    /// A node port exactly on type NodePort, inside the node port range.
    fn check_node_port(
        &self,
        p: &ServicePort,
        settings: &ClusterSettings,
    ) -> Result<(), (String, String)> {
        match (self.kind, p.node_port) {
            (ServiceType::ClusterIP, Some(n)) => {
                Err((n.to_string(), "only type NodePort has node ports".into()))
            }
            (ServiceType::NodePort, None) => Err((
                "none".into(),
                format!(
                    "type NodePort needs one, in node_ports {}",
                    settings.node_ports
                ),
            )),
            (ServiceType::NodePort, Some(n))
                if n < settings.node_ports.min || n > settings.node_ports.max =>
            {
                Err((
                    n.to_string(),
                    format!("outside node_ports {}", settings.node_ports),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Every backend is a pod of a node of the spec, listed once.
    fn check_endpoints(
        &self,
        i: usize,
        settings: &ClusterSettings,
        nodes: &[NodeSpec],
    ) -> Result<(), SpecError> {
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
            check_endpoint_node(e, nodes).map_err(|why| invalid(g("node"), why.0, why.1))?;
            if !nodes.iter().any(|n| n.pod_cidr.contains(e.address)) {
                return Err(invalid(g("address"), e.address, "in no node's pod_cidr"));
            }
        }
        Ok(())
    }
}

/// A target port is a port number or a port name.
fn check_target_port(p: &ServicePort) -> Result<(), (String, &'static str)> {
    match &p.target_port {
        Some(TargetPort::Number(0)) => Err(("0".into(), "must be 1-65535 or a port name")),
        Some(TargetPort::Name(n)) if !port_name(n) => {
            Err((n.clone(), "a named port is 1-15 of [a-z0-9-] with a letter"))
        }
        _ => Ok(()),
    }
}

/// A backend's recorded node is a node of the spec that owns its address.
fn check_endpoint_node(e: &EndpointRecord, nodes: &[NodeSpec]) -> Result<(), (String, String)> {
    let Some(node) = &e.node else {
        return Ok(());
    };
    match nodes.iter().find(|n| &n.name == node) {
        None => Err((node.clone(), "not a node of the spec".into())),
        Some(n) if !n.pod_cidr.contains(e.address) => Err((
            node.clone(),
            format!("{} is not in its pod_cidr {}", e.address, n.pod_cidr),
        )),
        Some(_) => Ok(()),
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
