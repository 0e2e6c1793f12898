//! Network policy as the programs read it. The agent compiles Kubernetes
//! NetworkPolicy into three maps, and a connection table remembers each verdict:
//!
//! - `POLICY_ENDPOINTS`: a local pod's address -> its rule set and the directions
//!   any policy selects it for (a pod in no policy has no entry: open).
//! - `POLICY_PEERS` (LPM): {rule set, direction, peer address} -> what the peer may
//!   use: every protocol and port, or a port set. Pods are /32s, `ipBlock`s their
//!   prefixes; an `except` is a longer prefix whose entry carries what the rules
//!   still allow there, so the longest match alone is the answer.
//! - `POLICY_PORTS` (LPM): {port set, protocol, port} -> allowed. An `endPort`
//!   range is stored as the prefixes that cover it.
//!
//! Rule sets and port sets are numbered by their content, so pods with the same
//! labels share one, an unchanged one keeps its number across recompiles and a
//! changed one is written beside the old before pods switch to it.
use crate::NetAddr;

/// Direction bits of [`PolicyEndpoint::enforce`] and values of
/// [`PolicyPeerKey::direction`].
pub const POLICY_INGRESS: u8 = 1;
pub const POLICY_EGRESS: u8 = 2;

/// A pod a policy selects: value of `POLICY_ENDPOINTS`, keyed by the pod's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PolicyEndpoint {
    /// Where its rules are in `POLICY_PEERS`.
    pub rule_set: u32,
    /// [`POLICY_INGRESS`] | [`POLICY_EGRESS`]: the directions only allowed traffic
    /// passes (a direction no policy selects the pod for is open).
    pub enforce: u8,
    pub _pad: [u8; 3],
}

impl PolicyEndpoint {
    /// A pod the CNI plugin just wired while policy is in force, before the agent
    /// judged it: rule set 0 holds no peer, so nothing passes either way.
    pub const CLOSED: Self = Self {
        rule_set: 0,
        enforce: POLICY_INGRESS | POLICY_EGRESS,
        _pad: [0; 3],
    };
}

/// Key data of `POLICY_PEERS`. A trie key's prefix length counts the fixed words
/// too: [`PolicyPeerKey::trie_bits`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyPeerKey {
    pub rule_set: u32,
    /// [`POLICY_INGRESS`] (the peer is the source) or [`POLICY_EGRESS`] (the peer is
    /// the destination).
    pub direction: u8,
    pub _pad: [u8; 3],
    pub peer: NetAddr,
}

impl PolicyPeerKey {
    /// Bits of `rule_set` and `direction` (with its padding).
    pub const FIXED_BITS: u32 = 64;

    /// A trie key's prefix length for a /`prefix` of the peer's address.
    pub const fn trie_bits(prefix: u32) -> u32 {
        Self::FIXED_BITS + NetAddr::trie_bits(prefix)
    }
}

/// What a peer may use: value of `POLICY_PEERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PolicyPeer {
    /// Port set in `POLICY_PORTS` (0: none).
    pub port_set: u32,
    /// 1: every protocol and port (a rule without `ports`).
    pub any: u8,
    pub _pad: [u8; 3],
}

/// Key data of `POLICY_PORTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyPortKey {
    pub port_set: u32,
    /// IP protocol number: 6 TCP, 17 UDP, 132 SCTP.
    pub protocol: u8,
    pub _pad: u8,
    /// Network byte order, so a prefix of it is a range of ports.
    pub port: [u8; 2],
}

impl PolicyPortKey {
    /// Bits of `port_set`, `protocol` and the padding.
    pub const FIXED_BITS: u32 = 48;

    pub const fn trie_bits(port_prefix: u32) -> u32 {
        Self::FIXED_BITS + port_prefix
    }
}

/// A connection as a local pod's points see it: key of `POLICY_CT`. Always written
/// the way its packets enter the pod (`src` the peer, `dst` the pod), whichever point
/// a packet meets, so one entry serves both directions. Both addresses in the
/// family-tagged form, so IPv6 takes no second table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    /// The peer.
    pub src: [u8; 16],
    /// The local pod.
    pub dst: [u8; 16],
    /// Network byte order; 0 for protocols without ports.
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub protocol: u8,
    /// [`crate::FAMILY_IPV4`] or [`crate::FAMILY_IPV6`].
    pub family: u8,
    pub _pad: [u8; 2],
}

/// An allowed connection: value of `POLICY_CT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns` of the last packet; the agent removes idle entries.
    pub last_seen: u64,
    /// `Settings::policy_rev` when the verdict was made: another revision judges the
    /// connection again at its next packet.
    pub rev: u32,
    /// The point its first packet met ([`POLICY_INGRESS`]: the peer opened it,
    /// [`POLICY_EGRESS`]: the pod did); a packet at the other point is a reply.
    pub first: u8,
    /// 1: judged again under `rev` and no longer allowed; its packets are dropped
    /// until a policy allows it again or the entry expires.
    pub denied: u8,
    /// 1: a TCP FIN or RST went by: the connection is ending, and its entry goes
    /// after a short idle time instead of the established one.
    pub closing: u8,
    pub _pad: u8,
}

/// A policy point's keys, built in a per-CPU map entry instead of on the stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyScratch {
    pub ct_entry: CtEntry,
    pub local: NetAddr,
    pub ct: CtKey,
    pub peer: TrieKey<PolicyPeerKey>,
    pub port: TrieKey<PolicyPortKey>,
    /// The local pod's entry, copied.
    pub ep: PolicyEndpoint,
    /// A service reply's flow as its client opened it (`SVC_FLOWS` key).
    pub svc: crate::Tuple,
    pub frag: FragKey,
    pub rev: u32,
    pub tcp_flags: u8,
    /// The point the packet meets.
    pub at: u8,
    pub _pad: [u8; 2],
}

/// An IPv4 datagram in fragments: key of `POLICY_FRAGS`, whose value is the ports its
/// first fragment carried, so later fragments follow their flow's verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragKey {
    /// The peer and the local pod, as in [`CtKey`].
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// The IP identification field, as on the wire.
    pub id: [u8; 2],
    pub protocol: u8,
    pub _pad: u8,
}

/// An LPM trie's key as the kernel reads it: the prefix length in bits, then the data
/// (the layout of aya's `lpm_trie::Key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrieKey<K> {
    pub bits: u32,
    pub data: K,
}
