//! Services: a client's packet to a front end (a ClusterIP, or this node's node port)
//! gets a backend pod's address as destination, before the route lookup, so the
//! existing local, direct and overlay delivery carries it; the backend's replies get
//! the front end's address back on the client's node, wherever the backend runs.
//!
//! The pick is random among the ready backends, as kube-proxy's iptables mode does:
//! the flow's state lives on the client's node (or the node port's node), so no
//! other node has to choose the same backend, which is what Maglev's consistent
//! hashing is for.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, TC_ACT_SHOT},
    helpers::generated::bpf_get_prandom_u32,
    programs::TcContext,
};
use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, Endpoint, Ipv4, Reason, Service, ServiceFlow,
    ServiceKey, ServiceReply, Settings, SlotKey, Tuple, BACKEND_READY, IPPROTO_UDP, SVC_AFFINITY,
    SVC_SNAT_REMOTE,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use super::{
    clock::now_ns,
    deliver,
    ipv4::{in_prefix, Ip, IP},
    l4::{tcp, L4},
    maps::{
        host_key, EEXIST, ENDPOINTS, ROUTES, SERVICES, SVC_AFFINITY as AFFINITY, SVC_BACKENDS,
        SVC_FLOWS, SVC_REV, SVC_SLOTS,
    },
    packet::{eth_ipv4, header_mut},
    policy, reject,
};

/// Node-side ports tried for a node port's flow to a remote backend.
const SNAT_TRIES: u32 = 8;

/// What a service lookup made of a packet.
pub enum Step {
    /// Not a service's packet: on as before.
    Untouched,
    /// Translated (every packet pointer is stale now). `reply`: a backend's reply on
    /// its way to the client.
    Translated { reply: bool },
    /// Decided here.
    Done((i32, Reason)),
}

#[inline(always)]
fn in_service_range(addr: Ipv4, s: &Settings) -> bool {
    s.service_prefix > 0 && in_prefix(addr, s.service_ip, s.service_prefix)
}

/// A pod's packet: a reply of a backend here to its client, or a client's packet to
/// a ClusterIP. An address of the service range never leaves untranslated.
#[inline(always)]
pub fn from_pod(ctx: &TcContext, ip: Ip, s: &Settings, ifindex: u32) -> Step {
    let to_range = in_service_range(ip.dst, s);
    let Some(p) = L4::of(ctx, ip) else {
        if to_range {
            return Step::Done((TC_ACT_SHOT, Reason::DropSvcUnsupported));
        }
        return Step::Untouched;
    };
    if !to_range {
        if let Some(step) = reply(ctx, &p) {
            return step;
        }
        supersede(&p);
        return Step::Untouched;
    }
    forward::<false>(ctx, &p, s, ifindex)
}

/// A pod opening a flow (a TCP SYN, any UDP datagram) straight to an address and
/// port: if a service flow of this pod used the same ports with that backend (its
/// kernel reuses ephemeral ports), the old flow's reply translation would turn this
/// flow's replies into the front end's and the pod would reset them. The new flow
/// ends the old one.
#[inline(always)]
fn supersede(p: &L4) {
    let t = &p.tuple;
    if t.proto != IPPROTO_UDP && p.tcp_flags & (tcp::SYN | tcp::ACK) != tcp::SYN {
        return;
    }
    let back = Tuple {
        src: t.dst,
        dst: t.src,
        src_port: t.dst_port,
        dst_port: t.src_port,
        proto: t.proto,
        _pad: [0; 3],
    };
    // SAFETY: map values are plain data, copied out at once.
    let Some(r) = (unsafe { SVC_REV.get(back) }).copied() else {
        return;
    };
    let flow = Tuple {
        src: r.client,
        dst: r.front,
        src_port: r.client_port,
        dst_port: r.front_port,
        proto: t.proto,
        _pad: [0; 3],
    };
    let _ = SVC_FLOWS.remove(flow);
    let _ = SVC_REV.remove(back);
}

/// A packet arriving from the underlay for this node's own address: a remote
/// backend's reply to a node port's client, or a client's packet to a node port.
/// Anything else there is the stack's.
#[inline(always)]
pub fn at_node(ctx: &TcContext, ip: Ip, s: &Settings, ifindex: u32) -> Step {
    let Some(p) = L4::of(ctx, ip) else {
        return Step::Untouched;
    };
    if let Some(step) = reply(ctx, &p) {
        return step;
    }
    let port = u16::from_be_bytes(p.tuple.dst_port);
    if port < s.node_port_min || port > s.node_port_max {
        return Step::Untouched;
    }
    forward::<true>(ctx, &p, s, ifindex)
}

/// A packet for a local pod from another node or the tunnel: if a backend elsewhere
/// answers a client here, the front end's address goes back in as its source.
#[inline(always)]
pub fn to_pod(ctx: &TcContext, ip: Ip) -> Step {
    match L4::of(ctx, ip) {
        Some(p) => reply(ctx, &p).unwrap_or(Step::Untouched),
        None => Step::Untouched,
    }
}

/// A backend's reply, by its own tuple: the source becomes the front end, and the
/// destination the client where the backend saw another source.
#[inline(always)]
fn reply(ctx: &TcContext, p: &L4) -> Option<Step> {
    let r = SVC_REV.get_ptr_mut(p.tuple)?;
    // SAFETY: a map value; the kernel keeps it alive under RCU while we run. Each
    // field is a plain store of its own.
    let r = unsafe { &mut *r };
    r.last_seen = now_ns();
    if p.tcp_flags & tcp::FIN != 0 {
        r.fin = 1;
    }
    if p.tcp_flags & tcp::RST != 0 {
        r.rst = 1;
    }
    let (front, front_port, client, client_port) = (r.front, r.front_port, r.client, r.client_port);
    if p.source(front, front_port).apply(ctx).is_err() {
        return Some(Step::Done((TC_ACT_SHOT, Reason::DropSvcUnsupported)));
    }
    if (client != p.tuple.dst || client_port != p.tuple.dst_port)
        && p.destination(client, client_port).apply(ctx).is_err()
    {
        return Some(Step::Done((TC_ACT_SHOT, Reason::DropSvcUnsupported)));
    }
    Some(Step::Translated { reply: true })
}

/// A client's packet to a front end: its flow's backend, or a new pick. A node port
/// (`NODE_PORT`) may translate the source too; pods' ClusterIP front ends never do,
/// and their program carries none of that code.
///
/// A flow's packets are the common case and cost two lookups (its flow, its
/// backend's presence). Only a packet of no flow may be a pod's reply to itself
/// through its own service (its destination is then the front end), and only then is
/// the service itself looked up.
#[inline(always)]
fn forward<const NODE_PORT: bool>(ctx: &TcContext, p: &L4, s: &Settings, ifindex: u32) -> Step {
    let t = &p.tuple;
    let key = ServiceKey {
        addr: t.dst,
        port: t.dst_port,
        proto: t.proto,
        _pad: 0,
    };
    let now = now_ns();
    let (backend, source, source_port) = match kept(&key, p, now) {
        Some(f) => f,
        None => {
            if !NODE_PORT {
                if let Some(step) = reply(ctx, p) {
                    return step;
                }
            }
            // SAFETY: map values are plain data, copied out at once.
            let Some(svc) = (unsafe { SERVICES.get(key) }).copied() else {
                if NODE_PORT {
                    // No service on this port: the stack answers as for any closed port.
                    return Step::Untouched;
                }
                return Step::Done((TC_ACT_SHOT, Reason::DropSvcUnknown));
            };
            match open::<NODE_PORT>(&key, &svc, p, s, now) {
                Ok(f) => f,
                Err(Reason::DropSvcNoBackend) => {
                    return Step::Done(reject::refuse(ctx, p, ifindex));
                }
                Err(reason) => return Step::Done((TC_ACT_SHOT, reason)),
            }
        }
    };
    if p.destination(backend.addr, backend.port)
        .apply(ctx)
        .is_err()
    {
        return Step::Done((TC_ACT_SHOT, Reason::DropSvcUnsupported));
    }
    if (source != t.src || source_port != t.src_port)
        && p.source(source, source_port).apply(ctx).is_err()
    {
        return Step::Done((TC_ACT_SHOT, Reason::DropSvcUnsupported));
    }
    Step::Translated { reply: false }
}

/// The flow's backend while that backend is still one of the service's (ready or
/// terminating): a changed backend set moves no established connection.
#[inline(always)]
fn kept(key: &ServiceKey, p: &L4, now: u64) -> Option<(Backend, Ipv4, [u8; 2])> {
    let f = SVC_FLOWS.get_ptr_mut(p.tuple)?;
    // SAFETY: as in `reply`.
    let f = unsafe { &mut *f };
    let bk = BackendKey {
        service: *key,
        backend: f.backend,
    };
    // SAFETY: as above.
    unsafe { SVC_BACKENDS.get(bk) }?;
    f.last_seen = now;
    if p.tcp_flags & tcp::FIN != 0 {
        f.fin = 1;
    }
    if p.tcp_flags & tcp::RST != 0 {
        f.rst = 1;
    }
    Some((f.backend, f.source, f.source_port))
}

/// A new flow: the client's affine backend or a random ready one, the source its
/// backend will see, and both directions recorded (the flow first, so the
/// collector never finds a reply side without its flow for long).
#[inline(always)]
fn open<const NODE_PORT: bool>(
    key: &ServiceKey,
    svc: &Service,
    p: &L4,
    s: &Settings,
    now: u64,
) -> Result<(Backend, Ipv4, [u8; 2]), Reason> {
    let t = &p.tuple;
    let backend = pick(key, svc, t.src, now)?;
    let (source, source_port) = if backend.addr == t.src {
        // A pod reaching itself through its service: it would drop a packet from its
        // own address, so the front end is the source it sees (and answers).
        (t.dst, t.src_port)
    } else if NODE_PORT
        && svc.flags & SVC_SNAT_REMOTE != 0
        // SAFETY: map values are plain data; only presence is read.
        && unsafe { ENDPOINTS.get(backend.addr) }.is_none()
    {
        (s.node_ip, [0, 0])
    } else {
        (t.src, t.src_port)
    };
    let flow = ServiceFlow {
        last_seen: now,
        backend,
        source,
        source_port,
        fin: 0,
        rst: 0,
    };
    let rev = ServiceReply {
        last_seen: now,
        front: t.dst,
        client: t.src,
        front_port: t.dst_port,
        client_port: t.src_port,
        fin: 0,
        rst: 0,
        _pad: [0; 2],
    };
    let mut back = Tuple {
        src: backend.addr,
        dst: source,
        src_port: backend.port,
        dst_port: source_port,
        proto: t.proto,
        _pad: [0; 3],
    };
    if NODE_PORT && source == s.node_ip && source_port == [0, 0] {
        back.dst_port = snat_port(&back, &rev, s)?;
        let flow = ServiceFlow {
            source_port: back.dst_port,
            ..flow
        };
        if SVC_FLOWS.insert(t, flow, BPF_ANY as u64).is_err() {
            let _ = SVC_REV.remove(back);
            return Err(Reason::DropSvcTableFull);
        }
        return Ok((backend, source, back.dst_port));
    }
    if SVC_FLOWS.insert(t, flow, BPF_ANY as u64).is_err()
        || SVC_REV.insert(back, rev, BPF_ANY as u64).is_err()
    {
        return Err(Reason::DropSvcTableFull);
    }
    Ok((backend, source, source_port))
}

/// A node-side port of the masquerade range for a node port's flow to a remote
/// backend, claimed by inserting its reply side (above Linux's ephemeral ports, so
/// the node's own connections never hold it).
#[inline(always)]
fn snat_port(back: &Tuple, rev: &ServiceReply, s: &Settings) -> Result<[u8; 2], Reason> {
    let (min, max) = (s.nat_port_min as u32, s.nat_port_max as u32);
    if max < min {
        return Err(Reason::DropSvcTableFull);
    }
    let span = max - min + 1;
    let mut key = *back;
    let mut i = 0;
    while i < SNAT_TRIES {
        // SAFETY: helper without arguments.
        let port = (min + unsafe { bpf_get_prandom_u32() } % span) as u16;
        key.dst_port = port.to_be_bytes();
        match SVC_REV.insert(key, *rev, BPF_NOEXIST as u64) {
            Ok(()) => return Ok(key.dst_port),
            Err(e) if e == -EEXIST => {}
            Err(_) => return Err(Reason::DropSvcTableFull),
        }
        i += 1;
    }
    Err(Reason::DropSvcTableFull)
}

/// The backend for a new flow: the affine one while it is ready and the client came
/// back in time, else a random slot.
#[inline(always)]
pub fn pick(key: &ServiceKey, svc: &Service, client: Ipv4, now: u64) -> Result<Backend, Reason> {
    let ak = AffinityKey {
        service: *key,
        client,
    };
    let affine = svc.flags & SVC_AFFINITY != 0;
    if affine {
        // SAFETY: map values are plain data, copied out at once.
        if let Some(a) = unsafe { AFFINITY.get(ak) }.copied() {
            let bk = BackendKey {
                service: *key,
                backend: a.backend,
            };
            let fresh = now.saturating_sub(a.last_seen) <= svc.affinity_secs as u64 * 1_000_000_000;
            // SAFETY: as above.
            if fresh && unsafe { SVC_BACKENDS.get(bk) }.copied() == Some(BACKEND_READY) {
                remember(&ak, a.backend, now);
                return Ok(a.backend);
            }
        }
    }
    if svc.backends == 0 {
        return Err(Reason::DropSvcNoBackend);
    }
    // SAFETY: helper without arguments.
    let slot = unsafe { bpf_get_prandom_u32() } % svc.backends;
    let sk = SlotKey {
        service: *key,
        slot,
    };
    // SAFETY: as above.
    let Some(backend) = unsafe { SVC_SLOTS.get(sk) }.copied() else {
        return Err(Reason::DropSvcNoBackend);
    };
    if affine {
        remember(&ak, backend, now);
    }
    Ok(backend)
}

#[inline(always)]
fn remember(ak: &AffinityKey, backend: Backend, now: u64) {
    let a = Affinity {
        last_seen: now,
        backend,
    };
    // A full table only costs the client its affinity for this connection.
    let _ = AFFINITY.insert(ak, a, BPF_ANY as u64);
}

/// Hands a packet for local pod `dst` over, the front end's address restored first
/// if it is a backend's reply to a client here.
#[inline(always)]
pub fn to_local_pod(ctx: &TcContext, dst: &Endpoint, s: &Settings, ok: Reason) -> (i32, Reason) {
    // Judged before a reply's front end is restored: the pod's connection went to
    // the backend, and its connection-table entry says so.
    if policy::on(Some(s)) {
        if let Err(r) = policy::ingress(ctx, s) {
            return (TC_ACT_SHOT, r);
        }
    }
    if s.services != 0 {
        let Some(ip) = header_mut::<Ipv4Hdr>(ctx, IP).and_then(|h| Ip::of(h)) else {
            return (TC_ACT_SHOT, Reason::DropBadHeader);
        };
        if let Step::Done(verdict) = to_pod(ctx, ip) {
            return verdict;
        }
    }
    // A rewrite invalidated every packet pointer: look the header up again.
    let Some(eth) = header_mut::<EthHdr>(ctx, 0) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    deliver::into_pod(eth, dst, Some(s), ok)
}

/// After a translation at the underlay: on to the packet's new destination, a local
/// pod, another node's pod, or (a node port's reply) a client outside the cluster.
#[inline(always)]
pub fn onward(ctx: &TcContext, s: &Settings) -> (i32, Reason) {
    let Ok((eth, ip)) = eth_ipv4(ctx) else {
        return (TC_ACT_SHOT, Reason::DropTruncated);
    };
    // SAFETY: map values are plain data; the kernel keeps them alive under RCU.
    if let Some(dst) = unsafe { ENDPOINTS.get(ip.dst_addr) } {
        return deliver::to_local_pod(ctx, dst, Some(s), Reason::Redirected);
    }
    if let Some(route) = ROUTES.get(&host_key(ip.dst_addr)) {
        return deliver::by_route(ctx, eth, route, s);
    }
    deliver::to_underlay(s.underlay_ifindex, None, Reason::SvcReplyOut)
}
