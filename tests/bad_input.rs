//! Hostile and odd frames from a pod: each is counted, none crashes anything, and
//! connectivity stays intact afterwards.
use std::{net::Ipv4Addr, time::Duration};

use netpath_common::Reason;
use netpath_lab::lab::Lab;
use netpath_lab::{
    counter, disable_ipv6, eth, is_ip_id, wait_counter, wait_quiet, Ipv4Packet, RawSocket,
    ETH_P_ARP, ETH_P_IP,
};

struct Setup {
    lab: Lab,
    tx: RawSocket,
    pod_mac: [u8; 6],
    host_mac: [u8; 6],
}

fn setup() -> Setup {
    let lab = netpath_lab::lab(1, 3);
    // Only the test's own frames may move a counter: no IPv6 chatter from the pods.
    for p in &lab.nodes[0].pods {
        disable_ipv6(p.ns.path()).unwrap();
    }
    wait_quiet("from-pod counters", || {
        Reason::ALL.iter().map(|r| counter(&lab, 0, *r)).sum()
    });
    let pod = &lab.nodes[0].pods[0];
    let tx = RawSocket::open(pod.ns.path(), "eth0").unwrap();
    let eps = lab.nodes[0].pinned().unwrap().endpoints().unwrap();
    let host_mac = eps.iter().find(|(ip, _)| *ip == pod.ip).unwrap().1.host_mac;
    let pod_mac = pod.mac;
    Setup {
        lab,
        tx,
        pod_mac,
        host_mac,
    }
}

impl Setup {
    fn frame(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        eth(self.host_mac, self.pod_mac, ethertype, payload)
    }

    fn pod_ip(&self, i: usize) -> Ipv4Addr {
        self.lab.nodes[0].pods[i].ip
    }

    fn assert_still_connected(&self) {
        let pods = &self.lab.nodes[0].pods;
        let seen = netpath_lab::check::tcp(pods[0].ns.path(), pods[1].ns.path(), pods[1].ip)
            .expect("pod1 -> pod2 after bad input");
        assert_eq!(seen, pods[0].ip);
    }

    /// Sends `frame`, expects `reason` to count it (and `redirected` not to, for drops).
    fn send_expect(&self, frame: &[u8], reason: Reason) {
        let before = counter(&self.lab, 0, reason);
        self.tx.send(frame).unwrap();
        let after = wait_counter(&self.lab, 0, reason, before, 1);
        // A forwarded frame may be answered (an ICMP error), which counts again.
        if reason.is_drop() {
            // Settled first: a second count a moment later must fail here too.
            wait_quiet("the counter", || counter(&self.lab, 0, reason));
            assert_eq!(after, before + 1, "{reason:?} counted once for one frame");
            let settled = counter(&self.lab, 0, reason);
            assert_eq!(settled, after, "{reason:?} counted once for one frame");
        }
    }
}

#[test]
fn truncated_ipv4_header_is_dropped_and_counted() {
    let s = setup();
    s.send_expect(
        &s.frame(ETH_P_IP, &[0x45, 0, 0, 20, 0, 0]),
        Reason::DropTruncated,
    );
    s.assert_still_connected();
}

#[test]
fn truncated_arp_is_dropped_and_counted() {
    let s = setup();
    s.send_expect(&s.frame(ETH_P_ARP, &[0, 1, 8, 0, 6]), Reason::DropTruncated);
    s.assert_still_connected();
}

#[test]
fn bad_version_and_header_length_are_dropped_and_counted() {
    let s = setup();
    let mut pkt = Ipv4Packet::udp(s.pod_ip(0), s.pod_ip(1), 7, b"x").bytes();
    pkt[0] = 0x65; // version 6 in an IPv4 frame
    s.send_expect(&s.frame(ETH_P_IP, &pkt), Reason::DropBadHeader);
    pkt[0] = 0x43; // IHL 3 (< 5)
    s.send_expect(&s.frame(ETH_P_IP, &pkt), Reason::DropBadHeader);
    s.assert_still_connected();
}

#[test]
fn non_ip_frames_go_to_the_stack_and_are_counted() {
    let s = setup();
    // A local-experimental ethertype, nothing the stack will act on.
    s.send_expect(&s.frame(0x88b5, b"netpath test frame"), Reason::NonIpv4);
    s.assert_still_connected();
}

#[test]
fn arp_for_the_gateway_is_answered_and_other_arp_is_left_alone() {
    let s = setup();
    let arp = |target: Ipv4Addr| {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&s.pod_mac);
        a.extend_from_slice(&s.pod_ip(0).octets());
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&target.octets());
        eth([0xff; 6], s.pod_mac, ETH_P_ARP, &a)
    };
    let gw = Ipv4Addr::new(169, 254, 1, 1);
    s.send_expect(&arp(gw), Reason::ArpReplied);
    let reply = s.tx.wait_for(Duration::from_secs(2), |f| {
        f.len() >= 42 && f[12..14] == ETH_P_ARP.to_be_bytes() && f[20..22] == [0, 2]
    });
    let reply = reply.expect("an ARP reply for the gateway");
    assert_eq!(
        &reply[22..28],
        &s.host_mac,
        "gateway MAC is the host-side veth"
    );
    assert_eq!(&reply[28..32], &gw.octets());
    assert_eq!(&reply[38..42], &s.pod_ip(0).octets());
    s.send_expect(&arp(Ipv4Addr::new(10, 244, 1, 99)), Reason::ArpIgnored);
    s.assert_still_connected();
}

#[test]
fn ip_options_and_fragments_are_delivered_intact() {
    let s = setup();
    let rx = RawSocket::open(s.lab.nodes[0].pods[1].ns.path(), "eth0").unwrap();
    // Record-route-ish NOP padding plus an end-of-list: 4 bytes of options.
    let mut with_opts = Ipv4Packet::udp(s.pod_ip(0), s.pod_ip(1), 0x0a01, b"options");
    with_opts.options = vec![1, 1, 1, 0];
    let mut first_frag = Ipv4Packet::udp(s.pod_ip(0), s.pod_ip(1), 0x0a02, b"fragment");
    first_frag.frag = (true, 0);
    let mut later_frag = Ipv4Packet::udp(s.pod_ip(0), s.pod_ip(1), 0x0a03, b"later");
    later_frag.frag = (false, 3);
    for (pkt, id) in [
        (with_opts, 0x0a01),
        (first_frag, 0x0a02),
        (later_frag, 0x0a03),
    ] {
        let bytes = pkt.bytes();
        s.send_expect(&s.frame(ETH_P_IP, &bytes), Reason::Redirected);
        let got = rx
            .wait_for(Duration::from_secs(2), |f| is_ip_id(f, id))
            .unwrap_or_else(|| panic!("packet id {id:#x} not delivered to pod2"));
        // Same IP packet apart from TTL and header checksum, which a router rewrites.
        let ip = &got[14..];
        assert_eq!(ip.len(), bytes.len());
        assert_eq!(ip[8], bytes[8] - 1, "TTL decremented once");
        assert_eq!(
            netpath_lab::csum::fold(netpath_lab::csum::sum(&ip[..(ip[0] & 0xf) as usize * 4])),
            0
        );
        assert_eq!(&ip[12..20], &bytes[12..20], "addresses untouched (no NAT)");
        assert_eq!(&ip[20..], &bytes[20..], "options and payload untouched");
        assert_eq!(
            &got[..6],
            &s.lab.nodes[0].pods[1].mac,
            "delivered to pod2's MAC"
        );
    }
    s.assert_still_connected();
}

#[test]
fn spoofed_sources_are_dropped_and_counted() {
    let s = setup();
    let rx = RawSocket::open(s.lab.nodes[0].pods[2].ns.path(), "eth0").unwrap();
    // pod1 pretends to be pod2, then an address nobody owns.
    for (src, id) in [
        (s.pod_ip(1), 0x5b01),
        (Ipv4Addr::new(10, 244, 9, 9), 0x5b02),
    ] {
        let pkt = Ipv4Packet::udp(src, s.pod_ip(2), id, b"spoof").bytes();
        s.send_expect(&s.frame(ETH_P_IP, &pkt), Reason::DropSpoofed);
        assert!(
            rx.wait_for(Duration::from_millis(300), |f| is_ip_id(f, id))
                .is_none(),
            "spoofed packet from {src} reached pod3"
        );
    }
    // ARP claiming another pod's address is refused too.
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&s.pod_mac);
    a.extend_from_slice(&s.pod_ip(1).octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&[169, 254, 1, 1]);
    s.send_expect(
        &eth([0xff; 6], s.pod_mac, ETH_P_ARP, &a),
        Reason::DropSpoofed,
    );
    s.assert_still_connected();
}
