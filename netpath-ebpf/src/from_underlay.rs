//! TC ingress on the node's underlay interface: VXLAN from known nodes is unwrapped
//! and, like directly routed packets, handed straight to the local pod.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::warn;
use netpath_common::{Program, Reason};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};

use crate::{
    deliver,
    maps::{ENDPOINTS, NODES, ROUTES, SETTINGS},
    packet::{header_mut, ETH_P_IP, IPPROTO_UDP},
    stats::count,
    vxlan,
};

const PROG: Program = Program::FromUnderlay;
const OUTER_IP: usize = EthHdr::LEN;
const OUTER_UDP: usize = OUTER_IP + Ipv4Hdr::LEN;
const VXLAN_HDR: usize = OUTER_UDP + UdpHdr::LEN;
const INNER_ETH: usize = VXLAN_HDR + 8;
const INNER_IP: usize = INNER_ETH + EthHdr::LEN;

#[classifier]
pub fn from_underlay(ctx: TcContext) -> i32 {
    let (action, reason) = classify(&ctx);
    count(PROG, reason);
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
    let Some(ip) = header_mut::<Ipv4Hdr>(ctx, OUTER_IP) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    let Some(s) = SETTINGS.get(0) else {
        return (TC_ACT_OK, Reason::ToStack);
    };
    if ip.vihl == 0x45 && ip.proto == IPPROTO_UDP {
        if let Some(udp) = header_mut::<UdpHdr>(ctx, OUTER_UDP) {
            if udp.dst == s.vxlan_port.to_be_bytes() {
                return from_tunnel(ctx, ip.src_addr, s.vni);
            }
        }
    }
    // Directly routed from another node (or any underlay host) to a local pod.
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if let Some(dst) = unsafe { ENDPOINTS.get(ip.dst_addr) } {
        return deliver::to_local_pod(eth, dst, Some(s), Reason::Redirected);
    }
    (TC_ACT_OK, Reason::ToStack)
}

#[inline(always)]
fn from_tunnel(ctx: &TcContext, outer_src: [u8; 4], vni: u32) -> (i32, Reason) {
    // SAFETY: as above.
    if unsafe { NODES.get(outer_src) }.is_none() {
        warn!(
            ctx,
            "dropped VXLAN from {:i}, not a known node",
            u32::from_be_bytes(outer_src)
        );
        return (TC_ACT_SHOT, Reason::DropUnknownPeer);
    }
    let Some(vx) = header_mut::<[u8; 8]>(ctx, VXLAN_HDR) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    let want = (vni << 8).to_be_bytes();
    if vx[0] & vxlan::VXLAN_FLAG_VNI == 0 || vx[4..8] != want {
        return (TC_ACT_SHOT, Reason::DropBadVni);
    }
    let Some(inner_eth) = header_mut::<EthHdr>(ctx, INNER_ETH) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    if u16::from_be(inner_eth.ether_type) != ETH_P_IP {
        return (TC_ACT_SHOT, Reason::DropBadHeader);
    }
    let Some(inner) = header_mut::<Ipv4Hdr>(ctx, INNER_IP) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    // A node may send as itself or as one of its pods; anything else is spoofed.
    let key = aya_ebpf::maps::lpm_trie::Key::new(32, inner.src_addr);
    let owner_ok =
        inner.src_addr == outer_src || ROUTES.get(&key).is_some_and(|r| r.node_ip == outer_src);
    if !owner_ok {
        return (TC_ACT_SHOT, Reason::DropSpoofed);
    }
    let inner_dst = inner.dst_addr;
    if vxlan::decapsulate(ctx).is_err() {
        return (TC_ACT_SHOT, Reason::DropDecapFailed);
    }
    // SAFETY: as above.
    if let Some(dst) = unsafe { ENDPOINTS.get(inner_dst) } {
        let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
            return (TC_ACT_SHOT, Reason::DropDecapFailed);
        };
        return deliver::to_local_pod(eth, dst, SETTINGS.get(0), Reason::Decapsulated);
    }
    (TC_ACT_OK, Reason::DecapToStack)
}
