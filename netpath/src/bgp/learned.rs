//! What BGP may teach a node: a route is used only when its prefix is exactly
//! another node's pod CIDR (the store still assigns them) and its next hop is that
//! node or a router this node peers with on its own subnet. Everything else a peer
//! announces is ignored and counted, never installed.
use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::control::BirdRoute;
use crate::{
    net::Ipv4Net,
    spec::{Backend, ClusterSpec, NodeSpec},
};

/// The routes the node uses, and those it refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    /// Pod CIDR -> BGP next hop (the owning node, or a router in front of it).
    pub accepted: BTreeMap<Ipv4Net, Ipv4Addr>,
    pub ignored: Vec<Ignored>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    pub prefix: Ipv4Net,
    pub next_hop: Option<Ipv4Addr>,
    /// The session it came from.
    pub from: String,
    pub why: Refusal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// Not inside the cluster CIDR: no business of the pod network.
    OutsideCluster,
    /// Inside the cluster but no node's pod CIDR.
    UnknownOwner,
    /// A node's pod CIDR whose next hop is neither that node nor a router of ours.
    ForeignNextHop,
    /// The owner is on another subnet and the backend has no overlay to reach it.
    NoOverlay,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::OutsideCluster,
        Refusal::UnknownOwner,
        Refusal::ForeignNextHop,
        Refusal::NoOverlay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::OutsideCluster => "outside-cluster",
            Self::UnknownOwner => "unknown-owner",
            Self::ForeignNextHop => "foreign-next-hop",
            Self::NoOverlay => "no-overlay",
        }
    }
}

/// Judges BIRD's best BGP routes for `local`.
pub fn judge(spec: &ClusterSpec, local: &NodeSpec, routes: &[BirdRoute]) -> Learned {
    let mut out = Learned::default();
    let cluster = spec.settings.cluster_cidr;
    for r in routes.iter().filter(|r| r.bgp && r.best) {
        let refuse = |why| Ignored {
            prefix: r.prefix,
            next_hop: r.next_hop,
            from: r.protocol.clone(),
            why,
        };
        if !cluster.contains_net(&r.prefix) {
            out.ignored.push(refuse(Refusal::OutsideCluster));
            continue;
        }
        let Some(owner) = spec.nodes.iter().find(|n| n.pod_cidr == r.prefix) else {
            out.ignored.push(refuse(Refusal::UnknownOwner));
            continue;
        };
        if owner.name == local.name {
            // Our own CIDR, reflected back by a router: nothing to route.
            continue;
        }
        let Some(nh) = r.next_hop else {
            out.ignored.push(refuse(Refusal::ForeignNextHop));
            continue;
        };
        let on_subnet = local.underlay.contains(nh);
        let router = spec
            .settings
            .bgp_peers
            .iter()
            .any(|p| p.address == nh && p.serves(local));
        let verdict = if nh == owner.ip() {
            match (on_subnet, spec.settings.backend) {
                (false, Backend::Direct) => Err(Refusal::NoOverlay),
                _ => Ok(()),
            }
        } else if router && on_subnet {
            Ok(())
        } else {
            Err(Refusal::ForeignNextHop)
        };
        match verdict {
            Ok(()) => {
                out.accepted.insert(r.prefix, nh);
            }
            Err(why) => out.ignored.push(refuse(why)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Routing, DEFAULT_SPEC};

    fn route(prefix: &str, nh: [u8; 4], from: &str) -> BirdRoute {
        BirdRoute {
            prefix: prefix.parse().unwrap(),
            protocol: from.into(),
            best: true,
            bgp: true,
            next_hop: Some(nh.into()),
        }
    }

    fn spec(backend: Backend) -> ClusterSpec {
        ClusterSpec::parse(DEFAULT_SPEC)
            .unwrap()
            .with_settings(|s| {
                s.routing = Routing::Bgp;
                s.backend = backend;
                s.bgp_peers = vec!["192.168.56.1:65000:node1,node2".parse().unwrap()];
            })
            .unwrap()
    }

    #[test]
    fn owners_and_our_routers_are_next_hops_everything_else_is_refused() {
        let s = spec(Backend::Auto);
        let routes = vec![
            route("10.244.2.0/24", [192, 168, 56, 12], "mesh_2"),
            route("10.244.3.0/24", [192, 168, 56, 1], "peer_1"),
            route("10.244.1.0/24", [192, 168, 56, 1], "peer_1"),
            route("192.0.2.0/24", [192, 168, 56, 1], "peer_1"),
            route("10.244.77.0/24", [192, 168, 56, 12], "mesh_2"),
            route("10.244.0.0/16", [192, 168, 56, 12], "mesh_2"),
        ];
        let l = judge(&s, &s.nodes[0], &routes);
        let want: BTreeMap<Ipv4Net, Ipv4Addr> = [
            ("10.244.2.0/24".parse().unwrap(), [192, 168, 56, 12].into()),
            ("10.244.3.0/24".parse().unwrap(), [192, 168, 56, 1].into()),
        ]
        .into();
        assert_eq!(l.accepted, want);
        let why: Vec<(String, Refusal)> = l
            .ignored
            .iter()
            .map(|i| (i.prefix.to_string(), i.why))
            .collect();
        assert_eq!(
            why,
            vec![
                ("192.0.2.0/24".into(), Refusal::OutsideCluster),
                ("10.244.77.0/24".into(), Refusal::UnknownOwner),
                ("10.244.0.0/16".into(), Refusal::UnknownOwner),
            ]
        );
    }

    #[test]
    fn a_foreign_next_hop_or_a_router_that_is_not_ours_is_refused() {
        let s = spec(Backend::Auto);
        let routes = vec![
            // node2's CIDR pointing at node3, and at a router node3 does not peer with.
            route("10.244.2.0/24", [192, 168, 56, 13], "mesh_x"),
            route("10.244.1.0/24", [192, 168, 56, 1], "peer_1"),
        ];
        let l = judge(&s, &s.nodes[2], &routes);
        assert!(l.accepted.is_empty(), "{l:?}");
        assert!(l.ignored.iter().all(|i| i.why == Refusal::ForeignNextHop));
        // Not BIRD's choice, or not BGP: not considered at all.
        let mut alt = route("10.244.2.0/24", [192, 168, 56, 12], "mesh_2");
        alt.best = false;
        let mut kernel = route("10.244.2.0/24", [192, 168, 56, 12], "kernel1");
        kernel.bgp = false;
        assert_eq!(judge(&s, &s.nodes[0], &[alt, kernel]), Learned::default());
    }

    #[test]
    fn an_owner_across_subnets_needs_an_overlay() {
        let routes = vec![route("10.244.3.0/24", [192, 168, 57, 13], "mesh_3")];
        let auto = spec(Backend::Auto);
        assert_eq!(judge(&auto, &auto.nodes[0], &routes).accepted.len(), 1);
        let direct = spec(Backend::Direct);
        let l = judge(&direct, &direct.nodes[0], &routes);
        assert!(l.accepted.is_empty());
        assert_eq!(l.ignored[0].why, Refusal::NoOverlay);
    }
}
