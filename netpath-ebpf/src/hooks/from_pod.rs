//! TC ingress on each pod's host-side veth: everything a pod sends starts here.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_redirect,
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Program, Reason, Settings, POD_GATEWAY};
use network_types::{arp::ArpHdr, eth::EthHdr, ip::Ipv4Hdr};

use crate::shared::{
    deliver, diag,
    ipv4::{decrement_ttl, in_prefix, well_formed, Ip},
    maps::{host_key, ENDPOINTS, NAT_EXEMPT, ROUTES, SETTINGS},
    monitor::observe,
    nat,
    packet::{eth_ipv4, header_mut, Packet, ETH_P_ARP, ETH_P_IP},
    policy,
    service::{self, Step},
};

const PROG: Program = Program::FromPod;

// Inlined into the entry the macro wraps it in: on 5.10 an empty entry frame still
// counts 32 bytes of the call chain's 512, and the policy point needs them.
#[classifier]
#[inline(always)]
pub fn from_pod(ctx: TcContext) -> i32 {
    let (action, reason) = classify(&ctx);
    observe(&ctx, PROG, reason);
    diag::table_full!(&ctx, reason);
    action
}

#[inline(always)]
fn classify(ctx: &TcContext) -> (i32, Reason) {
    // Not `packet::eth_ipv4`: a pod's frames are demultiplexed (its ARP is answered
    // here), and a runt frame from a pod is a drop, not the stack's.
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    match u16::from_be(eth.ether_type) {
        ETH_P_IP => ipv4(ctx),
        ETH_P_ARP => arp(ctx, eth),
        _ => (TC_ACT_OK, Reason::NonIpv4),
    }
}

#[inline(always)]
fn ipv4(ctx: &TcContext) -> (i32, Reason) {
    let Some(ip) = header_mut::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    if !well_formed(ip) {
        return (TC_ACT_SHOT, Reason::DropBadHeader);
    }
    // Anti-spoofing: the source must be the endpoint that owns this veth.
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    match unsafe { ENDPOINTS.get(ip.src_addr) } {
        Some(ep) if ep.ifindex == ctx.ifindex() => {}
        _ => return (TC_ACT_SHOT, Reason::DropSpoofed),
    }
    let settings = SETTINGS.get(0);
    let mut reply = false;
    if let Some(s) = settings.filter(|s| s.services != 0) {
        let Some(h) = Ip::of(ip) else {
            return (TC_ACT_SHOT, Reason::DropBadHeader);
        };
        match service::from_pod(ctx, h, s, ctx.ifindex()) {
            Step::Untouched => {}
            Step::Done(verdict) => return verdict,
            Step::Translated { reply: r } => reply = r,
        }
    }
    // Egress policy judges what leaves the pod, the backend rather than the front end.
    if let Some(s) = settings.filter(|s| policy::on(Some(s))) {
        if let Err(r) = policy::egress(ctx, s) {
            return (TC_ACT_SHOT, r);
        }
    }
    // One way on from here for every packet, translated or not (the verifier walks
    // it once): a rewrite (or the policy point's pull) invalidated every packet
    // pointer, so look the headers up again.
    let Ok((eth, ip)) = eth_ipv4(ctx) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    route(ctx, eth, ip, settings, reply)
}

/// Where the pod's packet goes by its destination: a local pod, another node's pod,
/// or the outside (a backend's reply to a node port's outside client untranslated by
/// masquerade: it already has the front end's address).
#[inline(always)]
fn route(
    ctx: &TcContext,
    eth: &mut EthHdr,
    ip: &mut Ipv4Hdr,
    settings: Option<&Settings>,
    reply: bool,
) -> (i32, Reason) {
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if let Some(dst) = unsafe { ENDPOINTS.get(ip.dst_addr) } {
        if ip.ttl <= 1 {
            // The stack sends the ICMP time-exceeded.
            return (TC_ACT_OK, Reason::ToStack);
        }
        decrement_ttl(ip);
        return deliver::to_local_pod(ctx, dst, settings, Reason::Redirected);
    }
    let Some(s) = settings else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    let Some(route) = ROUTES.get(&host_key(ip.dst_addr)) else {
        if in_prefix(ip.dst_addr, s.cluster_ip, s.cluster_prefix) && s.cluster_prefix > 0 {
            return (TC_ACT_SHOT, Reason::DropNoRoute);
        }
        if in_prefix(ip.dst_addr, s.service_ip, s.service_prefix) && s.service_prefix > 0 {
            // The service range never leaves a node untranslated.
            return (TC_ACT_SHOT, Reason::DropSvcUnknown);
        }
        if reply {
            if ip.ttl <= 1 {
                return (TC_ACT_OK, Reason::ToStack);
            }
            decrement_ttl(ip);
            return deliver::to_underlay(s.underlay_ifindex, None, Reason::SvcReplyOut);
        }
        return outside(ctx, ip, s);
    };
    if ip.ttl <= 1 {
        return (TC_ACT_OK, Reason::ToStack);
    }
    decrement_ttl(ip);
    deliver::by_route(ctx, eth, route, s)
}

/// A destination outside the cluster: masqueraded unless exempt (or multicast and
/// broadcast, which stay on the host).
#[inline(always)]
fn outside(ctx: &TcContext, ip: &mut Ipv4Hdr, s: &Settings) -> (i32, Reason) {
    if s.masquerade == 0
        || ip.dst_addr[0] >= 224
        || NAT_EXEMPT.get(&host_key(ip.dst_addr)).is_some()
    {
        return (TC_ACT_OK, Reason::ToStack);
    }
    if ip.ttl <= 1 {
        // The stack sends the ICMP time-exceeded, from before translation.
        return (TC_ACT_OK, Reason::ToStack);
    }
    decrement_ttl(ip);
    match Ip::of(ip) {
        Some(header) => nat::masquerade(ctx, &header, s),
        None => (TC_ACT_SHOT, Reason::DropBadHeader),
    }
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
    let ifindex = ctx.ifindex();
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
