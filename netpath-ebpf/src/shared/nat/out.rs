//! The way out: a pod's new flow gets a port of the range (one a remote in TIME_WAIT
//! takes), and each of its packets leaves with the node's address.
use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_SHOT},
    helpers::generated::bpf_get_prandom_u32,
    programs::TcContext,
};
use netpath_common::{Flow, FlowKey, NatKey, NatTarget, Reason, Settings, IPPROTO_TCP};

use super::{ports, track_close, Ports};
use crate::shared::{
    clock::now_ns,
    deliver,
    ipv4::{Ip, IP_SRC},
    l4::tcp,
    maps::{EEXIST, NAT_IN, NAT_OUT},
    rewrite::Rewrite,
};

/// Ports looked at for a new flow (a bound the verifier can walk, on 5.10 too). Each
/// is free, or its flow ended and the remote's TIME_WAIT takes a new SYN there
/// (about half of the ended ones, see `judge`), or neither: only if all are neither
/// (odds of 1 in 65 536 in a range of ended flows) does a SYN go where the remote
/// refuses it once. A range up to this size is searched whole.
const CANDIDATES: u32 = 16;

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
    let t = now_ns();
    let syn = p.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN;
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
    let fin = p.tcp_flags & tcp::FIN != 0;
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
    let flow = Flow::new(t, nat_port);
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
