//! TC ingress on the node's underlay interface: VXLAN and IP-in-IP from known nodes
//! are unwrapped and, like directly routed packets, handed straight to the local pod.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Program, Reason, Settings, TUNNEL_RX};

use crate::shared::{
    deliver, diag, ipip,
    ipv4::Ip,
    maps::{ENDPOINTS, SETTINGS},
    monitor::observe,
    nat,
    packet::{eth_ipv4_ingress, Packet},
    service::{self, Step},
    vxlan::{self, RxVerdict},
};

const PROG: Program = Program::FromUnderlay;

#[classifier]
pub fn from_underlay(ctx: TcContext) -> i32 {
    let (action, reason) = classify(&ctx);
    observe(&ctx, PROG, reason);
    diag::table_full!(&ctx, reason);
    action
}

#[inline(always)]
fn classify(ctx: &TcContext) -> (i32, Reason) {
    let (_, ip) = match eth_ipv4_ingress(ctx) {
        Ok(headers) => headers,
        Err(verdict) => return verdict,
    };
    let Some(s) = SETTINGS.get(0) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    match vxlan::check_rx(ctx, ip, s) {
        RxVerdict::Accept(vx) if to_tunnel(ctx, vx.inner_dst, s) => {
            return (TC_ACT_OK, Reason::ToTunnel)
        }
        RxVerdict::Accept(vx) => {
            if vxlan::decapsulate(ctx).is_err() {
                return (TC_ACT_SHOT, Reason::DropDecapFailed);
            }
            return deliver_unwrapped(
                ctx,
                vx.inner_dst,
                Reason::Decapsulated,
                Reason::DecapToStack,
            );
        }
        RxVerdict::Drop(reason) => return (TC_ACT_SHOT, reason),
        RxVerdict::NotVxlan => {}
    }
    match ipip::check_rx(ctx, ip, s) {
        ipip::RxVerdict::Accept(inner_dst) => {
            if ipip::decapsulate(ctx).is_err() {
                return (TC_ACT_SHOT, Reason::DropDecapFailed);
            }
            let (ok, to_stack) = (Reason::IpipDecapsulated, Reason::IpipDecapToStack);
            return deliver_unwrapped(ctx, inner_dst, ok, to_stack);
        }
        ipip::RxVerdict::Drop(reason) => return (TC_ACT_SHOT, reason),
        ipip::RxVerdict::NotIpip => {}
    }
    // Directly routed from another node (or any underlay host) to a local pod.
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if let Some(dst) = unsafe { ENDPOINTS.get(ip.dst_addr) } {
        if s.services == 0 {
            return deliver::to_local_pod(ctx, dst, Some(s), Reason::Redirected);
        }
        return service::to_local_pod(ctx, dst, s, Reason::Redirected);
    }
    if ip.dst_addr != s.node_ip {
        return (TC_ACT_OK, Reason::ToStack);
    }
    // The header's fields, read once: a service lookup may move the packet's data
    // (its L4 header pulled into the linear area), so no pointer into it outlives it.
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

/// Hands an unwrapped packet (the outer Ethernet header now in front of the inner IP
/// packet) to its local pod, or to the stack when no local pod has its address.
#[inline(always)]
fn deliver_unwrapped(
    ctx: &TcContext,
    inner_dst: [u8; 4],
    delivered: Reason,
    to_stack: Reason,
) -> (i32, Reason) {
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if let Some(dst) = unsafe { ENDPOINTS.get(inner_dst) } {
        if let Some(s) = SETTINGS.get(0) {
            return service::to_local_pod(ctx, dst, s, delivered);
        }
        return deliver::to_local_pod(ctx, dst, None, delivered);
    }
    (TC_ACT_OK, to_stack)
}
