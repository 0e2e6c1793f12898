//! Refusing a connection to a service without ready backends at once, as kube-proxy's
//! REJECT does: the packet becomes a TCP reset or an ICMP port unreachable and goes
//! back out of the interface it came in on, so the client fails in a round trip
//! instead of timing out.
use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::generated::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use netpath_common::{Reason, IPPROTO_ICMP, IPPROTO_TCP};

use super::{
    csum,
    ipv4::{Header, DF, IP},
    l4::{icmp, tcp, L4},
};

/// What an ICMP error quotes: the refused packet's IP header and 8 bytes after it.
const QUOTE: usize = 28;

/// Turns the refused packet into its refusal and sends it back; counted as
/// `drop-svc-no-backend` either way (a reset is never answered with a reset).
#[inline(always)]
pub fn refuse(ctx: &TcContext, p: &L4, ifindex: u32) -> (i32, Reason) {
    let built = if p.tuple.proto == IPPROTO_TCP {
        if p.tcp_flags & tcp::RST != 0 {
            return (TC_ACT_SHOT, Reason::DropSvcNoBackend);
        }
        reset(ctx, p)
    } else {
        unreachable(ctx, p)
    };
    if built.is_err() || swap_macs(ctx).is_err() {
        return (TC_ACT_SHOT, Reason::DropSvcNoBackend);
    }
    // SAFETY: helper call with plain integer arguments; egress of the interface the
    // packet came in on is the way back to its sender.
    let ret = unsafe { bpf_redirect(ifindex, 0) };
    if ret == TC_ACT_SHOT as i64 {
        return (TC_ACT_SHOT, Reason::DropSvcNoBackend);
    }
    (ret as i32, Reason::DropSvcNoBackend)
}

#[inline(always)]
fn swap_macs(ctx: &TcContext) -> Result<(), i64> {
    let macs: [u8; 12] = ctx.load(0)?;
    let swapped = [
        macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2], macs[3],
        macs[4], macs[5],
    ];
    ctx.store(0, &swapped, 0)
}

/// A 20-byte IPv4 header from the refused packet's destination back to its source.
#[inline(always)]
fn ip_header(p: &L4, proto: u8, total: u16, tos: u8) -> [u8; 20] {
    Header {
        src: p.tuple.dst,
        dst: p.tuple.src,
        proto,
        total,
        tos,
        id: [0; 2],
        df: DF,
    }
    .bytes()
}

/// RFC 793's reset for a segment to a closed port: with the segment's ACK as its
/// sequence number if it had one, else an ACK of everything the segment occupied.
#[inline(always)]
fn reset(ctx: &TcContext, p: &L4) -> Result<(), i64> {
    if p.ip_len != 20 {
        return Err(0);
    }
    let seg: [u8; 20] = ctx.load(p.at as usize)?;
    let doff = (seg[12] >> 4) as usize * 4;
    let flags = seg[13];
    let (seq, ack, out_flags) = if flags & tcp::ACK != 0 {
        ([seg[8], seg[9], seg[10], seg[11]], [0; 4], tcp::RST)
    } else {
        let payload = (p.total as usize).saturating_sub(p.ip_len as usize + doff) as u32;
        let used = payload + (flags & tcp::SYN != 0) as u32 + (flags & tcp::FIN != 0) as u32;
        let next = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]).wrapping_add(used);
        ([0; 4], next.to_be_bytes(), tcp::RST | tcp::ACK)
    };
    let (sp, dp) = (p.tuple.dst_port, p.tuple.src_port);
    let mut out = [
        sp[0], sp[1], dp[0], dp[1], seq[0], seq[1], seq[2], seq[3], ack[0], ack[1], ack[2], ack[3],
        0x50, out_flags, 0, 0, 0, 0, 0, 0,
    ];
    let ip = ip_header(p, IPPROTO_TCP, 40, 0);
    // Over the pseudo-header (addresses, protocol, length) and the segment.
    let pseudo = IPPROTO_TCP as u32 + 20 + csum::sum_words(&p.tuple.src);
    let sum = pseudo + csum::sum_words(&p.tuple.dst) + csum::sum_words(&out);
    let c = csum::fold(sum).to_be_bytes();
    out[16] = c[0];
    out[17] = c[1];
    change_tail(ctx, (IP + 40) as u32)?;
    ctx.store(IP, &ip, 0)?;
    ctx.store(IP + 20, &out, 0)
}

/// ICMP port unreachable quoting the datagram's header and first 8 bytes.
#[inline(always)]
fn unreachable(ctx: &TcContext, p: &L4) -> Result<(), i64> {
    if p.ip_len != 20 {
        return Err(0);
    }
    let quote: [u8; QUOTE] = ctx.load(IP)?;
    let mut head = [icmp::DEST_UNREACH, icmp::PORT_UNREACH, 0, 0, 0, 0, 0, 0];
    let c = csum::fold(csum::sum_words(&head) + csum::sum_words(&quote)).to_be_bytes();
    head[2] = c[0];
    head[3] = c[1];
    let ip = ip_header(p, IPPROTO_ICMP, (20 + 8 + QUOTE) as u16, 0xc0);
    change_tail(ctx, (IP + 20 + 8 + QUOTE) as u32)?;
    ctx.store(IP, &ip, 0)?;
    ctx.store(IP + 20, &head, 0)?;
    ctx.store(IP + 28, &quote, 0)
}

/// Cuts (or grows) the packet to `len` bytes.
#[inline(always)]
fn change_tail(ctx: &TcContext, len: u32) -> Result<(), i64> {
    // SAFETY: the context's skb pointer is valid for the program's whole run.
    match unsafe { bpf_skb_change_tail(ctx.skb.skb as *mut _, len, 0) } {
        0 => Ok(()),
        e => Err(e),
    }
}
