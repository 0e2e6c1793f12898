//! The BIRD 2 configuration of one node, from the spec alone: announce the node's
//! pod CIDR (a blackhole route, as Calico does), peer with the other nodes (the
//! mesh) and with the routers the spec names, and install nothing in the kernel —
//! the agent turns what BIRD learns into routes and map entries itself.
use std::{fmt::Write, net::Ipv4Addr, path::Path};

use crate::spec::{ClusterSpec, NodeSpec};

/// The BGP hold time: a peer that vanishes without a word is dropped after it.
pub const HOLD_SECS: u32 = 9;
/// How long peers keep a restarting node's routes (graceful restart). Only BIRD
/// itself restarts (the agent brings a dead one back within a second; an agent
/// restart leaves it running), so this is short: a node that dies without a word
/// is routed to for at most the hold time plus this (Calico's 120 s would be 2 min).
const RESTART_SECS: u32 = 30;

/// BIRD's name for the session with `addr`: `mesh_` for nodes, `peer_` for routers.
fn protocol_name(kind: &str, addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("{kind}_{a}_{b}_{c}_{d}")
}

/// The whole configuration file. `underlay` is the interface whose subnet the
/// `direct` protocol learns; `log` where BIRD writes its log.
pub fn render(spec: &ClusterSpec, local: &NodeSpec, underlay: &str, log: &Path) -> String {
    let set = &spec.settings;
    let me = local.ip();
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Written by netpath for node {}; rewritten whenever the spec changes.",
        local.name
    );
    let _ = writeln!(c, "router id {me};");
    // Bounded: 4 MB, then one older file; no debug or trace classes.
    let _ = writeln!(
        c,
        "log \"{0}\" 4000000 \"{0}.1\" {{ info, remote, warning, error, auth, fatal, bug }};",
        log.display()
    );
    c += "protocol device { scan time 10; }\n";
    let _ = writeln!(c, "protocol direct {{ ipv4; interface \"{underlay}\"; }}");
    // The underlay's own routes resolve the next hops of sessions across subnets;
    // cluster routes (the agent's own among them) stay out.
    let _ = writeln!(
        c,
        "protocol kernel {{ ipv4 {{ import where net !~ [ {}+ ]; export none; }}; learn; scan time 5; }}",
        set.cluster_cidr
    );
    let _ = writeln!(
        c,
        "protocol static own {{ ipv4; route {} blackhole; }}",
        local.pod_cidr
    );
    let _ = writeln!(
        c,
        "template bgp netpath {{\n  local {me} as {};\n  hold time {HOLD_SECS}; keepalive time 3;\n  \
         connect delay time 1; connect retry time 2; error wait time 1, 10;\n  \
         graceful restart on; graceful restart time {RESTART_SECS};\n  \
         ipv4 {{ import all; export where proto = \"own\"; }};\n}}",
        set.asn
    );
    if set.bgp_mesh {
        for peer in spec.nodes.iter().filter(|n| n.name != local.name) {
            // One side connects, the other listens (the lower address connects, as
            // Calico does): no collisions to resolve when both start at once.
            let passive = if peer.ip() < me { " passive on;" } else { "" };
            let _ = writeln!(
                c,
                "protocol bgp {} from netpath {{ description \"node {}\"; neighbor {} as {};{passive} }}",
                protocol_name("mesh", peer.ip()),
                peer.name,
                peer.ip(),
                set.asn
            );
        }
    }
    for p in set.bgp_peers.iter().filter(|p| p.serves(local)) {
        // Routes the router passes between nodes carry the nodes' own AS.
        let _ = writeln!(
            c,
            "protocol bgp {} from netpath {{ description \"router\"; neighbor {} as {}; allow local as; }}",
            protocol_name("peer", p.address),
            p.address,
            p.asn
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BgpPeer, Routing, DEFAULT_SPEC};

    fn bgp_spec(mesh: bool, peers: Vec<BgpPeer>) -> ClusterSpec {
        ClusterSpec::parse(DEFAULT_SPEC)
            .unwrap()
            .with_settings(|s| {
                s.routing = Routing::Bgp;
                s.bgp_mesh = mesh;
                s.bgp_peers = peers;
            })
            .unwrap()
    }

    #[test]
    fn the_mesh_has_every_other_node_and_one_side_of_each_pair_listens() {
        let spec = bgp_spec(true, Vec::new());
        let c = render(&spec, &spec.nodes[1], "eth0", Path::new("/run/x/bird.log"));
        assert!(c.contains("router id 192.168.56.12;"), "{c}");
        assert!(c.contains("route 10.244.2.0/24 blackhole;"), "{c}");
        assert!(c.contains("import where net !~ [ 10.244.0.0/16+ ]"), "{c}");
        assert!(c.contains("local 192.168.56.12 as 64512;"), "{c}");
        let mesh: Vec<&str> = c.lines().filter(|l| l.contains("mesh_")).collect();
        assert_eq!(mesh.len(), 2, "{c}");
        assert!(mesh[0].contains("neighbor 192.168.56.11 as 64512; passive on;"));
        assert!(!mesh[1].contains("passive"), "{}", mesh[1]);
        assert!(!c.contains("peer_"), "{c}");
    }

    #[test]
    fn routers_peer_only_with_the_nodes_they_serve_and_the_mesh_can_be_off() {
        let peers = vec![
            "192.168.56.1:65000:node1,node2".parse().unwrap(),
            "192.168.57.1:65000:node3".parse().unwrap(),
        ];
        let spec = bgp_spec(false, peers);
        let c = render(&spec, &spec.nodes[2], "eth0", Path::new("/l"));
        assert!(!c.contains("mesh_"), "{c}");
        assert!(
            c.contains("protocol bgp peer_192_168_57_1 from netpath { description \"router\"; neighbor 192.168.57.1 as 65000; allow local as; }"),
            "{c}"
        );
        assert!(!c.contains("192.168.56.1 "), "{c}");
    }
}
