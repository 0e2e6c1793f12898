//! The service maps one node should hold: a front end per service port (the
//! ClusterIP's, and on this node's address the node port's), its ready backends in
//! slots, and every backend a flow may stay on.
use std::collections::BTreeMap;

use netpath_common::{
    Backend, BackendKey, Service, ServiceKey, SlotKey, BACKEND_READY, SVC_AFFINITY, SVC_SNAT_REMOTE,
};

use crate::spec::{
    ClusterSpec, NodeSpec, ServicePort, ServiceSpec, SessionAffinity, TrafficPolicy,
};

/// The contents of `SERVICES`, `SVC_SLOTS` and `SVC_BACKENDS`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceTable {
    pub services: BTreeMap<ServiceKey, Service>,
    pub slots: BTreeMap<SlotKey, Backend>,
    pub backends: BTreeMap<BackendKey, u32>,
}

impl ServiceTable {
    /// Every front end of the spec's services as `local` serves them.
    pub fn plan(spec: &ClusterSpec, local: &NodeSpec) -> Self {
        let mut t = Self::default();
        for svc in &spec.services {
            for port in &svc.ports {
                let proto = port.protocol.number();
                let cluster = ServiceKey {
                    addr: svc.cluster_ip.octets(),
                    port: port.port.to_be_bytes(),
                    proto,
                    _pad: 0,
                };
                let internal_local = svc.internal_traffic_policy == TrafficPolicy::Local;
                t.front(cluster, svc, port, spec, local, internal_local, 0);
                if let Some(np) = port.node_port {
                    let key = ServiceKey {
                        addr: local.ip().octets(),
                        port: np.to_be_bytes(),
                        proto,
                        _pad: 0,
                    };
                    let (only_local, flags) = match svc.external_traffic_policy {
                        TrafficPolicy::Local => (true, 0),
                        TrafficPolicy::Cluster => (false, SVC_SNAT_REMOTE),
                    };
                    t.front(key, svc, port, spec, local, only_local, flags);
                }
            }
        }
        t
    }

    #[allow(clippy::too_many_arguments)]
    fn front(
        &mut self,
        key: ServiceKey,
        svc: &ServiceSpec,
        port: &ServicePort,
        spec: &ClusterSpec,
        local: &NodeSpec,
        only_local: bool,
        flags: u32,
    ) {
        let backend_port = port.backend_port(&svc.endpoint_ports);
        let mut ready = Vec::new();
        for e in &svc.endpoints {
            let Some(bp) = backend_port else { break };
            if !e.serving() && !e.takes_new() {
                continue;
            }
            if only_local && ServiceSpec::endpoint_node(e, &spec.nodes) != Some(&local.name) {
                continue;
            }
            let backend = Backend {
                addr: e.address.octets(),
                port: bp.to_be_bytes(),
                _pad: [0; 2],
            };
            let state = if e.takes_new() { BACKEND_READY } else { 0 };
            self.backends.insert(
                BackendKey {
                    service: key,
                    backend,
                },
                state,
            );
            if state == BACKEND_READY {
                ready.push(backend);
            }
        }
        ready.sort();
        for (slot, b) in ready.iter().enumerate() {
            self.slots.insert(
                SlotKey {
                    service: key,
                    slot: slot as u32,
                },
                *b,
            );
        }
        let affine = svc.session_affinity == SessionAffinity::ClientIP;
        self.services.insert(
            key,
            Service {
                backends: ready.len() as u32,
                flags: flags | if affine { SVC_AFFINITY } else { 0 },
                affinity_secs: if affine { svc.affinity_timeout } else { 0 },
                _pad: 0,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{EndpointPort, EndpointRecord, Protocol, ServiceType, TargetPort};

    fn spec_with(svc: ServiceSpec) -> ClusterSpec {
        let mut d = ClusterSpec::parse(crate::spec::DEFAULT_SPEC)
            .unwrap()
            .to_draft();
        d.services = vec![svc];
        d.validate().unwrap()
    }

    fn web() -> ServiceSpec {
        ServiceSpec {
            namespace: "default".into(),
            name: "web".into(),
            kind: ServiceType::NodePort,
            cluster_ip: "10.96.0.10".parse().unwrap(),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::TCP,
                port: 80,
                target_port: Some(TargetPort::Name("web".into())),
                node_port: Some(30080),
            }],
            session_affinity: SessionAffinity::None,
            affinity_timeout: 10800,
            internal_traffic_policy: TrafficPolicy::Cluster,
            external_traffic_policy: TrafficPolicy::Local,
            endpoints: vec![
                ep("10.244.1.5", true, false),
                ep("10.244.2.5", true, false),
                ep("10.244.3.5", false, true),
            ],
            endpoint_ports: vec![EndpointPort {
                name: "http".into(),
                port: 8080,
            }],
        }
    }

    fn ep(addr: &str, ready: bool, terminating: bool) -> EndpointRecord {
        EndpointRecord {
            address: addr.parse().unwrap(),
            node: None,
            ready,
            serving: Some(true),
            terminating,
        }
    }

    fn key(addr: [u8; 4], port: u16) -> ServiceKey {
        ServiceKey {
            addr,
            port: port.to_be_bytes(),
            proto: 6,
            _pad: 0,
        }
    }

    #[test]
    fn ready_backends_fill_slots_and_terminating_ones_keep_their_flows() {
        let spec = spec_with(web());
        let t = ServiceTable::plan(&spec, &spec.nodes[0]);
        let vip = key([10, 96, 0, 10], 80);
        assert_eq!(t.services[&vip].backends, 2);
        let slot = |i| {
            t.slots[&SlotKey {
                service: vip,
                slot: i,
            }]
        };
        assert_eq!(slot(0).addr, [10, 244, 1, 5]);
        assert_eq!(slot(1).addr, [10, 244, 2, 5]);
        assert_eq!(
            slot(0).port,
            8080u16.to_be_bytes(),
            "named target port resolved"
        );
        let states: Vec<u32> = t
            .backends
            .iter()
            .filter(|(k, _)| k.service == vip)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(states, vec![BACKEND_READY, BACKEND_READY, 0]);
    }

    #[test]
    fn node_port_with_local_policy_uses_only_this_nodes_backends() {
        let spec = spec_with(web());
        let t = ServiceTable::plan(&spec, &spec.nodes[1]);
        let np = key([192, 168, 56, 12], 30080);
        assert_eq!(t.services[&np].backends, 1);
        assert_eq!(t.services[&np].flags & SVC_SNAT_REMOTE, 0);
        assert_eq!(
            t.slots[&SlotKey {
                service: np,
                slot: 0
            }]
                .addr,
            [10, 244, 2, 5]
        );
        let mut cluster = web();
        cluster.external_traffic_policy = TrafficPolicy::Cluster;
        cluster.internal_traffic_policy = TrafficPolicy::Local;
        let spec = spec_with(cluster);
        let t = ServiceTable::plan(&spec, &spec.nodes[1]);
        assert_eq!(t.services[&np].backends, 2);
        assert_ne!(t.services[&np].flags & SVC_SNAT_REMOTE, 0);
        let vip = key([10, 96, 0, 10], 80);
        assert_eq!(t.services[&vip].backends, 1, "internal policy Local");
    }

    #[test]
    fn an_unresolved_named_port_leaves_the_front_end_without_backends() {
        let mut svc = web();
        svc.endpoint_ports.clear();
        let spec = spec_with(svc);
        let t = ServiceTable::plan(&spec, &spec.nodes[0]);
        assert_eq!(t.services[&key([10, 96, 0, 10], 80)].backends, 0);
        assert!(t.slots.is_empty() && t.backends.is_empty());
    }
}
