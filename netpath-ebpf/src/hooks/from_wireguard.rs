//! TC ingress on the node's WireGuard device: packets another node sent, just
//! decrypted (the device let through only sources that peer is allowed). They get an
//! Ethernet header first — the device is L3 — and then the underlay's treatment: a
//! local pod's go straight in through its ingress policy; those for the node itself
//! meet its node ports and the replies of its masqueraded and node-port flows (a
//! backend on another node answers through this node); the rest go to the stack (TC
//! ingress pulls the header off again).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_skb_change_head,
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Program, Reason};
use network_types::eth::EthHdr;

use crate::shared::{
    deliver,
    ipv4::Ip,
    maps::{ENDPOINTS, SETTINGS},
    monitor::observe,
    nat,
    packet::{eth_ipv4, header_mut, Packet, ETH_P_IP},
    service::{self, Step},
};

const PROG: Program = Program::FromWireguard;

#[classifier]
pub fn from_wireguard(ctx: TcContext) -> i32 {
    let (action, reason) = classify(&ctx);
    observe(&ctx, PROG, reason);
    action
}

#[inline(always)]
fn classify(ctx: &TcContext) -> (i32, Reason) {
    // An L3 device: the IPv4 header is first.
    let Ok(first) = ctx.load::<u8>(0) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    if first >> 4 != 4 {
        return (TC_ACT_OK, Reason::NonIpv4);
    }
    // SAFETY: a helper call on this program's own packet.
    if unsafe { bpf_skb_change_head(ctx.skb.skb as *mut _, EthHdr::LEN as u32, 0) } != 0 {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    }
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    eth.ether_type = ETH_P_IP.to_be();
    let Ok((_, ip)) = eth_ipv4(ctx) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    let Some(s) = SETTINGS.get(0) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if let Some(dst) = unsafe { ENDPOINTS.get(ip.dst_addr) } {
        if s.services == 0 {
            return deliver::to_local_pod(ctx, dst, Some(s), Reason::FromWireguard);
        }
        return service::to_local_pod(ctx, dst, s, Reason::FromWireguard);
    }
    if ip.dst_addr != s.node_ip {
        return (TC_ACT_OK, Reason::ToStack);
    }
    let Some(h) = Ip::of(ip) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    if s.services != 0 {
        match service::at_node(ctx, h, s, ctx.ifindex()) {
            Step::Untouched => {}
            Step::Done(verdict) => return verdict,
            Step::Translated { .. } => return service::onward(ctx, s),
        }
    }
    if s.masquerade != 0 {
        if let Some(verdict) = nat::reply(ctx, &h, s) {
            return verdict;
        }
    }
    (TC_ACT_OK, Reason::ToStack)
}
