//! TC ingress on each pod's host-side veth: everything a pod sends starts here.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Endpoint, Program, Reason, RedirectMode, POD_GATEWAY};
use network_types::{arp::ArpHdr, eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    maps::{ENDPOINTS, SETTINGS},
    packet::{header_mut, ETH_P_ARP, ETH_P_IP},
    stats::count,
};

const PROG: Program = Program::FromPod;

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let (action, reason) = classify(&ctx);
    count(PROG, reason);
    action
}

#[inline(always)]
fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context pointer is valid for the program's whole run.
    unsafe { (*ctx.skb.skb).ifindex }
}

#[inline(always)]
fn classify(ctx: &TcContext) -> (i32, Reason) {
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    match u16::from_be(eth.ether_type) {
        ETH_P_IP => ipv4(ctx, eth),
        ETH_P_ARP => arp(ctx, eth),
        _ => (TC_ACT_OK, Reason::NonIpv4),
    }
}

#[inline(always)]
fn ipv4(ctx: &TcContext, eth: &mut EthHdr) -> (i32, Reason) {
    let Some(ip) = header_mut::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    if ip.vihl >> 4 != 4 || ip.vihl & 0xf < 5 {
        return (TC_ACT_SHOT, Reason::DropBadHeader);
    }
    // Anti-spoofing: the source must be the endpoint that owns this veth.
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    let owner = unsafe { ENDPOINTS.get(ip.src_addr) };
    match owner {
        Some(ep) if ep.ifindex == ingress_ifindex(ctx) => {}
        _ => return (TC_ACT_SHOT, Reason::DropSpoofed),
    }
    // SAFETY: as above.
    let Some(dst) = (unsafe { ENDPOINTS.get(ip.dst_addr) }) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    if ip.ttl <= 1 {
        // The stack sends the ICMP time-exceeded.
        return (TC_ACT_OK, Reason::ToStack);
    }
    decrement_ttl(ip);
    deliver_local(eth, dst)
}

/// Hands a frame to a pod on this node with the MACs it expects to see.
#[inline(always)]
fn deliver_local(eth: &mut EthHdr, dst: &Endpoint) -> (i32, Reason) {
    eth.dst_addr = dst.pod_mac;
    eth.src_addr = dst.host_mac;
    let mode = SETTINGS
        .get(0)
        .and_then(|s| RedirectMode::from_u32(s.redirect_mode))
        .unwrap_or(RedirectMode::Peer);
    // SAFETY: helper calls with plain integer arguments.
    let ret = unsafe {
        match mode {
            RedirectMode::Peer => bpf_redirect_peer(dst.ifindex, 0),
            RedirectMode::Plain => bpf_redirect(dst.ifindex, 0),
        }
    };
    if ret == TC_ACT_SHOT as i64 {
        return (TC_ACT_SHOT, Reason::DropRedirectFailed);
    }
    (ret as i32, Reason::Redirected)
}

/// TTL minus one with an incremental checksum update (RFC 1624).
#[inline(always)]
fn decrement_ttl(ip: &mut Ipv4Hdr) {
    let old = u16::from_be_bytes([ip.ttl, ip.proto]);
    ip.ttl -= 1;
    let new = u16::from_be_bytes([ip.ttl, ip.proto]);
    let mut sum = !u16::from_be_bytes(ip.check) as u32 + !old as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip.check = (!(sum as u16)).to_be_bytes();
}

/// Answers the pod's ARP for its gateway from the host-side veth's MAC: no bridge and
/// no proxy-ARP sysctl needed.
#[inline(always)]
fn arp(ctx: &TcContext, eth: &mut EthHdr) -> (i32, Reason) {
    let Some(arp) = header_mut::<ArpHdr>(ctx, EthHdr::LEN) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    let is_ipv4_request = arp.htype == 1u16.to_be_bytes()
        && arp.ptype == ETH_P_IP.to_be_bytes()
        && arp.hlen == 6
        && arp.plen == 4
        && arp.oper == 1u16.to_be_bytes();
    if !is_ipv4_request || arp.tpa != POD_GATEWAY {
        return (TC_ACT_OK, Reason::ArpIgnored);
    }
    // SAFETY: as in `ipv4`.
    let Some(owner) = (unsafe { ENDPOINTS.get(arp.spa) }) else {
        return (TC_ACT_SHOT, Reason::DropSpoofed);
    };
    let ifindex = ingress_ifindex(ctx);
    if owner.ifindex != ifindex {
        return (TC_ACT_SHOT, Reason::DropSpoofed);
    }
    let host_mac = owner.host_mac;
    let asker_mac = arp.sha;
    let asker_ip = arp.spa;
    arp.oper = 2u16.to_be_bytes();
    arp.tha = asker_mac;
    arp.tpa = asker_ip;
    arp.sha = host_mac;
    arp.spa = POD_GATEWAY;
    eth.dst_addr = asker_mac;
    eth.src_addr = host_mac;
    // Back out of the same veth: egress of the host side is ingress of the pod.
    // SAFETY: helper call with plain integer arguments.
    let ret = unsafe { bpf_redirect(ifindex, 0) };
    (ret as i32, Reason::ArpReplied)
}
