//! The lab's checks: the Kubernetes network model between every node, pod and
//! container (with the path each pair takes), and the node-level invariants.
use super::{
    invariants::{no_bridge, no_firewall_rules},
    Invariant, Lab, Node, NodeKind,
};
use crate::check::{self, CheckResult, Proto};

impl Lab {
    /// The path between two nodes, for reports.
    fn path(&self, a: &Node, b: &Node) -> (&'static str, String) {
        if a.kind == NodeKind::KernelVxlan || b.kind == NodeKind::KernelVxlan {
            return ("4", "vxlan (kernel peer)".into());
        }
        if a.kind == NodeKind::KernelIpip || b.kind == NodeKind::KernelIpip {
            return ("4", "ipip (kernel peer)".into());
        }
        if a.kind == NodeKind::RoutedVeth || b.kind == NodeKind::RoutedVeth {
            return ("3", "routed veths (kernel)".into());
        }
        if a.kind == NodeKind::HostGw || b.kind == NodeKind::HostGw {
            return ("3", "host-gw (kernel)".into());
        }
        // What the sender's datapath does (with BGP, a router can make a route
        // across subnets direct), else what the spec says.
        let cidr = b.spec.pod_cidr;
        let installed = a
            .pinned()
            .ok()
            .and_then(|p| p.routes().ok())
            .and_then(|routes| {
                routes
                    .into_iter()
                    .find(|(net, prefix, _)| *net == cidr.addr && *prefix == cidr.prefix)
                    .map(|(_, _, r)| r)
            });
        let mode = installed
            .and_then(|r| netpath_common::RouteMode::from_u32(r.mode))
            .unwrap_or_else(|| self.spec.route_mode(&a.spec, &b.spec));
        let via_router = installed.is_some_and(|r| r.next_hop != r.node_ip);
        match mode {
            netpath_common::RouteMode::Direct if via_router => {
                ("3", "direct via the router".into())
            }
            netpath_common::RouteMode::Direct => ("3", "direct (redirect_neigh)".into()),
            netpath_common::RouteMode::Vxlan => ("4", "vxlan (eBPF encap)".into()),
            netpath_common::RouteMode::Ipip => ("4", "ipip (eBPF encap)".into()),
            netpath_common::RouteMode::Wireguard => ("4", "wireguard (encrypted)".into()),
            netpath_common::RouteMode::NoKey => ("4", "no key (dropped)".into()),
        }
    }

    /// The Kubernetes model, step by step: node <-> own pods (1), pod <-> pod on a
    /// node (2), and across nodes by direct routing (3) or VXLAN (4): every pod to
    /// every pod, every node to every pod and back.
    pub fn check_model(&self, protos: &[Proto]) -> Vec<CheckResult> {
        let mut out = Vec::new();
        let redirect = match self.spec.settings.redirect {
            netpath::spec::Redirect::Peer => "redirect_peer",
            netpath::spec::Redirect::Plain => "redirect",
        };
        for a in &self.nodes {
            for b in &self.nodes {
                let same = a.name == b.name;
                let (step_n, path) = if same {
                    ("1", "host route / eBPF".to_string())
                } else {
                    self.path(a, b)
                };
                for pod in &b.pods {
                    for &proto in protos {
                        out.push(check::probe(
                            &format!("{step_n} node->pod"),
                            &path,
                            proto,
                            &a.host_toward(pod.ip, &self.spec.settings.cluster_cidr),
                            &pod.host(),
                        ));
                        let back = if same {
                            path.clone()
                        } else {
                            "underlay routing".into()
                        };
                        out.push(check::probe(
                            &format!("{step_n} pod->node"),
                            &back,
                            proto,
                            &pod.host(),
                            &a.host(),
                        ));
                    }
                }
                let (step_p, pod_path) = if same {
                    let p = if a.kind.bridged() { "bridge" } else { redirect };
                    ("2", p.to_string())
                } else {
                    self.path(a, b)
                };
                for pa in &a.pods {
                    for pb in &b.pods {
                        if pa.ip == pb.ip {
                            continue;
                        }
                        for &proto in protos {
                            out.push(check::probe(
                                &format!("{step_p} pod->pod"),
                                &pod_path,
                                proto,
                                &pa.host(),
                                &pb.host(),
                            ));
                        }
                    }
                }
            }
        }
        // Containers run by containerd through the CNI plugin, every pair.
        for ca in &self.containers {
            for cb in self.containers.iter().filter(|c| c.id != ca.id) {
                let (a, b) = (&self.nodes[ca.node], &self.nodes[cb.node]);
                let (_, path) = if a.name == b.name {
                    ("2", redirect.to_string())
                } else {
                    self.path(a, b)
                };
                for &proto in protos {
                    out.push(check::probe(
                        "c ctr->ctr",
                        &path,
                        proto,
                        &ca.host(),
                        &cb.host(),
                    ));
                }
            }
        }
        out
    }

    /// Node-level invariants on netpath nodes: no bridge device, no firewall rules.
    pub fn check_invariants(&self) -> Vec<Invariant> {
        let mut out = Vec::new();
        for node in self.nodes.iter().filter(|n| n.kind == NodeKind::Netpath) {
            out.push(Invariant::from_result(
                &node.name,
                "no bridge device",
                node.ns.run(no_bridge),
            ));
            out.push(Invariant::from_result(
                &node.name,
                "no iptables/nftables rules",
                node.ns.run(no_firewall_rules),
            ));
        }
        out
    }
}
