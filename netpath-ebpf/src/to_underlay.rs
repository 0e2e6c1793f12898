//! TC egress on the node's underlay interface: the node's own packets to pods behind
//! a VXLAN route leave wrapped. The kernel has already routed them to the right next
//! hop (the same one as for the owning node's address), so the MACs stay.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Program, Reason, RouteMode};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    maps::{ROUTES, SETTINGS},
    monitor::observe,
    packet::{header_mut, ETH_P_IP},
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
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return (TC_ACT_OK, Reason::NonIpv4);
    };
    if u16::from_be(eth.ether_type) != ETH_P_IP {
        return (TC_ACT_OK, Reason::NonIpv4);
    }
    let Some(ip) = header_mut::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    let key = aya_ebpf::maps::lpm_trie::Key::new(32, ip.dst_addr);
    let (Some(route), Some(s)) = (ROUTES.get(&key), SETTINGS.get(0)) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    if route.mode != RouteMode::Vxlan as u32 {
        return (TC_ACT_OK, Reason::ToStack);
    }
    if vxlan::encapsulate(ctx, route, s).is_err() {
        return (TC_ACT_SHOT, Reason::DropEncapFailed);
    }
    (TC_ACT_OK, Reason::Encapsulated)
}
