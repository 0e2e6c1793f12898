//! Calico's way with real daemons: BIRD on every node (started and supervised by the
//! agent), FRR on the fabric router. Through a BGP router pods cross subnets as plain
//! IP; with the nodes' mesh alone, across subnets by IP-in-IP. Nodes joining, a BGP
//! daemon killed, an agent restarted with --keep-pins, a node stopped, and a peer
//! announcing what it must not.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use netpath::{
    bgp::{BgpState, Refusal, HOLD_SECS},
    net::Ipv4Net,
    spec::{Backend, Overlay},
    state::AgentState,
};
use netpath_common::{Program, Reason, Route, RouteMode};
use netpath_lab::{
    assert_model,
    check::Proto,
    counter_of, frame_addr, frame_contains,
    lab::{bgp_spec, generated_spec, Lab, LabConfig},
    lab_of,
    observe::http_get,
    run_in_ns, send_udp_marker, wait_for, RawSocket,
};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn published(lab: &Lab, i: usize) -> BgpState {
    AgentState::read(&lab.nodes[i].state_dir())
        .unwrap()
        .and_then(|s| s.bgp)
        .unwrap_or_default()
}

/// Node `i`'s ROUTES entry for `cidr`.
fn route_to(lab: &Lab, i: usize, cidr: &str) -> Option<Route> {
    let cidr = net(cidr);
    lab.nodes[i]
        .pinned()
        .unwrap()
        .routes()
        .unwrap()
        .into_iter()
        .find(|(a, p, _)| *a == cidr.addr && *p == cidr.prefix)
        .map(|(_, _, r)| r)
}

fn kernel_route(ns: &Path, cidr: &str) -> String {
    run_in_ns(ns, &["ip", "-4", "route", "show", cidr])
        .unwrap()
        .trim()
        .to_string()
}

/// What pod1 of node1 sends to pod1 of node3 looks like on node3's wire.
fn frame_at_node3(lab: &Lab, marker: &'static [u8]) -> Vec<u8> {
    let wire = RawSocket::open(lab.nodes[2].ns.path(), "eth0").unwrap();
    send_udp_marker(
        lab.nodes[0].pods[0].ns.path(),
        lab.nodes[2].pods[0].ip,
        marker,
    );
    wire.wait_for(Duration::from_secs(3), |f| frame_contains(f, marker))
        .expect("the datagram reached node3's wire")
}

fn router_lab(pods: usize) -> (Lab, LabConfig) {
    let mut cfg = LabConfig::default_spec(pods).unwrap();
    cfg.spec = bgp_spec(&cfg.spec, true).unwrap();
    (lab_of(&cfg), cfg)
}

#[test]
fn through_a_bgp_router_pods_cross_subnets_as_plain_ip() {
    let (lab, _) = router_lab(1);
    assert_model(&lab, &[Proto::Tcp, Proto::Udp, Proto::Icmp]);
    let router = Ipv4Addr::new(192, 168, 56, 1);
    // node1 -> node3 (another subnet): plain IP via the router that learned it.
    let to3 = route_to(&lab, 0, "10.244.3.0/24").expect("node3's CIDR learned");
    assert_eq!(to3.mode, RouteMode::Direct as u32);
    assert_eq!(Ipv4Addr::from(to3.next_hop), router);
    // node1 -> node2 (same subnet): FRR passes node2's own address as next hop.
    let to2 = route_to(&lab, 0, "10.244.2.0/24").expect("node2's CIDR learned");
    assert_eq!(
        (to2.mode, Ipv4Addr::from(to2.next_hop)),
        (RouteMode::Direct as u32, lab.nodes[1].ip())
    );
    assert!(kernel_route(lab.nodes[0].ns.path(), "10.244.3.0/24").contains("via 192.168.56.1"));
    // The router installed what it learned (zebra): it forwards pods as plain IP.
    let fabric = kernel_route(lab.fabric_ns(), "10.244.3.0/24");
    assert!(
        fabric.contains("via 192.168.57.13") && fabric.contains("proto bgp"),
        "fabric: {fabric}"
    );
    let f = frame_at_node3(&lab, b"np-bgp-plain");
    assert_eq!(f[23], 17, "plain UDP on the wire, no IP-in-IP and no VXLAN");
    assert_eq!(
        (frame_addr(&f, 26), frame_addr(&f, 30)),
        (lab.nodes[0].pods[0].ip, lab.nodes[2].pods[0].ip)
    );
    for n in 0..3 {
        for (p, r) in [
            (Program::FromPod, Reason::Encapsulated),
            (Program::FromPod, Reason::IpipEncapsulated),
            (Program::ToUnderlay, Reason::Encapsulated),
            (Program::ToUnderlay, Reason::IpipEncapsulated),
        ] {
            assert_eq!(counter_of(&lab, n, p, r), 0, "node{}: {r:?}", n + 1);
        }
        let b = published(&lab, n);
        assert_eq!(b.sessions.len(), 1, "one router session: {b:?}");
        assert!(b.sessions[0].established(), "{b:?}");
        assert!(b.ignored.is_empty(), "{b:?}");
    }
    // `netpath status` shows the sessions and what was learned.
    let doc = netpath_lab::status_json(&lab, 0);
    let bgp = &doc["agent"]["bgp"];
    assert_eq!(bgp["sessions"][0]["name"], "peer_192_168_56_1", "{doc}");
    assert_eq!(bgp["routes"]["10.244.3.0/24"], "192.168.56.1", "{doc}");
    let text = std::process::Command::new(netpath_lab::lab::agent_binary().unwrap())
        .args(["status", "--node", &lab.nodes[0].name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("session peer_192_168_56_1") && text.contains("learned 10.244.3.0/24"),
        "{text}"
    );
    // A user who knows Calico asks BIRD and the router directly.
    let b = published(&lab, 0);
    let out = std::process::Command::new("birdc")
        .arg("-s")
        .arg(&b.socket)
        .args(["show", "protocols"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("peer_192_168_56_1") && said.contains("Established"),
        "{said}"
    );
    let frr = lab
        .bgp_router
        .as_ref()
        .unwrap()
        .vtysh("show ip bgp")
        .unwrap();
    for cidr in ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"] {
        assert!(frr.contains(cidr), "FRR lacks {cidr}: {frr}");
    }
}

#[test]
fn with_the_mesh_alone_subnets_are_crossed_by_ipip_and_a_subnet_directly() {
    let mut cfg = LabConfig::default_spec(1).unwrap();
    let spec = cfg
        .spec
        .with_settings(|s| s.overlay = Some(Overlay::Ipip))
        .unwrap();
    cfg.spec = bgp_spec(&spec, false).unwrap();
    let lab = lab_of(&cfg);
    assert_model(&lab, &[Proto::Tcp, Proto::Udp]);
    let mode = |cidr| RouteMode::from_u32(route_to(&lab, 0, cidr).unwrap().mode).unwrap();
    assert_eq!(mode("10.244.2.0/24"), RouteMode::Direct);
    assert_eq!(mode("10.244.3.0/24"), RouteMode::Ipip);
    let f = frame_at_node3(&lab, b"np-bgp-mesh-ipip");
    assert_eq!(f[23], 4, "IP-in-IP across the router");
    assert_eq!(
        (frame_addr(&f, 46), frame_addr(&f, 50)),
        (lab.nodes[0].pods[0].ip, lab.nodes[2].pods[0].ip),
        "inner addresses kept"
    );
    for n in 0..3 {
        let b = published(&lab, n);
        assert_eq!(b.sessions.len(), 2, "{b:?}");
        assert!(b.sessions.iter().all(|s| s.established()), "{b:?}");
    }
}

/// Whether every running node in `nodes` has `cidr` in ROUTES.
fn all_route(lab: &Lab, nodes: &[usize], cidr: &str) -> bool {
    nodes.iter().all(|&i| route_to(lab, i, cidr).is_some())
}

#[test]
fn a_joining_node_is_routed_in_seconds_a_killed_daemon_comes_back_and_a_stopped_node_leaves() {
    let mut cfg = LabConfig::with_spec(generated_spec(2, Backend::Auto).unwrap(), 1).unwrap();
    cfg.spec = bgp_spec(&cfg.spec, false).unwrap();
    let mut lab = lab_of(&cfg);
    // A node joins: its agent is ready, then every node routes its CIDR.
    let started = Instant::now();
    let new = lab
        .add_spec_node(
            "node3",
            net("192.168.56.13/24"),
            net("10.244.3.0/24"),
            1,
            &cfg,
        )
        .unwrap();
    let ready = started.elapsed();
    let routed = wait_for("every node routes node3", Duration::from_secs(10), || {
        all_route(&lab, &[0, 1], "10.244.3.0/24")
    });
    eprintln!("node3 joined: agent ready after {ready:?}, routed by all {routed:?} later");
    assert!(
        routed < Duration::from_secs(3),
        "routed {routed:?} after its agent was ready"
    );
    lab.wait_bgp_converged(Duration::from_secs(10)).unwrap();
    assert_model(&lab, &[Proto::Tcp]);

    // node2's BIRD dies: its agent starts it again (graceful restart recovery), and
    // neither its peers drop its CIDR nor it theirs meanwhile (it keeps them until
    // its peers' End-of-RIB), sampled every few milliseconds.
    let state2 = lab.nodes[1].state_dir();
    let old = netpath::bgp::daemon_pid(&state2).expect("node2's BIRD runs");
    let (samples, gaps) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let peers_route_node2 = || {
        samples.set(samples.get() + 1);
        if !all_route(&lab, &[0, 2], "10.244.2.0/24")
            || !all_route(&lab, &[1], "10.244.1.0/24")
            || !all_route(&lab, &[1], "10.244.3.0/24")
        {
            gaps.set(gaps.get() + 1);
        }
    };
    // SAFETY: the BIRD the agent under test started, by its checked PID.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    wait_for(
        "node2's BIRD started again",
        Duration::from_secs(10),
        || {
            peers_route_node2();
            netpath::bgp::daemon_pid(&state2).is_some_and(|p| p != old)
        },
    );
    let back = wait_for(
        "node2 relearned every route",
        Duration::from_secs(15),
        || {
            peers_route_node2();
            let b = published(&lab, 1);
            b.restarts == 1 && b.sessions.iter().all(|s| s.established()) && b.routes.len() == 2
        },
    );
    eprintln!(
        "node2's BIRD restarted; sessions and routes back {back:?} later; a CIDR lacked in {} of {} samples",
        gaps.get(),
        samples.get()
    );
    assert_eq!(
        gaps.get(),
        0,
        "node2 or its peers dropped a CIDR while its BIRD restarted"
    );
    assert!(all_route(&lab, &[1], "10.244.1.0/24") && all_route(&lab, &[1], "10.244.3.0/24"));
    let log = lab.agent_log(1);
    let settled = log
        .lines()
        .find(|l| l.contains("BIRD relearned after its restart"));
    eprintln!("node2's agent: {}", settled.unwrap_or("still settling"));
    assert_model(&lab, &[Proto::Tcp]);

    // node3 stops: every other node withdraws its route, kernel route and map entry.
    lab.stop_agent(new);
    let gone = wait_for(
        "node3's routes withdrawn",
        Duration::from_secs(HOLD_SECS as u64 + 3),
        || {
            [0, 1].iter().all(|&i| {
                route_to(&lab, i, "10.244.3.0/24").is_none()
                    && kernel_route(lab.nodes[i].ns.path(), "10.244.3.0/24").is_empty()
            })
        },
    );
    eprintln!("node3 stopped: its routes gone everywhere after {gone:?}");
}

#[test]
fn an_agent_restarted_with_keep_pins_keeps_its_bgp_sessions_and_routes() {
    let mut cfg = LabConfig::with_spec(generated_spec(2, Backend::Auto).unwrap(), 1).unwrap();
    cfg.spec = bgp_spec(&cfg.spec, false).unwrap();
    cfg.keep_pins = true;
    let mut lab = lab_of(&cfg);
    let state1 = lab.nodes[0].state_dir();
    let bird = netpath::bgp::daemon_pid(&state1).unwrap();
    lab.stop_agent(0);
    // The agent is gone; its BIRD and the routes on both sides are not.
    for _ in 0..10 {
        assert_eq!(netpath::bgp::daemon_pid(&state1), Some(bird));
        assert!(
            route_to(&lab, 1, "10.244.1.0/24").is_some(),
            "node2 dropped node1"
        );
        assert!(
            route_to(&lab, 0, "10.244.2.0/24").is_some(),
            "node1's pins lost node2"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_model(&lab, &[Proto::Tcp]);
    lab.start_agent(0, &cfg).unwrap();
    assert_eq!(
        netpath::bgp::daemon_pid(&state1),
        Some(bird),
        "adopted, not restarted"
    );
    assert!(lab.agent_log(0).contains("adopted"), "{}", lab.agent_log(0));
    assert!(route_to(&lab, 0, "10.244.2.0/24").is_some());
    let b = published(&lab, 0);
    assert_eq!(b.restarts, 0);
    assert!(b.sessions.iter().all(|s| s.established()), "{b:?}");
    assert_model(&lab, &[Proto::Tcp]);
}

#[test]
fn routes_outside_the_cluster_unknown_cidrs_and_foreign_next_hops_are_ignored_and_counted() {
    let (lab, _) = router_lab(1);
    let frr = lab.bgp_router.as_ref().unwrap();
    frr.vtysh_config(&[
        "route-map foreign permit 10",
        "set ip next-hop 192.168.56.99",
        "exit",
        "router bgp 65000",
        "no bgp network import-check",
        "address-family ipv4 unicast",
        "network 192.0.2.0/24",
        "network 10.244.99.0/24",
        "network 10.244.2.0/24 route-map foreign",
    ])
    .unwrap();
    let want = [
        ("192.0.2.0/24", Refusal::OutsideCluster),
        ("10.244.99.0/24", Refusal::UnknownOwner),
        ("10.244.2.0/24", Refusal::ForeignNextHop),
    ];
    wait_for(
        "node1 judged the router's announcements",
        Duration::from_secs(10),
        || {
            let ignored = published(&lab, 0).ignored;
            want.iter().all(|(cidr, why)| {
                ignored
                    .iter()
                    .any(|i| i.prefix == net(cidr) && i.why == *why)
            })
        },
    );
    let b = published(&lab, 0);
    let foreign = b
        .ignored
        .iter()
        .find(|i| i.prefix == net("10.244.2.0/24"))
        .unwrap();
    assert_eq!(foreign.next_hop, Some(Ipv4Addr::new(192, 168, 56, 99)));
    // Nothing of it reached the maps or the kernel.
    let ns = lab.nodes[0].ns.path();
    for (cidr, _) in want {
        let r = route_to(&lab, 0, cidr);
        assert!(
            r.is_none_or(|r| Ipv4Addr::from(r.next_hop) != Ipv4Addr::new(192, 168, 56, 99)),
            "{cidr} installed: {r:?}"
        );
        assert!(
            !kernel_route(ns, cidr).contains("192.168.56.99"),
            "{cidr} in the kernel"
        );
    }
    assert!(
        route_to(&lab, 0, "192.0.2.0/24").is_none() && kernel_route(ns, "192.0.2.0/24").is_empty()
    );
    assert!(
        route_to(&lab, 0, "10.244.99.0/24").is_none()
            && kernel_route(ns, "10.244.99.0/24").is_empty()
    );
    // Counted where an operator looks: the metrics, by reason.
    let by_reason: BTreeMap<Refusal, usize> = b.ignored.iter().fold(BTreeMap::new(), |mut m, i| {
        *m.entry(i.why).or_default() += 1;
        m
    });
    let (status, metrics) = http_get(ns, "127.0.0.1:9970".parse().unwrap(), "/metrics").unwrap();
    assert_eq!(status, 200);
    for (why, n) in by_reason {
        let line = format!(
            "netpath_bgp_routes_ignored{{reason=\"{}\"}} {n}",
            why.name()
        );
        assert!(metrics.contains(&line), "no {line:?} in:\n{metrics}");
    }
}
