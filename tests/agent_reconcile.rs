//! The agent keeps reconciling: spec reloads add and remove nodes in maps and kernel
//! routes, a bad spec is refused while forwarding goes on, a killed agent's leftovers
//! are removed by its successor, restarts under load drop no connection, pins of
//! another layout are refused, and endpoints attach and detach idempotently.
use std::{net::Ipv4Addr, process::Command, time::Duration};

use netpath::{
    endpoint,
    net::Ipv4Net,
    netlink::{RouteSpec, RouteSummary, PROTO_AGENT},
    nexthop::id_of,
    spec::{Backend, ClusterSpec, Redirect},
    state::AgentState,
};
use netpath_lab::{
    check,
    lab::{generated_spec, in_runtime, Lab, LabConfig},
    netns::NetNs,
    nl::Nl,
    status_json, wait_for,
};

fn lab_of(spec: ClusterSpec, pods: usize, keep_pins: bool) -> (Lab, LabConfig) {
    let mut cfg = LabConfig::with_spec(spec, pods).unwrap();
    cfg.keep_pins = keep_pins;
    (netpath_lab::lab_of(&cfg), cfg)
}

fn owned_routes(lab: &Lab, node: usize) -> Vec<RouteSummary> {
    lab.nodes[node]
        .ns
        .run(|| Nl::new()?.routes())
        .unwrap()
        .into_iter()
        .filter(|r| r.protocol == PROTO_AGENT)
        .collect()
}

/// The agent's nexthop objects' (id, gateway).
fn owned_nexthops(lab: &Lab, node: usize) -> Vec<(u32, Option<Ipv4Addr>)> {
    lab.nodes[node]
        .ns
        .run(|| Nl::new()?.nexthops())
        .unwrap()
        .into_iter()
        .filter(|n| n.protocol == PROTO_AGENT)
        .map(|n| (n.id, n.gateway))
        .collect()
}

fn map_routes(lab: &Lab, node: usize) -> Vec<Ipv4Net> {
    let pinned = lab.nodes[node].pinned().unwrap();
    pinned
        .routes()
        .unwrap()
        .into_iter()
        .map(|(ip, p, _)| Ipv4Net::new(ip, p))
        .collect()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn tcp_ok(lab: &Lab, (na, pa): (usize, usize), (nb, pb): (usize, usize)) {
    let (a, b) = (&lab.nodes[na].pods[pa], &lab.nodes[nb].pods[pb]);
    let seen = check::tcp(a.ns.path(), b.ns.path(), b.ip).unwrap();
    assert_eq!(seen, a.ip, "no NAT");
}

#[test]
fn spec_reload_adds_and_removes_a_node_within_a_second() {
    let spec = generated_spec(2, Backend::Auto).unwrap();
    let (lab, _) = lab_of(spec.clone(), 1, false);
    let stream = check::stream(
        lab.nodes[0].pods[0].ns.path(),
        lab.nodes[1].pods[0].ns.path(),
        lab.nodes[1].pods[0].ip,
    )
    .unwrap();
    let extra = net("10.244.9.0/24");
    let bigger = spec
        .to_draft()
        .node("node9", net("192.168.56.19/24"), extra)
        .validate()
        .unwrap();
    lab.write_spec(&bigger).unwrap();
    let took = wait_for(
        "node added to maps and routes",
        Duration::from_secs(1),
        || {
            map_routes(&lab, 0).contains(&extra)
                && owned_routes(&lab, 0).iter().any(|r| r.dst == extra)
        },
    );
    eprintln!("node added after {took:?}");
    let r = owned_routes(&lab, 0)
        .into_iter()
        .find(|r| r.dst == extra)
        .unwrap();
    let gw = Ipv4Addr::new(192, 168, 56, 19);
    assert_eq!(r.gateway, Some(gw));
    // Through the gateway's nexthop object (one hash bucket per object in the
    // kernel, where inline gateways all share one and big tables crawl).
    assert_eq!(r.nh_id, Some(id_of(gw)), "{r:?}");
    assert!(owned_nexthops(&lab, 0).contains(&(id_of(gw), Some(gw))));
    lab.write_spec(&spec).unwrap();
    // The route first, then (in the same pass) its gateway's object.
    let took = wait_for(
        "node removed from maps, routes and nexthop objects",
        Duration::from_secs(1),
        || {
            !map_routes(&lab, 0).contains(&extra)
                && !owned_routes(&lab, 0).iter().any(|r| r.dst == extra)
                && !owned_nexthops(&lab, 0).iter().any(|n| n.0 == id_of(gw))
        },
    );
    eprintln!("node removed after {took:?}");
    assert!(
        owned_routes(&lab, 0).iter().all(|r| r.nh_id.is_some()),
        "every route names its object"
    );
    assert!(
        map_routes(&lab, 0).contains(&net("10.244.2.0/24")),
        "node2 stays"
    );
    let stats = stream
        .finish()
        .expect("the flow to the unaffected node kept running");
    assert!(stats.bytes > 0);
    tcp_ok(&lab, (0, 0), (1, 0));
}

#[test]
fn an_invalid_spec_is_refused_and_the_last_good_one_keeps_forwarding() {
    let spec = generated_spec(2, Backend::Auto).unwrap();
    let (lab, _) = lab_of(spec.clone(), 1, false);
    let before = map_routes(&lab, 0);
    let mut bad = spec.to_toml();
    bad = bad.replace("10.244.2.0/24", "10.244.0.0/23");
    lab.write_spec_text(&bad).unwrap();
    wait_for("refusal published", Duration::from_secs(2), || {
        status_json(&lab, 0)["agent"]["spec_error"].is_string()
    });
    let err = status_json(&lab, 0)["agent"]["spec_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nodes[1].pod_cidr") && err.contains("overlaps"),
        "{err}"
    );
    assert!(
        lab.agent_log(0).contains("spec refused"),
        "{}",
        lab.agent_log(0)
    );
    assert_eq!(map_routes(&lab, 0), before, "maps untouched");
    tcp_ok(&lab, (0, 0), (1, 0));
    lab.write_spec(&spec).unwrap();
    wait_for("good spec back in force", Duration::from_secs(2), || {
        status_json(&lab, 0)["agent"]["spec_error"].is_null()
    });
}

#[test]
fn moving_a_running_nodes_pod_cidr_is_refused_and_its_published_cidr_stays_what_it_routes() {
    let spec = generated_spec(2, Backend::Auto).unwrap();
    let (mut lab, cfg) = lab_of(spec.clone(), 1, false);
    let published = |lab: &Lab| {
        AgentState::read(&lab.nodes[0].state_dir())
            .unwrap()
            .unwrap()
    };
    let own = spec.nodes[0].pod_cidr;
    assert_eq!(published(&lab).pod_cidr, Some(own));
    let mut moved = spec.to_draft();
    moved.nodes[0].pod_cidr = net("10.244.99.0/24");
    let moved = moved.validate().unwrap();
    lab.write_spec(&moved).unwrap();
    wait_for("refusal published", Duration::from_secs(2), || {
        status_json(&lab, 0)["agent"]["spec_error"].is_string()
    });
    let doc = status_json(&lab, 0);
    let err = doc["agent"]["spec_error"].as_str().unwrap();
    assert!(err.contains("pod_cidr changed"), "{err}");
    // The node forwards on its last good spec: ready, with the refusal as a warning.
    assert_eq!(doc["ready"]["ok"], true, "{doc}");
    assert!(
        doc["ready"]["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().unwrap().contains("pod_cidr changed"))),
        "{doc}"
    );
    assert_eq!(published(&lab).pod_cidr, Some(own), "what the node routes");
    // (node2 follows the new spec, so pods talk again only once it is undone.)
    lab.write_spec(&spec).unwrap();
    wait_for("good spec back in force", Duration::from_secs(2), || {
        let doc = status_json(&lab, 0);
        doc["agent"]["spec_error"].is_null() && doc["ready"]["warnings"].is_null()
    });
    wait_for(
        "node2 routes node1's pods again",
        Duration::from_secs(2),
        || map_routes(&lab, 1).contains(&own),
    );
    tcp_ok(&lab, (0, 0), (1, 0));
    // Moved across a restart, which a new agent accepts: the pod it still has holds
    // an address nobody routes any more, and the node says so.
    lab.kill_agent(0);
    lab.write_spec(&moved).unwrap();
    lab.start_agent(0, &cfg).unwrap();
    let problems = status_json(&lab, 0)["agent"]["problems"].to_string();
    assert!(
        problems.contains("outside this node's pod CIDR 10.244.99.0/24")
            && problems.contains(&lab.nodes[0].pods[0].ip.to_string()),
        "{problems}"
    );
}

#[test]
fn a_killed_agents_stale_routes_are_removed_by_its_successor() {
    let spec = generated_spec(3, Backend::Auto).unwrap();
    let (mut lab, cfg) = lab_of(spec.clone(), 1, false);
    let gone = spec.nodes[2].pod_cidr;
    assert!(owned_routes(&lab, 0).iter().any(|r| r.dst == gone));
    lab.kill_agent(0);
    // While no agent runs, node3 leaves the cluster.
    let mut d = spec.to_draft();
    d.nodes.pop();
    lab.write_spec(&d.validate().unwrap()).unwrap();
    assert!(
        owned_routes(&lab, 0).iter().any(|r| r.dst == gone),
        "SIGKILL left the route behind"
    );
    lab.start_agent(0, &cfg).unwrap();
    let routes = owned_routes(&lab, 0);
    assert!(
        !routes.iter().any(|r| r.dst == gone),
        "stale route removed: {routes:?}"
    );
    assert!(
        !map_routes(&lab, 0).contains(&gone),
        "stale map entry removed"
    );
    assert!(routes.iter().any(|r| r.dst == spec.nodes[1].pod_cidr));
    tcp_ok(&lab, (0, 0), (1, 0));
}

#[test]
fn a_peer_removed_behind_a_shared_gateway_loses_its_route_and_the_gateway_stays() {
    let spec = generated_spec(3, Backend::Auto).unwrap();
    let (lab, _) = lab_of(spec.clone(), 1, false);
    // node8 sits behind the router like node3: both routes go through its object.
    let extra = net("10.244.8.0/24");
    let bigger = spec
        .to_draft()
        .node("node8", net("192.168.57.18/24"), extra)
        .validate()
        .unwrap();
    lab.write_spec(&bigger).unwrap();
    wait_for("node8 routed", Duration::from_secs(2), || {
        owned_routes(&lab, 0).iter().any(|r| r.dst == extra)
    });
    let router = Ipv4Addr::new(192, 168, 56, 1);
    let via_router = |lab: &Lab| {
        owned_routes(lab, 0)
            .into_iter()
            .filter(|r| r.nh_id == Some(id_of(router)))
            .map(|r| r.dst)
            .collect::<Vec<_>>()
    };
    assert_eq!(via_router(&lab).len(), 2, "{:?}", owned_routes(&lab, 0));
    lab.write_spec(&spec).unwrap();
    wait_for("node8's route removed", Duration::from_secs(2), || {
        !owned_routes(&lab, 0).iter().any(|r| r.dst == extra)
    });
    assert_eq!(via_router(&lab), vec![spec.nodes[2].pod_cidr]);
    assert!(owned_nexthops(&lab, 0).contains(&(id_of(router), Some(router))));
    tcp_ok(&lab, (0, 0), (2, 0));
}

#[test]
fn routes_an_older_agent_put_inline_are_moved_onto_nexthop_objects() {
    let spec = generated_spec(3, Backend::Auto).unwrap();
    let (mut lab, cfg) = lab_of(spec.clone(), 1, false);
    lab.kill_agent(0);
    // As the agent before nexthop objects left them: same route, gateway inline.
    let before = owned_routes(&lab, 0);
    lab.nodes[0]
        .ns
        .run(|| {
            let nl = Nl::new()?;
            for r in &before {
                nl.replace_route_inline(&RouteSpec {
                    dst: r.dst,
                    oif: r.oif.unwrap(),
                    gateway: r.gateway,
                    mtu: r.mtu,
                    protocol: PROTO_AGENT,
                })?;
            }
            Ok(())
        })
        .unwrap();
    assert!(owned_routes(&lab, 0).iter().all(|r| r.nh_id.is_none()));
    lab.start_agent(0, &cfg).unwrap();
    let after = owned_routes(&lab, 0);
    assert_eq!(after.len(), before.len(), "{after:?}");
    for r in &after {
        assert_eq!(r.nh_id, r.gateway.map(id_of), "{r:?}");
    }
    tcp_ok(&lab, (0, 0), (1, 0));
    tcp_ok(&lab, (0, 0), (2, 0));
}

/// The programs on a pod's veth ingress: TCX links (what an earlier version made)
/// or the ids of netlink clsact filters (`tc filter show … id N`).
fn from_pod_prog_ids(lab: &Lab, node: usize, pod: usize) -> Vec<u32> {
    let ifname = lab.nodes[node].pods[pod].host_ifname.clone();
    lab.nodes[node]
        .ns
        .run(move || {
            if let Ok((_, progs)) = aya::programs::SchedClassifier::query_tcx(
                &ifname,
                aya::programs::TcAttachType::Ingress,
            ) {
                if !progs.is_empty() {
                    return Ok(progs.iter().map(|p| p.id()).collect());
                }
            }
            let out = Command::new("tc")
                .args(["filter", "show", "dev", &ifname, "ingress"])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            Ok(text
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| w[0] == "id")
                .filter_map(|w| w[1].parse().ok())
                .collect())
        })
        .unwrap()
}

#[test]
fn restarts_under_load_drop_no_connection() {
    let spec = generated_spec(3, Backend::Auto).unwrap();
    let (mut lab, cfg) = lab_of(spec.clone(), 2, true);
    let pod = |n: usize, p: usize| &lab.nodes[n].pods[p];
    let flows = [
        ((0, 0), (0, 1)),
        ((0, 0), (1, 0)),
        ((0, 1), (2, 0)),
        ((1, 0), (0, 1)),
    ];
    let streams: Vec<_> = flows
        .iter()
        .map(|&((na, pa), (nb, pb))| {
            check::stream(pod(na, pa).ns.path(), pod(nb, pb).ns.path(), pod(nb, pb).ip).unwrap()
        })
        .collect();
    let before = from_pod_prog_ids(&lab, 0, 0);
    assert_eq!(before.len(), 1, "one program on the pod's veth: {before:?}");
    std::thread::sleep(Duration::from_millis(300));
    lab.stop_agent(0);
    lab.start_agent(0, &cfg).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The second restart runs changed programs: plain redirects instead of peer.
    let mut d = spec.to_draft();
    d.settings.redirect = Redirect::Plain;
    lab.stop_agent(0);
    lab.write_spec(&d.validate().unwrap()).unwrap();
    lab.start_agent(0, &cfg).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mode = lab.nodes[0].pinned().unwrap().redirect_mode().unwrap();
    assert_eq!(mode.name(), "plain");
    let after = from_pod_prog_ids(&lab, 0, 0);
    assert_eq!(after.len(), 1, "one program on the pod's veth: {after:?}");
    assert_ne!(after, before, "the pod's veth now runs the new program");
    for (s, flow) in streams.into_iter().zip(flows) {
        let stats = s
            .finish()
            .unwrap_or_else(|e| panic!("flow {flow:?}: {e:#}"));
        eprintln!(
            "flow {flow:?}: {} MB, longest stall {:?}",
            stats.bytes >> 20,
            stats.max_gap
        );
        assert!(stats.bytes > 0);
    }
}

/// Starts node 0's agent over a pin `map` made by bpftool with `shape` (its `map
/// create` words) and returns the agent's error.
fn start_over_a_pin(map: &str, shape: &[&str]) -> String {
    let spec = generated_spec(1, Backend::Auto).unwrap();
    let (mut lab, cfg) = lab_of(spec, 0, false);
    lab.stop_agent(0);
    let dir = lab.nodes[0].pin_dir.clone();
    assert!(!dir.exists(), "a clean stop removes the pins");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(dir.join(map))
        .args(shape)
        .args(["name", map])
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = format!("{:#}", lab.start_agent(0, &cfg).unwrap_err());
    assert!(err.contains("another layout"), "{err}");
    assert!(err.contains(&format!("remove {}", dir.display())), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    err
}

#[test]
fn pins_of_another_layout_are_refused_with_what_to_do() {
    let shape = ["type", "hash", "key", "4", "value", "8", "entries", "16"];
    let err = start_over_a_pin("ENDPOINTS", &shape);
    assert!(err.contains("value 8 B"), "{err}");
}

/// ROUTES as agents made it before its key became the family-tagged `NetAddr`
/// (prefix length + an IPv4 address: 8 bytes): an upgrade must not read it.
#[test]
fn routes_pinned_with_the_ipv4_only_key_are_refused() {
    let shape = [
        "type", "lpm_trie", "key", "8", "value", "20", "entries", "131072", "flags", "1",
    ];
    let err = start_over_a_pin("ROUTES", &shape);
    assert!(err.contains("key 8 B") && err.contains("key 24 B"), "{err}");
}

#[test]
fn endpoint_attach_and_detach_are_idempotent() {
    let spec = generated_spec(1, Backend::Auto).unwrap();
    let (lab, _) = lab_of(spec, 1, false);
    let node = &lab.nodes[0];
    let ns = NetNs::create(&format!("{}-extra", lab.prefix)).unwrap();
    let a = endpoint::Attachment {
        container_id: "extra-1".into(),
        netns: ns.path().to_path_buf(),
        ifname: "eth0".into(),
        ip: node.spec.pod_cidr.nth(100),
        mtu: 1400,
    };
    let attach = || in_runtime(node.ns.path(), || endpoint::attach(&node.pin_dir, &a));
    let first = attach().unwrap();
    let again = attach().unwrap();
    assert_eq!(
        first.host_ifname, again.host_ifname,
        "same attachment, same veth"
    );
    let eps = node.pinned().unwrap().endpoints().unwrap();
    assert_eq!(eps.iter().filter(|(ip, _)| *ip == a.ip).count(), 1);
    let seen = check::tcp(ns.path(), node.pods[0].ns.path(), node.pods[0].ip).unwrap();
    assert_eq!(seen, a.ip);
    let detach = || {
        in_runtime(node.ns.path(), || {
            endpoint::detach(&node.pin_dir, "extra-1", "eth0", Some(a.ip))
        })
        .unwrap()
    };
    assert!(detach(), "first detach removes");
    assert!(!detach(), "second detach is a no-op");
    assert!(!node
        .pinned()
        .unwrap()
        .endpoints()
        .unwrap()
        .iter()
        .any(|(ip, _)| *ip == a.ip));
    // Attached again, then its netns disappears before the detach.
    attach().unwrap();
    drop(ns);
    assert!(detach(), "entry removed although the netns is gone");
    assert!(!detach());
    // What a concurrent DEL leaves to a slower one: a link found a moment ago and
    // gone now, a map entry and a pin already removed. Each removal is done.
    in_runtime(node.ns.path(), || async {
        let nl = netpath::netlink::Netlink::new()?;
        let stale = nl.links().await?.iter().map(|l| l.index).max().unwrap_or(0) + 1000;
        nl.delete_link(stale).await?;
        nl.delete_route("10.244.250.0/24".parse().unwrap(), None, None)
            .await?;
        Ok(())
    })
    .expect("removing what is gone succeeds");
    let mut pinned = node.pinned().unwrap();
    pinned.remove_endpoint(a.ip).expect("an entry already gone");
    pinned
        .remove_route(std::net::Ipv4Addr::new(10, 244, 250, 0), 24)
        .expect("a route already gone");
    netpath::datapath::detach(
        &node.pin_dir,
        "np-gone0",
        aya::programs::TcAttachType::Ingress,
    )
    .expect("a device already gone has nothing attached");
}

/// The table read whole: the agent's route dump is read from a raw socket 64 KiB at a
/// time (about 600 routes a read), so a table of many reads, with another table's
/// routes and an IPv6 route mixed in, must come back route for route.
#[test]
fn a_route_table_of_many_reads_is_dumped_whole() {
    let ns = NetNs::create(&format!("np-dump-{}", std::process::id())).unwrap();
    let n = 5_000u32;
    let mut batch = String::from(
        "link add np-dump type veth peer name np-dump-peer\nlink set np-dump-peer up\n\
         link set np-dump up\naddr add 192.0.2.1/24 dev np-dump\n",
    );
    for i in 0..n {
        let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + i * 64);
        let mtu = if i.is_multiple_of(7) { " mtu 1400" } else { "" };
        batch.push_str(&format!(
            "route add {net}/26 via 192.0.2.{} dev np-dump proto 44{mtu}\n",
            2 + i % 200
        ));
    }
    batch.push_str("route add 10.99.0.0/16 via 192.0.2.9 table 100\n");
    batch.push_str("route add 2001:db8::/64 dev np-dump\n");
    let file = std::env::temp_dir().join(format!("np-dump-{}.batch", std::process::id()));
    std::fs::write(&file, batch).unwrap();
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-batch"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes = ns.run(|| Nl::new()?.routes()).unwrap();
    let ours: Vec<&RouteSummary> = routes.iter().filter(|r| r.protocol == 44).collect();
    assert_eq!(ours.len(), n as usize, "routes of protocol 44 dumped");
    for (i, r) in ours.iter().enumerate() {
        let i = i as u32;
        let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + i * 64);
        assert_eq!(r.dst, Ipv4Net::new(net, 26));
        assert_eq!(
            r.gateway,
            Some(Ipv4Addr::new(192, 0, 2, (2 + i % 200) as u8))
        );
        assert_eq!(r.mtu, i.is_multiple_of(7).then_some(1400), "{}", r.dst);
    }
    assert!(
        routes
            .iter()
            .all(|r| r.dst.addr != Ipv4Addr::new(10, 99, 0, 0)),
        "a route of table 100 is not the main table's"
    );
}
