//! A node as the gossip knows it: its membership identity carries its whole record,
//! so joining, leaving and changing its record are one and the same kind of news,
//! and a node learns every member's record with its membership.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::store::model::NodeRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    /// Where its gossip is heard: its membership address.
    pub gossip: SocketAddr,
    /// Rises with every start and every change of the record (Unix milliseconds at
    /// the start, then +1): the newest identity at one address wins.
    pub generation: u64,
    pub record: NodeRecord,
    /// When the node claimed its pod CIDR (Unix milliseconds, its own clock): the
    /// claims rule's order among claims alike settled or not.
    pub claimed_ms: u64,
    /// Whether the claim has settled (its pods may hold addresses from it): the
    /// rule puts it before every claim that has not.
    pub settled: bool,
    /// A digest of the cluster settings the node was given: members with other
    /// settings are left out of each other's spec.
    pub settings: u64,
}

impl Peer {
    /// Whether `other` claims the same subnet as of the same moment: a claim that
    /// settled, or a node restarted on its saved claim, is no new claim.
    pub fn same_claim(&self, other: &Peer) -> bool {
        self.record.pod_cidr == other.record.pod_cidr && self.claimed_ms == other.claimed_ms
    }
}

impl foca::Identity for Peer {
    type Addr = SocketAddr;

    /// A node declared down comes back as the next generation of itself.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn peer(generation: u64) -> Peer {
        Peer {
            name: "node1".into(),
            gossip: "192.168.1.1:7946".parse().unwrap(),
            generation,
            record: NodeRecord {
                underlay: "192.168.1.1/24".parse().unwrap(),
                pod_cidr: "10.244.1.0/24".parse().unwrap(),
                vtep_mac: crate::spec::derived_vtep_mac("192.168.1.1".parse().unwrap()),
            },
            claimed_ms: 7,
            settled: true,
            settings: 42,
        }
    }

    #[test]
    fn the_newer_generation_wins_its_address() {
        let (old, new) = (peer(1), peer(2));
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert_eq!(old.renew().unwrap().generation, 2);
        assert_eq!(old.addr(), new.addr());
    }

    #[test]
    fn a_record_round_trips_through_the_wire_codec() {
        let p = peer(1_800_000_000_000);
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert!(bytes.len() < 120, "{} bytes", bytes.len());
        assert_eq!(postcard::from_bytes::<Peer>(&bytes).unwrap(), p);
    }
}
