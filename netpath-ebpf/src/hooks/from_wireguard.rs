//! TC ingress on the node's WireGuard device: packets another node's pods sent, just
//! decrypted (the device let through only sources that peer is allowed). Those for a
//! local pod get an Ethernet header and go straight in, through its ingress policy;
//! the rest (for the node itself) go to the stack as they came.
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
    maps::{ENDPOINTS, SETTINGS},
    monitor::observe,
    packet::{header_mut, ETH_P_IP},
    service,
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
    let Ok(dst) = ctx.load::<[u8; 4]>(16) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    let Some(ep) = (unsafe { ENDPOINTS.get(dst) }) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    let ep = *ep;
    // Room for the Ethernet header delivery fills in (the pod's and the veth's MACs).
    // SAFETY: a helper call on this program's own packet.
    if unsafe { bpf_skb_change_head(ctx.skb.skb as *mut _, EthHdr::LEN as u32, 0) } != 0 {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    }
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    eth.ether_type = ETH_P_IP.to_be();
    let Some(s) = SETTINGS.get(0) else {
        return deliver::to_local_pod(ctx, &ep, None, Reason::FromWireguard);
    };
    if s.services == 0 {
        return deliver::to_local_pod(ctx, &ep, Some(s), Reason::FromWireguard);
    }
    service::to_local_pod(ctx, &ep, s, Reason::FromWireguard)
}
