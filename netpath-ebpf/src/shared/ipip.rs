//! IP-in-IP (RFC 2003, protocol 4) encapsulation and decapsulation in place,
//! wire-compatible with the kernel's `ipip` device (Calico's and flannel's ipip
//! overlay): one outer IPv4 header, nothing else.
use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_FIXED_GSO,
    },
    programs::TcContext,
};
use netpath_common::{Reason, Route, Settings, IPIP_OVERHEAD, IPPROTO_IPIP};
use network_types::ip::Ipv4Hdr;

use super::{
    ipv4::{in_prefix, is_fragment, well_formed, Header, DF, IP},
    maps::NODES,
    packet::{header_mut, Packet},
    vxlan::sender_may_send,
};

/// The inner header of a received frame: behind an outer IPv4 header without options.
const INNER_IP: usize = IP + Ipv4Hdr::LEN;

/// Wraps the IPv4 packet in `ctx` for `route`, as the kernel's ipip device does: the
/// outer header copies the inner TOS and DF (so path MTU discovery still works end
/// to end) and the inner ID. FIXED_GSO for the same reason as VXLAN: the pod MTU
/// already leaves room for the 20 bytes.
#[inline(always)]
pub fn encapsulate(ctx: &TcContext, route: &Route, s: &Settings) -> Result<(), ()> {
    let Some(inner) = header_mut::<Ipv4Hdr>(ctx, IP) else {
        return Err(());
    };
    let tos = inner.tos;
    let id = inner.id;
    let df = inner.frags[0] & DF;
    let inner_len = ctx.len().saturating_sub(IP as u32);
    let flags = (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO) as u64;
    ctx.adjust_room(IPIP_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| ())?;

    // A GSO super-packet can exceed 16 bits; segmentation rewrites the length anyway.
    let outer_len = (inner_len + IPIP_OVERHEAD).min(0xffff) as u16;
    let outer = Header {
        src: s.node_ip,
        dst: route.node_ip,
        proto: IPPROTO_IPIP,
        total: outer_len,
        tos,
        id,
        df,
    };
    ctx.store(IP, &outer.bytes(), 0).map_err(|_| ())
}

/// Removes the outer IPv4 header, keeping the Ethernet header in front of the inner
/// packet (FIXED_GSO: the segment size stays the sender's, as with VXLAN).
#[inline(always)]
pub fn decapsulate(ctx: &TcContext) -> Result<(), ()> {
    ctx.adjust_room(
        -(IPIP_OVERHEAD as i32),
        BPF_ADJ_ROOM_MAC,
        BPF_F_ADJ_ROOM_FIXED_GSO as u64,
    )
    .map_err(|_| ())
}

/// What the receive check makes of an IPv4 frame arriving on the underlay.
pub enum RxVerdict {
    /// Not IP-in-IP for us (or for a tunnel of the host's own that is not ours).
    NotIpip,
    /// IP-in-IP that goes no further, and why.
    Drop(Reason),
    /// From a known node, carrying IPv4 its sender may send, for this destination.
    Accept([u8; 4]),
}

/// The IP-in-IP receive check, with VXLAN's rules: from a known node, whole headers,
/// and an inner source that is the sender itself or one of its pods. Protocol 4 to
/// this node from an unknown sender is dropped only when it carries cluster traffic;
/// anything else stays the host's (a tunnel the operator set up themselves).
#[inline(always)]
pub fn check_rx<C: Packet>(ctx: &C, ip: &Ipv4Hdr, s: &Settings) -> RxVerdict {
    if ip.proto != IPPROTO_IPIP || ip.dst_addr != s.node_ip {
        return RxVerdict::NotIpip;
    }
    let inner = header_mut::<Ipv4Hdr>(ctx, INNER_IP);
    let outer_src = ip.src_addr;
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if unsafe { NODES.get(outer_src) }.is_none() {
        let for_cluster = inner.is_some_and(|i| {
            s.cluster_prefix > 0 && in_prefix(i.dst_addr, s.cluster_ip, s.cluster_prefix)
        });
        if for_cluster {
            return RxVerdict::Drop(Reason::DropIpipUnknownPeer);
        }
        return RxVerdict::NotIpip;
    }
    // Options would move the inner header, and a fragment of the outer packet holds
    // only part of it: the kernel's device would reassemble, we do not.
    if ip.vihl != 0x45 || is_fragment(ip.frags) {
        return RxVerdict::Drop(Reason::DropIpipMalformed);
    }
    let Some(inner) = inner else {
        return RxVerdict::Drop(Reason::DropIpipMalformed);
    };
    if !well_formed(inner) {
        return RxVerdict::Drop(Reason::DropIpipMalformed);
    }
    if !sender_may_send(inner.src_addr, outer_src) {
        return RxVerdict::Drop(Reason::DropIpipSpoofed);
    }
    RxVerdict::Accept(inner.dst_addr)
}
