//! Above IPv4: a TCP or UDP packet's tuple, read once, and the rewrites of its source
//! or destination that services make; TCP's flags and ICMP's types, named once.
use aya_ebpf::programs::TcContext;
use netpath_common::{Ipv4, Tuple, IPPROTO_TCP, IPPROTO_UDP};

use super::{
    ipv4::{Ip, IP, IP_DST, IP_SRC},
    rewrite::Rewrite,
};

/// TCP header flags (the byte 13 bytes into the header).
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// ICMP types and codes the translations read or write.
pub mod icmp {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACH: u8 = 3;
    pub const PORT_UNREACH: u8 = 3;
    pub const ECHO: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// A TCP or UDP packet's tuple and where its ports and checksum are. Small on
/// purpose: it lives on the stack of programs 5.10 allows 512 bytes.
pub struct L4 {
    pub tuple: Tuple,
    /// Offset of the L4 header.
    pub at: u16,
    pub csum: u16,
    /// The IP header's and the whole packet's length in bytes.
    pub ip_len: u8,
    pub total: u16,
    pub tcp_flags: u8,
}

impl L4 {
    #[inline(always)]
    pub fn of(ctx: &TcContext, ip: Ip) -> Option<Self> {
        if ip.fragment() || (ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP) {
            return None;
        }
        // Bounded for the verifier (an IPv4 header is at most 60 bytes).
        let at = (IP + ip.len) & 0x7f;
        // The ports, and TCP's flags 13 bytes in.
        let need = at + if ip.proto == IPPROTO_TCP { 14 } else { 4 };
        if ctx.data() + need > ctx.data_end() {
            ctx.pull_data(need as u32).ok()?;
        }
        let (data, data_end) = (ctx.data(), ctx.data_end());
        let h = (data + at) as *const [u8; 14];
        let (p, tcp_flags, csum) = if ip.proto == IPPROTO_TCP {
            if h as usize + 14 > data_end {
                return None;
            }
            // SAFETY: checked against data_end just above.
            let h = unsafe { &*h };
            ([h[0], h[1], h[2], h[3]], h[13], at + 16)
        } else {
            let h = h as *const [u8; 4];
            if h as usize + 4 > data_end {
                return None;
            }
            // SAFETY: as above.
            (unsafe { *h }, 0, at + 6)
        };
        let (at, csum) = (at as u16, csum as u16);
        Some(Self {
            tuple: Tuple {
                src: ip.src,
                dst: ip.dst,
                src_port: [p[0], p[1]],
                dst_port: [p[2], p[3]],
                proto: ip.proto,
                _pad: [0; 3],
            },
            at,
            csum,
            ip_len: ip.len as u8,
            total: ip.total as u16,
            tcp_flags,
        })
    }

    #[inline(always)]
    pub fn source(&self, addr: Ipv4, port: [u8; 2]) -> Rewrite {
        Rewrite {
            ip_at: IP_SRC,
            old_ip: self.tuple.src,
            new_ip: addr,
            port_at: self.at as usize,
            old_port: self.tuple.src_port,
            new_port: port,
            csum: self.csum as usize,
            proto: self.tuple.proto,
        }
    }

    #[inline(always)]
    pub fn destination(&self, addr: Ipv4, port: [u8; 2]) -> Rewrite {
        Rewrite {
            ip_at: IP_DST,
            old_ip: self.tuple.dst,
            new_ip: addr,
            port_at: self.at as usize + 2,
            old_port: self.tuple.dst_port,
            new_port: port,
            csum: self.csum as usize,
            proto: self.tuple.proto,
        }
    }
}
