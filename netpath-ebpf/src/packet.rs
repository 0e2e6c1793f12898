//! Bounds-checked access to headers in direct packet memory, for TC and XDP alike,
//! and the small header arithmetic every program needs.
use aya_ebpf::programs::{TcContext, XdpContext};
use netpath_common::Reason;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

/// A program context with direct packet access: the one thing a header check needs,
/// so the same check serves a TC and an XDP hook (as Cilium's `overloadable_skb.h` /
/// `overloadable_xdp.h` do).
pub trait Packet {
    /// Address of the first byte of the linear packet data.
    fn data(&self) -> usize;
    /// Address one past its last byte.
    fn data_end(&self) -> usize;
    /// The interface the packet arrived on.
    fn ifindex(&self) -> u32;
    /// The whole packet's length in bytes.
    fn len(&self) -> u32;
}

impl Packet for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context pointer is valid for the program's whole run.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context pointer is valid for the program's whole run.
        unsafe { (*self.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }
}

/// A `&mut T` at `offset` into the linear packet data, if the whole `T` is there.
#[inline(always)]
pub fn header_mut<T>(ctx: &impl Packet, offset: usize) -> Option<&'static mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range was checked against data_end just above.
    Some(unsafe { &mut *((start + offset) as *mut T) })
}

/// The Ethernet + IPv4 prologue: both headers when the frame says IPv4 and holds a
/// whole IPv4 header, else `NonIpv4` (no Ethernet header, or another ethertype) or
/// `DropTruncated` (IPv4 cut short). Each caller decides what those mean for it.
#[inline(always)]
pub fn eth_ipv4(ctx: &impl Packet) -> Result<(&'static mut EthHdr, &'static mut Ipv4Hdr), Reason> {
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return Err(Reason::NonIpv4);
    };
    if u16::from_be(eth.ether_type) != ETH_P_IP {
        return Err(Reason::NonIpv4);
    }
    let Some(ip) = header_mut::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return Err(Reason::DropTruncated);
    };
    Ok((eth, ip))
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;

/// TTL minus one with an incremental checksum update (RFC 1624).
#[inline(always)]
pub fn decrement_ttl(ip: &mut Ipv4Hdr) {
    let old = u16::from_be_bytes([ip.ttl, ip.proto]);
    ip.ttl -= 1;
    let new = u16::from_be_bytes([ip.ttl, ip.proto]);
    let sum = !u16::from_be_bytes(ip.check) as u32 + !old as u32 + new as u32;
    ip.check = fold(sum).to_be_bytes();
}

/// A ones'-complement sum of 16-bit words folded to 16 bits and complemented: the
/// checksum field's value. Two folds suffice for sums of up to 65 537 words.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Header checksum of a 20-byte IPv4 header whose checksum field is zero.
#[inline(always)]
pub fn ipv4_checksum(hdr: &[u8; 20]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 20 {
        sum += u16::from_be_bytes([hdr[i], hdr[i + 1]]) as u32;
        i += 2;
    }
    fold(sum)
}

/// Does `addr` fall inside `net/prefix`?
#[inline(always)]
pub fn in_prefix(addr: [u8; 4], net: [u8; 4], prefix: u32) -> bool {
    if prefix == 0 {
        return true;
    }
    if prefix > 32 {
        return false;
    }
    let mask = u32::MAX << (32 - prefix);
    (u32::from_be_bytes(addr) & mask) == (u32::from_be_bytes(net) & mask)
}
