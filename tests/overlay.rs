//! The VXLAN overlay under load and under attack: a bulk transfer that the kernel must
//! segment arrives intact, and tunnel packets from strangers, with a foreign VNI or a
//! spoofed inner source are dropped and counted.
use std::{
    net::{Ipv4Addr, UdpSocket},
    time::Duration,
};

use netpath::spec::{Backend, VxlanDevice};
use netpath_common::{Program, Reason};
use netpath_lab::{
    counter_of, is_ip_id, require_root, run_in_ns, vxlan_payload, wait_counter_of, RawSocket,
};
use netpath_lab::{
    lab::{generated_spec, Fabric, Lab, LabConfig, Pod, UNDERLAY_MTU},
    netns, transfer,
};

fn vxlan_lab(nodes: usize) -> Lab {
    require_root();
    let cfg = LabConfig::with_spec(generated_spec(nodes, Backend::Vxlan).unwrap(), 1).unwrap();
    Lab::up(&cfg).expect("bring up lab")
}

/// Sends `total` bytes from pod `a` to pod `b` over TCP and asserts every byte
/// arrived unchanged; returns the seconds it took.
fn transfer_intact(a: &Pod, b: &Pod, total: usize) -> f64 {
    transfer::transfer_intact(a.ns.path(), b.ns.path(), b.ip, 9100, total).expect("intact transfer")
}

#[test]
fn bulk_tcp_over_vxlan_is_segmented_by_the_kernel_and_arrives_intact() {
    const TOTAL: usize = 128 << 20;
    let lab = vxlan_lab(2);
    // Without tunnel segmentation offload on the underlay, the kernel must cut each
    // encapsulated GSO super-packet into real VXLAN frames at node1's eth0.
    run_in_ns(
        lab.nodes[0].ns.path(),
        &[
            "ethtool",
            "-K",
            "eth0",
            "tx-udp_tnl-segmentation",
            "off",
            "tx-udp_tnl-csum-segmentation",
            "off",
        ],
    )
    .unwrap();
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
    let encap_before = counter_of(&lab, 0, Program::FromPod, Reason::Encapsulated);
    let secs = transfer_intact(a, b, TOTAL);
    let encapsulated = counter_of(&lab, 0, Program::FromPod, Reason::Encapsulated) - encap_before;
    let wire_frames = TOTAL as u64 / 1398;
    eprintln!(
        "128 MiB pod->pod over eBPF VXLAN in {secs:.2} s = {:.2} Gbit/s; {encapsulated} packets encapsulated for ~{wire_frames} wire frames",
        TOTAL as f64 * 8.0 / secs / 1e9
    );
    // GSO survived encapsulation: the program saw super-packets, not wire-sized frames.
    assert!(
        encapsulated < wire_frames / 2,
        "{encapsulated} encapsulations: GSO was lost"
    );
}

/// The TCP payload length of a VXLAN frame (outer IPv4 without options) carrying
/// TCP/IPv4 to UDP port `port`; `None` for anything else.
fn vxlan_tcp_payload(frame: &[u8], port: u16) -> Option<usize> {
    let be16 = |i: usize| Some(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]) as usize);
    if be16(12)? != 0x0800 || *frame.get(14)? != 0x45 || *frame.get(23)? != 17 {
        return None;
    }
    if be16(36)? != port as usize {
        return None;
    }
    // outer eth 14 + ip 20 + udp 8 + vxlan 8 + inner eth 14
    let ip = 64;
    if be16(ip - 2)? != 0x0800 || *frame.get(ip + 9)? != 6 {
        return None;
    }
    let ihl = (*frame.get(ip)? as usize & 0xf) * 4;
    let total = be16(ip + 2)?;
    let doff = (*frame.get(ip + ihl + 12)? as usize >> 4) * 4;
    total.checked_sub(ihl + doff)
}

/// What a routed transfer looked like on node3's underlay.
struct Routed {
    frames: usize,
    max_payload: usize,
    /// The largest VXLAN packet seen, outer Ethernet header included.
    biggest: usize,
}

/// The router cut every packet into wire frames carrying the pod's full MSS.
fn assert_cut_at_pod_mss(lab: &Lab, routed: &Routed) {
    // Encapsulation keeps the pod's MSS: before FIXED_GSO the kernel shrank every
    // segment by the 50 encapsulation bytes (1348 instead of 1398 at MTU 1450).
    let mss = lab.spec.pod_mtu(UNDERLAY_MTU) as usize - 20 - 20 - 12;
    assert_eq!(
        routed.max_payload, mss,
        "segments carry {} B of TCP payload, the pod MSS is {mss}",
        routed.max_payload
    );
    assert!(routed.biggest <= UNDERLAY_MTU as usize + 14);
}

/// 64 MiB from node1's pod to node3's pod, checked byte for byte, while node3's eth0
/// is captured. Three nodes: node3 sits behind the fabric router on another subnet,
/// whose forwarding (a bridge device, like most software routers, and like every NIC)
/// cuts each encapsulated GSO packet into wire frames: the overlay as on a real wire.
fn routed_transfer(lab: &Lab) -> Routed {
    const TOTAL: usize = 64 << 20;
    let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[2].pods[0]);
    let sock = RawSocket::open(lab.nodes[2].ns.path(), "eth0").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let port = lab.spec.settings.port;
    let (secs, (frames, max_payload, biggest)) = std::thread::scope(|s| {
        let capture = s.spawn(|| {
            let (mut frames, mut max_payload, mut biggest) = (0usize, 0usize, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(f) = sock.recv(Duration::from_millis(50)) else {
                    continue;
                };
                if let Some(p) = vxlan_tcp_payload(&f, port) {
                    frames += 1;
                    max_payload = max_payload.max(p);
                    biggest = biggest.max(f.len());
                }
            }
            (frames, max_payload, biggest)
        });
        let secs = transfer_intact(a, b, TOTAL);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (secs, capture.join().unwrap())
    });
    eprintln!(
        "64 MiB pod->pod across the router in {secs:.2} s = {:.2} Gbit/s; {frames} VXLAN frames seen at node3 (largest {biggest} B, most TCP payload {max_payload} B)",
        TOTAL as f64 * 8.0 / secs / 1e9
    );
    assert!(
        frames > 100,
        "only {frames} VXLAN packets captured at node3"
    );
    Routed {
        frames,
        max_payload,
        biggest,
    }
}

fn nonzero_counters(lab: &Lab, n: usize) -> Vec<String> {
    lab.nodes[n]
        .pinned()
        .unwrap()
        .counters()
        .unwrap()
        .into_iter()
        .filter(|c| c.packets > 0)
        .map(|c| format!("{} {} {}", c.program, c.reason, c.packets))
        .collect()
}

#[test]
fn routed_overlay_keeps_the_pod_segment_size_and_arrives_intact() {
    let lab = vxlan_lab(3);
    let encap_before = counter_of(&lab, 0, Program::FromPod, Reason::Encapsulated);
    let decap_before = counter_of(&lab, 2, Program::FromUnderlay, Reason::Decapsulated);
    let routed = routed_transfer(&lab);
    assert_cut_at_pod_mss(&lab, &routed);
    // In place at both ends: no kernel VXLAN device unless the spec asks for one.
    assert!(counter_of(&lab, 0, Program::FromPod, Reason::Encapsulated) > encap_before);
    let decapsulated =
        counter_of(&lab, 2, Program::FromUnderlay, Reason::Decapsulated) - decap_before;
    assert!(
        decapsulated > 0,
        "node3 unwrapped nothing in place: {:#?}",
        nonzero_counters(&lab, 2)
    );
    for node in &lab.nodes {
        let links = run_in_ns(node.ns.path(), &["ip", "-br", "link"]).unwrap();
        assert!(!links.contains("np-vxlan"), "{}: {links}", node.name);
    }
}

#[test]
fn a_veth_fabric_carries_overlay_packets_whole_across_the_router() {
    require_root();
    let mut cfg = LabConfig::with_spec(generated_spec(3, Backend::Vxlan).unwrap(), 1).unwrap();
    cfg.fabric = Fabric::Veth;
    let lab = Lab::up(&cfg).expect("bring up lab");
    let decap_before = counter_of(&lab, 2, Program::FromUnderlay, Reason::Decapsulated);
    let routed = routed_transfer(&lab);
    let decapsulated =
        counter_of(&lab, 2, Program::FromUnderlay, Reason::Decapsulated) - decap_before;
    let wire_frames = (64 << 20) / routed.max_payload.max(1);
    eprintln!(
        "veth fabric: {} VXLAN packets at node3, largest {} B; {decapsulated} decapsulated",
        routed.frames, routed.biggest
    );
    // Forwarded veth to veth, a GSO packet reaches node3 as one: the fabric a NIC
    // with tunnel offload makes, where no hop cuts it.
    assert!(
        routed.biggest > 8 * UNDERLAY_MTU as usize,
        "the largest packet at node3 was {} B: something cut them",
        routed.biggest
    );
    assert!(
        (decapsulated as usize) < 64 * 1024 * 1024 / 1398 / 2,
        "{decapsulated} packets unwrapped for ~{wire_frames} wire frames"
    );
    // Nodes on one subnet reach each other through the router too (proxy ARP).
    netpath_lab::assert_model(&lab, &[netpath_lab::check::Proto::Tcp]);
}

#[test]
fn vxlan_device_encapsulates_for_routed_peers_and_aggregates_what_it_receives() {
    require_root();
    let mut spec = generated_spec(3, Backend::Vxlan).unwrap();
    spec.settings.vxlan_device = VxlanDevice::Both;
    let mut lab = Lab::up(&LabConfig::with_spec(spec, 1).unwrap()).expect("bring up lab");
    let sent_before = counter_of(&lab, 0, Program::FromPod, Reason::EncapInTunnel);
    let handed_before = counter_of(&lab, 2, Program::FromUnderlay, Reason::ToTunnel);
    let got_before = counter_of(&lab, 2, Program::FromTunnel, Reason::Decapsulated);
    let routed = routed_transfer(&lab);
    assert_cut_at_pod_mss(&lab, &routed);
    let sent = counter_of(&lab, 0, Program::FromPod, Reason::EncapInTunnel) - sent_before;
    let handed = counter_of(&lab, 2, Program::FromUnderlay, Reason::ToTunnel) - handed_before;
    let got = counter_of(&lab, 2, Program::FromTunnel, Reason::Decapsulated) - got_before;
    eprintln!(
        "{sent} packets to node1's device; node3 handed {handed} frames to its device, which delivered {got} ({} frames captured, payload {})",
        routed.frames, routed.max_payload
    );
    assert!(
        sent > 0,
        "node1 encapsulated nothing in its device: {:#?}",
        nonzero_counters(&lab, 0)
    );
    // The tunnel GRO merged the wire frames: far fewer packets reached the pod.
    assert!(
        handed > 1000 && got > 0 && got * 2 < handed,
        "no aggregation: {handed} frames in, {got} packets out: {:#?}",
        nonzero_counters(&lab, 2)
    );
    // The device belongs to the agent: a clean stop takes it away.
    let node3 = lab.nodes[2].ns.path().to_path_buf();
    assert!(run_in_ns(&node3, &["ip", "-br", "link"])
        .unwrap()
        .contains("np-vxlan"));
    lab.stop_agent(2);
    let links = run_in_ns(&node3, &["ip", "-br", "link"]).unwrap();
    assert!(!links.contains("np-vxlan"), "device left behind: {links}");
}

#[test]
fn tunnel_packets_from_strangers_foreign_vnis_and_spoofed_sources_are_dropped() {
    let lab = vxlan_lab(2);
    let target = &lab.nodes[0];
    let pod = &target.pods[0];
    let rx = RawSocket::open(pod.ns.path(), "eth0").unwrap();
    let to = (target.ip(), 8472);
    let send_from = |ns: &std::path::Path, src: Ipv4Addr, payload: Vec<u8>| {
        netns::run_in(ns, move || {
            let s = UdpSocket::bind((src, 0))?;
            s.send_to(&payload, to)?;
            Ok(())
        })
        .unwrap()
    };
    let node2_ns = lab.nodes[1].ns.path();
    let node2_ip = lab.nodes[1].ip();
    let node2_pod_net = Ipv4Addr::new(10, 244, 2, 77);
    let cases = [
        // The fabric router is on the underlay but is not a node.
        (
            "stranger",
            lab.fabric_ns(),
            Ipv4Addr::new(192, 168, 56, 1),
            1,
            node2_pod_net,
            Reason::DropUnknownPeer,
            0x7101,
        ),
        (
            "foreign VNI",
            node2_ns,
            node2_ip,
            2,
            node2_pod_net,
            Reason::DropBadVni,
            0x7102,
        ),
        (
            "spoofed inner source",
            node2_ns,
            node2_ip,
            1,
            Ipv4Addr::new(10, 244, 1, 200),
            Reason::DropSpoofed,
            0x7103,
        ),
    ];
    for (what, ns, src, vni, inner_src, reason, id) in cases {
        let before = counter_of(&lab, 0, Program::FromUnderlay, reason);
        send_from(ns, src, vxlan_payload(vni, inner_src, pod.ip, id));
        let after = wait_counter_of(&lab, 0, Program::FromUnderlay, reason, before, 1);
        assert!(after > before, "{what}: {reason:?} not counted");
        assert!(
            rx.wait_for(Duration::from_millis(300), |f| is_ip_id(f, id))
                .is_none(),
            "{what}: packet reached the pod"
        );
    }
    // The same packet from the real node, with its own pod as source, is delivered.
    let before = decapsulated(&lab, 0);
    send_from(
        node2_ns,
        node2_ip,
        vxlan_payload(1, node2_pod_net, pod.ip, 0x7104),
    );
    assert!(
        rx.wait_for(Duration::from_secs(2), |f| is_ip_id(f, 0x7104))
            .is_some(),
        "legit tunnel packet delivered"
    );
    assert!(decapsulated(&lab, 0) > before);
}

/// Packets node `n` unwrapped for its pods: in place, or by its VXLAN device (frames
/// handed to the kernel's tunnel GRO).
fn decapsulated(lab: &Lab, n: usize) -> u64 {
    counter_of(lab, n, Program::FromUnderlay, Reason::Decapsulated)
        + counter_of(lab, n, Program::FromTunnel, Reason::Decapsulated)
}

#[test]
fn cluster_addresses_without_a_route_are_dropped_not_leaked() {
    let lab = vxlan_lab(2);
    let pod = &lab.nodes[0].pods[0];
    let before = counter_of(&lab, 0, Program::FromPod, Reason::DropNoRoute);
    netns::run_in(pod.ns.path(), || {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        s.send_to(b"nobody", (Ipv4Addr::new(10, 244, 99, 5), 9))?;
        Ok(())
    })
    .unwrap();
    let after = wait_counter_of(&lab, 0, Program::FromPod, Reason::DropNoRoute, before, 1);
    assert!(after > before, "no-route drop not counted");
}
