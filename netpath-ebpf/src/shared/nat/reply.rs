//! The way back: replies and ICMP errors about a translated flow, translated back
//! and handed straight to the pod.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use netpath_common::{
    Endpoint, NatKey, NatTarget, Reason, Settings, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};
use network_types::eth::EthHdr;

use super::{in_range, ports, track_close};
use crate::shared::{
    clock::now_ns,
    csum, deliver,
    ipv4::{Ip, IP, IP_CHECK, IP_DST},
    l4::{icmp, tcp},
    maps::{ENDPOINTS, NAT_IN, NAT_OUT},
    packet::header_mut,
    rewrite::{ne16, Rewrite},
};

/// A packet to the node's own address: if it answers a translated flow (its
/// destination port is in the range), translate it back and hand it to the pod.
/// `None`: not NAT's business, the host stack has it.
#[inline(always)]
pub fn reply(ctx: &TcContext, ip: &Ip, s: &Settings) -> Option<(i32, Reason)> {
    if ip.fragment() {
        // Without the first fragment's ports there is nothing to match.
        return None;
    }
    if ip.proto == IPPROTO_ICMP {
        let h: [u8; 1] = ctx.load(IP + ip.len).ok()?;
        if h[0] == icmp::DEST_UNREACH || h[0] == icmp::TIME_EXCEEDED {
            return icmp_error(ctx, ip, s);
        }
    }
    let p = ports(ctx, ip, false)?;
    if !in_range(p.local, s) {
        return None;
    }
    let nk = NatKey {
        remote: ip.src,
        remote_port: p.remote,
        nat_port: p.local,
        proto: ip.proto,
        _pad: [0; 3],
    };
    let Some((target, ep)) = live_target(&nk, p.tcp_flags) else {
        return unknown(ip.proto);
    };
    let rewrite = Rewrite {
        ip_at: IP_DST,
        old_ip: s.node_ip,
        new_ip: target.pod,
        port_at: p.at,
        old_port: p.local,
        new_port: target.pod_port,
        csum: p.csum,
        proto: ip.proto,
    };
    Some(to_pod(ctx, &rewrite, &ep, s, Reason::NatReply))
}

/// What becomes of a packet (or an error about one) for a translated port with no
/// live translation. The node's own pings pick identifiers freely, so an unknown
/// echo may be one of them: the stack has it. TCP and UDP in the range are ours alone.
#[inline(always)]
fn unknown(proto: u8) -> Option<(i32, Reason)> {
    if proto == IPPROTO_ICMP {
        return None;
    }
    Some((TC_ACT_SHOT, Reason::DropNatUnknown))
}

/// The pod behind a translated tuple, if its flow is live; marks the flow as
/// answered (and closing on FIN or RST).
#[inline(always)]
fn live_target(nk: &NatKey, tcp_flags: u8) -> Option<(NatTarget, Endpoint)> {
    // SAFETY: map values are plain data, copied out at once.
    let target = unsafe { NAT_IN.get(nk) }.copied()?;
    let owner = nk.owner(&target);
    let flow = NAT_OUT.get_ptr_mut(owner)?;
    let t = now_ns();
    // SAFETY: as in `masquerade`.
    unsafe {
        let f = &mut *flow;
        if f.nat_port != nk.nat_port || f.expired(nk.proto, t) {
            return None;
        }
        f.last_seen = t;
        f.seen_reply = 1;
        track_close(f, tcp_flags);
        if tcp_flags & tcp::FIN != 0 {
            f.fin_in = 1;
        }
    }
    // SAFETY: as above.
    let ep = unsafe { ENDPOINTS.get(target.pod) }.copied()?;
    Some((target, ep))
}

/// An ICMP destination-unreachable (fragmentation needed included) or
/// time-exceeded about a translated flow: the quoted packet is the translated one,
/// so the pod would not recognise it. Translate the outer destination and the
/// quoted source back, so path-MTU discovery and traceroute work from pods.
#[inline(always)]
fn icmp_error(ctx: &TcContext, ip: &Ip, s: &Settings) -> Option<(i32, Reason)> {
    let icmp = IP + ip.len;
    let inner = icmp + 8;
    let ih: [u8; 20] = ctx.load(inner).ok()?;
    let ihl = (ih[0] & 0x0f) as usize * 4;
    if ih[0] >> 4 != 4 || ihl < 20 || [ih[12], ih[13], ih[14], ih[15]] != s.node_ip {
        return None;
    }
    let proto = ih[9];
    let il4 = inner + ihl;
    let q: [u8; 8] = ctx.load(il4).ok()?;
    let (nat_port, remote_port, port_at) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => ([q[0], q[1]], [q[2], q[3]], il4),
        IPPROTO_ICMP if q[0] == icmp::ECHO => ([q[4], q[5]], [0, 0], il4 + 4),
        _ => return None,
    };
    if !in_range(nat_port, s) {
        return None;
    }
    let nk = NatKey {
        remote: [ih[16], ih[17], ih[18], ih[19]],
        remote_port,
        nat_port,
        proto,
        _pad: [0; 3],
    };
    let Some((target, ep)) = live_target(&nk, 0) else {
        return unknown(proto);
    };
    if icmp_error_rewrite(ctx, s, &target, icmp, inner, &ih, proto, port_at, il4, &q).is_err() {
        return Some((TC_ACT_SHOT, Reason::DropNatUnsupported));
    }
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return Some((TC_ACT_SHOT, Reason::DropTruncated));
    };
    // An error about the pod's own translated flow: it passes policy as the flow did.
    Some(deliver::into_pod(eth, &ep, Some(s), Reason::NatIcmpError))
}

/// Outer destination, quoted source address, quoted header checksum, quoted port
/// (or echo identifier) and the quoted UDP or ICMP checksum, each change balanced in
/// the ICMP checksum that covers the quote.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn icmp_error_rewrite(
    ctx: &TcContext,
    s: &Settings,
    target: &NatTarget,
    icmp: usize,
    inner: usize,
    ih: &[u8; 20],
    proto: u8,
    port_at: usize,
    il4: usize,
    q: &[u8; 8],
) -> Result<(), i64> {
    let (node, pod) = (
        u32::from_ne_bytes(s.node_ip),
        u32::from_ne_bytes(target.pod),
    );
    let icmp_csum = icmp + 2;
    ctx.store(IP_DST, &target.pod, 0)?;
    ctx.l3_csum_replace(IP_CHECK, node as u64, pod as u64, 4)?;

    ctx.store(inner + 12, &target.pod, 0)?;
    ctx.l4_csum_replace(icmp_csum, node as u64, pod as u64, 4)?;
    let old_check = [ih[10], ih[11]];
    let new_check = csum::update(old_check, &s.node_ip, &target.pod);
    ctx.store(inner + 10, &new_check, 0)?;
    ctx.l4_csum_replace(icmp_csum, ne16(old_check), ne16(new_check), 2)?;

    let nat_port = if proto == IPPROTO_ICMP {
        [q[4], q[5]]
    } else {
        [q[0], q[1]]
    };
    ctx.store(port_at, &target.pod_port, 0)?;
    ctx.l4_csum_replace(icmp_csum, ne16(nat_port), ne16(target.pod_port), 2)?;

    // The quoted L4 checksum, where the quote holds it: UDP's (zero stays zero, it
    // means none) and an echo's own; TCP's lies beyond the 8 bytes routers must quote.
    let (sum_at, old_sum, new_sum) = match proto {
        IPPROTO_UDP if q[6] | q[7] != 0 => {
            let new = csum::update([q[6], q[7]], &s.node_ip, &target.pod);
            let new = csum::update(new, &nat_port, &target.pod_port);
            (
                il4 + 6,
                [q[6], q[7]],
                if new == [0, 0] { [0xff, 0xff] } else { new },
            )
        }
        IPPROTO_ICMP => {
            let new = csum::update([q[2], q[3]], &nat_port, &target.pod_port);
            (il4 + 2, [q[2], q[3]], new)
        }
        _ => return Ok(()),
    };
    ctx.store(sum_at, &new_sum, 0)?;
    ctx.l4_csum_replace(icmp_csum, ne16(old_sum), ne16(new_sum), 2)?;
    Ok(())
}

#[inline(always)]
fn to_pod(
    ctx: &TcContext,
    rewrite: &Rewrite,
    ep: &Endpoint,
    s: &Settings,
    ok: Reason,
) -> (i32, Reason) {
    if rewrite.apply(ctx).is_err() {
        return (TC_ACT_SHOT, Reason::DropNatUnsupported);
    }
    deliver::to_local_pod(ctx, ep, Some(s), ok)
}
