//! TC egress on the node's underlay interface: the node's own packets to pods behind
//! a VXLAN or IP-in-IP route leave wrapped. The kernel has already routed them to the right next
//! hop (the same one as for the owning node's address), so the MACs stay.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Program, Reason, RouteMode};

use crate::shared::{
    ipip,
    maps::{host_key, ROUTES, SETTINGS},
    monitor::observe,
    packet::eth_ipv4,
    vxlan,
};

const PROG: Program = Program::ToUnderlay;

#[classifier]
pub fn to_underlay(ctx: TcContext) -> i32 {
    let (action, reason) = classify(&ctx);
    observe(&ctx, PROG, reason);
    action
}

#[inline(always)]
fn classify(ctx: &TcContext) -> (i32, Reason) {
    // The node's own traffic: whatever is not IPv4 toward an overlay route is the
    // stack's, a cut-short header included.
    let ip = match eth_ipv4(ctx) {
        Ok((_, ip)) => ip,
        Err(Reason::NonIpv4) => return (TC_ACT_OK, Reason::NonIpv4),
        Err(_) => return (TC_ACT_OK, Reason::ToStack),
    };
    let (Some(route), Some(s)) = (ROUTES.get(&host_key(ip.dst_addr)), SETTINGS.get(0)) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    let (wrapped, ok) = match RouteMode::from_u32(route.mode) {
        Some(RouteMode::Vxlan) => (vxlan::encapsulate(ctx, route, s), Reason::Encapsulated),
        Some(RouteMode::Ipip) => (ipip::encapsulate(ctx, route, s), Reason::IpipEncapsulated),
        _ => return (TC_ACT_OK, Reason::ToStack),
    };
    if wrapped.is_err() {
        return (TC_ACT_SHOT, Reason::DropEncapFailed);
    }
    (TC_ACT_OK, ok)
}
