//! Header rewrites that keep the checksums right, shared by masquerade and services.
//! Every change goes through the store and checksum helpers: they keep the skb's
//! checksum state right (CHECKSUM_PARTIAL from a pod's TSO, CHECKSUM_COMPLETE on
//! receive), which hand-made incremental sums cannot.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netpath_common::{Ipv4, IPPROTO_ICMP, IPPROTO_UDP};
use network_types::eth::EthHdr;

/// Offsets of the IPv4 header and its fields behind an Ethernet header.
pub const IP: usize = EthHdr::LEN;
pub const IP_CHECK: usize = IP + 10;
pub const IP_SRC: usize = IP + 12;
pub const IP_DST: usize = IP + 16;

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
        let (old, new) = (
            u32::from_ne_bytes(self.old_ip),
            u32::from_ne_bytes(self.new_ip),
        );
        // UDP's zero checksum means "none" and must stay zero.
        let mangled = if self.proto == IPPROTO_UDP {
            BPF_F_MARK_MANGLED_0 as u64
        } else {
            0
        };
        ctx.store(self.ip_at, &self.new_ip, 0)?;
        ctx.l3_csum_replace(IP_CHECK, old as u64, new as u64, 4)?;
        if self.proto != IPPROTO_ICMP {
            // The address is in TCP's and UDP's pseudo-header; ICMP has none.
            ctx.l4_csum_replace(
                self.csum,
                old as u64,
                new as u64,
                BPF_F_PSEUDO_HDR as u64 | mangled | 4,
            )?;
        }
        ctx.store(self.port_at, &self.new_port, 0)?;
        ctx.l4_csum_replace(
            self.csum,
            ne16(self.old_port),
            ne16(self.new_port),
            mangled | 2,
        )?;
        Ok(())
    }
}
