//! Services: virtual addresses in front of sets of pods, translated by the programs
//! (kube-proxy's job, which netfilter cannot do on a path that bypasses it).
//!
//! A front end is a (address, port, protocol): a ClusterIP, or this node's own
//! address and a node port. Its ready backends sit in numbered slots for a random
//! pick; every backend a flow may stay on (ready or terminating) is in
//! `SVC_BACKENDS`. A flow is pinned to its backend in `SVC_FLOWS` on the client's
//! node, and `SVC_REV` turns the backend's replies back into the front end's.
use crate::Ipv4;

/// A front end: key of `SERVICES`. Also the service's identity in every other map,
/// so no number has to be kept stable across agent restarts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: Ipv4,
    /// Network byte order.
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

/// `sessionAffinity: ClientIP`: a client keeps its backend while it returns within
/// `affinity_secs`.
pub const SVC_AFFINITY: u32 = 1;
/// A node port with `externalTrafficPolicy: Cluster`: a backend on another node sees
/// this node as the client (its replies must come back through here).
pub const SVC_SNAT_REMOTE: u32 = 2;

/// A front end's value in `SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// Ready backends, in slots `0..backends` of `SVC_SLOTS`; 0: connections are
    /// refused at once (TCP reset, ICMP port unreachable).
    pub backends: u32,
    /// [`SVC_AFFINITY`], [`SVC_SNAT_REMOTE`].
    pub flags: u32,
    pub affinity_secs: u32,
    pub _pad: u32,
}

/// One slot of a front end's ready backends: key of `SVC_SLOTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub service: ServiceKey,
    pub slot: u32,
}

/// A backend pod's address and port (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Backend {
    pub addr: Ipv4,
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

/// A backend of a front end: key of `SVC_BACKENDS`, whose value is
/// [`BACKEND_READY`] or 0 (terminating or not ready, but its flows go on).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub service: ServiceKey,
    pub backend: Backend,
}

/// The backend takes new flows (and clients returning by affinity).
pub const BACKEND_READY: u32 = 1;

/// A packet's tuple as it travels: the client's packet to a front end in
/// `SVC_FLOWS`, a backend's reply in `SVC_REV`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Tuple {
    pub src: Ipv4,
    pub dst: Ipv4,
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// A client's flow to a front end: value of `SVC_FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceFlow {
    /// `bpf_ktime_get_ns` of the client's last packet.
    pub last_seen: u64,
    pub backend: Backend,
    /// The source the backend sees: the client itself, the front end (a pod reaching
    /// itself through its service) or this node (a node port's remote backend).
    pub source: Ipv4,
    pub source_port: [u8; 2],
    /// The client sent a FIN, a RST.
    pub fin: u8,
    pub rst: u8,
}

/// How a backend's reply is turned back: value of `SVC_REV`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceReply {
    /// `bpf_ktime_get_ns` of the backend's last packet (0: none yet).
    pub last_seen: u64,
    /// The front end the client addressed (the reply's new source).
    pub front: Ipv4,
    /// The client (the reply's new destination).
    pub client: Ipv4,
    pub front_port: [u8; 2],
    pub client_port: [u8; 2],
    /// The backend sent a FIN, a RST.
    pub fin: u8,
    pub rst: u8,
    pub _pad: [u8; 2],
}

/// A client of a front end with session affinity: key of `SVC_AFFINITY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityKey {
    pub service: ServiceKey,
    pub client: Ipv4,
}

/// The backend an affine client returns to: value of `SVC_AFFINITY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Affinity {
    pub last_seen: u64,
    pub backend: Backend,
}

/// Front ends, slots and backends each map holds.
pub const SERVICE_CAPACITY: u32 = 65536;
/// Flows (and replies, and affine clients) each flow map holds, allocated as used.
pub const SERVICE_FLOW_CAPACITY: u32 = 262144;

/// Idle timeouts of a service flow in seconds.
pub mod service_timeout {
    pub const TCP: u64 = 7200;
    /// After a FIN each way or a RST: enough for the last ACKs, short enough that
    /// closed connections do not fill the table at high connection rates.
    pub const TCP_CLOSED: u64 = 10;
    pub const UDP: u64 = 60;
}

/// Whether a flow and its reply side have been idle past their timeout, at `now_ns`.
pub const fn service_flow_expired(
    proto: u8,
    flow: &ServiceFlow,
    reply: Option<&ServiceReply>,
    now_ns: u64,
) -> bool {
    let (last, closed) = match reply {
        Some(r) => (
            if r.last_seen > flow.last_seen {
                r.last_seen
            } else {
                flow.last_seen
            },
            flow.rst != 0 || r.rst != 0 || (flow.fin != 0 && r.fin != 0),
        ),
        None => (flow.last_seen, flow.rst != 0),
    };
    let secs = match proto {
        crate::IPPROTO_TCP if closed => service_timeout::TCP_CLOSED,
        crate::IPPROTO_TCP => service_timeout::TCP,
        _ => service_timeout::UDP,
    };
    now_ns.saturating_sub(last) > secs * 1_000_000_000
}

/// A node's own socket that went to a front end, and the backend it was given: key
/// of `SOCK_REV`, whose value is the front end (as a [`Backend`]: address and port)
/// that the socket's peer and the backend's datagrams are shown as.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockRevKey {
    /// `bpf_get_socket_cookie`.
    pub cookie: u64,
    pub backend: Backend,
}

/// Socket translations remembered for peers and UDP replies (LRU: a socket's entry
/// cannot be collected when it closes, and an evicted one only shows an old socket
/// its backend instead of the front end).
pub const SOCK_REV_CAPACITY: u32 = 16384;

/// How the agent learns its network namespace's cookie on kernels without
/// `SO_NETNS_COOKIE` (before 5.14): it connects a UDP socket to 127.0.0.1:`port`,
/// and the connect program writes the cookie of that socket's namespace here.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockProbe {
    /// Network byte order; 0: no probe running.
    pub port: u32,
    pub _pad: u32,
    pub cookie: u64,
}
