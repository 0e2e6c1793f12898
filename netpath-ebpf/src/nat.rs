//! Masquerade: a pod's flow to the world outside the cluster leaves with the node's
//! underlay address (source NAT); replies and ICMP errors about it are translated
//! back here and handed straight to the pod. The state lives in the pinned NAT maps,
//! so an agent restart keeps every flow.
//!
//! Every rewrite goes through the store and checksum helpers: they keep the skb's
//! checksum state right (CHECKSUM_PARTIAL from a pod's TSO, CHECKSUM_COMPLETE on
//! receive), which hand-made incremental sums cannot.
use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_SHOT},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::TcContext,
};
use netpath_common::{
    Endpoint, Flow, FlowKey, Ipv4, NatKey, NatTarget, Reason, Settings, IPPROTO_ICMP, IPPROTO_TCP,
    IPPROTO_UDP,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    deliver,
    maps::{ENDPOINTS, NAT_IN, NAT_OUT},
    packet::{fold, header_mut},
    rewrite::{ne16, Rewrite, IP, IP_CHECK, IP_DST, IP_SRC},
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

const EEXIST: i32 = 17;
/// Ports looked at for a new flow (a bound the verifier can walk, on 5.10 too). Each
/// is free, or its flow ended and the remote's TIME_WAIT takes a new SYN there
/// (about half of the ended ones, see `judge`), or neither: only if all are neither
/// (odds of 1 in 65 536 in a range of ended flows) does a SYN go where the remote
/// refuses it once. A range up to this size is searched whole.
const CANDIDATES: u32 = 16;

/// The IPv4 header fields NAT needs, copied before any helper invalidates the
/// packet pointers.
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
    /// The fields of a well-formed header (version 4, at least 20 bytes).
    #[inline(always)]
    pub fn of(h: &Ipv4Hdr) -> Option<Self> {
        if h.vihl >> 4 != 4 || h.vihl & 0x0f < 5 {
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
        // MF set or a non-zero offset.
        self.frags[0] & 0x3f != 0 || self.frags[1] != 0
    }
}

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
            let want = if outbound { ICMP_ECHO } else { ICMP_ECHO_REPLY };
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

/// The TCP timestamp value (RFC 7323) of the segment `p`, where Linux puts it: after
/// MSS and SACK-permitted (or two NOPs) in a SYN, option offset 6; after two NOPs in
/// other segments, offset 2. Fixed offsets and fixed-size reads, no option walk: a
/// data-dependent loop costs the verifier too much on this path (and 5.10 refuses the
/// variable-offset reads it needs). Elsewhere the timestamp counts as absent.
#[inline(always)]
fn tcp_tsval(ctx: &TcContext, p: &Ports) -> Option<[u8; 4]> {
    let opts = p.doff.wrapping_sub(20);
    let start = p.l4 + 20;
    if opts >= 16 {
        let o: [u8; 12] = ctx.load(start + 4).ok()?;
        if o[2] == 8 && o[3] == 10 {
            return Some([o[4], o[5], o[6], o[7]]);
        }
    }
    if opts >= 12 {
        let o: [u8; 8] = ctx.load(start).ok()?;
        if o[2] == 8 && o[3] == 10 {
            return Some([o[4], o[5], o[6], o[7]]);
        }
    }
    None
}

/// What a remote's TIME_WAIT checks a new SYN on an old tuple by. Plain fields, no
/// `Option` inside: an absent payload is uninitialised stack, which 5.10's verifier
/// refuses to see copied.
#[derive(Clone, Copy)]
struct Syn {
    seq: [u8; 4],
    tsval: [u8; 4],
    has_ts: bool,
}

/// `a` comes after `b` in 32-bit sequence space.
#[inline(always)]
fn after(a: [u8; 4], b: [u8; 4]) -> bool {
    (u32::from_be_bytes(a).wrapping_sub(u32::from_be_bytes(b)) as i32) > 0
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn in_range(port: [u8; 2], s: &Settings) -> bool {
    let p = u16::from_be_bytes(port);
    p >= s.nat_port_min && p <= s.nat_port_max
}

/// A pod's packet to a destination outside the cluster and outside `NAT_EXEMPT`:
/// translate its source to the node's address and a port of the range, and send it
/// out of the underlay. The caller has checked and decremented the TTL.
#[inline(always)]
pub fn masquerade(ctx: &TcContext, ip: &Ip, s: &Settings) -> (i32, Reason) {
    if ip.fragment() {
        return (TC_ACT_SHOT, Reason::DropNatUnsupported);
    }
    let Some(p) = ports(ctx, ip, true) else {
        return (TC_ACT_SHOT, Reason::DropNatUnsupported);
    };
    let key = FlowKey {
        pod: ip.src,
        remote: ip.dst,
        pod_port: p.local,
        remote_port: p.remote,
        proto: ip.proto,
        _pad: [0; 3],
    };
    let t = now();
    let syn = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // Only a SYN opens a TCP translation: a stray segment of a flow gone (its port
    // maybe another flow's by now) must not take a port of its own.
    let opens = ip.proto != IPPROTO_TCP || syn;
    let ts = if syn { tcp_tsval(ctx, &p) } else { None };
    let new = Syn {
        seq: p.seq,
        tsval: ts.unwrap_or([0; 4]),
        has_ts: ts.is_some(),
    };
    let flow = match translation(&key, s, t, syn.then_some(&new), opens) {
        Ok(f) => f,
        Err(reason) => return (TC_ACT_SHOT, reason),
    };
    // SAFETY: a map value; the kernel keeps it alive under RCU while we run. Each
    // field is a plain store of its own (see `Flow`).
    let nat_port = outbound_seen(ctx, ip, &p, unsafe { &mut *flow }, t);
    let rewrite = Rewrite {
        ip_at: IP_SRC,
        old_ip: ip.src,
        new_ip: s.node_ip,
        port_at: p.at,
        old_port: p.local,
        new_port: nat_port,
        csum: p.csum,
        proto: ip.proto,
    };
    if rewrite.apply(ctx).is_err() {
        return (TC_ACT_SHOT, Reason::DropNatUnsupported);
    }
    deliver::to_underlay(s.underlay_ifindex, None, Reason::Masqueraded)
}

/// An outbound packet of a translated flow: when it was seen, how far its closing
/// got, and what the remote's TIME_WAIT will hold; returns the flow's port.
#[inline(always)]
fn outbound_seen(ctx: &TcContext, ip: &Ip, p: &Ports, f: &mut Flow, t: u64) -> [u8; 2] {
    f.last_seen = t;
    track_close(f, p.tcp_flags);
    let fin = p.tcp_flags & TCP_FIN != 0;
    if ip.proto == IPPROTO_TCP && (fin || f.fin_in != 0 || f.fin_out != 0) {
        if let Some(ts) = tcp_tsval(ctx, p) {
            f.last_tsval = ts;
        }
        if fin {
            let payload = ip.total.saturating_sub(ip.len + p.doff) as u32;
            f.fin_seq = u32::from_be_bytes(p.seq)
                .wrapping_add(payload + 1)
                .to_be_bytes();
            f.fin_out = 1;
        }
    }
    f.nat_port
}

/// RST, and the ACK that ends a closing handshake (FIN each way already seen),
/// both ways alike. Each flag is its own byte: no read-modify-write.
#[inline(always)]
fn track_close(f: &mut Flow, tcp_flags: u8) {
    if tcp_flags & TCP_RST != 0 {
        f.rst = 1;
    } else if f.fin_out != 0 && f.fin_in != 0 && tcp_flags & (TCP_FIN | TCP_SYN) == 0 {
        f.closed = 1;
    }
}

/// A flow whose port another flow may take now.
#[inline(always)]
fn reusable(f: &Flow, proto: u8, t: u64) -> bool {
    f.rst != 0 || f.closed != 0 || f.expired(proto, t)
}

/// The flow's entry: the existing one, or (if `opens`) a new one with a port of its own.
#[inline(always)]
fn translation(
    key: &FlowKey,
    s: &Settings,
    t: u64,
    syn: Option<&Syn>,
    opens: bool,
) -> Result<*mut Flow, Reason> {
    if let Some(f) = NAT_OUT.get_ptr_mut(key) {
        // SAFETY: as in `masquerade`.
        let f = unsafe { &mut *f };
        let ended = f.rst != 0 || f.closed != 0 || (f.fin_out != 0 && f.fin_in != 0);
        if f.expired(key.proto, t) || (syn.is_some() && ended) {
            // The same tuple again after its flow ended: a new flow on the same port.
            f.seen_reply = 0;
            f.fin_out = 0;
            f.fin_in = 0;
            f.rst = 0;
            f.closed = 0;
        }
        return Ok(f);
    }
    if !opens {
        return Err(Reason::DropNatUnknown);
    }
    let nat_port = claim_port(key, s, t, syn)?;
    let flow = Flow {
        last_seen: t,
        nat_port,
        seen_reply: 0,
        fin_out: 0,
        fin_in: 0,
        rst: 0,
        closed: 0,
        _pad: 0,
        last_tsval: [0; 4],
        fin_seq: [0; 4],
    };
    if let Err(e) = NAT_OUT.insert(key, flow, BPF_NOEXIST as u64) {
        let _ = NAT_IN.remove(key.translated(nat_port));
        if e != -EEXIST {
            return Err(Reason::DropNatTableFull);
        }
        // Another CPU translated the same flow first: use its port.
    }
    NAT_OUT.get_ptr_mut(key).ok_or(Reason::DropNatTableFull)
}

/// Takes a port of the range no other flow uses toward the same remote address and
/// port, starting at a random one (so ports are hard to guess and spread evenly).
/// Each port is tried as free first and, if taken, judged at once: a busy range is
/// all ended flows (closed ones are held for the remote's TIME_WAIT), and the first
/// one the remote accepts a SYN on is as good as a free port.
#[inline(always)]
fn claim_port(key: &FlowKey, s: &Settings, t: u64, syn: Option<&Syn>) -> Result<[u8; 2], Reason> {
    let (min, max) = (s.nat_port_min as u32, s.nat_port_max as u32);
    if max < min {
        return Err(Reason::DropNatNoPort);
    }
    let span = max - min + 1;
    // SAFETY: helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() } % span;
    let target = NatTarget {
        pod: key.pod,
        pod_port: key.pod_port,
        _pad: [0; 2],
    };
    let port_at = |i: u32| ((min + (start + i) % span) as u16).to_be_bytes();
    // No `i < span` in the loop condition: a range smaller than the candidates is
    // walked again (its ports fail as taken), and the verifier sees one way out. The
    // loop keeps no state but `i`, so the verifier's work grows with CANDIDATES, not
    // with its square.
    let mut i = 0;
    while i < CANDIDATES {
        let nk = key.translated(port_at(i));
        match NAT_IN.insert(nk, target, BPF_NOEXIST as u64) {
            Ok(()) => return Ok(port_at(i)),
            Err(e) if e == -EEXIST => {}
            Err(_) => return Err(Reason::DropNatTableFull),
        }
        let freed = match judge(&nk, t, syn) {
            Judge::Free => true,
            Judge::Ended {
                owner,
                accepted: true,
            } => {
                take(&nk, &owner);
                true
            }
            _ => false,
        };
        // Free now; another CPU may still have been quicker.
        if freed && NAT_IN.insert(nk, target, BPF_NOEXIST as u64).is_ok() {
            return Ok(port_at(i));
        }
        i += 1;
    }
    // The last resort: the first port, if its flow ended, though the remote refuses
    // the SYN there once (the pod retries ~10 ms later).
    let nk = key.translated(port_at(0));
    if let Judge::Ended { owner, .. } = judge(&nk, t, syn) {
        take(&nk, &owner);
        if NAT_IN.insert(nk, target, BPF_NOEXIST as u64).is_ok() {
            return Ok(port_at(0));
        }
    }
    Err(Reason::DropNatNoPort)
}

/// What holds a translated tuple.
enum Judge {
    /// Nothing any more.
    Free,
    /// A flow that ended (closed, reset or expired); `accepted`: a remote still in
    /// TIME_WAIT for it takes the new SYN as a new connection (Linux: a newer
    /// timestamp, or an equal one and a sequence number past the old FIN; without
    /// timestamps that sequence check alone). Linux gives every connection its own
    /// timestamp offset, so about half the ended flows qualify.
    Ended { owner: FlowKey, accepted: bool },
    /// A live flow, or one another CPU is claiming the port for.
    Live,
}

#[inline(always)]
fn judge(nk: &NatKey, t: u64, syn: Option<&Syn>) -> Judge {
    // SAFETY: map values are plain data, copied out at once.
    let Some(target) = (unsafe { NAT_IN.get(nk) }).copied() else {
        return Judge::Free;
    };
    let owner = nk.owner(&target);
    // A translation without its flow, or whose flow holds another port, is what
    // another CPU's claim looks like between its two inserts: taking the port would
    // hand one tuple to two flows. Not ours to take; the collector frees a true
    // orphan at its second sighting.
    // SAFETY: as above.
    let Some(f) = unsafe { NAT_OUT.get(owner) }.copied() else {
        return Judge::Live;
    };
    if f.nat_port != nk.nat_port {
        return Judge::Live;
    }
    if !reusable(&f, nk.proto, t) {
        return Judge::Live;
    }
    let accepted = match syn {
        _ if f.rst != 0 || f.expired(nk.proto, t) => true,
        Some(n) if n.has_ts && f.last_tsval != [0; 4] => {
            after(n.tsval, f.last_tsval) || (n.tsval == f.last_tsval && after(n.seq, f.fin_seq))
        }
        Some(n) if !n.has_ts => after(n.seq, f.fin_seq),
        _ => false,
    };
    Judge::Ended { owner, accepted }
}

/// Frees a tuple that `judge` found ended.
#[inline(always)]
fn take(nk: &NatKey, owner: &FlowKey) {
    let _ = NAT_OUT.remove(owner);
    let _ = NAT_IN.remove(nk);
}

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
        if h[0] == ICMP_DEST_UNREACH || h[0] == ICMP_TIME_EXCEEDED {
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
    let t = now();
    // SAFETY: as in `masquerade`.
    unsafe {
        let f = &mut *flow;
        if f.nat_port != nk.nat_port || f.expired(nk.proto, t) {
            return None;
        }
        f.last_seen = t;
        f.seen_reply = 1;
        track_close(f, tcp_flags);
        if tcp_flags & TCP_FIN != 0 {
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
        IPPROTO_ICMP if q[0] == ICMP_ECHO => ([q[4], q[5]], [0, 0], il4 + 4),
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
    Some(deliver::to_local_pod(
        eth,
        &ep,
        Some(s),
        Reason::NatIcmpError,
    ))
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
    let new_check = csum_update(old_check, &s.node_ip, &target.pod);
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
            let new = csum_update([q[6], q[7]], &s.node_ip, &target.pod);
            let new = csum_update(new, &nat_port, &target.pod_port);
            (
                il4 + 6,
                [q[6], q[7]],
                if new == [0, 0] { [0xff, 0xff] } else { new },
            )
        }
        IPPROTO_ICMP => {
            let new = csum_update([q[2], q[3]], &nat_port, &target.pod_port);
            (il4 + 2, [q[2], q[3]], new)
        }
        _ => return Ok(()),
    };
    ctx.store(sum_at, &new_sum, 0)?;
    ctx.l4_csum_replace(icmp_csum, ne16(old_sum), ne16(new_sum), 2)?;
    Ok(())
}

/// RFC 1624 (eqn. 3): a checksum after the 16-bit words `old` became `new`.
#[inline(always)]
fn csum_update<const N: usize>(check: [u8; 2], old: &[u8; N], new: &[u8; N]) -> [u8; 2] {
    let mut sum = !u16::from_be_bytes(check) as u32;
    let mut i = 0;
    while i + 1 < N {
        sum += !u16::from_be_bytes([old[i], old[i + 1]]) as u32;
        sum += u16::from_be_bytes([new[i], new[i + 1]]) as u32;
        i += 2;
    }
    fold(sum).to_be_bytes()
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
    // The helpers invalidated every packet pointer: look the header up again.
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    deliver::to_local_pod(eth, ep, Some(s), ok)
}
