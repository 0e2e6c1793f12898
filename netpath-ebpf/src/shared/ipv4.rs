//! The IPv4 header: where it sits behind the Ethernet header, its fields as the
//! programs carry them, and what every program does to one.
use netpath_common::Ipv4;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use super::csum;

/// Offsets of the IPv4 header and its fields behind an Ethernet header.
pub const IP: usize = EthHdr::LEN;
pub const IP_CHECK: usize = IP + 10;
pub const IP_SRC: usize = IP + 12;
pub const IP_DST: usize = IP + 16;

/// The "don't fragment" bit, in the flags/fragment-offset field's first byte.
pub const DF: u8 = 0x40;

/// The header fields the translations need, copied out before any helper
/// invalidates the packet pointers.
#[derive(Clone, Copy)]
pub struct Ip {
    pub src: Ipv4,
    pub dst: Ipv4,
    /// Header length in bytes.
    pub len: usize,
    pub frags: [u8; 2],
    pub proto: u8,
    /// Total length in bytes.
    pub total: usize,
}

impl Ip {
    /// The fields of a well-formed header.
    #[inline(always)]
    pub fn of(h: &Ipv4Hdr) -> Option<Self> {
        if !well_formed(h) {
            return None;
        }
        Some(Self {
            src: h.src_addr,
            dst: h.dst_addr,
            len: (h.vihl & 0x0f) as usize * 4,
            frags: h.frags,
            proto: h.proto,
            total: u16::from_be_bytes(h.tot_len) as usize,
        })
    }

    pub fn fragment(&self) -> bool {
        is_fragment(self.frags)
    }
}

/// Version 4 and at least the 20 bytes of a header without options.
#[inline(always)]
pub fn well_formed(h: &Ipv4Hdr) -> bool {
    h.vihl >> 4 == 4 && h.vihl & 0x0f >= 5
}

/// MF set or a non-zero offset: a part of a packet, not all of it.
#[inline(always)]
pub fn is_fragment(frags: [u8; 2]) -> bool {
    frags[0] & 0x3f != 0 || frags[1] != 0
}

/// TTL minus one with an incremental checksum update.
#[inline(always)]
pub fn decrement_ttl(ip: &mut Ipv4Hdr) {
    let old = [ip.ttl, ip.proto];
    ip.ttl -= 1;
    ip.check = csum::update(ip.check, &old, &[ip.ttl, ip.proto]);
}

/// What a header the programs write from scratch holds (no options, TTL 64).
pub struct Header {
    pub src: Ipv4,
    pub dst: Ipv4,
    pub proto: u8,
    /// Total length in bytes.
    pub total: u16,
    pub tos: u8,
    pub id: [u8; 2],
    /// [`DF`] or 0.
    pub df: u8,
}

impl Header {
    /// The 20 bytes on the wire, checksum included.
    #[inline(always)]
    pub fn bytes(&self) -> [u8; 20] {
        let (s, d, t) = (self.src, self.dst, self.total.to_be_bytes());
        let mut h = [
            0x45, self.tos, t[0], t[1], self.id[0], self.id[1], self.df, 0, 64, self.proto, 0, 0,
            s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3],
        ];
        let c = csum::fold(csum::sum_words(&h)).to_be_bytes();
        h[10] = c[0];
        h[11] = c[1];
        h
    }
}

/// Does `addr` fall inside `net/prefix`?
#[inline(always)]
pub fn in_prefix(addr: Ipv4, net: Ipv4, prefix: u32) -> bool {
    if prefix == 0 {
        return true;
    }
    if prefix > 32 {
        return false;
    }
    let mask = u32::MAX << (32 - prefix);
    (u32::from_be_bytes(addr) & mask) == (u32::from_be_bytes(net) & mask)
}
