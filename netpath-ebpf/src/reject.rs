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

use crate::{
    l4::L4,
    packet::{fold, ipv4_checksum},
    rewrite::IP,
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
/// What an ICMP error quotes: the refused packet's IP header and 8 bytes after it.
const QUOTE: usize = 28;

/// Turns the refused packet into its refusal and sends it back; counted as
/// `drop-svc-no-backend` either way (a reset is never answered with a reset).
#[inline(always)]
pub fn refuse(ctx: &TcContext, p: &L4, ifindex: u32) -> (i32, Reason) {
    let built = if p.tuple.proto == IPPROTO_TCP {
        if p.tcp_flags & TCP_RST != 0 {
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
    let (s, d, t) = (p.tuple.dst, p.tuple.src, total.to_be_bytes());
    let mut h = [
        0x45, tos, t[0], t[1], 0, 0, 0x40, 0, 64, proto, 0, 0, s[0], s[1], s[2], s[3], d[0], d[1],
        d[2], d[3],
    ];
    let c = ipv4_checksum(&h).to_be_bytes();
    h[10] = c[0];
    h[11] = c[1];
    h
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
    let (seq, ack, out_flags) = if flags & TCP_ACK != 0 {
        ([seg[8], seg[9], seg[10], seg[11]], [0; 4], TCP_RST)
    } else {
        let payload = (p.total as usize).saturating_sub(p.ip_len as usize + doff) as u32;
        let used = payload + (flags & TCP_SYN != 0) as u32 + (flags & TCP_FIN != 0) as u32;
        let next = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]).wrapping_add(used);
        ([0; 4], next.to_be_bytes(), TCP_RST | TCP_ACK)
    };
    let (sp, dp) = (p.tuple.dst_port, p.tuple.src_port);
    let mut tcp = [
        sp[0], sp[1], dp[0], dp[1], seq[0], seq[1], seq[2], seq[3], ack[0], ack[1], ack[2], ack[3],
        0x50, out_flags, 0, 0, 0, 0, 0, 0,
    ];
    let ip = ip_header(p, IPPROTO_TCP, 40, 0);
    let c = l4_checksum(&ip, &tcp).to_be_bytes();
    tcp[16] = c[0];
    tcp[17] = c[1];
    change_tail(ctx, (IP + 40) as u32)?;
    ctx.store(IP, &ip, 0)?;
    ctx.store(IP + 20, &tcp, 0)
}

/// TCP's checksum over the pseudo-header of `ip` and the 20-byte segment `tcp`.
#[inline(always)]
fn l4_checksum(ip: &[u8; 20], tcp: &[u8; 20]) -> u16 {
    let mut sum = IPPROTO_TCP as u32 + 20;
    let mut i = 12;
    while i < 20 {
        sum += u16::from_be_bytes([ip[i], ip[i + 1]]) as u32;
        i += 2;
    }
    let mut i = 0;
    while i < 20 {
        sum += u16::from_be_bytes([tcp[i], tcp[i + 1]]) as u32;
        i += 2;
    }
    fold(sum)
}

/// ICMP port unreachable quoting the datagram's header and first 8 bytes.
#[inline(always)]
fn unreachable(ctx: &TcContext, p: &L4) -> Result<(), i64> {
    if p.ip_len != 20 {
        return Err(0);
    }
    let quote: [u8; QUOTE] = ctx.load(IP)?;
    let mut icmp = [ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0, 0, 0, 0, 0, 0];
    let mut sum = u16::from_be_bytes([icmp[0], icmp[1]]) as u32;
    let mut i = 0;
    while i < QUOTE {
        sum += u16::from_be_bytes([quote[i], quote[i + 1]]) as u32;
        i += 2;
    }
    let c = fold(sum).to_be_bytes();
    icmp[2] = c[0];
    icmp[3] = c[1];
    let ip = ip_header(p, IPPROTO_ICMP, (20 + 8 + QUOTE) as u16, 0xc0);
    change_tail(ctx, (IP + 20 + 8 + QUOTE) as u32)?;
    ctx.store(IP, &ip, 0)?;
    ctx.store(IP + 20, &icmp, 0)?;
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
