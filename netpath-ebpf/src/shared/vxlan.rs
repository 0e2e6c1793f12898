//! VXLAN (RFC 7348) encapsulation and decapsulation in place, wire-compatible with
//! the kernel's vxlan driver (and so with flannel's vxlan backend), and the one
//! receive check both decapsulation points (TC and XDP) apply.
use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
    },
    helpers::generated::bpf_get_hash_recalc,
    programs::TcContext,
};
use netpath_common::{Reason, Route, Settings, IPPROTO_UDP, VXLAN_OVERHEAD};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};

use super::{
    ipv4::{Header, IP},
    maps::{host_key, NODES, ROUTES},
    packet::{header_mut, Packet, ETH_P_IP},
};

// Received frames: offsets behind an outer IPv4 header without options.
const OUTER_UDP: usize = IP + Ipv4Hdr::LEN;
const VXLAN_HDR: usize = OUTER_UDP + UdpHdr::LEN;
const INNER_ETH: usize = VXLAN_HDR + 8;
const INNER_IP: usize = INNER_ETH + EthHdr::LEN;
/// The VXLAN "I" flag: the VNI field is valid.
pub const VXLAN_FLAG_VNI: u8 = 0x08;

/// Inner L2 length in the high byte of adjust_room's flags (BPF_F_ADJ_ROOM_ENCAP_L2).
const fn encap_l2(len: u64) -> u64 {
    (len & 0xff) << 56
}

/// Everything VXLAN puts between the outer Ethernet header and the inner IP packet.
#[repr(C)]
struct Encap {
    ip: [u8; 20],
    udp: [u8; 8],
    vxlan: [u8; 8],
    inner_eth: [u8; 14],
}

/// Wraps the IPv4 packet in `ctx` for `route`. The outer Ethernet header keeps its
/// MACs: the caller either lets the kernel resolve L2 (redirect_neigh) or already
/// has the right next hop (egress after routing). GSO packets stay GSO: the flags
/// tell the kernel where the inner headers are so it can still segment. FIXED_GSO
/// keeps the pod's segment size: the pod MTU already leaves room for the 50 bytes, and
/// without it the kernel would shrink every segment by them.
#[inline(always)]
pub fn encapsulate(ctx: &TcContext, route: &Route, s: &Settings) -> Result<(), ()> {
    let inner_len = ctx.len().saturating_sub(IP as u32);
    // SAFETY: the context pointer is valid for the program's whole run.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    let flags = (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
        | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
        | BPF_F_ADJ_ROOM_FIXED_GSO) as u64
        | s.encap_flags as u64
        | encap_l2(EthHdr::LEN as u64);
    ctx.adjust_room(VXLAN_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| ())?;

    // A GSO super-packet can exceed 16 bits; segmentation rewrites the lengths anyway.
    let outer_len = (inner_len + VXLAN_OVERHEAD).min(0xffff) as u16;
    let udp_len = outer_len.saturating_sub(20);
    let ip = Header {
        src: s.node_ip,
        dst: route.node_ip,
        proto: IPPROTO_UDP,
        total: outer_len,
        tos: 0,
        id: [0; 2],
        df: 0,
    }
    .bytes();

    // Source port from the inner flow hash, as the kernel does, for ECMP entropy.
    let sport = 32768 + (hash >> 16) as u16 % 28232;
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&s.vxlan_port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    // Checksum 0: allowed for UDP over IPv4 and the kernel vxlan default.

    let mut vxlan = [0u8; 8];
    vxlan[0] = VXLAN_FLAG_VNI;
    vxlan[4..8].copy_from_slice(&(s.vni << 8).to_be_bytes());

    let mut inner_eth = [0u8; 14];
    inner_eth[0..6].copy_from_slice(&route.vtep_mac);
    inner_eth[6..12].copy_from_slice(&s.vtep_mac);
    inner_eth[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());

    let hdr = Encap {
        ip,
        udp,
        vxlan,
        inner_eth,
    };
    ctx.store(IP, &hdr, 0).map_err(|_| ())
}

/// Removes the outer IPv4/UDP/VXLAN and inner Ethernet headers, keeping the outer
/// Ethernet header in front of the inner IP packet. FIXED_GSO here too: without it the
/// kernel grows a GSO packet's segment size by the 50 bytes, and a peer that kept the
/// pod's MSS when encapsulating would hand the pod segments claiming 50 bytes more
/// than its MTU allows.
#[inline(always)]
pub fn decapsulate(ctx: &TcContext) -> Result<(), ()> {
    ctx.adjust_room(
        -(VXLAN_OVERHEAD as i32),
        BPF_ADJ_ROOM_MAC,
        BPF_F_ADJ_ROOM_FIXED_GSO as u64,
    )
    .map_err(|_| ())
}

/// What the receive check makes of an IPv4 frame arriving on the underlay.
pub enum RxVerdict {
    /// Not VXLAN to our port: the caller's other paths apply.
    NotVxlan,
    /// VXLAN that goes no further, and why.
    Drop(Reason),
    /// VXLAN from a known node, for our VNI, carrying IPv4 its sender may send: the
    /// caller strips the outer headers its own way.
    Accept(Accepted),
}

/// The parts of an accepted VXLAN frame the decapsulation points need.
pub struct Accepted {
    /// The inner Ethernet header, still in place behind the VXLAN header.
    pub inner_eth: &'static mut EthHdr,
    /// The inner packet's destination.
    pub inner_dst: [u8; 4],
}

/// The VXLAN receive check, the same at TC and at XDP: the frame is VXLAN when its
/// IPv4 header `ip` (from [`super::packet::eth_ipv4`]) has no options and carries UDP
/// to our port; it is accepted when it comes from a known node, has the VNI flag and
/// our VNI, wraps Ethernet + IPv4, and the inner source is the sender itself or one of
/// the pod subnets routed to it.
#[inline(always)]
pub fn check_rx<C: Packet>(ctx: &C, ip: &Ipv4Hdr, s: &Settings) -> RxVerdict {
    if ip.vihl != 0x45 || ip.proto != IPPROTO_UDP {
        return RxVerdict::NotVxlan;
    }
    match header_mut::<UdpHdr>(ctx, OUTER_UDP) {
        Some(udp) if udp.dst == s.vxlan_port.to_be_bytes() => {}
        _ => return RxVerdict::NotVxlan,
    }
    let outer_src = ip.src_addr;
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if unsafe { NODES.get(outer_src) }.is_none() {
        return RxVerdict::Drop(Reason::DropUnknownPeer);
    }
    let Some(vx) = header_mut::<[u8; 8]>(ctx, VXLAN_HDR) else {
        return RxVerdict::Drop(Reason::DropTruncated);
    };
    if vx[0] & VXLAN_FLAG_VNI == 0 || vx[4..8] != (s.vni << 8).to_be_bytes() {
        return RxVerdict::Drop(Reason::DropBadVni);
    }
    let Some(inner_eth) = header_mut::<EthHdr>(ctx, INNER_ETH) else {
        return RxVerdict::Drop(Reason::DropTruncated);
    };
    if u16::from_be(inner_eth.ether_type) != ETH_P_IP {
        return RxVerdict::Drop(Reason::DropBadHeader);
    }
    let Some(inner) = header_mut::<Ipv4Hdr>(ctx, INNER_IP) else {
        return RxVerdict::Drop(Reason::DropTruncated);
    };
    if !sender_may_send(inner.src_addr, outer_src) {
        return RxVerdict::Drop(Reason::DropSpoofed);
    }
    RxVerdict::Accept(Accepted {
        inner_eth,
        inner_dst: inner.dst_addr,
    })
}

/// A node may send as itself or as one of its pods; anything else is spoofed.
#[inline(always)]
pub fn sender_may_send(inner_src: [u8; 4], node: [u8; 4]) -> bool {
    inner_src == node
        || ROUTES
            .get(&host_key(inner_src))
            .is_some_and(|r| r.node_ip == node)
}
