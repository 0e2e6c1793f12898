//! Services in the programs: ClusterIP and node ports translated on the fast path,
//! with real packets through real kernels: every backend reached from every node
//! (direct and overlay), the client's own address kept, replies from the front end,
//! backend changes applied at once without moving established flows, fast refusal
//! without backends, hairpin, session affinity, node ports with both traffic
//! policies, and an agent killed under a stream.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use netpath::datapath;
use netpath::spec::{
    ClusterSpec, Protocol, ServicePort, ServiceSpec, ServiceType, SessionAffinity, TargetPort,
    TrafficPolicy,
};
use netpath_common::{names, Program, Reason};
use netpath_lab::{
    check, counter_of, lab,
    lab::{Lab, OUTSIDE_IP},
    service::{ask_tcp, ask_udp, cluster_ip, tcp_refused, udp_refused, Backend},
    wait_for,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TARGET: u16 = 8080;
/// Where a backend's stream listener sits (service port 81).
const STREAM: u16 = 8081;
const NODE_PORT: u16 = 30080;
/// Spec changes reach the programs within this (the agent polls its file every
/// 200 ms; the bound is 1 s, a slow VM gets slack).
const APPLIED_WITHIN: Duration = Duration::from_secs(3);

fn apply(lab: &Lab, services: Vec<ServiceSpec>) -> ClusterSpec {
    let mut d = lab.spec.to_draft();
    d.services = services;
    let spec = d.validate().unwrap();
    lab.write_spec(&spec).unwrap();
    spec
}

/// Waits until node `node`'s programs hold `n` front ends.
fn wait_front_ends(lab: &Lab, node: usize, n: u32) {
    wait_for("the service maps", APPLIED_WITHIN, || {
        lab.nodes[node]
            .pinned()
            .and_then(|p| p.settings())
            .is_ok_and(|s| s.services == n)
    });
}

/// Waits until node `node`'s front end `VIP:80/tcp` has `n` ready backends.
fn wait_ready(lab: &Lab, node: usize, n: u32) {
    wait_for("the backend change", APPLIED_WITHIN, || {
        lab.nodes[node].pinned().is_ok_and(|p| {
            p.service_table().services.iter().any(|(k, s)| {
                k.addr == VIP.octets()
                    && k.port == 80u16.to_be_bytes()
                    && k.proto == 6
                    && s.backends == n
            })
        })
    });
}

fn serve_all<'a>(pods: impl Iterator<Item = &'a netpath_lab::lab::Pod>) -> Vec<Backend> {
    pods.map(|p| Backend::serve(p.ns.path(), p.ip, TARGET).unwrap())
        .collect()
}

/// Which backends `n` TCP requests from `client` reached, and how often.
fn spread(lab: &Lab, client: &netpath_lab::lab::Pod, n: usize) -> BTreeMap<Ipv4Addr, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let a = ask_tcp(client.ns.path(), VIP, 80)
            .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", client.name, lab.agent_log(0)));
        assert_eq!(
            a.client, client.ip,
            "the backend sees the client pod's own address"
        );
        *seen.entry(a.backend).or_insert(0) += 1;
    }
    seen
}

#[test]
fn pods_on_every_node_reach_every_backend_through_a_cluster_ip() {
    let lab = lab(3, 2);
    let _servers = serve_all(lab.nodes.iter().map(|n| &n.pods[0]));
    let ips: Vec<Ipv4Addr> = lab.nodes.iter().map(|n| n.pods[0].ip).collect();
    apply(&lab, vec![cluster_ip("web", VIP, 80, TARGET, &ips)]);
    for i in 0..3 {
        wait_front_ends(&lab, i, 2);
    }
    for node in &lab.nodes {
        let client = &node.pods[1];
        // node1 <-> node2 are direct, node3 is over VXLAN: every kind of path.
        let seen = spread(&lab, client, 60);
        assert_eq!(seen.len(), 3, "{}: {seen:?}", client.name);
        // Random among three: each gets a fair share (below 6 of 60: odds ~1e-5).
        assert!(seen.values().all(|n| *n >= 6), "{}: {seen:?}", client.name);
        for _ in 0..5 {
            let u = ask_udp(client.ns.path(), VIP, 80).unwrap();
            assert_eq!(u.client, client.ip);
            assert!(ips.contains(&u.backend));
        }
    }
    // A service-range address with no service goes nowhere, counted.
    let client = &lab.nodes[0].pods[1];
    let before = counter_of(&lab, 0, Program::FromPod, Reason::DropSvcUnknown);
    assert!(tcp_refused(client.ns.path(), Ipv4Addr::new(10, 96, 0, 99), 80).is_err());
    assert!(counter_of(&lab, 0, Program::FromPod, Reason::DropSvcUnknown) > before);
}

#[test]
fn a_pod_talking_to_a_backend_directly_on_ports_a_service_flow_used_gets_its_own_replies() {
    let lab = lab(2, 1);
    let backend = &lab.nodes[1].pods[0];
    let _server = Backend::serve(backend.ns.path(), backend.ip, TARGET).unwrap();
    apply(
        &lab,
        vec![cluster_ip("web", VIP, 80, TARGET, &[backend.ip])],
    );
    wait_front_ends(&lab, 0, 2);
    // One socket, one port: first through the service, then straight to the backend
    // (as a kernel reusing an ephemeral port does), then through the service again.
    let client = &lab.nodes[0].pods[0];
    let sock = netpath_lab::netns::run_in(client.ns.path(), || {
        Ok(std::net::UdpSocket::bind(("0.0.0.0", 0))?)
    })
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let ask = |to: SocketAddrV4| {
        sock.send_to(b"?", to).unwrap();
        let mut buf = [0u8; 256];
        let (_, from) = sock.recv_from(&mut buf).unwrap();
        from
    };
    let front = SocketAddrV4::new(VIP, 80);
    let direct = SocketAddrV4::new(backend.ip, TARGET);
    assert_eq!(ask(front), front.into());
    assert_eq!(
        ask(direct),
        direct.into(),
        "the backend's direct reply came back as the front end's"
    );
    assert_eq!(ask(front), front.into());
}

#[test]
fn backend_changes_apply_at_once_and_established_flows_stay_on_their_backend() {
    let lab = lab(3, 2);
    let pods: Vec<_> = lab.nodes.iter().map(|n| &n.pods[0]).collect();
    let _servers = serve_all(pods.iter().copied());
    let (b1, b2, b3) = (pods[0].ip, pods[1].ip, pods[2].ip);
    let web = |backends: &[Ipv4Addr]| {
        let mut s = cluster_ip("web", VIP, 80, TARGET, backends);
        s.ports.push(ServicePort {
            name: "stream".into(),
            protocol: Protocol::TCP,
            port: 81,
            target_port: Some(TargetPort::Number(STREAM)),
            node_port: None,
        });
        s
    };
    apply(&lab, vec![web(&[b1])]);
    wait_front_ends(&lab, 0, 3);
    let client = &lab.nodes[1].pods[1];
    // The only backend takes the stream; it must stay there through every change.
    let stream = check::stream_via(
        client.ns.path(),
        pods[0].ns.path(),
        SocketAddrV4::new(VIP, 81),
        STREAM,
    )
    .unwrap();

    apply(&lab, vec![web(&[b1, b2, b3])]);
    let took = wait_for(
        "the added backends to take connections",
        APPLIED_WITHIN,
        || spread(&lab, client, 10).len() == 3,
    );
    eprintln!("added backends reached after {took:?}");

    apply(&lab, vec![web(&[b1, b3])]);
    let took = wait_for("the removed backend to be left out", APPLIED_WITHIN, || {
        lab.nodes[1].pinned().is_ok_and(|p| {
            !p.service_table()
                .backends
                .keys()
                .any(|k| k.backend.addr == b2.octets())
        })
    });
    eprintln!("removal applied after {took:?}");
    let seen = spread(&lab, client, 40);
    assert!(
        !seen.contains_key(&b2),
        "a removed backend got a new connection: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Terminating: its flows go on, no new ones.
    let mut terminating = web(&[b1, b3]);
    terminating.endpoints[0].terminating = true;
    terminating.endpoints[0].ready = false;
    terminating.endpoints[0].serving = Some(true);
    apply(&lab, vec![terminating]);
    wait_ready(&lab, 1, 1);
    let seen = spread(&lab, client, 20);
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![b3],
        "{seen:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let stats = stream
        .finish()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.agent_log(1)));
    assert!(stats.bytes > 0);
    assert!(stats.max_gap < Duration::from_secs(2), "{stats:?}");

    // No backend at all: refused at once, TCP and UDP alike, and counted.
    apply(&lab, vec![web(&[])]);
    let before = counter_of(&lab, 1, Program::FromPod, Reason::DropSvcNoBackend);
    wait_for("connections to be refused", APPLIED_WITHIN, || {
        tcp_refused(client.ns.path(), VIP, 80).is_ok()
    });
    let took = tcp_refused(client.ns.path(), VIP, 80).unwrap();
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    udp_refused(client.ns.path(), VIP, 80).unwrap();
    assert!(counter_of(&lab, 1, Program::FromPod, Reason::DropSvcNoBackend) >= before + 2);
}

#[test]
fn a_pod_reaches_itself_through_its_own_service() {
    let lab = lab(2, 1);
    let pod = &lab.nodes[0].pods[0];
    let _server = Backend::serve(pod.ns.path(), pod.ip, TARGET).unwrap();
    apply(&lab, vec![cluster_ip("self", VIP, 80, TARGET, &[pod.ip])]);
    wait_front_ends(&lab, 0, 2);
    let a = ask_tcp(pod.ns.path(), VIP, 80).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(a.backend, pod.ip);
    // Translated at connect(), the pod simply connects to itself; translated per
    // packet, it would drop a packet from its own address, so it sees the front end.
    let at_socket = datapath::pods_at_the_socket(&lab.nodes[0].pin_dir)
        .unwrap()
        .contains(&pod.ip);
    assert_eq!(a.client, if at_socket { pod.ip } else { VIP });
    // A datagram sent (not connected) is translated per packet on every kernel.
    let u = ask_udp(pod.ns.path(), VIP, 80).unwrap();
    assert_eq!((u.backend, u.client), (pod.ip, VIP));
    // And a pod elsewhere still sees the backend answer as the front end.
    let a = ask_tcp(lab.nodes[1].pods[0].ns.path(), VIP, 80).unwrap();
    assert_eq!((a.backend, a.client), (pod.ip, lab.nodes[1].pods[0].ip));
}

#[test]
fn session_affinity_keeps_a_client_on_its_backend_until_the_timeout() {
    let lab = lab(3, 2);
    let _servers = serve_all(lab.nodes.iter().map(|n| &n.pods[0]));
    let ips: Vec<Ipv4Addr> = lab.nodes.iter().map(|n| n.pods[0].ip).collect();
    let mut svc = cluster_ip("sticky", VIP, 80, TARGET, &ips);
    svc.session_affinity = SessionAffinity::ClientIP;
    svc.affinity_timeout = 2;
    apply(&lab, vec![svc]);
    wait_front_ends(&lab, 0, 2);
    let client = &lab.nodes[0].pods[1];
    let seen = spread(&lab, client, 20);
    assert_eq!(seen.len(), 1, "one client, one backend: {seen:?}");
    // Idle past the timeout: the next connection is a fresh pick (several, to see
    // more than one backend, each after another idle period).
    let mut after = BTreeMap::new();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(2100));
        *after
            .entry(ask_tcp(client.ns.path(), VIP, 80).unwrap().backend)
            .or_insert(0) += 1;
    }
    assert!(after.len() >= 2, "affinity outlived its timeout: {after:?}");
}

fn node_port_service(backends: &[Ipv4Addr], policy: TrafficPolicy) -> ServiceSpec {
    let mut s = cluster_ip("np", VIP, 80, TARGET, backends);
    s.kind = ServiceType::NodePort;
    s.external_traffic_policy = policy;
    for (p, n) in s.ports.iter_mut().zip([NODE_PORT, NODE_PORT]) {
        p.node_port = Some(n);
    }
    s
}

#[test]
fn node_ports_serve_the_outside_with_cluster_and_local_policy() {
    let lab = lab(3, 1);
    let _servers = serve_all(lab.nodes.iter().map(|n| &n.pods[0]));
    // Backends on node2 and node3 only: node1 has none of its own.
    let ips = [lab.nodes[1].pods[0].ip, lab.nodes[2].pods[0].ip];
    apply(&lab, vec![node_port_service(&ips, TrafficPolicy::Cluster)]);
    for i in 0..3 {
        wait_front_ends(&lab, i, 4);
    }
    let outside = lab.outside_ns();
    let node1 = lab.nodes[0].ip();
    let mut seen = BTreeMap::new();
    for _ in 0..30 {
        let a = ask_tcp(outside, node1, NODE_PORT)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.agent_log(0)));
        // Cluster policy, remote backend: it sees node1, so its reply comes back here.
        assert_eq!(a.client, node1);
        *seen.entry(a.backend).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let u = ask_udp(outside, node1, NODE_PORT).unwrap();
    assert_eq!(u.client, node1);
    // On a node with a backend of its own the local one may be picked: the client's
    // address is then kept as it is.
    let node2 = lab.nodes[1].ip();
    let local = (0..30)
        .map(|_| ask_tcp(outside, node2, NODE_PORT).unwrap())
        .find(|a| a.backend == ips[0])
        .expect("node2's own backend was never picked");
    assert_eq!(local.client, OUTSIDE_IP);

    apply(&lab, vec![node_port_service(&ips, TrafficPolicy::Local)]);
    for i in 0..3 {
        wait_for("the Local policy", APPLIED_WITHIN, || {
            lab.nodes[i].pinned().is_ok_and(|p| {
                p.service_table()
                    .services
                    .iter()
                    .filter(|(k, _)| k.port == NODE_PORT.to_be_bytes())
                    .all(|(_, s)| s.flags & netpath_common::SVC_SNAT_REMOTE == 0)
            })
        });
    }
    for _ in 0..10 {
        let a = ask_tcp(outside, node2, NODE_PORT).unwrap();
        assert_eq!(
            (a.backend, a.client),
            (ips[0], OUTSIDE_IP),
            "Local: own backend, client kept"
        );
    }
    // node1 has no backend of its own: refused at once instead of sent elsewhere.
    let took = tcp_refused(outside, node1, NODE_PORT).unwrap();
    assert!(took < Duration::from_millis(500), "{took:?}");
    udp_refused(outside, node1, NODE_PORT).unwrap();
    assert!(counter_of(&lab, 0, Program::FromUnderlay, Reason::DropSvcNoBackend) >= 2);
}

#[test]
fn an_agent_killed_under_a_stream_through_a_service_resets_nothing_and_cleans_up_after() {
    let mut cfg = netpath_lab::lab::LabConfig::default_spec(1).unwrap();
    cfg.keep_pins = true;
    let mut lab = netpath_lab::lab_of(&cfg);
    let backend = &lab.nodes[2].pods[0];
    let client = &lab.nodes[0].pods[0];
    let mut svc = cluster_ip("bulk", VIP, 80, STREAM, &[backend.ip]);
    svc.ports.truncate(1);
    apply(
        &lab,
        vec![
            svc,
            cluster_ip(
                "other",
                Ipv4Addr::new(10, 96, 0, 11),
                80,
                TARGET,
                &[backend.ip],
            ),
        ],
    );
    wait_front_ends(&lab, 0, 3);
    let stream = check::stream_via(
        client.ns.path(),
        backend.ns.path(),
        SocketAddrV4::new(VIP, 80),
        STREAM,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    lab.kill_agent(0);
    // A service removed while the agent is down is gone once it is back.
    let mut svc = cluster_ip("bulk", VIP, 80, STREAM, &[lab.nodes[2].pods[0].ip]);
    svc.ports.truncate(1);
    apply(&lab, vec![svc]);
    std::thread::sleep(Duration::from_millis(500));
    lab.start_agent(0, &cfg).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stats = stream
        .finish()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.agent_log(0)));
    assert!(stats.max_gap < Duration::from_secs(2), "{stats:?}");
    wait_front_ends(&lab, 0, 1);
    let table = lab.nodes[0].pinned().unwrap().service_table();
    assert_eq!(table.services.len(), 1, "{table:?}");
    assert!(table
        .backends
        .keys()
        .all(|k| k.service.addr == VIP.octets()));
}

#[test]
fn a_nodes_own_processes_reach_a_cluster_ip_translated_at_the_socket() {
    let lab = lab(3, 2);
    let _servers = serve_all(lab.nodes.iter().map(|n| &n.pods[0]));
    let ips: Vec<Ipv4Addr> = lab.nodes.iter().map(|n| n.pods[0].ip).collect();
    apply(&lab, vec![cluster_ip("web", VIP, 80, TARGET, &ips)]);
    for (i, node) in lab.nodes.iter().enumerate() {
        wait_front_ends(&lab, i, 2);
        let mut seen = BTreeMap::new();
        for _ in 0..30 {
            // The peer check inside: the process's socket shows the front end.
            let a = ask_tcp(node.ns.path(), VIP, 80)
                .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", node.name, lab.agent_log(i)));
            assert_eq!(
                a.client,
                node.ip(),
                "{}: the backend sees the node",
                node.name
            );
            *seen.entry(a.backend).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3, "{}: {seen:?}", node.name);
        // UDP answers come from the front end, as the process asked.
        let u = ask_udp(node.ns.path(), VIP, 80)
            .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", node.name, lab.agent_log(i)));
        assert!(ips.contains(&u.backend));
        // Nothing else of the service range leaves the node: the call fails at once.
        assert!(tcp_refused(node.ns.path(), Ipv4Addr::new(10, 96, 0, 99), 80).is_err());
    }
    // A pod keeps its own address as the client, whichever way it is translated.
    let pod = &lab.nodes[0].pods[1];
    assert_eq!(ask_tcp(pod.ns.path(), VIP, 80).unwrap().client, pod.ip);
}

/// Whether this kernel names a socket's network namespace (`SO_NETNS_COOKIE`, 5.14).
fn kernel_names_netns_cookies() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (5, 14)
}

fn service_flows(lab: &Lab, node: usize) -> usize {
    let n = &lab.nodes[node];
    n.pinned()
        .unwrap()
        .fill(&n.pin_dir)
        .unwrap()
        .into_iter()
        .find(|f| f.name == names::SVC_FLOWS)
        .and_then(|f| f.entries)
        .unwrap()
}

#[test]
fn pods_connections_to_a_cluster_ip_are_translated_at_connect_where_the_kernel_names_their_namespace(
) {
    let lab = lab(2, 1);
    let backend = &lab.nodes[1].pods[0];
    let _server = Backend::serve(backend.ns.path(), backend.ip, TARGET).unwrap();
    apply(
        &lab,
        vec![cluster_ip("web", VIP, 80, TARGET, &[backend.ip])],
    );
    wait_front_ends(&lab, 0, 2);
    let client = &lab.nodes[0].pods[0];
    let named = kernel_names_netns_cookies();
    let at_socket = datapath::pods_at_the_socket(&lab.nodes[0].pin_dir).unwrap();
    assert_eq!(
        at_socket.contains(&client.ip),
        named,
        "pods registered for socket translation: {at_socket:?}"
    );
    let before = service_flows(&lab, 0);
    for _ in 0..20 {
        // The peer check inside: the socket shows the front end either way.
        let a = ask_tcp(client.ns.path(), VIP, 80).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((a.backend, a.client), (backend.ip, client.ip));
    }
    let after = service_flows(&lab, 0);
    if named {
        assert!(
            after <= before,
            "translated at connect(), yet per-packet flows grew from {before} to {after}"
        );
    } else {
        assert!(after > before, "no per-packet flow for 20 connections");
    }
    // `netpath status` (and so /metrics, from the same fill) shows the socket maps.
    let doc = netpath_lab::status_json(&lab, 0);
    let fill = |map: &str| {
        doc["maps"]
            .as_array()
            .and_then(|maps| maps.iter().find(|m| m["name"] == map))
            .and_then(|m| m["entries"].as_u64())
            .unwrap_or_else(|| panic!("no {map} in the status: {doc}"))
    };
    assert_eq!(fill(names::POD_NETNS), at_socket.len() as u64, "{doc}");
    if named {
        assert!(fill(names::SOCK_REV) >= 20, "{doc}");
    }
    // A pod that is gone is forgotten by the socket programs.
    let node = &lab.nodes[0];
    netpath_lab::lab::in_runtime(node.ns.path(), || {
        netpath::endpoint::detach(&node.pin_dir, &client.name, "eth0", Some(client.ip))
    })
    .unwrap();
    assert!(!datapath::pods_at_the_socket(&lab.nodes[0].pin_dir)
        .unwrap()
        .contains(&client.ip));
}

#[test]
fn a_bad_service_record_is_left_out_by_name_and_the_rest_of_the_edit_applies() {
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
    const ADDED: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
    let lab = lab(2, 1);
    let backend = &lab.nodes[1].pods[0];
    let _server = Backend::serve(backend.ns.path(), backend.ip, TARGET).unwrap();
    let web = cluster_ip("web", VIP, 80, TARGET, &[backend.ip]);
    let api = cluster_ip("api", OTHER, 80, TARGET, &[backend.ip]);
    let spec = apply(&lab, vec![web, api]);
    let client = &lab.nodes[0].pods[0];
    wait_for("both services", APPLIED_WITHIN, || {
        ask_tcp(client.ns.path(), VIP, 80).is_ok() && ask_tcp(client.ns.path(), OTHER, 80).is_ok()
    });
    // One write that breaks `web` (services[0]) and adds a service: the bad record is
    // left out with its field named, the addition and `api` are in force, and the
    // node stays ready (its pods' network works) with the record as a warning.
    let mut with_added = spec.to_draft();
    with_added
        .services
        .push(cluster_ip("added", ADDED, 80, TARGET, &[backend.ip]));
    let text = with_added.validate().unwrap().to_toml();
    for (from, to, field) in [
        (
            "cluster_ip = \"10.96.0.10\"",
            "cluster_ip = \"10.244.1.99\"",
            "services[0].cluster_ip",
        ),
        ("protocol = \"UDP\"", "protocol = \"SCTP\"", "SCTP"),
        ("port = 80\n", "port = 0\n", "services[0].ports[0].port"),
        (
            &format!("address = \"{}\"", backend.ip),
            "address = \"192.0.2.7\"",
            "services[0].endpoints[0].address",
        ),
    ] {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "the edit {from:?} did not apply to:\n{text}");
        lab.write_spec_text(&bad).unwrap();
        wait_for("the record left out", APPLIED_WITHIN, || {
            let s = netpath_lab::state(&lab, 0);
            s.left_out
                .iter()
                .any(|n| n.contains("web") && n.contains(field))
        });
        let state = netpath_lab::state(&lab, 0);
        assert_eq!(state.spec_error, None, "the rest of the edit is in force");
        let ready = netpath::health::readiness(Some(&state));
        assert!(ready.ok, "{ready:?}");
        assert!(
            ready.warnings.iter().any(|w| w.contains(field)),
            "{ready:?}"
        );
        let (code, doc) = netpath_lab::status(&lab, 0);
        assert_eq!(code, 0, "status exits 0 while the node is ready: {doc}");
        assert_eq!(doc["ready"]["ok"], true, "{doc}");
        for vip in [OTHER, ADDED] {
            let a = ask_tcp(client.ns.path(), vip, 80).unwrap();
            assert_eq!(a.backend, backend.ip, "{vip} serves");
        }
        // Back to the two good services before the next bad edit.
        lab.write_spec(&spec).unwrap();
        wait_for("nothing left out", APPLIED_WITHIN, || {
            netpath_lab::state(&lab, 0).left_out.is_empty()
        });
    }
    assert_eq!(
        ask_tcp(client.ns.path(), VIP, 80).unwrap().backend,
        backend.ip,
        "the good record is back in force"
    );
}
