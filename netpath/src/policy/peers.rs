//! What each peer prefix of one (rule set, direction) allows, so that the longest
//! match alone is the answer: rules' peer blocks overlap and `except`s punch holes,
//! but an LPM trie returns one entry. Every prefix that appears (a block, an except,
//! a pod's /32) gets the union of what the grants that apply there allow; a grant
//! applies at prefix p when p lies in its block and in none of its excepts. For an
//! address A whose longest stored prefix is p, that is exactly the set of grants
//! that apply to A: every block and except holding A holds p too (they nest, and p
//! is the longest), and every one holding p holds A.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    cidr::IpNet,
    ports::{normalize, PortRange},
};

/// What a peer may use: every protocol and port, or these ranges (none: nothing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Allow {
    Any,
    Ports(Vec<PortRange>),
}

impl Allow {
    pub const NOTHING: Allow = Allow::Ports(Vec::new());
}

/// One peer block of one rule and what the rule allows there.
#[derive(Debug, Clone)]
pub struct Grant {
    pub block: IpNet,
    pub except: Vec<IpNet>,
    pub allow: Allow,
}

/// Each prefix's value, without those the trie would answer the same for anyway
/// (a prefix whose nearest stored ancestor has its value, or that allows nothing
/// and has none: a miss denies too).
pub fn peer_values(grants: &[Grant]) -> BTreeMap<IpNet, Allow> {
    let mut at_block: HashMap<IpNet, Vec<&Grant>> = HashMap::new();
    let mut prefixes = BTreeSet::new();
    for g in grants {
        at_block.entry(g.block).or_default().push(g);
        prefixes.insert(g.block);
        prefixes.extend(g.except.iter().copied());
    }
    let block_lengths = Lengths::of(at_block.keys());
    let values: BTreeMap<IpNet, Allow> = prefixes
        .iter()
        .map(|p| {
            let applying = block_lengths
                .up_to(p)
                .filter_map(|len| at_block.get(&p.truncate(len)))
                .flatten()
                .filter(|g| !g.except.iter().any(|e| e.contains(p)));
            (*p, union(applying.map(|g| &g.allow)))
        })
        .collect();
    let lengths = Lengths::of(values.keys());
    values
        .iter()
        .filter(|(p, v)| {
            let nearest = lengths
                .up_to(p)
                .rev()
                .filter(|len| *len < p.prefix())
                .find_map(|len| values.get(&p.truncate(len)));
            nearest.unwrap_or(&Allow::NOTHING) != *v
        })
        .map(|(p, v)| (*p, v.clone()))
        .collect()
}

fn union<'a>(allows: impl Iterator<Item = &'a Allow>) -> Allow {
    let mut ranges = Vec::new();
    for a in allows {
        match a {
            Allow::Any => return Allow::Any,
            Allow::Ports(r) => ranges.extend_from_slice(r),
        }
    }
    Allow::Ports(normalize(ranges))
}

/// The prefix lengths present, per family: the only truncations worth looking up.
struct Lengths {
    v4: u64,
    v6: [u64; 3],
}

impl Lengths {
    fn of<'a>(nets: impl Iterator<Item = &'a IpNet>) -> Self {
        let mut l = Self { v4: 0, v6: [0; 3] };
        for n in nets {
            let p = usize::from(n.prefix());
            if n.is_v6() {
                l.v6[p / 64] |= 1 << (p % 64);
            } else {
                l.v4 |= 1 << p;
            }
        }
        l
    }

    /// The lengths present up to `p`'s own, shortest first.
    fn up_to(&self, p: &IpNet) -> impl DoubleEndedIterator<Item = u8> + '_ {
        let v6 = p.is_v6();
        (0..=p.prefix()).filter(move |&len| {
            let len = usize::from(len);
            if v6 {
                self.v6[len / 64] & (1 << (len % 64)) != 0
            } else {
                self.v4 & (1 << len) != 0
            }
        })
    }
}
