//! Every map the programs and the agent share, declared once (as Calico Felix's
//! `MapParameters` are): name, kind, key and value types, capacity and flags, in
//! [`for_each_map!`]. Everything else is derived from that table: the programs'
//! `#[btf_map]` statics (`netpath-ebpf/src/shared/maps.rs`), the agent's typed handles, their
//! opening and fill report (`netpath/src/datapath/pinned.rs`), the pin list, and here
//! the names and the [`MapSpec`] of each.

/// `BPF_F_NO_PREALLOC`: entries are allocated as used, so a small cluster does not pay
/// for a large one's capacity (LPM tries require it).
pub const NO_PREALLOC: u32 = 1;

/// Pods a node holds.
pub const ENDPOINT_CAPACITY: u32 = 4096;
/// Pod CIDR routes, and as many known nodes.
pub const ROUTE_CAPACITY: u32 = 131072;
/// Prefixes exempt from masquerade.
pub const NAT_EXEMPT_CAPACITY: u32 = 262144;
/// Policy entries: peers of every rule set, and port ranges of every port set.
pub const POLICY_CAPACITY: u32 = 1 << 20;
/// Connections of pods a policy selects (each takes two entries).
pub const POLICY_CT_CAPACITY: u32 = 262144;

/// The table of maps. Calls `$then!` with one entry per map:
/// `doc NAME: Kind<Key, Value>, capacity, flags;` (arrays and the ring buffer name only
/// their value type; a ring buffer's capacity is in bytes). `Kind` is the aya map type
/// of the programs' side.
///
/// Adding a map is one entry here; the programs and the agent then have it, pinned,
/// opened, layout-checked and reported in `netpath status` and `/metrics`. Renaming or
/// retyping one changes the pinned layout: an agent refuses pins of another layout.
#[macro_export]
macro_rules! for_each_map {
    ($then:ident) => {
        $then! {
            /// Pods on this node by IPv4.
            ENDPOINTS: HashMap<$crate::Ipv4, $crate::Endpoint>,
                $crate::maps::ENDPOINT_CAPACITY, 0;
            /// Remote pod CIDRs -> owning node and how to reach it.
            ROUTES: LpmTrie<$crate::NetAddr, $crate::Route>,
                $crate::maps::ROUTE_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Known nodes by underlay address: the only accepted tunnel peers.
            NODES: HashMap<$crate::Ipv4, $crate::Peer>,
                $crate::maps::ROUTE_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Packet fates, indexed by `stats_index` (program, reason).
            STATS: PerCpuArray<u64>, $crate::STATS_SLOTS, 0;
            /// Agent-written tunables, one entry.
            SETTINGS: Array<$crate::Settings>, 1, 0;
            /// Masquerade: translated flows by the pod's own tuple, with their state. Not
            /// LRU: evicting a live flow would silently re-translate it; a full map is a
            /// counted drop and the agent collects expired flows.
            NAT_OUT: HashMap<$crate::FlowKey, $crate::Flow>,
                $crate::NAT_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Masquerade's reverse index: the translated tuple as the outside sees it ->
            /// the pod.
            NAT_IN: HashMap<$crate::NatKey, $crate::NatTarget>,
                $crate::NAT_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Destinations pods reach with their own address even with masquerade on:
            /// the cluster CIDR, every node's underlay address and the spec's
            /// `no_masquerade`.
            NAT_EXEMPT: LpmTrie<$crate::NetAddr, u32>,
                $crate::maps::NAT_EXEMPT_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Monitor events (drops, and sampled forwarding while a monitor traces).
            EVENTS: RingBuf<$crate::Event>, $crate::EVENTS_BYTES, 0;
            /// Monitor settings, one entry.
            MONITOR: Array<$crate::MonitorConfig>, 1, 0;
            /// Per-CPU event budget and what went unsent.
            MONITOR_LIMIT: PerCpuArray<$crate::MonitorLimit>, 1, 0;
            /// Service front ends: a ClusterIP or this node's node port -> its ready
            /// backends.
            SERVICES: HashMap<$crate::ServiceKey, $crate::Service>,
                $crate::SERVICE_CAPACITY, $crate::maps::NO_PREALLOC;
            /// A front end's ready backends by slot, for the random pick.
            SVC_SLOTS: HashMap<$crate::SlotKey, $crate::Backend>,
                $crate::SERVICE_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Every backend a front end's flows may stay on -> `BACKEND_READY` or 0
            /// (terminating).
            SVC_BACKENDS: HashMap<$crate::BackendKey, u32>,
                $crate::SERVICE_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Clients' flows to front ends, pinned to their backend. Not LRU, as with
            /// NAT: evicting a live flow would move it to another backend; the agent
            /// collects.
            SVC_FLOWS: HashMap<$crate::Tuple, $crate::ServiceFlow>,
                $crate::SERVICE_FLOW_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Backends' replies as they arrive -> the front end and client they answer.
            SVC_REV: HashMap<$crate::Tuple, $crate::ServiceReply>,
                $crate::SERVICE_FLOW_CAPACITY, $crate::maps::NO_PREALLOC;
            /// `sessionAffinity: ClientIP`: each client's backend per front end.
            SVC_AFFINITY: HashMap<$crate::AffinityKey, $crate::Affinity>,
                $crate::SERVICE_FLOW_CAPACITY, $crate::maps::NO_PREALLOC;
            /// A node's own UDP sockets sent to a front end: the backend each got -> the
            /// front end.
            SOCK_REV: LruHashMap<$crate::SockRevKey, $crate::Backend>,
                $crate::SOCK_REV_CAPACITY, 0;
            /// The agent's probe for its network namespace's cookie.
            SOCK_PROBE: Array<$crate::SockProbe>, 1, 0;
            /// This node's pods by network namespace cookie -> the pod's IPv4: whose
            /// connect() the socket programs translate. Filled where the kernel names a
            /// namespace's cookie (`SO_NETNS_COOKIE`, 5.14+); elsewhere pods are
            /// translated per packet.
            POD_NETNS: HashMap<u64, $crate::Ipv4>, $crate::maps::ENDPOINT_CAPACITY, 0;
            /// Local pods some policy selects -> their rule set and enforced directions.
            POLICY_ENDPOINTS: HashMap<$crate::NetAddr, $crate::PolicyEndpoint>,
                $crate::maps::ENDPOINT_CAPACITY, 0;
            /// {rule set, direction, peer prefix} -> what the peer may use.
            POLICY_PEERS: LpmTrie<$crate::PolicyPeerKey, $crate::PolicyPeer>,
                $crate::maps::POLICY_CAPACITY, $crate::maps::NO_PREALLOC;
            /// {port set, protocol, port prefix} -> allowed.
            POLICY_PORTS: LpmTrie<$crate::PolicyPortKey, u32>,
                $crate::maps::POLICY_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Allowed connections of selected pods, as each policy point saw them. Not
            /// LRU: a full table refuses new connections of selected pods rather than
            /// forget a live one; the agent removes idle entries.
            POLICY_CT: HashMap<$crate::CtKey, $crate::CtEntry>,
                $crate::maps::POLICY_CT_CAPACITY, $crate::maps::NO_PREALLOC;
            /// Fragmented datagrams of selected pods -> the ports of their first
            /// fragment. LRU: a datagram's fragments arrive within moments.
            POLICY_FRAGS: LruHashMap<$crate::FragKey, [u8; 4]>, 8192, 0;
            /// Scratch space for the policy points' keys (5.10's stack is full).
            POLICY_SCRATCH: PerCpuArray<$crate::PolicyScratch>, 1, 0;
        }
    };
}

/// The kinds of map the table uses, with the kernel's `bpf_map_type` of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    HashMap,
    LruHashMap,
    LpmTrie,
    Array,
    PerCpuArray,
    RingBuf,
}

impl MapKind {
    pub const fn bpf_map_type(self) -> u32 {
        match self {
            Self::HashMap => 1,
            Self::Array => 2,
            Self::PerCpuArray => 6,
            Self::LruHashMap => 9,
            Self::LpmTrie => 11,
            Self::RingBuf => 27,
        }
    }
}

/// One map as the kernel sees it: what a pin of it must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    /// Entries (a ring buffer: bytes).
    pub max_entries: u32,
    pub flags: u32,
}

/// The kernel's key and value sizes of a table entry.
macro_rules! sizes {
    (HashMap; $k:ty, $v:ty) => {
        (size_of::<$k>(), size_of::<$v>())
    };
    (LruHashMap; $k:ty, $v:ty) => {
        (size_of::<$k>(), size_of::<$v>())
    };
    // The trie's key is the prefix length (u32) followed by the data.
    (LpmTrie; $k:ty, $v:ty) => {
        (4 + size_of::<$k>(), size_of::<$v>())
    };
    (Array; $v:ty) => {
        (4, size_of::<$v>())
    };
    (PerCpuArray; $v:ty) => {
        (4, size_of::<$v>())
    };
    // Records have no fixed size in the kernel's eyes.
    (RingBuf; $v:ty) => {
        (0, 0)
    };
}

macro_rules! specs {
    ($( $(#[$doc:meta])* $name:ident: $kind:ident<$($ty:ty),+>, $max:expr, $flags:expr; )*) => {
        /// Every map, in the table's order.
        pub const ALL: &[MapSpec] = &[$(
            MapSpec {
                name: stringify!($name),
                kind: MapKind::$kind,
                key_size: sizes!($kind; $($ty),+).0 as u32,
                value_size: sizes!($kind; $($ty),+).1 as u32,
                max_entries: $max,
                flags: $flags,
            },
        )*];

        /// Each map's name: its symbol in the object and its pin's file name.
        pub mod names {
            $( $(#[$doc])* pub const $name: &str = stringify!($name); )*
        }
    };
}

crate::for_each_map!(specs);

/// The map called `name`.
pub fn spec(name: &str) -> Option<&'static MapSpec> {
    ALL.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sizes_follow_the_kinds() {
        for (i, m) in ALL.iter().enumerate() {
            assert!(
                ALL[..i].iter().all(|o| o.name != m.name),
                "{} twice",
                m.name
            );
            assert!(m.max_entries > 0, "{}", m.name);
        }
        let routes = spec("ROUTES").unwrap();
        assert_eq!(routes.kind, MapKind::LpmTrie);
        assert_eq!(routes.key_size, 4 + 20, "prefix length + NetAddr");
        assert_eq!(routes.flags, NO_PREALLOC, "the kernel requires it of tries");
        assert_eq!(spec("STATS").unwrap().key_size, 4);
        assert_eq!(spec("EVENTS").unwrap().value_size, 0);
        assert_eq!(names::SOCK_REV, "SOCK_REV");
        assert_eq!(spec("NOPE"), None);
    }
}
