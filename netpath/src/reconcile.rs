//! Desired state -> map contents, applied as a diff so a restart or a spec change
//! touches only what changed.
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::Result;
use netpath_common::{Peer, Route};

use crate::{
    config::{ClusterSpec, Ipv4Net, NodeSpec},
    datapath::Pinned,
};

/// What the maps should hold on one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub routes: BTreeMap<Ipv4Net, Route>,
    pub nodes: BTreeMap<Ipv4Addr, Peer>,
}

/// `next_hop` names the underlay next hop toward a peer when known (the kernel's
/// routing table has it; the spec alone does not).
pub fn desired(
    spec: &ClusterSpec,
    local: &NodeSpec,
    next_hop: impl Fn(&NodeSpec) -> Option<Ipv4Addr>,
) -> Desired {
    let mut d = Desired::default();
    for peer in spec.nodes.iter().filter(|n| n.name != local.name) {
        let route = Route {
            node_ip: peer.ip().octets(),
            mode: spec.route_mode(local, peer) as u32,
            vtep_mac: peer.vtep_mac,
            _pad: [0; 2],
            next_hop: next_hop(peer).unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
        };
        d.routes.insert(peer.pod_cidr, route);
        d.nodes.insert(
            peer.ip(),
            Peer {
                vtep_mac: peer.vtep_mac,
                _pad: [0; 2],
            },
        );
    }
    d
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<K, V> {
    Put(K, V),
    Remove(K),
}

/// The changes that turn `current` into `desired`.
pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Vec<Change<K, V>> {
    let mut out = Vec::new();
    for (k, v) in desired {
        if current.get(k) != Some(v) {
            out.push(Change::Put(k.clone(), v.clone()));
        }
    }
    for k in current.keys() {
        if !desired.contains_key(k) {
            out.push(Change::Remove(k.clone()));
        }
    }
    out
}

/// Applies `want` to the pinned maps; returns how many entries changed.
pub fn apply(pinned: &mut Pinned, want: &Desired) -> Result<usize> {
    let routes: BTreeMap<Ipv4Net, Route> = pinned
        .routes()?
        .into_iter()
        .map(|(ip, p, r)| (Ipv4Net::new(ip, p), r))
        .collect();
    let nodes: BTreeMap<Ipv4Addr, Peer> = pinned.nodes()?.into_iter().collect();
    let mut n = 0;
    // Nodes first: a route is only useful once its node's tunnel is accepted.
    for c in diff(&nodes, &want.nodes) {
        match c {
            Change::Put(ip, p) => pinned.set_node(ip, p)?,
            Change::Remove(ip) => pinned.remove_node(ip)?,
        }
        n += 1;
    }
    for c in diff(&routes, &want.routes) {
        match c {
            Change::Put(net, r) => pinned.set_route(net.addr, net.prefix, r)?,
            Change::Remove(net) => pinned.remove_route(net.addr, net.prefix)?,
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_SPEC;
    use netpath_common::RouteMode;

    #[test]
    fn desired_state_of_the_default_lab() {
        let spec = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
        let router = Ipv4Addr::new(192, 168, 56, 1);
        let d = desired(&spec, &spec.nodes[0], |p| {
            Some(if spec.nodes[0].underlay.contains(p.ip()) {
                p.ip()
            } else {
                router
            })
        });
        assert_eq!(d.routes.len(), 2);
        assert_eq!(d.nodes.len(), 2);
        let to2 = d.routes[&"10.244.2.0/24".parse().unwrap()];
        assert_eq!(to2.node_ip, [192, 168, 56, 12]);
        assert_eq!(to2.mode, RouteMode::Direct as u32);
        let to3 = d.routes[&"10.244.3.0/24".parse().unwrap()];
        assert_eq!(to3.mode, RouteMode::Vxlan as u32);
        assert_eq!(to3.vtep_mac, spec.nodes[2].vtep_mac);
        assert_eq!(
            to2.next_hop,
            [192, 168, 56, 12],
            "same subnet: the node itself"
        );
        assert_eq!(to3.next_hop, router.octets(), "other subnet: the router");
        assert!(
            !d.nodes.contains_key(&spec.nodes[0].ip()),
            "not its own peer"
        );
    }

    #[test]
    fn diff_puts_changed_and_removes_stale_entries() {
        let cur: BTreeMap<u32, &str> = [(1, "a"), (2, "b"), (3, "c")].into();
        let want: BTreeMap<u32, &str> = [(1, "a"), (2, "B"), (4, "d")].into();
        let d = diff(&cur, &want);
        assert_eq!(
            d,
            vec![Change::Put(2, "B"), Change::Put(4, "d"), Change::Remove(3)]
        );
        assert!(diff(&want, &want).is_empty());
    }
}
