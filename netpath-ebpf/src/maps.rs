//! Maps shared by the programs; userspace fills them, bpftool reads them through BTF.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, Endpoint, Event, Flow, FlowKey, Ipv4,
    MonitorConfig, MonitorLimit, NatKey, NatTarget, Peer, Route, Service, ServiceFlow, ServiceKey,
    ServiceReply, Settings, SlotKey, SockProbe, SockRevKey, Tuple, EVENTS_BYTES, NAT_CAPACITY,
    SERVICE_CAPACITY, SERVICE_FLOW_CAPACITY, SOCK_REV_CAPACITY, STATS_SLOTS,
};

const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;
const SERVICES_MAX: usize = SERVICE_CAPACITY as usize;
const FLOWS_MAX: usize = SERVICE_FLOW_CAPACITY as usize;

/// Pods on this node by IPv4.
#[btf_map]
pub static ENDPOINTS: HashMap<Ipv4, Endpoint, 4096> = HashMap::new();

/// This node's pods by network namespace cookie -> the pod's IPv4: whose connect()
/// the socket programs translate. Filled where the kernel names a namespace's cookie
/// (`SO_NETNS_COOKIE`, 5.14+); elsewhere pods are translated per packet.
#[btf_map]
pub static POD_NETNS: HashMap<u64, Ipv4, 4096> = HashMap::new();

/// Remote pod CIDRs -> owning node and how to reach it.
#[btf_map]
pub static ROUTES: LpmTrie<Ipv4, Route, 131072> = LpmTrie::new();

/// Known nodes by underlay address: the only accepted tunnel peers. As many as pod
/// CIDR routes, allocated as used (a small cluster does not pay for a large one).
#[btf_map]
pub static NODES: HashMap<Ipv4, Peer, 131072, { BPF_F_NO_PREALLOC as usize }> = HashMap::new();

/// Packet fates, indexed by `netpath_common::stats_index`.
#[btf_map]
pub static STATS: PerCpuArray<u64, { STATS_SLOTS as usize }> = PerCpuArray::new();

/// Agent-written tunables, one entry.
#[btf_map]
pub static SETTINGS: Array<Settings, 1> = Array::new();

/// Masquerade: translated flows by the pod's own tuple, with their state. Not LRU:
/// evicting a live flow would silently re-translate it; a full map is a counted drop
/// and the agent collects expired flows.
#[btf_map]
pub static NAT_OUT: HashMap<
    FlowKey,
    Flow,
    { NAT_CAPACITY as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Masquerade's reverse index: the translated tuple as the outside sees it -> the pod.
#[btf_map]
pub static NAT_IN: HashMap<
    NatKey,
    NatTarget,
    { NAT_CAPACITY as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Destinations pods reach with their own address even with masquerade on: the
/// cluster CIDR, every node's underlay address and the spec's `no_masquerade`.
#[btf_map]
pub static NAT_EXEMPT: LpmTrie<Ipv4, u32, 262144> = LpmTrie::new();

/// Monitor events (drops, and sampled forwarding while a monitor traces).
#[btf_map]
pub static EVENTS: RingBuf<Event, { EVENTS_BYTES as usize }> = RingBuf::new();

/// Monitor settings, one entry.
#[btf_map]
pub static MONITOR: Array<MonitorConfig, 1> = Array::new();

/// Per-CPU event budget and what went unsent.
#[btf_map]
pub static MONITOR_LIMIT: PerCpuArray<MonitorLimit, 1> = PerCpuArray::new();

/// Service front ends: a ClusterIP or this node's node port -> its ready backends.
#[btf_map]
pub static SERVICES: HashMap<ServiceKey, Service, SERVICES_MAX, NO_PREALLOC> = HashMap::new();

/// A front end's ready backends by slot, for the random pick.
#[btf_map]
pub static SVC_SLOTS: HashMap<SlotKey, Backend, SERVICES_MAX, NO_PREALLOC> = HashMap::new();

/// Every backend a front end's flows may stay on -> `BACKEND_READY` or 0 (terminating).
#[btf_map]
pub static SVC_BACKENDS: HashMap<BackendKey, u32, SERVICES_MAX, NO_PREALLOC> = HashMap::new();

/// Clients' flows to front ends, pinned to their backend. Not LRU, as with NAT:
/// evicting a live flow would move it to another backend; the agent collects.
#[btf_map]
pub static SVC_FLOWS: HashMap<Tuple, ServiceFlow, FLOWS_MAX, NO_PREALLOC> = HashMap::new();

/// Backends' replies as they arrive -> the front end and client they answer.
#[btf_map]
pub static SVC_REV: HashMap<Tuple, ServiceReply, FLOWS_MAX, NO_PREALLOC> = HashMap::new();

/// `sessionAffinity: ClientIP`: each client's backend per front end.
#[btf_map]
pub static SVC_AFFINITY: HashMap<AffinityKey, Affinity, FLOWS_MAX, NO_PREALLOC> = HashMap::new();

/// A node's own UDP sockets sent to a front end: the backend each got -> the front end.
#[btf_map]
pub static SOCK_REV: LruHashMap<SockRevKey, Backend, { SOCK_REV_CAPACITY as usize }> =
    LruHashMap::new();

/// The agent's probe for its network namespace's cookie.
#[btf_map]
pub static SOCK_PROBE: Array<SockProbe, 1> = Array::new();
