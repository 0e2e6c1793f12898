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
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};

use crate::{
    maps::{NODES, ROUTES, SETTINGS},
    packet::{ETH_P_IP, IPPROTO_UDP},
    stats::count,
    vxlan::VXLAN_FLAG_VNI,
};

const PROG: Program = Program::XdpUnderlay;
const OUTER_IP: usize = EthHdr::LEN;
const OUTER_UDP: usize = OUTER_IP + Ipv4Hdr::LEN;
const VXLAN_HDR: usize = OUTER_UDP + UdpHdr::LEN;
const INNER_ETH: usize = VXLAN_HDR + 8;
const INNER_IP: usize = INNER_ETH + EthHdr::LEN;

#[inline(always)]
fn at<T>(ctx: &XdpContext, offset: usize) -> Option<&'static mut T> {
    if ctx.data() + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    // SAFETY: the range was checked against data_end just above.
    Some(unsafe { &mut *((ctx.data() + offset) as *mut T) })
}

#[xdp]
pub fn xdp_underlay(ctx: XdpContext) -> u32 {
    let (action, reason) = classify(&ctx);
    if let Some(r) = reason {
        count(PROG, r);
    }
    action
}

/// Only VXLAN is this program's business; everything else passes uncounted (the TC
/// program counts it).
#[inline(always)]
fn classify(ctx: &XdpContext) -> (u32, Option<Reason>) {
    let (Some(eth), Some(ip), Some(udp), Some(s)) = (
        at::<EthHdr>(ctx, 0),
        at::<Ipv4Hdr>(ctx, OUTER_IP),
        at::<UdpHdr>(ctx, OUTER_UDP),
        SETTINGS.get(0),
    ) else {
        return (XDP_PASS, None);
    };
    if u16::from_be(eth.ether_type) != ETH_P_IP
        || ip.vihl != 0x45
        || ip.proto != IPPROTO_UDP
        || udp.dst != s.vxlan_port.to_be_bytes()
    {
        return (XDP_PASS, None);
    }
    let outer_src = ip.src_addr;
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if unsafe { NODES.get(outer_src) }.is_none() {
        return (XDP_DROP, Some(Reason::DropUnknownPeer));
    }
    let (Some(vx), Some(inner_eth), Some(inner)) = (
        at::<[u8; 8]>(ctx, VXLAN_HDR),
        at::<EthHdr>(ctx, INNER_ETH),
        at::<Ipv4Hdr>(ctx, INNER_IP),
    ) else {
        return (XDP_DROP, Some(Reason::DropTruncated));
    };
    if vx[0] & VXLAN_FLAG_VNI == 0 || vx[4..8] != (s.vni << 8).to_be_bytes() {
        return (XDP_DROP, Some(Reason::DropBadVni));
    }
    if u16::from_be(inner_eth.ether_type) != ETH_P_IP {
        return (XDP_DROP, Some(Reason::DropBadHeader));
    }
    let key = aya_ebpf::maps::lpm_trie::Key::new(32, inner.src_addr);
    let owner_ok =
        inner.src_addr == outer_src || ROUTES.get(&key).is_some_and(|r| r.node_ip == outer_src);
    if !owner_ok {
        return (XDP_DROP, Some(Reason::DropSpoofed));
    }
    // The inner frame keeps the outer MACs, so the stack takes it as addressed to this
    // node (the inner destination MAC is a VTEP MAC no device here owns).
    let (dst_mac, src_mac) = (eth.dst_addr, eth.src_addr);
    inner_eth.dst_addr = dst_mac;
    inner_eth.src_addr = src_mac;
    // SAFETY: the context pointer is valid for the program's whole run.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, VXLAN_OVERHEAD as i32) } != 0 {
        return (XDP_ABORTED, Some(Reason::DropDecapFailed));
    }
    (XDP_PASS, Some(Reason::Decapsulated))
}
