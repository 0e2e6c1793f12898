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
    CtEntry, CtKey, NetAddr, PolicyEndpoint, PolicyPeerKey, PolicyPortKey, PolicyScratch,
    Reason, Settings, TrieKey, Tuple, CT_REPLY, FAMILY_IPV4, IPPROTO_TCP, IPPROTO_UDP, POLICY_EGRESS,
    POLICY_INGRESS,
};

use super::{
    clock::now_ns,
    ipv4::{in_prefix, is_fragment, IP},
    maps::{POLICY_CT, POLICY_ENDPOINTS, POLICY_PEERS, POLICY_PORTS, POLICY_SCRATCH, SVC_FLOWS},
};

const IPPROTO_SCTP: u8 = 132;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

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
    let rev = s.policy_rev;
    let Some(sc) = POLICY_SCRATCH.get_ptr_mut(0) else {
        return Reason::DropTruncated as u32;
    };
    // SAFETY: this CPU's scratch entry; nothing else runs on it meanwhile.
    let sc = unsafe { &mut *sc };
    if ctx.data() + IP + 20 > ctx.data_end() {
        return Reason::DropTruncated as u32;
    }
    // SAFETY: 20 header bytes checked just above.
    let h = unsafe { &*((ctx.data() + IP) as *const [u8; 20]) };
    let (src, dst) = ([h[12], h[13], h[14], h[15]], [h[16], h[17], h[18], h[19]]);
    let proto = h[9];
    let hlen = ((h[0] & 0x0f) as usize * 4) & 0x3f;
    let (local, peer) = if at == POLICY_EGRESS {
        (src, dst)
    } else {
        (dst, src)
    };
    sc.local = NetAddr::v4(local);
    // SAFETY: map values are plain data, copied out at once.
    let Some(ep) = (unsafe { POLICY_ENDPOINTS.get(&sc.local) }).copied() else {
        return 0;
    };
    let mut ports = [0u8; 4];
    let mut flags = 0u8;
    let ported = proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
    if ported && !is_fragment([h[6], h[7]]) {
        let at_l4 = IP + hlen;
        if ctx.data() + at_l4 + 14 > ctx.data_end() {
            let _ = ctx.pull_data((at_l4 + 14) as u32);
        }
        let p = (ctx.data() + at_l4) as *const [u8; 14];
        if p as usize + 4 > ctx.data_end() {
            return Reason::DropTruncated as u32;
        }
        // SAFETY: four bytes checked just above.
        let first = unsafe { &*(p as *const [u8; 4]) };
        ports = *first;
        if proto == IPPROTO_TCP {
            if p as usize + 14 > ctx.data_end() {
                return Reason::DropTruncated as u32;
            }
            // SAFETY: fourteen bytes checked just above.
            flags = unsafe { (*p)[13] };
        }
    }
    sc.ct = CtKey {
        src: NetAddr::v4(src).addr,
        dst: NetAddr::v4(dst).addr,
        src_port: [ports[0], ports[1]],
        dst_port: [ports[2], ports[3]],
        protocol: proto,
        family: FAMILY_IPV4,
        at,
        _pad: 0,
    };
    let now = now_ns();
    if let Some(e) = POLICY_CT.get_ptr_mut(&sc.ct) {
        // SAFETY: a map value; racing writers only move a timestamp or a flag.
        let e = unsafe { &mut *e };
        if e.rev != rev {
            // Judged again as first judged: a reply by its connection's first packet.
            let allowed = if e.reply == CT_REPLY {
                judge(sc, &ep, other(at), peer, proto, [ports[0], ports[1]])
            } else {
                judge(sc, &ep, at, peer, proto, [ports[2], ports[3]])
            };
            e.denied = (!allowed) as u8;
            e.rev = rev;
        }
        if e.denied != 0 {
            return denied(at);
        }
        e.last_seen = now;
        return 0;
    }
    if at == POLICY_INGRESS && service_reply(s, local, peer, proto, ports) {
        return 0;
    }
    let mut reply = 0;
    if !judge(sc, &ep, at, peer, proto, [ports[2], ports[3]]) {
        // A TCP segment other than a SYN of a connection whose entry expired: a reply
        // if its connection's first packet would be allowed the other way.
        let mid_stream = proto == IPPROTO_TCP && (flags & TCP_SYN == 0 || flags & TCP_ACK != 0);
        if !(mid_stream && judge(sc, &ep, other(at), peer, proto, [ports[0], ports[1]])) {
            return denied(at);
        }
        reply = CT_REPLY;
    }
    sc.ct_entry = CtEntry {
        last_seen: now,
        rev,
        reply,
        denied: 0,
        _pad: [0; 2],
    };
    if POLICY_CT.insert(&sc.ct, &sc.ct_entry, BPF_ANY as u64).is_err() {
        return Reason::DropPolicyTableFull as u32;
    }
    // The same connection as its other packets meet the pod's other point.
    sc.ct = CtKey {
        src: sc.ct.dst,
        dst: sc.ct.src,
        src_port: sc.ct.dst_port,
        dst_port: sc.ct.src_port,
        protocol: proto,
        family: FAMILY_IPV4,
        at: other(at),
        _pad: 0,
    };
    sc.ct_entry.reply = CT_REPLY - reply;
    if POLICY_CT.insert(&sc.ct, &sc.ct_entry, BPF_ANY as u64).is_err() {
        return Reason::DropPolicyTableFull as u32;
    }
    0
}

/// A service's reply to a local client, its front end's address restored on the
/// backend's node: the client's own flow to that front end says it asked. (Its
/// connection was judged with the backend as the peer, so no entry here names the
/// front end.)
#[inline(always)]
fn service_reply(s: &Settings, client: [u8; 4], front: [u8; 4], proto: u8, ports: [u8; 4]) -> bool {
    if s.services == 0 || s.service_prefix == 0 || !in_prefix(front, s.service_ip, s.service_prefix)
    {
        return false;
    }
    let flow = Tuple {
        src: client,
        dst: front,
        src_port: [ports[2], ports[3]],
        dst_port: [ports[0], ports[1]],
        proto,
        _pad: [0; 3],
    };
    // SAFETY: map values are plain data; only presence is read.
    unsafe { SVC_FLOWS.get(flow) }.is_some()
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

/// Whether a connection's first packet in `direction` with `peer` to port `port`
/// (network order) is allowed for the pod `ep`.
#[inline(always)]
fn judge(
    sc: &mut PolicyScratch,
    ep: &PolicyEndpoint,
    direction: u8,
    peer: [u8; 4],
    proto: u8,
    port: [u8; 2],
) -> bool {
    if ep.enforce & direction == 0 {
        return true;
    }
    sc.peer = TrieKey {
        bits: PolicyPeerKey::trie_bits(32),
        data: PolicyPeerKey {
            rule_set: ep.rule_set,
            direction,
            _pad: [0; 3],
            peer: NetAddr::v4(peer),
        },
    };
    // SAFETY: `TrieKey` has the layout of aya's `Key` (prefix length, then data).
    let key = unsafe { &*(&sc.peer as *const TrieKey<PolicyPeerKey> as *const Key<PolicyPeerKey>) };
    let Some(rule) = POLICY_PEERS.get(key).copied() else {
        return false;
    };
    if rule.any != 0 {
        return true;
    }
    if rule.port_set == 0 || !(proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP)
    {
        return false;
    }
    sc.port = TrieKey {
        bits: PolicyPortKey::trie_bits(16),
        data: PolicyPortKey {
            port_set: rule.port_set,
            protocol: proto,
            _pad: 0,
            port,
        },
    };
    // SAFETY: as above.
    let key = unsafe { &*(&sc.port as *const TrieKey<PolicyPortKey> as *const Key<PolicyPortKey>) };
    POLICY_PORTS.get(key).is_some()
}
