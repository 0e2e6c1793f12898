//! Header rewrites that keep the checksums right, shared by masquerade and services.
//! The address and port are written in place and the IP header's checksum updated
//! by hand (it covers that header alone, so the skb's checksum state is untouched);
//! the L4 checksum goes through the kernel's helper, the one place that knows the
//! skb's state (CHECKSUM_PARTIAL from a pod's TSO, CHECKSUM_COMPLETE on receive).
//! One or two helper calls per rewrite instead of five: a ClusterIP flow rewrites
//! every packet.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netpath_common::{Ipv4, IPPROTO_ICMP, IPPROTO_UDP};

use super::{
    csum,
    ipv4::{IP, IP_CHECK},
};

/// A 16-bit field as the checksum helpers take it.
#[inline(always)]
pub fn ne16(b: [u8; 2]) -> u64 {
    u16::from_ne_bytes(b) as u64
}

/// One address and one port replaced, with the IP and L4 checksums kept right.
pub struct Rewrite {
    pub ip_at: usize,
    pub old_ip: Ipv4,
    pub new_ip: Ipv4,
    pub port_at: usize,
    pub old_port: [u8; 2],
    pub new_port: [u8; 2],
    pub csum: usize,
    pub proto: u8,
}

impl Rewrite {
    #[inline(always)]
    pub fn apply(&self, ctx: &TcContext) -> Result<(), i64> {
        // Bounded for the verifier: an L4 header starts at most 14 + 60 bytes in,
        // and an ICMP identifier 4 bytes into it.
        let port_at = self.port_at & 0x7f;
        let ip_at = self.ip_at & 0x1f;
        let end = port_at + 2;
        if ctx.data() + end > ctx.data_end() {
            // Headers are linear in practice; a packet whose are not gets them so.
            ctx.pull_data(end as u32)?;
        }
        let (data, data_end) = (ctx.data(), ctx.data_end());
        let port = (data + port_at) as *mut [u8; 2];
        if data + IP + 20 > data_end || port as usize + 2 > data_end {
            return Err(-1);
        }
        // SAFETY: both ranges were checked against data_end just above; the
        // addresses are inside the IPv4 header (ip_at + 4 <= IP + 20).
        unsafe {
            *((data + ip_at) as *mut Ipv4) = self.new_ip;
            let check = (data + IP_CHECK) as *mut [u8; 2];
            *check = csum::update(*check, &self.old_ip, &self.new_ip);
            *port = self.new_port;
        }
        // UDP's zero checksum means "none" and must stay zero.
        let mangled = if self.proto == IPPROTO_UDP {
            BPF_F_MARK_MANGLED_0 as u64
        } else {
            0
        };
        if self.proto != IPPROTO_ICMP && self.old_ip != self.new_ip {
            // The address is in TCP's and UDP's pseudo-header; ICMP has none.
            ctx.l4_csum_replace(
                self.csum,
                u32::from_ne_bytes(self.old_ip) as u64,
                u32::from_ne_bytes(self.new_ip) as u64,
                BPF_F_PSEUDO_HDR as u64 | mangled | 4,
            )?;
        }
        if self.old_port != self.new_port {
            ctx.l4_csum_replace(
                self.csum,
                ne16(self.old_port),
                ne16(self.new_port),
                mangled | 2,
            )?;
        }
        Ok(())
    }
}
