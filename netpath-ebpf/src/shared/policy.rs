//! Network policy's two points: a pod's egress (where its packet leaves it, after a
//! service's translation so the backend is judged) and its ingress (where a packet is
//! handed to it, on every path). A connection is judged once, by its first packet,
//! and its verdict kept in `POLICY_CT` with the policy revision it was made under:
//! later packets take one lookup, and a policy change judges each live connection
//! again at its next packet.
//!
//! Out of line (a BPF call) with its keys in a per-CPU scratch entry: `from_pod`
//! already fills 5.10's 512-byte stack.
use aya_ebpf::{bindings::BPF_ANY, btf_maps::lpm_trie::Key, programs::TcContext};
use netpath_common::{
    NetAddr, PolicyPeerKey, PolicyPortKey, PolicyScratch, Reason, Settings, TrieKey, FAMILY_IPV4,
    IPPROTO_TCP, IPPROTO_UDP, POLICY_EGRESS, POLICY_INGRESS,
};

use super::{
    clock::now_ns,
    ipv4::{in_prefix, IP},
    maps::{
        POLICY_CT, POLICY_ENDPOINTS, POLICY_FRAGS, POLICY_PEERS, POLICY_PORTS, POLICY_SCRATCH,
        SVC_FLOWS,
    },
};

const IPPROTO_SCTP: u8 = 132;
const IPPROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// The "more fragments" bit of the flags/offset field's first byte.
const MORE_FRAGMENTS: u8 = 0x20;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// Whether any policy is in the maps: without one no packet pays a lookup.
#[inline(always)]
pub fn on(s: Option<&Settings>) -> bool {
    s.is_some_and(|s| s.policy_rev != 0)
}

/// The egress point of the pod that sent the packet at `ctx` (its IPv4 header after
/// the Ethernet header): `Ok` or the drop's reason.
#[inline(always)]
pub fn egress(ctx: &TcContext, s: &Settings) -> Result<(), Reason> {
    verdict(point(ctx, POLICY_EGRESS, s))
}

/// The ingress point of the local pod the packet at `ctx` is for.
#[inline(always)]
pub fn ingress(ctx: &TcContext, s: &Settings) -> Result<(), Reason> {
    verdict(point(ctx, POLICY_INGRESS, s))
}

#[inline(always)]
fn verdict(r: u32) -> Result<(), Reason> {
    match r {
        0 => Ok(()),
        r if r == Reason::DropPolicyEgress as u32 => Err(Reason::DropPolicyEgress),
        r if r == Reason::DropPolicyIngress as u32 => Err(Reason::DropPolicyIngress),
        r if r == Reason::DropPolicyTableFull as u32 => Err(Reason::DropPolicyTableFull),
        _ => Err(Reason::DropTruncated),
    }
}

/// 0: pass; else a `Reason`'s number.
#[inline(never)]
fn point(ctx: &TcContext, at: u8, s: &Settings) -> u32 {
    let Some(sc) = POLICY_SCRATCH.get_ptr_mut(0) else {
        return Reason::DropTruncated as u32;
    };
    // SAFETY: this CPU's scratch entry; nothing else runs on it meanwhile.
    unsafe { point_in(ctx, at, s, sc) }
}

/// The point's work with its state in `sc`, not in locals: whatever lives across a
/// helper call is read back from the scratch entry instead of being spilled to a
/// stack 5.10 has no room for.
///
/// SAFETY: `sc` is this CPU's scratch entry.
// Keys by reference: by value they would be copied onto the stack first.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
unsafe fn point_in(ctx: &TcContext, at: u8, s: &Settings, sc: *mut PolicyScratch) -> u32 {
    if ctx.data() + IP + 20 > ctx.data_end() {
        return Reason::DropTruncated as u32;
    }
    let h = (ctx.data() + IP) as *const [u8; 20];
    let k = &mut (*sc).ct;
    // Written as the packet holds them, then turned the way packets enter the pod:
    // choosing between two locals would spill them onto the stack.
    set_v4(&mut k.src, [(*h)[12], (*h)[13], (*h)[14], (*h)[15]]);
    set_v4(&mut k.dst, [(*h)[16], (*h)[17], (*h)[18], (*h)[19]]);
    if at == POLICY_EGRESS {
        swap_v4(&mut k.src, &mut k.dst);
    }
    k.protocol = (*h)[9];
    k.family = FAMILY_IPV4;
    k._pad = [0; 2];
    k.src_port = [0; 2];
    k.dst_port = [0; 2];
    (*sc).tcp_flags = 0;
    (*sc).at = at;
    (*sc).rev = s.policy_rev;
    set_addr(&mut (*sc).local, addr4(&(*sc).ct.dst));
    let Some(ep) = POLICY_ENDPOINTS.get_ptr(&(*sc).local) else {
        return 0;
    };
    (*sc).ep = *ep;
    let proto = (*sc).ct.protocol;
    let l4 = IP + ((((*h)[0] & 0x0f) as usize * 4) & 0x3f);
    let frags = [(*h)[6], (*h)[7]];
    // Not the first fragment: no L4 header of its own.
    let later = frags[0] & 0x1f != 0 || frags[1] != 0;
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP {
        let f = &mut (*sc).frag;
        f.id = [(*h)[4], (*h)[5]];
        // Peer and pod, as the connection's key: one datagram's fragments all meet
        // the same point.
        f.src = addr4(&(*sc).ct.src);
        f.dst = addr4(&(*sc).ct.dst);
        f.protocol = proto;
        f._pad = 0;
        if later {
            // A later fragment follows its datagram's first: the ports it carried.
            let Some(ports) = POLICY_FRAGS.get_ptr(&(*sc).frag) else {
                return denied(at);
            };
            set_ports(sc, [(*ports)[0], (*ports)[1]], [(*ports)[2], (*ports)[3]]);
        } else {
            if ctx.data() + l4 + 14 > ctx.data_end() {
                let _ = ctx.pull_data((l4 + 14) as u32);
            }
            let p = (ctx.data() + l4) as *const [u8; 14];
            if p as usize + 4 > ctx.data_end() {
                return Reason::DropTruncated as u32;
            }
            set_ports(sc, [(*p)[0], (*p)[1]], [(*p)[2], (*p)[3]]);
            if proto == IPPROTO_TCP {
                if p as usize + 14 > ctx.data_end() {
                    return Reason::DropTruncated as u32;
                }
                (*sc).tcp_flags = (*p)[13];
            }
            if frags[0] & MORE_FRAGMENTS != 0 {
                let ports = [(*p)[0], (*p)[1], (*p)[2], (*p)[3]];
                let _ = POLICY_FRAGS.insert(&(*sc).frag, &ports, BPF_ANY as u64);
            }
        }
    } else if proto == IPPROTO_ICMP && !later {
        if let Some(verdict) = icmp_error(ctx, sc, l4, at) {
            return verdict;
        }
    }
    if let Some(e) = POLICY_CT.get_ptr_mut(&(*sc).ct) {
        if (*e).rev != (*sc).rev {
            // Judged again as first judged: by its connection's first packet.
            let allowed = judge(sc, (*e).first);
            (*e).denied = (!allowed) as u8;
            (*e).rev = (*sc).rev;
        }
        if (*e).denied != 0 {
            return denied(at);
        }
        if (*sc).tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            (*e).closing = 1;
        }
        (*e).last_seen = now_ns();
        return 0;
    }
    if at == POLICY_INGRESS && service_reply(s, sc) {
        return 0;
    }
    (*sc).ct_entry.first = at;
    if !judge(sc, at) {
        // A TCP segment other than a SYN of a connection whose entry expired: a reply
        // if its connection's first packet would be allowed the other way.
        let f = (*sc).tcp_flags;
        let mid_stream = (*sc).ct.protocol == IPPROTO_TCP && (f & TCP_SYN == 0 || f & TCP_ACK != 0);
        if !(mid_stream && judge(sc, other(at))) {
            return denied(at);
        }
        (*sc).ct_entry.first = other(at);
    }
    let e = &mut (*sc).ct_entry;
    e.last_seen = now_ns();
    e.rev = (*sc).rev;
    e.denied = 0;
    e.closing = 0;
    e._pad = 0;
    if POLICY_CT
        .insert(&(*sc).ct, &(*sc).ct_entry, BPF_ANY as u64)
        .is_err()
    {
        return Reason::DropPolicyTableFull as u32;
    }
    0
}

/// The ports of a packet at `sc.at`, into the key the way the packet enters the pod.
///
/// SAFETY: as `point_in`.
#[inline(always)]
unsafe fn set_ports(sc: *mut PolicyScratch, sport: [u8; 2], dport: [u8; 2]) {
    let k = &mut (*sc).ct;
    if (*sc).at == POLICY_EGRESS {
        k.src_port = dport;
        k.dst_port = sport;
    } else {
        k.src_port = sport;
        k.dst_port = dport;
    }
}

/// An ICMP error (unreachable, time exceeded, parameter problem: Packet Too Big is
/// one) passes as its connection does: the packet it quotes went the other way
/// through this pod's other point. `None`: not an error.
///
/// SAFETY: as `point_in`.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
unsafe fn icmp_error(ctx: &TcContext, sc: *mut PolicyScratch, l4: usize, at: u8) -> Option<u32> {
    // The ICMP header, the quoted IPv4 header (options too) and its ports.
    let need = l4 + 8 + 60 + 4;
    if ctx.data() + need > ctx.data_end() {
        let _ = ctx.pull_data(need as u32);
    }
    let icmp = (ctx.data() + l4) as *const [u8; 28];
    if icmp as usize + 28 > ctx.data_end() {
        return None;
    }
    let t = (*icmp)[0];
    if t != ICMP_DEST_UNREACH && t != ICMP_TIME_EXCEEDED && t != ICMP_PARAMETER_PROBLEM {
        return None;
    }
    let inner = (ctx.data() + l4 + 8) as *const [u8; 20];
    // The quoted packet went the other way: its source is the peer where this
    // error leaves the pod, its destination where the error enters it.
    let k = &mut (*sc).ct;
    set_v4(
        &mut k.src,
        [(*inner)[12], (*inner)[13], (*inner)[14], (*inner)[15]],
    );
    set_v4(
        &mut k.dst,
        [(*inner)[16], (*inner)[17], (*inner)[18], (*inner)[19]],
    );
    if at == POLICY_INGRESS {
        swap_v4(&mut k.src, &mut k.dst);
    }
    k.protocol = (*inner)[9];
    let ports =
        (ctx.data() + l4 + 8 + ((((*inner)[0] & 0x0f) as usize * 4) & 0x3f)) as *const [u8; 4];
    if ports as usize + 4 > ctx.data_end() {
        return Some(denied(at));
    }
    // Ports as the quoted packet's own point would have keyed them.
    (*sc).at = other(at);
    set_ports(sc, [(*ports)[0], (*ports)[1]], [(*ports)[2], (*ports)[3]]);
    match POLICY_CT.get_ptr(&(*sc).ct) {
        Some(e) if (*e).denied == 0 => Some(0),
        _ => Some(denied(at)),
    }
}

/// A service's reply to a local client, its front end's address restored on the
/// backend's node: the client's own flow to that front end says it asked. (Its
/// connection was judged with the backend as the peer, so no entry here names the
/// front end.)
///
/// SAFETY: as `point_in`.
// Keys by reference: by value they would be copied onto the stack first.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
unsafe fn service_reply(s: &Settings, sc: *mut PolicyScratch) -> bool {
    let k = &(*sc).ct;
    let front = addr4(&k.src);
    if s.services == 0 || s.service_prefix == 0 || !in_prefix(front, s.service_ip, s.service_prefix)
    {
        return false;
    }
    let t = &mut (*sc).svc;
    t.src = addr4(&k.dst);
    t.dst = front;
    t.src_port = k.dst_port;
    t.dst_port = k.src_port;
    t.proto = k.protocol;
    zero3(&mut t._pad);
    SVC_FLOWS.get_ptr(&(*sc).svc).is_some()
}

/// The first four bytes of a family-tagged address: IPv4.
#[inline(always)]
fn addr4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// Keys are written a field at a time, in place: a struct built on the stack and
/// copied would cost a `memcpy` call and its frame, which 5.10's stack cannot hold.
#[inline(always)]
fn set_addr(a: &mut NetAddr, v4: [u8; 4]) {
    a.family = FAMILY_IPV4;
    zero3(&mut a._pad);
    set_v4(&mut a.addr, v4);
}

/// Three bytes zeroed one by one: LLVM makes `= [0; 3]` a `memset` call.
#[inline(always)]
fn zero3(p: &mut [u8; 3]) {
    let p = p.as_mut_ptr();
    // SAFETY: three bytes of the array.
    unsafe {
        p.write_volatile(0);
        p.add(1).write_volatile(0);
        p.add(2).write_volatile(0);
    }
}

#[inline(always)]
fn set_v4(a: &mut [u8; 16], v4: [u8; 4]) {
    let p = a.as_mut_ptr() as *mut u32;
    // SAFETY: four u32 stores inside the 16-byte array.
    unsafe {
        p.write_unaligned(u32::from_ne_bytes(v4));
        p.add(1).write_unaligned(0);
        p.add(2).write_unaligned(0);
        p.add(3).write_unaligned(0);
    }
}

/// Two IPv4 addresses (of the family-tagged form) exchanged in place.
#[inline(always)]
fn swap_v4(a: &mut [u8; 16], b: &mut [u8; 16]) {
    let (pa, pb) = (a.as_mut_ptr() as *mut u32, b.as_mut_ptr() as *mut u32);
    // SAFETY: the first u32 of each 16-byte array.
    unsafe {
        let t = pa.read_unaligned();
        pa.write_unaligned(pb.read_unaligned());
        pb.write_unaligned(t);
    }
}

#[inline(always)]
fn other(at: u8) -> u8 {
    if at == POLICY_EGRESS {
        POLICY_INGRESS
    } else {
        POLICY_EGRESS
    }
}

#[inline(always)]
fn denied(at: u8) -> u32 {
    if at == POLICY_EGRESS {
        Reason::DropPolicyEgress as u32
    } else {
        Reason::DropPolicyIngress as u32
    }
}

/// Whether the connection in `sc.ct` is allowed for the pod `sc.ep`, judged by its
/// first packet, which met the pod's point `first`: the peer's packet to the pod's
/// port (ingress), or the pod's to the peer's (egress).
///
/// SAFETY: as `point_in`.
#[inline(always)]
unsafe fn judge(sc: *mut PolicyScratch, first: u8) -> bool {
    let direction = first;
    if (*sc).ep.enforce & direction == 0 {
        return true;
    }
    let peer = addr4(&(*sc).ct.src);
    let port = if first == POLICY_INGRESS {
        (*sc).ct.dst_port
    } else {
        (*sc).ct.src_port
    };
    let key = &mut (*sc).peer;
    key.bits = PolicyPeerKey::trie_bits(32);
    key.data.rule_set = (*sc).ep.rule_set;
    key.data.direction = direction;
    zero3(&mut key.data._pad);
    set_addr(&mut key.data.peer, peer);
    let Some(rule) = POLICY_PEERS.get(trie_key(&(*sc).peer)) else {
        return false;
    };
    if rule.any != 0 {
        return true;
    }
    let proto = (*sc).ct.protocol;
    if rule.port_set == 0
        || !(proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP)
    {
        return false;
    }
    let key = &mut (*sc).port;
    key.bits = PolicyPortKey::trie_bits(16);
    key.data.port_set = rule.port_set;
    key.data.protocol = proto;
    key.data._pad = 0;
    key.data.port = port;
    POLICY_PORTS.get(trie_key(&(*sc).port)).is_some()
}

/// Our `TrieKey` as aya's `Key`: the same layout (prefix length, then data).
#[inline(always)]
fn trie_key<K>(k: &TrieKey<K>) -> &Key<K> {
    // SAFETY: both are `#[repr(C)]` { u32, K }.
    unsafe { &*(k as *const TrieKey<K> as *const Key<K>) }
}
