//! Encryption between nodes (WireGuard, netpath's user-space device on this host):
//! pods and nodes reach every pod as before, and on the wire between nodes only
//! WireGuard's datagrams carry them — no pod address in clear, whatever the backend.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::Duration,
};

use netpath::{
    spec::{Backend, Encryption},
    wireguard::config::{DeviceStats, Paths},
};
use netpath_common::{Program, Reason, RouteMode};
use netpath_lab::{
    assert_model,
    check::Proto,
    counter_of,
    lab::{generated_spec, Lab, LabConfig},
    lab_of, send_udp_marker, status_json, transfer, wait_for, RawSocket,
};

const WG_PORT: u16 = 51820;

fn wg_config(backend: Backend, pods: usize) -> LabConfig {
    let spec = generated_spec(2, backend)
        .unwrap()
        .with_settings(|s| s.encryption = Encryption::Wireguard)
        .unwrap();
    LabConfig::with_spec(spec, pods).unwrap()
}

/// Two nodes, encrypted; each agent takes the WireGuard it would by default.
fn wg_lab(backend: Backend, pods: usize) -> Lab {
    lab_of(&wg_config(backend, pods))
}

/// Every node on netpath's user-space device, even where the kernel has WireGuard.
fn user_space(mut cfg: LabConfig) -> LabConfig {
    let flags = vec!["--wireguard".to_string(), "user-space".to_string()];
    cfg.agent_args = (0..cfg.spec.nodes.len())
        .map(|i| (i, flags.clone()))
        .collect();
    cfg
}

/// A frame on the underlay: its outer IPv4 addresses and, for UDP, its ports.
type Outer = (Ipv4Addr, Ipv4Addr, Option<(u16, u16)>);

fn outer(frame: &[u8]) -> Option<Outer> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..34)?;
    let (src, dst) = (
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
    );
    let ihl = (ip[0] as usize & 0xf) * 4;
    let ports = (ip[9] == 17).then(|| {
        let u = frame.get(14 + ihl..14 + ihl + 4)?;
        Some((
            u16::from_be_bytes([u[0], u[1]]),
            u16::from_be_bytes([u[2], u[3]]),
        ))
    });
    Some((src, dst, ports.flatten()))
}

/// Captures node 2's underlay while `work` runs: (WireGuard datagrams, frames with a
/// pod address in clear as outer source or destination).
fn captured(lab: &Lab, work: impl FnOnce()) -> (usize, Vec<String>) {
    let pods = lab.spec.settings.cluster_cidr;
    let sock = RawSocket::open(lab.nodes[1].ns.path(), "eth0").unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let capture = s.spawn(|| {
            let (mut wg, mut clear) = (0usize, Vec::new());
            while !stop.load(Relaxed) {
                let Some((src, dst, ports)) =
                    sock.recv(Duration::from_millis(50)).and_then(|f| outer(&f))
                else {
                    continue;
                };
                if pods.contains(src) || pods.contains(dst) {
                    clear.push(format!("{src} -> {dst} {ports:?}"));
                } else if ports.is_some_and(|(a, b)| a == WG_PORT || b == WG_PORT) {
                    wg += 1;
                }
            }
            (wg, clear)
        });
        work();
        stop.store(true, Relaxed);
        capture.join().unwrap()
    })
}

fn pods_and_nodes_reach_every_pod_and_nothing_crosses_in_clear(backend: Backend) {
    let lab = wg_lab(backend, 1);
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    let (wg, clear) = captured(&lab, || {
        assert_model(&lab, &[Proto::Tcp, Proto::Udp, Proto::Icmp]);
        transfer::transfer_intact(a.ns.path(), b.ns.path(), b.ip, 9100, 4 << 20)
            .expect("an intact transfer through WireGuard");
    });
    eprintln!(
        "{backend:?}: {wg} WireGuard datagrams on node2's underlay, {} frames with a pod address in clear",
        clear.len()
    );
    assert!(
        clear.is_empty(),
        "pod addresses in clear on the wire ({}): {:?}",
        clear.len(),
        &clear[..clear.len().min(10)]
    );
    assert!(
        wg > 100,
        "only {wg} WireGuard datagrams carried the traffic"
    );
    let (_, metrics) = netpath_lab::observe::http_wait(
        lab.nodes[1].ns.path(),
        "127.0.0.1:9970".parse().unwrap(),
        "/metrics",
        Duration::from_secs(5),
        |_, body| {
            body.lines().any(|l| {
                l.starts_with("netpath_wireguard_received_bytes_total{")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(4e6)
            })
        },
    )
    .expect("node2's metrics count the 4 MiB it received through WireGuard");
    assert!(
        metrics.contains("netpath_wireguard_handshake_age_seconds{"),
        "{metrics}"
    );
    for n in 0..2 {
        let count = |p, r| counter_of(&lab, n, p, r);
        eprintln!(
            "node {n}: to-wireguard {}, from-wireguard {}",
            count(Program::FromPod, Reason::ToWireguard),
            count(Program::FromWireguard, Reason::FromWireguard)
        );
        assert!(count(Program::FromPod, Reason::ToWireguard) > 0, "node {n}");
        assert!(
            count(Program::FromWireguard, Reason::FromWireguard) > 0,
            "node {n}"
        );
        for (p, r) in [
            (Program::FromPod, Reason::DirectRouted),
            (Program::FromPod, Reason::Encapsulated),
            (Program::FromPod, Reason::DropNoKey),
        ] {
            assert_eq!(count(p, r), 0, "node {n}: {p:?} {r:?}");
        }
    }
}

#[test]
fn direct_backend_encrypted() {
    pods_and_nodes_reach_every_pod_and_nothing_crosses_in_clear(Backend::Direct);
}

#[test]
fn vxlan_backend_encrypted() {
    pods_and_nodes_reach_every_pod_and_nothing_crosses_in_clear(Backend::Vxlan);
}

fn stats(lab: &Lab, node: usize) -> DeviceStats {
    let path = Paths::under(&lab.nodes[node].state_dir()).stats;
    serde_json::from_slice(&std::fs::read(&path).expect("the device's stats")).unwrap()
}

#[test]
fn a_node_without_a_key_gets_nothing_and_nothing_in_clear() {
    let lab = wg_lab(Backend::Direct, 1);
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    // node2's key taken out of the spec: node1 has no way to reach its pods privately.
    let mut d = lab.spec.to_draft();
    d.nodes[1].wireguard_key = None;
    lab.write_spec(&d.validate().unwrap()).unwrap();
    let cidr = lab.nodes[1].spec.pod_cidr;
    wait_for(
        "node1 routes node2's pods to no key",
        Duration::from_secs(10),
        || {
            lab.nodes[0]
                .pinned()
                .unwrap()
                .routes()
                .unwrap()
                .iter()
                .any(|(net, prefix, r)| {
                    *net == cidr.addr && *prefix == cidr.prefix && r.mode == RouteMode::NoKey as u32
                })
        },
    );
    let before = counter_of(&lab, 0, Program::FromPod, Reason::DropNoKey);
    let (_, clear) = captured(&lab, || {
        for _ in 0..20 {
            send_udp_marker(a.ns.path(), b.ip, b"no key, no packet");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            netpath_lab::check::tcp(a.ns.path(), b.ns.path(), b.ip).is_err(),
            "a connection to a keyless node's pod went through"
        );
    });
    assert!(clear.is_empty(), "sent in clear: {clear:?}");
    let dropped = counter_of(&lab, 0, Program::FromPod, Reason::DropNoKey) - before;
    assert!(dropped >= 20, "only {dropped} drop-no-key");
    let problems = status_json(&lab, 0)["agent"]["problems"].to_string();
    assert!(problems.contains("without a WireGuard key"), "{problems}");
    let (_, metrics) = netpath_lab::observe::http_wait(
        lab.nodes[0].ns.path(),
        "127.0.0.1:9970".parse().unwrap(),
        "/metrics",
        Duration::from_secs(5),
        |_, body| body.contains("netpath_wireguard_nodes_without_key 1"),
    )
    .unwrap();
    assert!(
        metrics.contains("netpath_wireguard_peers 0"),
        "node1 has no peer with a key: {metrics}"
    );
}

#[test]
fn a_strangers_handshake_and_garbage_get_nothing() {
    // The user-space device's own counts (the kernel's counts no refusals).
    let lab = lab_of(&user_space(wg_config(Backend::Direct, 1)));
    let target = stats(&lab, 1).public_key.expect("node2's key");
    let stranger = boringtun::x25519::StaticSecret::from([7u8; 32]);
    let mut tunn = boringtun::noise::Tunn::new(
        stranger,
        boringtun::x25519::PublicKey::from(target.0),
        None,
        None,
        1,
        None,
    );
    let mut buf = vec![0u8; 2048];
    let init = match tunn.format_handshake_initiation(&mut buf, false) {
        boringtun::noise::TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("no handshake: {other:?}"),
    };
    let node2 = SocketAddrV4::new(lab.nodes[1].spec.ip(), WG_PORT);
    let before = stats(&lab, 1).refused;
    let answered = netpath_lab::netns::run_in(lab.nodes[0].ns.path(), || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut answers = 0;
        for datagram in [
            init.clone(),
            vec![1, 0, 0, 0, 9, 9, 9],
            vec![0xff; 200],
            vec![4; 32],
        ] {
            sock.send_to(&datagram, node2)?;
            let mut b = [0u8; 2048];
            if sock.recv_from(&mut b).is_ok() {
                answers += 1;
            }
        }
        Ok(answers)
    })
    .unwrap();
    assert_eq!(answered, 0, "a stranger got an answer");
    wait_for("the refusals counted", Duration::from_secs(3), || {
        stats(&lab, 1).refused >= before + 4
    });
    // The cluster's own peers still talk.
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    transfer::transfer_intact(a.ns.path(), b.ns.path(), b.ip, 9300, 1 << 20)
        .expect("peers still connect");
}

#[test]
fn an_agent_killed_and_restarted_does_not_cut_an_encrypted_stream() {
    // The user-space device is the one a process serves (the kernel's lives in the
    // kernel whatever happens to the agent).
    let cfg = user_space(wg_config(Backend::Direct, 1));
    let mut lab = lab_of(&cfg);
    let device =
        |lab: &Lab| std::fs::read_to_string(Paths::under(&lab.nodes[1].state_dir()).pid).unwrap();
    let pid = device(&lab);
    let (a, b) = (
        lab.nodes[0].pods[0].ns.path().to_path_buf(),
        lab.nodes[1].pods[0].ns.path().to_path_buf(),
    );
    let b_ip = lab.nodes[1].pods[0].ip;
    std::thread::scope(|s| {
        let stream = s.spawn(|| transfer::transfer_intact(&a, &b, b_ip, 9200, 48 << 20));
        std::thread::sleep(Duration::from_millis(300));
        lab.kill_agent(1);
        lab.start_agent(1, &cfg).unwrap();
        stream
            .join()
            .unwrap()
            .expect("the stream survived the agent's kill -9 and restart");
    });
    assert_eq!(
        device(&lab),
        pid,
        "the restarted agent kept the running device"
    );
    assert!(stats(&lab, 1)
        .peers
        .iter()
        .all(|p| p.handshake_age_ms.is_some()));
}

/// Node 1 on the kernel's WireGuard, node 2 on netpath's user-space device: one wire
/// format, so they talk both ways. Needs a kernel with WireGuard (the 6.12 VM).
#[test]
fn kernel_wireguard_and_user_space_nodes_talk_both_ways() {
    let mut cfg = wg_config(Backend::Direct, 1);
    cfg.agent_args = vec![
        (0, vec!["--wireguard".into(), "kernel".into()]),
        (1, vec!["--wireguard".into(), "user-space".into()]),
    ];
    let lab = lab_of(&cfg);
    let implementation =
        |n: usize| status_json(&lab, n)["agent"]["wireguard"]["implementation"].clone();
    assert_eq!(implementation(0), "kernel");
    assert_eq!(implementation(1), "user-space");
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    let (wg, clear) = captured(&lab, || {
        assert_model(&lab, &[Proto::Tcp, Proto::Udp, Proto::Icmp]);
        transfer::transfer_intact(a.ns.path(), b.ns.path(), b.ip, 9100, 4 << 20)
            .expect("kernel -> user space");
        transfer::transfer_intact(b.ns.path(), a.ns.path(), a.ip, 9101, 4 << 20)
            .expect("user space -> kernel");
    });
    assert!(clear.is_empty(), "in clear: {clear:?}");
    assert!(wg > 100, "only {wg} WireGuard datagrams");
    wait_for(
        "the kernel's device reports its handshake",
        Duration::from_secs(5),
        || {
            status_json(&lab, 0)["agent"]["wireguard"]["stats"]["peers"][0]["handshake_age_ms"]
                .is_u64()
        },
    );
}

/// With etcd each node publishes its own key (on its lease): nothing to copy by hand.
#[test]
fn nodes_in_etcd_publish_their_keys_and_talk_encrypted() {
    let mut cfg = wg_config(Backend::Direct, 1);
    cfg.store = netpath_lab::lab::LabStore::Etcd { tls: false };
    let lab = lab_of(&cfg);
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    let (wg, clear) = captured(&lab, || {
        assert_model(&lab, &[Proto::Tcp, Proto::Udp]);
        transfer::transfer_intact(a.ns.path(), b.ns.path(), b.ip, 9100, 1 << 20)
            .expect("an intact transfer through WireGuard");
    });
    assert!(clear.is_empty(), "in clear: {clear:?}");
    assert!(wg > 20, "only {wg} WireGuard datagrams");
    // Each agent's key is the one its peer was given.
    let key = |n: usize| status_json(&lab, n)["agent"]["wireguard"]["public_key"].clone();
    let peer_of = |n: usize| {
        status_json(&lab, n)["agent"]["wireguard"]["stats"]["peers"][0]["public_key"].clone()
    };
    assert_eq!(peer_of(0), key(1));
    assert_eq!(peer_of(1), key(0));
}

/// A ClusterIP and a node port whose only backend is on the other node: the client
/// pod's address kept through WireGuard, and a node port's client outside the
/// cluster answered through the node it asked (the backend's reply comes back to
/// that node encrypted and leaves it translated).
#[test]
fn services_reach_a_backend_on_another_node_through_wireguard() {
    use netpath::spec::{ServiceType, TrafficPolicy};
    use netpath_lab::service::{ask_tcp, cluster_ip, Backend as Served};
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
    const NODE_PORT: u16 = 30080;
    let lab = wg_lab(Backend::Direct, 1);
    let (client, server) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    let _served = Served::serve(server.ns.path(), server.ip, 8080).unwrap();
    let mut svc = cluster_ip("web", VIP, 80, 8080, &[server.ip]);
    svc.kind = ServiceType::NodePort;
    svc.external_traffic_policy = TrafficPolicy::Cluster;
    for p in &mut svc.ports {
        p.node_port = Some(NODE_PORT);
    }
    let mut d = lab.spec.to_draft();
    d.services = vec![svc];
    lab.write_spec(&d.validate().unwrap()).unwrap();
    for n in 0..2 {
        wait_for("the service maps", Duration::from_secs(5), || {
            lab.nodes[n]
                .pinned()
                .and_then(|p| p.settings())
                .is_ok_and(|s| s.services >= 2)
        });
    }
    let node1 = lab.nodes[0].ip();
    let (_, clear) = captured(&lab, || {
        for _ in 0..5 {
            let a = ask_tcp(client.ns.path(), VIP, 80).expect("ClusterIP through WireGuard");
            assert_eq!((a.backend, a.client), (server.ip, client.ip));
            let a = ask_tcp(lab.outside_ns(), node1, NODE_PORT).unwrap_or_else(|e| {
                panic!("node port through WireGuard: {e:#}\n{}", lab.agent_log(0))
            });
            assert_eq!((a.backend, a.client), (server.ip, node1));
        }
    });
    assert!(clear.is_empty(), "in clear: {clear:?}");
}
