//! TC ingress on the node's underlay interface: VXLAN from known nodes is unwrapped
//! and, like directly routed packets, handed straight to the local pod.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Program, Reason, Settings, TUNNEL_RX};
use network_types::eth::EthHdr;

use crate::{
    deliver,
    maps::{ENDPOINTS, SETTINGS},
    monitor::observe,
    nat,
    packet::{eth_ipv4, header_mut},
    vxlan::{self, RxVerdict},
};

const PROG: Program = Program::FromUnderlay;

#[classifier]
pub fn from_underlay(ctx: TcContext) -> i32 {
    let (action, reason) = classify(&ctx);
    observe(&ctx, PROG, reason);
    action
}

#[inline(always)]
fn classify(ctx: &TcContext) -> (i32, Reason) {
    let (eth, ip) = match eth_ipv4(ctx) {
        Ok(headers) => headers,
        Err(Reason::NonIpv4) => return (TC_ACT_OK, Reason::NonIpv4),
        Err(reason) => return (TC_ACT_SHOT, reason),
    };
    let Some(s) = SETTINGS.get(0) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    match vxlan::check_rx(ctx, ip, s) {
        RxVerdict::Accept(vx) if to_tunnel(ctx, vx.inner_dst, s) => {
            return (TC_ACT_OK, Reason::ToTunnel)
        }
        RxVerdict::Accept(vx) => return decapsulate(ctx, vx.inner_dst),
        RxVerdict::Drop(reason) => return (TC_ACT_SHOT, reason),
        RxVerdict::NotVxlan => {}
    }
    // Directly routed from another node (or any underlay host) to a local pod.
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if let Some(dst) = unsafe { ENDPOINTS.get(ip.dst_addr) } {
        return deliver::to_local_pod(eth, dst, Some(s), Reason::Redirected);
    }
    if s.masquerade != 0 && ip.dst_addr == s.node_ip {
        if let Some(verdict) = nat::Ip::of(ip).and_then(|h| nat::reply(ctx, &h, s)) {
            return verdict;
        }
    }
    (TC_ACT_OK, Reason::ToStack)
}

/// Wire-sized frames for local pods go to the kernel's VXLAN socket when the node has
/// the tunnel device for receiving: its GRO merges them into large packets before the
/// pod's stack sees them. GSO packets (a peer on the same link) are already large and
/// cheapest to unwrap here.
#[inline(always)]
fn to_tunnel(ctx: &TcContext, inner_dst: [u8; 4], s: &Settings) -> bool {
    if s.tunnel_ifindex == 0 || s.tunnel_use & TUNNEL_RX == 0 {
        return false;
    }
    // SAFETY: the context pointer is valid for the program's whole run.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return false;
    }
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    unsafe { ENDPOINTS.get(inner_dst) }.is_some()
}

/// Strips an accepted VXLAN frame's outer headers and delivers the inner packet.
#[inline(always)]
fn decapsulate(ctx: &TcContext, inner_dst: [u8; 4]) -> (i32, Reason) {
    if vxlan::decapsulate(ctx).is_err() {
        return (TC_ACT_SHOT, Reason::DropDecapFailed);
    }
    // SAFETY: as above.
    if let Some(dst) = unsafe { ENDPOINTS.get(inner_dst) } {
        // adjust_room invalidated every packet pointer: look the header up again.
        let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
            return (TC_ACT_SHOT, Reason::DropDecapFailed);
        };
        return deliver::to_local_pod(eth, dst, SETTINGS.get(0), Reason::Decapsulated);
    }
    (TC_ACT_OK, Reason::DecapToStack)
}
