//! TC ingress on the node's kernel VXLAN device: frames the kernel decapsulated (and
//! aggregated with its tunnel GRO) get the same checks as in-place decapsulation and go
//! straight to the local pod.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Program, Reason};

use crate::shared::{
    deliver,
    maps::{ENDPOINTS, NODES, SETTINGS},
    monitor::observe,
    packet::eth_ipv4_ingress,
    service, tunnel, vxlan,
};

const PROG: Program = Program::FromTunnel;

#[classifier]
pub fn from_tunnel(ctx: TcContext) -> i32 {
    let (action, reason) = classify(&ctx);
    observe(&ctx, PROG, reason);
    action
}

#[inline(always)]
fn classify(ctx: &TcContext) -> (i32, Reason) {
    let (_, ip) = match eth_ipv4_ingress(ctx) {
        Ok(headers) => headers,
        Err(verdict) => return verdict,
    };
    let Some(s) = SETTINGS.get(0) else {
        return (TC_ACT_SHOT, Reason::DropUnknownPeer);
    };
    let Some(rx) = tunnel::received(ctx) else {
        return (TC_ACT_SHOT, Reason::DropUnknownPeer);
    };
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if unsafe { NODES.get(rx.remote) }.is_none() {
        return (TC_ACT_SHOT, Reason::DropUnknownPeer);
    }
    if rx.vni != s.vni {
        return (TC_ACT_SHOT, Reason::DropBadVni);
    }
    if !vxlan::sender_may_send(ip.src_addr, rx.remote) {
        return (TC_ACT_SHOT, Reason::DropSpoofed);
    }
    // SAFETY: as above.
    if let Some(dst) = unsafe { ENDPOINTS.get(ip.dst_addr) } {
        if s.services == 0 {
            return deliver::to_local_pod(ctx, dst, Some(s), Reason::Decapsulated);
        }
        return service::to_local_pod(ctx, dst, s, Reason::Decapsulated);
    }
    (TC_ACT_OK, Reason::DecapToStack)
}
