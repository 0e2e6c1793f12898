//! Numbers by content: a rule set or port set is named by a hash of what it holds,
//! so an unchanged one keeps its number across recompiles and agents, and the
//! revision is a hash of the maps. FNV-1a: fixed, the same in every process.
use std::collections::{BTreeMap, HashSet};

use netpath_common::NetAddr;

use super::{
    cidr::IpNet,
    output::{Compiled, Content},
    peers::Allow,
    ports::PortRange,
};
use crate::files::fnv1a;

fn fold(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// Ids for `keys` (in their order, which the caller keeps deterministic): each its
/// hash, or on a collision (or 0) the next free number.
pub(crate) fn allocate<'k, K: Ord + ?Sized>(
    keys: impl Iterator<Item = &'k K>,
    hash: impl Fn(&K) -> u32,
) -> BTreeMap<&'k K, u32> {
    let mut used = HashSet::new();
    let mut ids = BTreeMap::new();
    for k in keys {
        let mut id = hash(k);
        while id == 0 || !used.insert(id) {
            id = id.wrapping_add(1);
        }
        ids.insert(k, id);
    }
    ids
}

fn push_ranges(out: &mut Vec<u8>, ranges: &[PortRange]) {
    out.extend((ranges.len() as u32).to_le_bytes());
    for &(proto, lo, hi) in ranges {
        out.push(proto);
        out.extend(lo.to_le_bytes());
        out.extend(hi.to_le_bytes());
    }
}

pub(crate) fn ports_hash(ranges: &[PortRange]) -> u32 {
    let mut bytes = Vec::with_capacity(4 + ranges.len() * 5);
    push_ranges(&mut bytes, ranges);
    fold(fnv1a(bytes))
}

fn push_net(out: &mut Vec<u8>, n: &IpNet) {
    push_addr(out, &n.net_addr());
    out.push(n.prefix());
}

fn push_addr(out: &mut Vec<u8>, a: &NetAddr) {
    out.push(a.family);
    out.extend(a.addr);
}

pub(crate) fn content_hash(c: &Content) -> u32 {
    let mut bytes = Vec::new();
    for map in c {
        bytes.extend((map.len() as u32).to_le_bytes());
        for (net, allow) in map {
            push_net(&mut bytes, net);
            match allow {
                Allow::Any => bytes.push(1),
                Allow::Ports(r) => {
                    bytes.push(0);
                    push_ranges(&mut bytes, r);
                }
            }
        }
    }
    fold(fnv1a(bytes))
}

/// A hash of the three maps; 0 exactly when no local pod is selected.
pub(crate) fn revision(c: &Compiled) -> u32 {
    if c.endpoints.is_empty() {
        return 0;
    }
    let mut b = Vec::new();
    for (addr, e) in &c.endpoints {
        push_addr(&mut b, addr);
        b.extend(e.rule_set.to_le_bytes());
        b.push(e.enforce);
    }
    for (k, v) in &c.peers {
        b.extend(k.bits.to_le_bytes());
        b.extend(k.data.rule_set.to_le_bytes());
        b.push(k.data.direction);
        push_addr(&mut b, &k.data.peer);
        b.extend(v.port_set.to_le_bytes());
        b.push(v.any);
    }
    for (k, v) in &c.ports {
        b.extend(k.bits.to_le_bytes());
        b.extend(k.data.port_set.to_le_bytes());
        b.push(k.data.protocol);
        b.extend(k.data.port);
        b.extend(v.to_le_bytes());
    }
    fold(fnv1a(b)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nonzero_and_probe_past_collisions() {
        let keys = ["a", "b", "c"];
        let ids = allocate(keys.iter().copied(), |_| 0);
        assert_eq!(ids.values().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        let ids = allocate(keys.iter().copied(), |k| if k == "c" { 7 } else { 5 });
        assert_eq!((ids["a"], ids["b"], ids["c"]), (5, 6, 7));
        let ids = allocate(keys.iter().copied(), |_| u32::MAX);
        assert_eq!((ids["a"], ids["b"]), (u32::MAX, 1), "wraps past 0");
    }

    #[test]
    fn port_set_ids_follow_content_only() {
        assert_eq!(ports_hash(&[(6, 80, 80)]), ports_hash(&[(6, 80, 80)]));
        assert_ne!(ports_hash(&[(6, 80, 80)]), ports_hash(&[(17, 80, 80)]));
    }
}
