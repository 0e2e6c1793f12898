//! Bounds-checked access to headers in direct packet memory, and the small header
//! arithmetic every program needs.
use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;

/// A `&mut T` at `offset` into the linear packet data, if the whole `T` is there.
#[inline(always)]
pub fn header_mut<T>(ctx: &TcContext, offset: usize) -> Option<&'static mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range was checked against data_end just above.
    Some(unsafe { &mut *((start + offset) as *mut T) })
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const IPPROTO_UDP: u8 = 17;

/// TTL minus one with an incremental checksum update (RFC 1624).
#[inline(always)]
pub fn decrement_ttl(ip: &mut Ipv4Hdr) {
    let old = u16::from_be_bytes([ip.ttl, ip.proto]);
    ip.ttl -= 1;
    let new = u16::from_be_bytes([ip.ttl, ip.proto]);
    let mut sum = !u16::from_be_bytes(ip.check) as u32 + !old as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip.check = (!(sum as u16)).to_be_bytes();
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
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
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
