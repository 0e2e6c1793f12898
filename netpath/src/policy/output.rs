//! What the compiler gives: the three maps' contents, the revision, and who selects
//! whom; and a rule set's content, by which equal ones are shared.
use std::collections::{BTreeMap, BTreeSet};

use netpath_common::{NetAddr, PolicyEndpoint, PolicyPeer, PolicyPeerKey, PolicyPortKey, TrieKey};

use super::{cidr::IpNet, peers::Allow};

/// The maps' contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub endpoints: BTreeMap<NetAddr, PolicyEndpoint>,
    pub peers: BTreeMap<TrieKey<PolicyPeerKey>, PolicyPeer>,
    pub ports: BTreeMap<TrieKey<PolicyPortKey>, u32>,
    /// Nonzero content hash of the three maps (0 only when no policy selects any
    /// local pod), the same in every run and process: `Settings::policy_rev`.
    pub rev: u32,
    /// Each local pod some policy selects -> "namespace/name" of those policies.
    pub selected_by: BTreeMap<NetAddr, Vec<String>>,
}

/// What a rule set holds: the peer prefixes of each direction with their values.
/// Equal contents are one rule set.
pub(crate) type Content = [BTreeMap<IpNet, Allow>; 2];

/// The three policy maps as one value: what reconcile diffs against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyMaps {
    pub endpoints: BTreeMap<NetAddr, PolicyEndpoint>,
    pub peers: BTreeMap<TrieKey<PolicyPeerKey>, PolicyPeer>,
    pub ports: BTreeMap<TrieKey<PolicyPortKey>, u32>,
    /// Local pods the plan knew of (selected or not): a closed pod the plan did not
    /// know yet keeps its entry.
    pub known: BTreeSet<NetAddr>,
}
