//! The lab's demo service: a ClusterIP with a node port whose backends are the first
//! pod of every netpath node (so both direct and overlay paths carry it), and the
//! checks `netpath-lab run` reports for it: from a pod on every node, from every
//! node itself, and from the outside host to every node's node port.
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use netpath::spec::ServiceType;

use super::{Lab, NodeKind, OUTSIDE_IP};
use crate::{
    check::{CheckResult, Proto},
    service::{ask_tcp, ask_udp, cluster_ip, Answer, Backend},
};

pub const DEMO_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const DEMO_PORT: u16 = 80;
pub const DEMO_TARGET: u16 = 8080;
pub const DEMO_NODE_PORT: u16 = 30080;

/// The demo's backend servers, answering while this lives.
pub struct ServiceDemo {
    _servers: Vec<Backend>,
    backends: Vec<(usize, Ipv4Addr)>,
}

impl Lab {
    /// Defines the demo service in the spec file and starts its backends; `None`
    /// where the lab cannot have it (no netpath pods, no service range, the store
    /// is etcd).
    pub fn demo_services(&mut self) -> Result<Option<ServiceDemo>> {
        let pods: Vec<(usize, &super::Pod)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.kind == NodeKind::Netpath)
            .filter_map(|(i, n)| n.pods.first().map(|p| (i, p)))
            .collect();
        let range = self.spec.settings.service_range();
        // Services come from the spec file or etcd records; gossip carries none.
        if pods.is_empty()
            || self.etcd.is_some()
            || self.gossip.is_some()
            || !range.is_some_and(|r| r.contains(DEMO_VIP))
        {
            return Ok(None);
        }
        let ips: Vec<Ipv4Addr> = pods.iter().map(|(_, p)| p.ip).collect();
        let mut svc = cluster_ip("demo", DEMO_VIP, DEMO_PORT, DEMO_TARGET, &ips);
        svc.kind = ServiceType::NodePort;
        for p in &mut svc.ports {
            p.node_port = Some(DEMO_NODE_PORT);
        }
        let servers = pods
            .iter()
            .map(|(_, p)| Backend::serve(p.ns.path(), p.ip, DEMO_TARGET))
            .collect::<Result<Vec<_>>>()?;
        let backends = pods.iter().map(|(i, p)| (*i, p.ip)).collect();
        let mut d = self.spec.to_draft();
        d.services.push(svc);
        let spec = d.validate().context("the demo service")?;
        self.write_spec(&spec)?;
        self.spec = spec;
        let want = self
            .spec
            .services
            .iter()
            .flat_map(|s| &s.ports)
            .map(|p| 1 + p.node_port.is_some() as u32)
            .sum::<u32>();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.kind != NodeKind::Netpath {
                continue;
            }
            crate::wait_for(
                &format!("{}'s service maps", n.name),
                std::time::Duration::from_secs(10),
                || {
                    self.nodes[i]
                        .pinned()
                        .and_then(|p| p.settings())
                        .is_ok_and(|s| s.services == want)
                },
            );
        }
        Ok(Some(ServiceDemo {
            _servers: servers,
            backends,
        }))
    }

    /// The demo service from every kind of client: a pod and the node itself on
    /// every netpath node (TCP and UDP), and the outside host on every node port.
    pub fn check_services(&self, demo: &ServiceDemo) -> Vec<CheckResult> {
        let mut out = Vec::new();
        let owner = |backend: Ipv4Addr| {
            demo.backends
                .iter()
                .find(|(_, ip)| *ip == backend)
                .map(|(i, _)| *i)
        };
        for (i, n) in self.nodes.iter().enumerate() {
            if n.kind != NodeKind::Netpath {
                continue;
            }
            let vip = format!("{DEMO_VIP}:{DEMO_PORT}");
            if let Some(pod) = n.pods.last() {
                // Its TCP translated at connect() where the kernel names its namespace.
                let at_socket = netpath::datapath::pods_at_the_socket(&n.pin_dir)
                    .is_ok_and(|p| p.contains(&pod.ip));
                for (proto, answer) in [
                    (Proto::Tcp, ask_tcp(pod.ns.path(), DEMO_VIP, DEMO_PORT)),
                    (Proto::Udp, ask_udp(pod.ns.path(), DEMO_VIP, DEMO_PORT)),
                ] {
                    // A pod that is a backend itself may be picked (hairpin): translated
                    // per packet it then sees the front end as its client; translated
                    // at connect() it simply connected to itself.
                    let hairpin = answer.as_ref().is_ok_and(|a| a.backend == pod.ip);
                    let (expected, whose) = match (hairpin, at_socket && proto == Proto::Tcp) {
                        (true, false) => (DEMO_VIP, "front end (hairpin)"),
                        (true, true) => (pod.ip, "itself (hairpin)"),
                        (false, _) => (pod.ip, "client pod"),
                    };
                    out.push(result(
                        &pod.name, &vip, proto, DEMO_VIP, expected, whose, answer,
                    ));
                }
            }
            out.push(result(
                &n.name,
                &vip,
                Proto::Tcp,
                DEMO_VIP,
                n.ip(),
                "node",
                ask_tcp(n.ns.path(), DEMO_VIP, DEMO_PORT),
            ));
            // Cluster policy: a remote backend sees the node, a local one the client.
            let answer = ask_tcp(self.outside_ns(), n.ip(), DEMO_NODE_PORT);
            let local = answer.as_ref().is_ok_and(|a| owner(a.backend) == Some(i));
            let (expected, whose) = if local {
                (OUTSIDE_IP, "outside host")
            } else {
                (n.ip(), "node")
            };
            let to = format!("{}:{DEMO_NODE_PORT}", n.ip());
            out.push(result(
                "outside",
                &to,
                Proto::Tcp,
                n.ip(),
                expected,
                whose,
                answer,
            ));
        }
        out
    }
}

fn result(
    from: &str,
    to: &str,
    proto: Proto,
    dst: Ipv4Addr,
    expected_src: Ipv4Addr,
    expected_is: &'static str,
    answer: Result<Answer>,
) -> CheckResult {
    let (seen, error) = match answer {
        Ok(a) => (Some(a.client), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    CheckResult {
        step: "service".into(),
        from: from.into(),
        to: to.into(),
        proto,
        path: "service".into(),
        dst,
        expected_src,
        expected_is,
        seen_src: seen,
        error,
    }
}
