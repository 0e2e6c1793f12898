//! Masquerade: a pod's flow to the world outside the cluster leaves with the node's
//! underlay address (source NAT); replies and ICMP errors about it are translated
//! back here and handed straight to the pod. The state lives in the pinned NAT maps,
//! so an agent restart keeps every flow.
//!
//! Every rewrite goes through the store and checksum helpers: they keep the skb's
//! checksum state right (CHECKSUM_PARTIAL from a pod's TSO, CHECKSUM_COMPLETE on
//! receive), which hand-made incremental sums cannot.
mod out;
mod reply;

use aya_ebpf::programs::TcContext;
use netpath_common::{Flow, Settings, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use super::{
    ipv4::{Ip, IP},
    l4::{icmp, tcp},
};

pub use out::masquerade;
pub use reply::reply;

/// Where a packet's translated port sits and which checksum covers it.
struct Ports {
    /// Offset of the pod-side port (source going out, destination coming back).
    at: usize,
    csum: usize,
    /// The pod-side and remote ports (ICMP echo: identifier and 0), wire order.
    local: [u8; 2],
    remote: [u8; 2],
    tcp_flags: u8,
    /// TCP only: the header's offset, its length in bytes and the sequence number.
    l4: usize,
    doff: usize,
    seq: [u8; 4],
}

/// Reads the L4 header of a TCP, UDP or ICMP echo packet; `outbound` picks which
/// port is the pod's (source) or the translated one (destination).
#[inline(always)]
fn ports(ctx: &TcContext, ip: &Ip, outbound: bool) -> Option<Ports> {
    let l4 = IP + ip.len;
    match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let h: [u8; 14] = if ip.proto == IPPROTO_TCP {
                ctx.load(l4).ok()?
            } else {
                let u: [u8; 8] = ctx.load(l4).ok()?;
                [
                    u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], 0, 0, 0, 0, 0, 0,
                ]
            };
            let (src, dst) = ([h[0], h[1]], [h[2], h[3]]);
            let (local, remote, at) = if outbound {
                (src, dst, l4)
            } else {
                (dst, src, l4 + 2)
            };
            Some(Ports {
                at,
                csum: l4 + if ip.proto == IPPROTO_TCP { 16 } else { 6 },
                local,
                remote,
                tcp_flags: h[13],
                l4,
                doff: (h[12] >> 4) as usize * 4,
                seq: [h[4], h[5], h[6], h[7]],
            })
        }
        IPPROTO_ICMP => {
            let h: [u8; 8] = ctx.load(l4).ok()?;
            let want = if outbound {
                icmp::ECHO
            } else {
                icmp::ECHO_REPLY
            };
            (h[0] == want).then_some(Ports {
                at: l4 + 4,
                csum: l4 + 2,
                local: [h[4], h[5]],
                remote: [0, 0],
                tcp_flags: 0,
                l4,
                doff: 0,
                seq: [0; 4],
            })
        }
        _ => None,
    }
}

#[inline(always)]
fn in_range(port: [u8; 2], s: &Settings) -> bool {
    let p = u16::from_be_bytes(port);
    p >= s.nat_port_min && p <= s.nat_port_max
}

/// RST, and the ACK that ends a closing handshake (FIN each way already seen),
/// both ways alike. Each flag is its own byte: no read-modify-write.
#[inline(always)]
fn track_close(f: &mut Flow, tcp_flags: u8) {
    if tcp_flags & tcp::RST != 0 {
        f.rst = 1;
    } else if f.fin_out != 0 && f.fin_in != 0 && tcp_flags & (tcp::FIN | tcp::SYN) == 0 {
        f.closed = 1;
    }
}
