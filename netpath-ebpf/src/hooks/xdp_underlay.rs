//! XDP on the node's underlay interface, the optional decapsulation point
//! (`decap = "xdp"`): VXLAN from known nodes loses its outer headers before an skb
//! exists; `from_underlay` then delivers the plain packet like a directly routed one.
use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS},
    helpers::generated::bpf_xdp_adjust_head,
    macros::xdp,
    programs::XdpContext,
};
use netpath_common::{Program, Reason, VXLAN_OVERHEAD};

use crate::shared::{
    maps::SETTINGS,
    monitor::observe,
    packet::eth_ipv4,
    vxlan::{self, RxVerdict},
};

const PROG: Program = Program::XdpUnderlay;

#[xdp]
pub fn xdp_underlay(ctx: XdpContext) -> u32 {
    let (action, reason) = classify(&ctx);
    if let Some(r) = reason {
        observe(&ctx, PROG, r);
    }
    action
}

/// Only VXLAN is this program's business; everything else passes uncounted (the TC
/// program counts it).
#[inline(always)]
fn classify(ctx: &XdpContext) -> (u32, Option<Reason>) {
    let (Ok((eth, ip)), Some(s)) = (eth_ipv4(ctx), SETTINGS.get(0)) else {
        return (XDP_PASS, None);
    };
    let vx = match vxlan::check_rx(ctx, ip, s) {
        RxVerdict::Accept(vx) => vx,
        RxVerdict::Drop(reason) => return (XDP_DROP, Some(reason)),
        RxVerdict::NotVxlan => return (XDP_PASS, None),
    };
    // The inner frame keeps the outer MACs, so the stack takes it as addressed to this
    // node (the inner destination MAC is a VTEP MAC no device here owns).
    let (dst_mac, src_mac) = (eth.dst_addr, eth.src_addr);
    vx.inner_eth.dst_addr = dst_mac;
    vx.inner_eth.src_addr = src_mac;
    // SAFETY: the context pointer is valid for the program's whole run.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, VXLAN_OVERHEAD as i32) } != 0 {
        return (XDP_ABORTED, Some(Reason::DropDecapFailed));
    }
    (XDP_PASS, Some(Reason::Decapsulated))
}
