//! The IP-in-IP overlay (Calico's): every pod <-> every pod and node <-> pod across
//! subnets with one outer IPv4 header, inner addresses kept on the wire, bulk TCP cut
//! into wire frames intact, and protocol 4 from strangers, with a spoofed inner source
//! or a malformed outer header dropped and counted.
use std::{net::Ipv4Addr, time::Duration};

use netpath::spec::{Backend, Overlay};
use netpath_common::{Program, Reason, RouteMode};
use netpath_lab::{
    assert_model,
    check::Proto,
    counter_of, frame_addr, frame_contains, is_ip_id,
    lab::{generated_spec, Lab, LabConfig, UNDERLAY_MTU},
    lab_of, send_udp_marker, transfer, wait_counter_of, Ipv4Packet, RawSocket,
};

fn ipip_lab(pods: usize) -> Lab {
    let cfg = LabConfig::with_spec(generated_spec(3, Backend::Ipip).unwrap(), pods).unwrap();
    lab_of(&cfg)
}

/// The embedded default (node3 behind the router) with `auto` crossing by IP-in-IP.
fn auto_ipip_lab(pods: usize) -> Lab {
    let mut cfg = LabConfig::default_spec(pods).unwrap();
    cfg.spec = cfg
        .spec
        .with_settings(|s| s.overlay = Some(Overlay::Ipip))
        .unwrap();
    lab_of(&cfg)
}

fn pod_mtu(lab: &Lab, node: usize) -> u32 {
    lab.nodes[node].pods[0]
        .ns
        .run(|| {
            netpath_lab::nl::Nl::new()?
                .link("eth0")
                .map(|l| l.mtu.unwrap_or(0))
        })
        .unwrap()
}

#[test]
fn ipip_backend_connects_three_nodes_across_subnets() {
    let lab = ipip_lab(2);
    assert_model(&lab, &[Proto::Tcp, Proto::Udp, Proto::Icmp]);
    for n in 0..3 {
        let count = |p, r| counter_of(&lab, n, p, r);
        assert!(count(Program::FromPod, Reason::IpipEncapsulated) > 0);
        assert!(
            count(Program::ToUnderlay, Reason::IpipEncapsulated) > 0,
            "node-originated"
        );
        assert!(count(Program::FromUnderlay, Reason::IpipDecapsulated) > 0);
        for (p, r) in [
            (Program::FromPod, Reason::Encapsulated),
            (Program::FromPod, Reason::DirectRouted),
            (Program::FromUnderlay, Reason::DropIpipUnknownPeer),
            (Program::FromUnderlay, Reason::DropIpipSpoofed),
            (Program::FromUnderlay, Reason::DropIpipMalformed),
        ] {
            assert_eq!(count(p, r), 0, "node{}: {r:?}", n + 1);
        }
    }
    assert_eq!(pod_mtu(&lab, 0), 1480, "underlay MTU - 20");
}

#[test]
fn auto_over_ipip_is_plain_ip_within_a_subnet_and_protocol_4_across_with_inner_addresses_kept() {
    let lab = auto_ipip_lab(1);
    assert_model(&lab, &[Proto::Tcp, Proto::Udp]);
    let routes = lab.nodes[0].pinned().unwrap().routes().unwrap();
    let mode_to = |third: u8| {
        let (_, _, r) = routes
            .iter()
            .find(|(net, _, _)| net.octets() == [10, 244, third, 0])
            .unwrap();
        RouteMode::from_u32(r.mode).unwrap()
    };
    assert_eq!(mode_to(2), RouteMode::Direct, "node2 shares node1's subnet");
    assert_eq!(mode_to(3), RouteMode::Ipip, "node3 is behind the router");

    let pod1 = &lab.nodes[0].pods[0];
    // Across the router: one outer header node1 -> node3, the pods' own addresses inside.
    let pod3 = &lab.nodes[2].pods[0];
    let wire3 = RawSocket::open(lab.nodes[2].ns.path(), "eth0").unwrap();
    send_udp_marker(pod1.ns.path(), pod3.ip, b"np-ipip-across");
    let f = wire3
        .wait_for(Duration::from_secs(3), |f| {
            frame_contains(f, b"np-ipip-across")
        })
        .expect("the datagram crossed node3's wire");
    assert_eq!((f[14], f[23]), (0x45, 4), "outer IPv4, protocol 4");
    assert_eq!(frame_addr(&f, 26), lab.nodes[0].ip(), "outer source: node1");
    assert_eq!(
        frame_addr(&f, 30),
        lab.nodes[2].ip(),
        "outer destination: node3"
    );
    assert_eq!(f[43], 17, "inner UDP");
    assert_eq!(
        (frame_addr(&f, 46), frame_addr(&f, 50)),
        (pod1.ip, pod3.ip),
        "inner: pod to pod"
    );

    // Within the subnet: no encapsulation at all.
    let pod2 = &lab.nodes[1].pods[0];
    let wire2 = RawSocket::open(lab.nodes[1].ns.path(), "eth0").unwrap();
    send_udp_marker(pod1.ns.path(), pod2.ip, b"np-ipip-within");
    let f = wire2
        .wait_for(Duration::from_secs(3), |f| {
            frame_contains(f, b"np-ipip-within")
        })
        .expect("the datagram reached node2's wire");
    assert_eq!(f[23], 17, "plain UDP on the wire");
    assert_eq!((frame_addr(&f, 26), frame_addr(&f, 30)), (pod1.ip, pod2.ip));
    assert!(counter_of(&lab, 0, Program::FromPod, Reason::DirectRouted) > 0);
    assert!(counter_of(&lab, 0, Program::FromPod, Reason::IpipEncapsulated) > 0);
    assert_eq!(
        counter_of(&lab, 0, Program::FromPod, Reason::Encapsulated),
        0,
        "no VXLAN anywhere"
    );
}

/// The TCP payload length of an IP-in-IP frame carrying TCP/IPv4; `None` otherwise.
fn ipip_tcp_payload(frame: &[u8]) -> Option<usize> {
    let be16 = |i: usize| Some(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]) as usize);
    if be16(12)? != 0x0800 || *frame.get(14)? != 0x45 || *frame.get(23)? != 4 {
        return None;
    }
    let ip = 34;
    if *frame.get(ip + 9)? != 6 {
        return None;
    }
    let ihl = (*frame.get(ip)? as usize & 0xf) * 4;
    let doff = (*frame.get(ip + ihl + 12)? as usize >> 4) * 4;
    be16(ip + 2)?.checked_sub(ihl + doff)
}

#[test]
fn bulk_tcp_over_ipip_across_the_router_arrives_intact_in_full_sized_frames() {
    const TOTAL: usize = 32 << 20;
    let lab = ipip_lab(1);
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[2].pods[0]);
    let sock = RawSocket::open(lab.nodes[2].ns.path(), "eth0").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let before = counter_of(&lab, 0, Program::FromPod, Reason::IpipEncapsulated);
    let (secs, (frames, max_payload)) = std::thread::scope(|s| {
        let capture = s.spawn(|| {
            let (mut frames, mut max_payload) = (0usize, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(p) = sock
                    .recv(Duration::from_millis(50))
                    .and_then(|f| ipip_tcp_payload(&f))
                {
                    frames += 1;
                    max_payload = max_payload.max(p);
                }
            }
            (frames, max_payload)
        });
        let secs = transfer::transfer_intact(a.ns.path(), b.ns.path(), b.ip, 9100, TOTAL)
            .expect("intact transfer");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (secs, capture.join().unwrap())
    });
    let encapsulated = counter_of(&lab, 0, Program::FromPod, Reason::IpipEncapsulated) - before;
    eprintln!(
        "32 MiB pod->pod over eBPF IPIP across the router in {secs:.2} s = {:.2} Gbit/s; \
         {encapsulated} packets encapsulated, {frames} IPIP frames at node3 (most TCP payload {max_payload} B)",
        TOTAL as f64 * 8.0 / secs / 1e9
    );
    assert!(frames > 1000, "only {frames} IPIP frames captured at node3");
    // GSO survived encapsulation, and the segments keep the pod's MSS.
    assert!(
        (encapsulated as usize) < TOTAL / 1428 / 2,
        "{encapsulated} encapsulations: GSO was lost"
    );
    let mss = lab.spec.pod_mtu(UNDERLAY_MTU) as usize - 20 - 20 - 12;
    assert_eq!(
        max_payload, mss,
        "segments carry {max_payload} B of TCP payload, the pod MSS is {mss}"
    );
}

#[test]
fn ipip_from_strangers_with_spoofed_sources_or_malformed_outer_headers_is_dropped() {
    let lab = ipip_lab(1);
    let target = &lab.nodes[0];
    let pod = &target.pods[0];
    let rx = RawSocket::open(pod.ns.path(), "eth0").unwrap();
    let node2_ns = lab.nodes[1].ns.path();
    let node2 = lab.nodes[1].ip();
    let from_node2_pods = Ipv4Addr::new(10, 244, 2, 77);
    let router = Ipv4Addr::new(192, 168, 56, 1);
    let wrap = |outer_src, inner_src, id| {
        let inner = Ipv4Packet::udp(inner_src, pod.ip, id, b"tunnelled");
        Ipv4Packet::ipip(outer_src, target.ip(), id, &inner)
    };
    let mut with_options = wrap(node2, from_node2_pods, 0x7204);
    with_options.options = vec![1, 1, 1, 0];
    let mut fragment = wrap(node2, from_node2_pods, 0x7205);
    fragment.frag = (true, 0);
    let mut later_fragment = wrap(node2, from_node2_pods, 0x7206);
    later_fragment.frag = (false, 8);
    let mut bad_inner = wrap(node2, from_node2_pods, 0x7207);
    bad_inner.payload[0] = 0x65; // not IPv4
    let cases = [
        // The fabric router is on the underlay but is not a node.
        (
            "stranger",
            lab.fabric_ns(),
            wrap(router, from_node2_pods, 0x7201),
            Reason::DropIpipUnknownPeer,
        ),
        (
            "spoofed inner source",
            node2_ns,
            wrap(node2, Ipv4Addr::new(10, 244, 1, 200), 0x7202),
            Reason::DropIpipSpoofed,
        ),
        (
            "another node's pods as inner source",
            node2_ns,
            wrap(node2, Ipv4Addr::new(10, 244, 3, 9), 0x7203),
            Reason::DropIpipSpoofed,
        ),
        (
            "outer options",
            node2_ns,
            with_options,
            Reason::DropIpipMalformed,
        ),
        (
            "first fragment",
            node2_ns,
            fragment,
            Reason::DropIpipMalformed,
        ),
        (
            "later fragment",
            node2_ns,
            later_fragment,
            Reason::DropIpipMalformed,
        ),
        (
            "inner not IPv4",
            node2_ns,
            bad_inner,
            Reason::DropIpipMalformed,
        ),
    ];
    for (what, ns, packet, reason) in cases {
        let before = counter_of(&lab, 0, Program::FromUnderlay, reason);
        packet.send_from(ns).unwrap();
        let after = wait_counter_of(&lab, 0, Program::FromUnderlay, reason, before, 1);
        assert!(after > before, "{what}: {reason:?} not counted");
        assert!(
            rx.wait_for(Duration::from_millis(300), |f| is_ip_id(f, packet.id))
                .is_none(),
            "{what}: packet reached the pod"
        );
    }
    // The same packet from the real node, with its own pod as source, is delivered.
    let before = counter_of(&lab, 0, Program::FromUnderlay, Reason::IpipDecapsulated);
    wrap(node2, from_node2_pods, 0x7208)
        .send_from(node2_ns)
        .unwrap();
    assert!(
        rx.wait_for(Duration::from_secs(2), |f| is_ip_id(f, 0x7208))
            .is_some(),
        "legit IP-in-IP delivered"
    );
    assert!(counter_of(&lab, 0, Program::FromUnderlay, Reason::IpipDecapsulated) > before);
}

/// Needs a kernel with IP-in-IP (CONFIG_NET_IPIP): this host's 6.18 has none, so
/// `cargo xtask test` runs it in the VMs of `--kernels` and says so (xtask/src/suite.rs).
#[test]
fn kernel_ipip_peer_configured_like_calico_interoperates_both_ways() {
    // node2 is a plain kernel node with an ipip device and onlink routes (Calico's and
    // flannel's ipip backend by hand), on node1's subnet; node3 is netpath behind the
    // router, so the kernel node's packets to it are routed too.
    let mut cfg = LabConfig::with_spec(generated_spec(3, Backend::Ipip).unwrap(), 2).unwrap();
    cfg.kinds = vec![(1, netpath_lab::lab::NodeKind::KernelIpip)];
    let lab = lab_of(&cfg);
    assert_model(&lab, &[Proto::Tcp, Proto::Udp, Proto::Icmp]);
    // The kernel's IP-in-IP was unwrapped by netpath on both netpath nodes, and
    // netpath's was accepted by the kernel (the pod checks above passed).
    for n in [0, 2] {
        assert!(counter_of(&lab, n, Program::FromUnderlay, Reason::IpipDecapsulated) > 0);
        assert_eq!(
            counter_of(&lab, n, Program::FromUnderlay, Reason::DropIpipSpoofed),
            0
        );
    }
}
