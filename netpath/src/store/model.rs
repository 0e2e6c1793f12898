//! What the stores nodes join (etcd, gossip) share, pure: the cluster config, a
//! node's record, subnet choice, and how a config and its nodes become a
//! `ClusterSpec`. etcd's keys and its view of them are in `etcd/view.rs`.
use std::{collections::BTreeSet, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::{
    net::{CidrSet, Ipv4Net, Mac},
    spec::{ClusterSettings, ClusterSpec, SpecDraft, SpecError},
};

/// What `netpath cluster init` writes: the cluster's settings and the length of
/// the pod CIDR each joining node reserves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(flatten)]
    pub settings: ClusterSettings,
    /// Prefix length of every node's pod CIDR.
    pub subnet_len: u8,
}

impl ClusterConfig {
    pub fn draft(&self) -> SpecDraft {
        SpecDraft::of(self.settings.clone())
    }

    /// Checks with the spec's own rules and messages (a spec without nodes is
    /// fine here: nodes join later).
    pub fn validate(&self) -> Result<(), SpecError> {
        let cidr = self.settings.cluster_cidr;
        if !(8..=30).contains(&self.subnet_len) || self.subnet_len < cidr.prefix {
            return Err(SpecError::Invalid {
                field: "subnet_len".into(),
                value: self.subnet_len.to_string(),
                why: format!(
                    "must be from {} (the cluster CIDR's length) to 30",
                    cidr.prefix.max(8)
                ),
            });
        }
        self.settings.validate()
    }
}

/// A live node, as it publishes itself on its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    pub underlay: Ipv4Net,
    pub pod_cidr: Ipv4Net,
    pub vtep_mac: Mac,
}

pub use crate::spec::valid_name as valid_node_name;

/// The spec of a cluster config and its nodes: `local` (the agent's own node) always
/// in, `candidates` admitted in the order given while the spec stays valid (the
/// node that held an address first keeps it); those left out are named.
pub fn assemble(
    config: &ClusterConfig,
    local: Option<(&str, &NodeRecord)>,
    candidates: Vec<(&str, &NodeRecord)>,
) -> Result<(ClusterSpec, Vec<String>), SpecError> {
    let draft = |nodes: &[(&str, &NodeRecord)]| {
        let mut d = config.draft();
        for (name, r) in local.into_iter().chain(nodes.iter().copied()) {
            d = d.node(name, r.underlay, r.pod_cidr);
            d.nodes.last_mut().expect("just added").vtep_mac = Some(r.vtep_mac);
        }
        d
    };
    if let Ok(spec) = draft(&candidates).validate() {
        return Ok((spec, Vec::new()));
    }
    let mut admitted: Vec<(&str, &NodeRecord)> = Vec::new();
    let mut left_out = Vec::new();
    for c in candidates {
        admitted.push(c);
        if let Err(e) = draft(&admitted).validate() {
            admitted.pop();
            left_out.push(format!("node {}: {e}", c.0));
        }
    }
    Ok((draft(&admitted).validate()?, left_out))
}

/// The first free subnet of `len` bits in `cluster`, skipping the cluster's first
/// (10.244.0.0/24 stays free, as in flannel's layout).
pub fn pick_subnet(cluster: Ipv4Net, len: u8, taken: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    free_subnets(cluster, len, taken, 1).into_iter().next()
}

/// The cluster's subnets of `len` bits, by index (1 ..= slots: the first one stays
/// free, as in flannel's layout); None when `len` does not fit the cluster.
fn subnets(cluster: Ipv4Net, len: u8) -> Option<(u64, impl Fn(u64) -> Ipv4Net)> {
    if len < cluster.prefix || len > 30 {
        return None;
    }
    let slots = (1u64 << (len - cluster.prefix)) - 1;
    let step = 1u64 << (32 - len);
    let base = u64::from(u32::from(cluster.network()));
    Some((slots, move |i: u64| {
        Ipv4Net::new(Ipv4Addr::from((base + i * step) as u32), len)
    }))
}

/// Up to `limit` free subnets, in address order.
pub fn free_subnets(
    cluster: Ipv4Net,
    len: u8,
    taken: &BTreeSet<Ipv4Net>,
    limit: usize,
) -> Vec<Ipv4Net> {
    let Some((slots, nth)) = subnets(cluster, len) else {
        return Vec::new();
    };
    let taken: CidrSet = taken.iter().collect();
    (1..=slots)
        .map(nth)
        .filter(|n| !taken.overlaps(n))
        .take(limit)
        .collect()
}

/// After losing a race for the first free subnet: a free one found from a start
/// chosen by node and attempt, so racing joiners spread over the whole cluster
/// range instead of colliding again (with a thousand nodes claiming at once, a
/// choice among the first 32 free subnets left each round with ~32 winners). A few
/// lookups, not a walk of the range: every member of a big cluster may claim at
/// once.
pub fn pick_subnet_after_conflict(
    cluster: Ipv4Net,
    len: u8,
    taken: &BTreeSet<Ipv4Net>,
    node: &str,
    attempt: usize,
) -> Option<Ipv4Net> {
    let (slots, nth) = subnets(cluster, len)?;
    let taken: CidrSet = taken.iter().collect();
    let start = crate::files::fnv1a(node.bytes().chain(attempt.to_le_bytes())) % slots.max(1);
    (0..slots)
        .map(|k| nth(1 + (start + k) % slots))
        .find(|n| !taken.overlaps(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_are_picked_first_free() {
        let c = net("10.244.0.0/16");
        let mut taken = BTreeSet::new();
        assert_eq!(pick_subnet(c, 24, &taken), Some(net("10.244.1.0/24")));
        taken.insert(net("10.244.1.0/24"));
        taken.insert(net("10.244.2.0/23"));
        assert_eq!(pick_subnet(c, 24, &taken), Some(net("10.244.4.0/24")));
        assert_eq!(pick_subnet(net("10.0.0.0/30"), 31, &taken), None);
        // After a conflict: a free one, different per node, from the whole range.
        let spread: BTreeSet<_> = (0..20)
            .filter_map(|i| pick_subnet_after_conflict(c, 24, &taken, &format!("n{i}"), 1))
            .collect();
        assert!(spread.len() > 5, "{spread:?}");
        assert!(spread.iter().all(|n| !taken.iter().any(|t| t.overlaps(n))));
        let full: BTreeSet<_> = (1..4)
            .map(|i| net(&format!("10.9.0.{}/26", i * 64)))
            .collect();
        assert_eq!(pick_subnet(net("10.9.0.0/24"), 26, &full), None);
        assert_eq!(
            pick_subnet_after_conflict(net("10.9.0.0/24"), 26, &full, "n", 3),
            None
        );
        let one_left: BTreeSet<_> = full.iter().skip(1).copied().collect();
        assert_eq!(
            pick_subnet_after_conflict(net("10.9.0.0/24"), 26, &one_left, "n", 3),
            Some(net("10.9.0.64/26"))
        );
    }
}
