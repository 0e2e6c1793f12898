//! VXLAN (RFC 7348) encapsulation and decapsulation in place, wire-compatible with
//! the kernel's vxlan driver (and so with flannel's vxlan backend).
use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
    },
    helpers::generated::bpf_get_hash_recalc,
    programs::TcContext,
};
use netpath_common::{Route, Settings, VXLAN_OVERHEAD};

use crate::packet::{ipv4_checksum, ETH_P_IP, IPPROTO_UDP};

const ETH_LEN: usize = 14;
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
/// tell the kernel where the inner headers are so it can still segment.
#[inline(always)]
pub fn encapsulate(ctx: &TcContext, route: &Route, s: &Settings) -> Result<(), ()> {
    let inner_len = ctx.len().saturating_sub(ETH_LEN as u32);
    // SAFETY: the context pointer is valid for the program's whole run.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    let flags = (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP) as u64
        | s.encap_flags as u64
        | encap_l2(ETH_LEN as u64);
    ctx.adjust_room(VXLAN_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| ())?;

    // A GSO super-packet can exceed 16 bits; segmentation rewrites the lengths anyway.
    let outer_len = (inner_len + VXLAN_OVERHEAD).min(0xffff) as u16;
    let udp_len = outer_len.saturating_sub(20);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&outer_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&s.node_ip);
    ip[16..20].copy_from_slice(&route.node_ip);
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

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
    ctx.store(ETH_LEN, &hdr, 0).map_err(|_| ())
}

/// Removes the outer IPv4/UDP/VXLAN and inner Ethernet headers, keeping the outer
/// Ethernet header in front of the inner IP packet.
#[inline(always)]
pub fn decapsulate(ctx: &TcContext) -> Result<(), ()> {
    ctx.adjust_room(-(VXLAN_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| ())
}
