//! NetworkPolicy compiled into the three maps the programs read, for this node's
//! pods. Pure: records in, map contents out, so the agent can diff them against
//! what is installed and the tests can judge them without a kernel.
use std::collections::{BTreeMap, BTreeSet};

use netpath_common::{
    maps::{ENDPOINT_CAPACITY, POLICY_CAPACITY},
    NetAddr, PolicyEndpoint, PolicyPeer, PolicyPeerKey, TrieKey, POLICY_EGRESS, POLICY_INGRESS,
};

use super::{
    cidr::IpNet,
    grants::Grants,
    ids::{allocate, content_hash, ports_hash, revision},
    output::{Compiled, Content},
    peers::{peer_values, Allow},
    ports::{port_entries, PortRange},
    records::NetworkPolicy,
    resolve::{resolve, Resolved},
    selector::Labels,
    validate::{Field, PolicyError, Record},
    world::{LocalPod, PolicyInput, World},
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The agent keeps the maps it has (fail closed: never open).
    #[error("{what} would hold {entries} entries, more than its capacity {capacity}")]
    TooLarge {
        what: &'static str,
        entries: usize,
        capacity: usize,
    },
    /// A record `admit_each` would have left out.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
}

/// Index of a direction in a [`Content`], and its map value.
pub(crate) const DIRECTIONS: [u8; 2] = [POLICY_INGRESS, POLICY_EGRESS];

/// A local pod some policy selects.
struct Selected {
    addr: NetAddr,
    enforce: u8,
    content: Content,
    by: Vec<String>,
}

pub fn compile(input: &PolicyInput) -> Result<Compiled, CompileError> {
    for (i, r) in input.namespaces.iter().enumerate() {
        r.check(i)?;
    }
    for (i, r) in input.pods.iter().enumerate() {
        r.check(i)?;
    }
    let policies = input
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| resolve(&Field::record(NetworkPolicy::LIST, i, &p.metadata), p))
        .collect::<Result<Vec<_>, _>>()?;
    let world = World::new(input);
    let mut grants = Grants::new(&world, &policies);
    // One entry per address, the first binding of an address winning.
    let mut local: BTreeMap<IpNet, &LocalPod> = BTreeMap::new();
    for p in input.local {
        local.entry(IpNet::host(p.ip)).or_insert(p);
    }
    let mut selected = Vec::new();
    for (addr, pod) in local {
        if let Some(s) = select(&world, &policies, &mut grants, addr, pod) {
            selected.push(s);
        }
    }
    build(selected)
}

/// The policies that select `pod`, and what they allow it.
fn select(
    world: &World,
    policies: &[Resolved],
    grants: &mut Grants,
    addr: IpNet,
    pod: &LocalPod,
) -> Option<Selected> {
    let record = world.record(&pod.namespace, &pod.name);
    let no_labels = Labels::new();
    let labels = record.map_or(&no_labels, |r| &r.metadata.labels);
    let selecting: Vec<usize> = (0..policies.len())
        .filter(|&i| {
            let p = &policies[i];
            p.namespace == pod.namespace && p.pod_selector.matches(labels)
        })
        .collect();
    if selecting.is_empty() {
        return None;
    }
    let mut enforce = 0;
    let mut content: Content = Default::default();
    for (d, direction) in DIRECTIONS.into_iter().enumerate() {
        let mut all = Vec::new();
        for &i in &selecting {
            if grants.of(i, direction, record, &mut all) {
                enforce |= direction;
            }
        }
        content[d] = peer_values(&all);
    }
    let mut by: Vec<String> = selecting
        .iter()
        .map(|&i| format!("{}/{}", policies[i].namespace, policies[i].name))
        .collect();
    by.sort();
    Some(Selected {
        addr: addr.net_addr(),
        enforce,
        content,
        by,
    })
}

/// The maps of the selected pods: rule sets and port sets numbered by content.
fn build(selected: Vec<Selected>) -> Result<Compiled, CompileError> {
    let contents: BTreeSet<&Content> = selected.iter().map(|s| &s.content).collect();
    let rule_sets = allocate(contents.iter().copied(), content_hash);
    let port_lists: BTreeSet<&Vec<PortRange>> = contents
        .iter()
        .flat_map(|c| c.iter().flat_map(|m| m.values()))
        .filter_map(|a| match a {
            Allow::Ports(p) if !p.is_empty() => Some(p),
            _ => None,
        })
        .collect();
    let port_sets = allocate(port_lists.iter().copied(), |p| ports_hash(p));

    let mut out = Compiled::default();
    for s in &selected {
        let endpoint = PolicyEndpoint {
            rule_set: rule_sets[&s.content],
            enforce: s.enforce,
            _pad: [0; 3],
        };
        out.endpoints.insert(s.addr, endpoint);
        out.selected_by.insert(s.addr, s.by.clone());
    }
    for (content, &rule_set) in &rule_sets {
        for (map, direction) in content.iter().zip(DIRECTIONS) {
            for (net, allow) in map {
                let key = TrieKey {
                    bits: PolicyPeerKey::trie_bits(u32::from(net.prefix())),
                    data: PolicyPeerKey {
                        rule_set,
                        direction,
                        _pad: [0; 3],
                        peer: net.net_addr(),
                    },
                };
                let (port_set, any) = match allow {
                    Allow::Any => (0, 1),
                    Allow::Ports(p) if p.is_empty() => (0, 0),
                    Allow::Ports(p) => (port_sets[p], 0),
                };
                let value = PolicyPeer {
                    port_set,
                    any,
                    _pad: [0; 3],
                };
                out.peers.insert(key, value);
            }
        }
    }
    for (ranges, &id) in &port_sets {
        out.ports.extend(port_entries(id, ranges).map(|k| (k, 1)));
    }
    fits("POLICY_ENDPOINTS", out.endpoints.len(), ENDPOINT_CAPACITY)?;
    fits("POLICY_PEERS", out.peers.len(), POLICY_CAPACITY)?;
    fits("POLICY_PORTS", out.ports.len(), POLICY_CAPACITY)?;
    out.rev = revision(&out);
    Ok(out)
}

fn fits(what: &'static str, entries: usize, capacity: u32) -> Result<(), CompileError> {
    let capacity = capacity as usize;
    if entries > capacity {
        return Err(CompileError::TooLarge {
            what,
            entries,
            capacity,
        });
    }
    Ok(())
}
