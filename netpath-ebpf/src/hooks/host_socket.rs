//! Sockets reaching a ClusterIP, translated once at connect() (and, for the node's
//! own processes, at sendmsg()) by cgroup programs, so their packets need no
//! per-packet NAT and no route for the service range. The programs sit on the cgroup
//! root, where every namespace's sockets pass: only the node's own namespace and its
//! pods' TCP connections (`POD_NETNS`) are translated. A pod's UDP stays with the
//! per-packet path in `from_pod`: a reply to a socket that sent to both a service
//! and its backend directly must show each as what it asked, and a connected UDP
//! socket must move off a backend that leaves.
use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext,
};
use netpath_common::{Backend, ServiceKey, SockRevKey, IPPROTO_TCP};

use crate::shared::{
    clock::now_ns,
    ipv4::in_prefix,
    maps::{POD_NETNS, SERVICES, SETTINGS, SOCK_PROBE, SOCK_REV},
    service,
};

/// Verdicts of a sock_addr program: go on (with the address as it now is), or fail
/// the call with EPERM.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;
const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

#[cgroup_sock_addr(connect4)]
pub fn sock_connect(ctx: SockAddrContext) -> i32 {
    probe(&ctx);
    translate(&ctx, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg(ctx: SockAddrContext) -> i32 {
    translate(&ctx, false)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg(ctx: SockAddrContext) -> i32 {
    restore(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername(ctx: SockAddrContext) -> i32 {
    restore(&ctx);
    ALLOW
}

/// The agent's namespace probe: a connect to 127.0.0.1 on the probe's port.
#[inline(always)]
fn probe(ctx: &SockAddrContext) {
    let Some(p) = SOCK_PROBE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the context and the map value are valid for the program's whole run.
    unsafe {
        let sa = &*ctx.sock_addr;
        if (*p).port != 0 && sa.user_ip4.to_ne_bytes() == LOOPBACK && sa.user_port == (*p).port {
            (*p).cookie = bpf_get_netns_cookie(ctx.as_ptr());
        }
    }
}

#[inline(always)]
fn translate(ctx: &SockAddrContext, connect: bool) -> i32 {
    let Some(s) = SETTINGS.get(0) else {
        return ALLOW;
    };
    // SAFETY: the context pointer is valid for the program's whole run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dst = sa.user_ip4.to_ne_bytes();
    if s.service_prefix == 0 || !in_prefix(dst, s.service_ip, s.service_prefix) {
        return ALLOW;
    }
    // SAFETY: helper on the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // The client, as session affinity knows it; a pod's call the programs cannot
    // serve goes on to the per-packet path, which refuses it with a reset and counts.
    let (client, pod) = if s.host_netns_cookie != 0 && netns == s.host_netns_cookie {
        (s.node_ip, false)
    } else if connect && sa.protocol == IPPROTO_TCP as u32 {
        // A pod's UDP stays per packet: a connected UDP socket lives long (a
        // resolver's) and must follow its backend out of the service.
        // SAFETY: map values are plain data, copied out at once.
        match unsafe { POD_NETNS.get(netns) } {
            Some(ip) => (*ip, true),
            None => return ALLOW,
        }
    } else {
        return ALLOW;
    };
    let unserved = if pod { ALLOW } else { REFUSE };
    let key = ServiceKey {
        addr: dst,
        port: (sa.user_port as u16).to_ne_bytes(),
        proto: sa.protocol as u8,
        _pad: 0,
    };
    // The node's own service range never leaves untranslated: no service, no
    // backend, no call.
    // SAFETY: map values are plain data, copied out at once.
    let Some(svc) = (unsafe { SERVICES.get(key) }).copied() else {
        return unserved;
    };
    let Ok(backend) = service::pick(&key, &svc, client, now_ns()) else {
        return unserved;
    };
    sa.user_ip4 = u32::from_ne_bytes(backend.addr);
    sa.user_port = u16::from_ne_bytes(backend.port) as u32;
    let rk = SockRevKey {
        // SAFETY: helper on the program's own context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        backend,
    };
    let front = Backend {
        addr: key.addr,
        port: key.port,
        _pad: [0; 2],
    };
    let _ = SOCK_REV.insert(rk, front, 0);
    ALLOW
}

/// A datagram from a backend this socket was sent to, and the peer of a socket
/// connected to one, show the front end: the process sees the address it asked.
#[inline(always)]
fn restore(ctx: &SockAddrContext) {
    // SAFETY: the context pointer is valid for the program's whole run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let rk = SockRevKey {
        // SAFETY: helper on the program's own context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        backend: Backend {
            addr: sa.user_ip4.to_ne_bytes(),
            port: (sa.user_port as u16).to_ne_bytes(),
            _pad: [0; 2],
        },
    };
    // SAFETY: map values are plain data, copied out at once.
    if let Some(front) = unsafe { SOCK_REV.get(rk) }.copied() {
        sa.user_ip4 = u32::from_ne_bytes(front.addr);
        sa.user_port = u16::from_ne_bytes(front.port) as u32;
    }
}
