//! Pure planning: a spec, the local node, its underlay and the kernel's route table
//! in; everything the node should have out — map entries and the kernel routes the
//! node's own traffic needs. No I/O here, so every decision is unit-tested.
mod services;

use std::{collections::BTreeMap, net::Ipv4Addr};

use netpath_common::{Peer, RedirectMode, Route, RouteMode, Settings};

use crate::{
    bgp::Learned,
    net::Ipv4Net,
    netlink::{RouteSpec, RouteSummary, PROTO_AGENT},
    policy::PolicyMaps,
    spec::{overhead, ClusterSpec, Encryption, NodeSpec},
};

pub use self::services::ServiceTable;

/// The node's underlay interface as found on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    pub ifindex: u32,
    pub mtu: u32,
}

/// What one node should hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// What the programs read at every packet (`SETTINGS`).
    pub settings: Settings,
    pub routes: BTreeMap<Ipv4Net, Route>,
    pub nodes: BTreeMap<Ipv4Addr, Peer>,
    /// Kernel routes to other nodes' pod CIDRs, all with protocol `PROTO_AGENT`.
    pub kernel_routes: BTreeMap<Ipv4Net, RouteSpec>,
    /// Destinations outside the cluster that pods reach untranslated (empty with
    /// masquerade off): the cluster CIDR, every node and the spec's exemptions.
    pub nat_exempt: BTreeMap<Ipv4Net, ()>,
    /// Peers left out because the underlay has no route to them.
    pub unreachable: Vec<String>,
    pub services: ServiceTable,
    /// Network policy compiled for this node's pods (the agent fills it in).
    pub policy: PolicyMaps,
}

/// What the agent found or made on this node, beside the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probed {
    /// Extra `bpf_skb_adjust_room` flags this kernel takes.
    pub encap_flags: u32,
    /// One of `TcAttach`.
    pub tc_attach: u32,
    /// The node's VXLAN device (0: none) and what goes through it (`TUNNEL_*`).
    pub tunnel_ifindex: u32,
    pub tunnel_use: u32,
    /// The node's network namespace cookie, once the socket programs are attached.
    pub netns_cookie: u64,
    /// The node's WireGuard device (0: none, or not up yet).
    pub wg_ifindex: u32,
}

/// Settings the programs read, from the spec plus what the agent probed.
pub fn settings(
    spec: &ClusterSpec,
    local: &NodeSpec,
    underlay: &Underlay,
    probed: &Probed,
) -> Settings {
    let mode: RedirectMode = spec.settings.redirect.into();
    let range = spec.settings.service_range();
    Settings {
        redirect_mode: mode as u32,
        underlay_ifindex: underlay.ifindex,
        node_ip: local.ip().octets(),
        cluster_ip: spec.settings.cluster_cidr.addr.octets(),
        cluster_prefix: spec.settings.cluster_cidr.prefix as u32,
        vni: spec.settings.vni,
        vxlan_port: spec.settings.port,
        vtep_mac: local.vtep_mac.octets(),
        encap_flags: probed.encap_flags,
        tc_attach: probed.tc_attach,
        tunnel_ifindex: probed.tunnel_ifindex,
        tunnel_use: probed.tunnel_use,
        masquerade: spec.settings.masquerade as u32,
        nat_port_min: spec.settings.masquerade_ports.min,
        nat_port_max: spec.settings.masquerade_ports.max,
        services: front_ends(spec),
        service_ip: range.map_or([0; 4], |r| r.addr.octets()),
        service_prefix: range.map_or(0, |r| r.prefix as u32),
        node_port_min: spec.settings.node_ports.min,
        node_port_max: spec.settings.node_ports.max,
        host_netns_cookie: probed.netns_cookie,
        policy_rev: 0,
        wg_ifindex: probed.wg_ifindex,
    }
}

/// Service front ends every node holds: one per service port, and one more per node
/// port (on the node's own address).
fn front_ends(spec: &ClusterSpec) -> u32 {
    let ports = spec.services.iter().flat_map(|s| &s.ports);
    ports.map(|p| 1 + p.node_port.is_some() as u32).sum()
}

/// The gateway the main table would use for `dst` (None: on-link), by longest
/// prefix; routes the agent owns are not underlay routes and are skipped.
pub fn next_hop(routes: &[RouteSummary], dst: Ipv4Addr) -> Option<Option<Ipv4Addr>> {
    next_hop_among(routes.iter().filter(|r| r.protocol != PROTO_AGENT), dst)
}

fn next_hop_among<'a>(
    routes: impl Iterator<Item = &'a RouteSummary>,
    dst: Ipv4Addr,
) -> Option<Option<Ipv4Addr>> {
    routes
        .filter(|r| r.dst.contains(dst))
        .max_by_key(|r| r.dst.prefix)
        .map(|r| r.gateway)
}

/// The node's own traffic to remote pods follows kernel routes: straight to the
/// owning node (direct), or to the same next hop as its underlay address, where the
/// egress program wraps it in VXLAN or IP-in-IP (with room for the headers in the
/// route MTU). The programs get the same next hops, sparing them a FIB lookup per
/// packet. With BGP routing (`bgp` is what it taught, judged), a peer's pod CIDR is
/// routed only once learned, and a router as next hop means plain IP via it.
pub fn plan(
    spec: &ClusterSpec,
    local: &NodeSpec,
    underlay: &Underlay,
    probed: &Probed,
    table: &[RouteSummary],
    bgp: Option<&Learned>,
) -> Desired {
    let mut d = Desired {
        settings: settings(spec, local, underlay, probed),
        services: ServiceTable::plan(spec, local),
        ..Desired::default()
    };
    if spec.settings.masquerade {
        let nodes = spec.nodes.iter().map(|n| Ipv4Net::new(n.ip(), 32));
        d.nat_exempt = std::iter::once(spec.settings.cluster_cidr)
            .chain(nodes)
            .chain(spec.settings.no_masquerade.iter().copied())
            .map(|net| (net, ()))
            .collect();
    }
    // The underlay's own routes, without the agent's: the table holds one owned route
    // per peer, and scanning it per peer would be quadratic in the cluster size.
    let underlay_routes: Vec<&RouteSummary> =
        table.iter().filter(|r| r.protocol != PROTO_AGENT).collect();
    for peer in spec.nodes.iter().filter(|n| n.name != local.name) {
        let gw = if local.underlay.contains(peer.ip()) {
            peer.ip()
        } else {
            match next_hop_among(underlay_routes.iter().copied(), peer.ip()) {
                Some(Some(gw)) => gw,
                Some(None) => peer.ip(),
                None => {
                    d.unreachable.push(format!(
                        "no route to node {}'s underlay address {}",
                        peer.name,
                        peer.ip()
                    ));
                    continue;
                }
            }
        };
        d.nodes.insert(
            peer.ip(),
            Peer {
                vtep_mac: peer.vtep_mac.octets(),
                _pad: [0; 2],
            },
        );
        if spec.settings.encryption == Encryption::Wireguard {
            d.encrypted_route(peer, underlay, probed);
            continue;
        }
        let (mode, gw) = match bgp.map(|l| l.accepted.get(&peer.pod_cidr)) {
            None => (spec.route_mode(local, peer), gw),
            Some(None) => continue,
            // A router that learned the CIDR carries it as plain IP, unless the
            // backend says always encapsulate (vxlan, ipip): then to the owner as ever.
            Some(Some(&router)) if router != peer.ip() && !spec.always_overlay() => {
                (RouteMode::Direct, router)
            }
            Some(Some(_)) => (spec.route_mode(local, peer), gw),
        };
        d.routes.insert(
            peer.pod_cidr,
            Route {
                node_ip: peer.ip().octets(),
                mode: mode as u32,
                vtep_mac: peer.vtep_mac.octets(),
                _pad: [0; 2],
                next_hop: gw.octets(),
            },
        );
        d.kernel_routes.insert(
            peer.pod_cidr,
            RouteSpec {
                dst: peer.pod_cidr,
                oif: underlay.ifindex,
                gateway: Some(gw),
                mtu: (mode != RouteMode::Direct).then(|| underlay.mtu - overhead(mode)),
                protocol: PROTO_AGENT,
            },
        );
    }
    d
}

impl Desired {
    /// A peer's pods through WireGuard, whatever the backend (it replaces the
    /// overlay between nodes): into the device when the peer has a key and the
    /// device is up, else dropped — never in clear. The node's own traffic to them
    /// takes the device too (no route through it yet: none at all, so nothing
    /// leaves by the default route).
    fn encrypted_route(&mut self, peer: &NodeSpec, underlay: &Underlay, probed: &Probed) {
        let mode = if peer.wireguard_key.is_some() && probed.wg_ifindex != 0 {
            RouteMode::Wireguard
        } else {
            RouteMode::NoKey
        };
        let route = Route {
            node_ip: peer.ip().octets(),
            mode: mode as u32,
            vtep_mac: peer.vtep_mac.octets(),
            _pad: [0; 2],
            next_hop: [0; 4],
        };
        self.routes.insert(peer.pod_cidr, route);
        // Pods' packets to the node itself too (its allowed IPs hold its address);
        // the node's own traffic to it (the store, BGP, WireGuard's datagrams) keeps
        // the underlay: no kernel route for it.
        self.routes.insert(Ipv4Net::new(peer.ip(), 32), route);
        if probed.wg_ifindex != 0 {
            self.kernel_routes.insert(
                peer.pod_cidr,
                RouteSpec {
                    dst: peer.pod_cidr,
                    oif: probed.wg_ifindex,
                    gateway: None,
                    mtu: Some(underlay.mtu - overhead(RouteMode::Wireguard)),
                    protocol: PROTO_AGENT,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DEFAULT_SPEC;

    #[test]
    fn masquerade_exempts_the_cluster_every_node_and_the_spec_list() {
        let mut d = ClusterSpec::parse(DEFAULT_SPEC).unwrap().to_draft();
        d.settings.no_masquerade = vec!["203.0.113.0/24".parse().unwrap()];
        let mut spec = d.validate().unwrap();
        let local = spec.nodes[0].clone();
        let d = plan(&spec, &local, &UL, &Probed::default(), &node1_table(), None);
        let want: Vec<&str> = vec![
            "10.244.0.0/16",
            "192.168.56.11/32",
            "192.168.56.12/32",
            "192.168.57.13/32",
            "203.0.113.0/24",
        ];
        let got: Vec<String> = d.nat_exempt.keys().map(|n| n.to_string()).collect();
        assert_eq!(got, want);
        spec.settings.masquerade = false;
        assert!(
            plan(&spec, &local, &UL, &Probed::default(), &node1_table(), None)
                .nat_exempt
                .is_empty()
        );
    }

    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 56, 1);

    fn route(dst: &str, gw: Option<Ipv4Addr>, protocol: u8) -> RouteSummary {
        RouteSummary {
            nh_id: None,
            dst: dst.parse().unwrap(),
            gateway: gw,
            oif: Some(2),
            protocol,
            mtu: None,
        }
    }

    fn node1_table() -> Vec<RouteSummary> {
        vec![
            route("0.0.0.0/0", Some(ROUTER), 4),
            route("192.168.56.0/24", None, 2),
            // An owned route must never be taken for an underlay route.
            route(
                "192.168.57.0/24",
                Some(Ipv4Addr::new(10, 9, 9, 9)),
                PROTO_AGENT,
            ),
        ]
    }

    const UL: Underlay = Underlay {
        ifindex: 2,
        mtu: 1500,
    };

    #[test]
    fn the_default_lab_from_node1() {
        let spec = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
        let d = plan(
            &spec,
            &spec.nodes[0],
            &UL,
            &Probed::default(),
            &node1_table(),
            None,
        );
        assert!(d.unreachable.is_empty());
        assert_eq!(
            (d.routes.len(), d.nodes.len(), d.kernel_routes.len()),
            (2, 2, 2)
        );
        let to2 = d.routes[&"10.244.2.0/24".parse().unwrap()];
        assert_eq!(to2.node_ip, [192, 168, 56, 12]);
        assert_eq!(to2.mode, RouteMode::Direct as u32);
        assert_eq!(
            to2.next_hop,
            [192, 168, 56, 12],
            "same subnet: the node itself"
        );
        let to3 = d.routes[&"10.244.3.0/24".parse().unwrap()];
        assert_eq!(to3.mode, RouteMode::Vxlan as u32);
        assert_eq!(to3.vtep_mac, spec.nodes[2].vtep_mac.octets());
        assert_eq!(to3.next_hop, ROUTER.octets(), "other subnet: the router");
        assert!(
            !d.nodes.contains_key(&spec.nodes[0].ip()),
            "not its own peer"
        );
        let k2 = d.kernel_routes[&"10.244.2.0/24".parse().unwrap()];
        assert_eq!(
            (k2.gateway, k2.mtu, k2.protocol),
            (Some(spec.nodes[1].ip()), None, PROTO_AGENT)
        );
        let k3 = d.kernel_routes[&"10.244.3.0/24".parse().unwrap()];
        assert_eq!((k3.gateway, k3.mtu), (Some(ROUTER), Some(1450)));
    }

    #[test]
    fn ipip_routes_leave_room_for_one_header_and_keep_the_router_as_next_hop() {
        let spec = ClusterSpec::parse(DEFAULT_SPEC)
            .unwrap()
            .with_settings(|s| s.overlay = Some(crate::spec::Overlay::Ipip))
            .unwrap();
        let d = plan(
            &spec,
            &spec.nodes[0],
            &UL,
            &Probed::default(),
            &node1_table(),
            None,
        );
        let to3 = d.routes[&"10.244.3.0/24".parse().unwrap()];
        assert_eq!(to3.mode, RouteMode::Ipip as u32);
        assert_eq!(
            (to3.node_ip, to3.next_hop),
            ([192, 168, 57, 13], ROUTER.octets())
        );
        let k3 = d.kernel_routes[&"10.244.3.0/24".parse().unwrap()];
        assert_eq!((k3.gateway, k3.mtu), (Some(ROUTER), Some(1480)));
        let to2 = d.routes[&"10.244.2.0/24".parse().unwrap()];
        assert_eq!(to2.mode, RouteMode::Direct as u32);
    }

    #[test]
    fn with_bgp_only_learned_cidrs_are_routed_and_a_router_next_hop_is_plain_ip() {
        let spec = ClusterSpec::parse(DEFAULT_SPEC)
            .unwrap()
            .with_settings(|s| {
                s.routing = crate::spec::Routing::Bgp;
                s.bgp_peers = vec!["192.168.56.1:65000".parse().unwrap()];
            })
            .unwrap();
        let plan_with = |learned: &[(&str, [u8; 4])]| {
            let l = Learned {
                accepted: learned
                    .iter()
                    .map(|(n, h)| (n.parse().unwrap(), (*h).into()))
                    .collect(),
                ignored: Vec::new(),
            };
            plan(
                &spec,
                &spec.nodes[0],
                &UL,
                &Probed::default(),
                &node1_table(),
                Some(&l),
            )
        };
        let none = plan_with(&[]);
        assert!(none.routes.is_empty() && none.kernel_routes.is_empty());
        assert_eq!(
            none.nodes.len(),
            2,
            "every node may still send overlay traffic"
        );
        let d = plan_with(&[
            ("10.244.2.0/24", [192, 168, 56, 12]),
            ("10.244.3.0/24", [192, 168, 56, 1]),
        ]);
        let to2 = d.routes[&"10.244.2.0/24".parse().unwrap()];
        assert_eq!(
            (to2.mode, to2.next_hop),
            (RouteMode::Direct as u32, [192, 168, 56, 12])
        );
        // node3 behind the router that learned its CIDR: no overlay, the router next.
        let to3 = d.routes[&"10.244.3.0/24".parse().unwrap()];
        assert_eq!(
            (to3.mode, to3.node_ip, to3.next_hop),
            (
                RouteMode::Direct as u32,
                [192, 168, 57, 13],
                ROUTER.octets()
            )
        );
        let k3 = d.kernel_routes[&"10.244.3.0/24".parse().unwrap()];
        assert_eq!((k3.gateway, k3.mtu), (Some(ROUTER), None));
        // node3 announced with itself as next hop (the mesh): the overlay, as without BGP.
        let d = plan_with(&[("10.244.3.0/24", [192, 168, 57, 13])]);
        let to3 = d.routes[&"10.244.3.0/24".parse().unwrap()];
        assert_eq!(
            (to3.mode, to3.next_hop),
            (RouteMode::Vxlan as u32, ROUTER.octets())
        );
        // A backend that always encapsulates does so behind a BGP router too.
        let ipip = spec.with_backend(crate::spec::Backend::Ipip).unwrap();
        let l = Learned {
            accepted: [("10.244.3.0/24".parse().unwrap(), ROUTER)].into(),
            ignored: Vec::new(),
        };
        let d = plan(
            &ipip,
            &ipip.nodes[0],
            &UL,
            &Probed::default(),
            &node1_table(),
            Some(&l),
        );
        let to3 = d.routes[&"10.244.3.0/24".parse().unwrap()];
        assert_eq!(
            (to3.mode, to3.node_ip, to3.next_hop),
            (RouteMode::Ipip as u32, [192, 168, 57, 13], ROUTER.octets())
        );
    }

    #[test]
    fn an_unroutable_peer_is_reported_and_the_rest_planned() {
        let spec = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
        let table = vec![route("192.168.56.0/24", None, 2)];
        let d = plan(&spec, &spec.nodes[0], &UL, &Probed::default(), &table, None);
        assert_eq!(d.routes.len(), 1);
        assert_eq!(d.unreachable.len(), 1);
        assert!(d.unreachable[0].contains("node3"), "{:?}", d.unreachable);
    }

    #[test]
    fn removing_a_node_from_the_spec_removes_its_entries() {
        let spec = ClusterSpec::parse(DEFAULT_SPEC).unwrap();
        let mut draft = spec.to_draft();
        draft.nodes.pop();
        let smaller = draft.validate().unwrap();
        let before = plan(
            &spec,
            &spec.nodes[0],
            &UL,
            &Probed::default(),
            &node1_table(),
            None,
        );
        let after = plan(
            &smaller,
            &smaller.nodes[0],
            &UL,
            &Probed::default(),
            &node1_table(),
            None,
        );
        let gone: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        assert!(before.kernel_routes.contains_key(&gone));
        assert!(!after.kernel_routes.contains_key(&gone) && !after.routes.contains_key(&gone));
        assert_eq!(after.routes.len(), 1);
    }

    #[test]
    fn next_hop_uses_the_longest_prefix() {
        let table = [
            route("0.0.0.0/0", Some(ROUTER), 4),
            route("192.168.56.0/24", None, 2),
            route("10.244.3.0/24", Some(Ipv4Addr::new(192, 168, 56, 13)), 4),
        ];
        let hop = |ip: [u8; 4]| next_hop(&table, ip.into());
        assert_eq!(hop([192, 168, 56, 12]), Some(None), "on-link");
        assert_eq!(hop([192, 168, 57, 13]), Some(Some(ROUTER)), "default");
        assert_eq!(hop([10, 244, 3, 9]), Some(Some([192, 168, 56, 13].into())));
        assert_eq!(
            next_hop(&table[1..2], [8, 8, 8, 8].into()),
            None,
            "unroutable"
        );
    }
}
