//! Subnet claims without a coordinator. Every node sees the claims of the members
//! it knows of (alive, suspected, and down but not yet forgotten) and evaluates one
//! rule on them: of claims that overlap, a settled one keeps its subnet over one
//! that has not settled, then the earliest, ties going to the smaller node name.
//! A settled claim is one whose node may have handed out addresses from it; one
//! that has not settled was made, at best, while its node could hear the cluster
//! for less than `CLAIM_SETTLE`, at worst while it heard nobody: whenever it was
//! made, it never takes the subnet of pods that run. The rule needs nothing but the
//! claims themselves, so every node that has heard the same claims reaches the
//! same verdict.
use std::{cmp::Reverse, collections::BTreeSet};

use crate::net::{CidrSet, Ipv4Net};

/// One node's claim of a pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<'a> {
    pub node: &'a str,
    pub subnet: Ipv4Net,
    /// When the claim was made, Unix milliseconds of the claiming node's clock.
    pub claimed_ms: u64,
    /// Whether the claim has settled (its node may have handed out addresses).
    pub settled: bool,
}

/// The nodes whose claims stand: settled ones first, then earliest first, each
/// admitted unless it overlaps one admitted before it.
pub fn holders<'a>(claims: &[Claim<'a>]) -> BTreeSet<&'a str> {
    let mut order: Vec<&Claim<'a>> = claims.iter().collect();
    order.sort_by_key(|c| (Reverse(c.settled), c.claimed_ms, c.node));
    let mut held = CidrSet::default();
    let mut out = BTreeSet::new();
    for c in order {
        if held.overlaps(&c.subnet) {
            continue;
        }
        held.insert(c.subnet);
        out.insert(c.node);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(node: &str, subnet: &str, at: u64) -> Claim<'static> {
        Claim {
            node: Box::leak(node.to_string().into_boxed_str()),
            subnet: subnet.parse().unwrap(),
            claimed_ms: at,
            settled: false,
        }
    }

    fn settled(node: &str, subnet: &str, at: u64) -> Claim<'static> {
        Claim {
            settled: true,
            ..c(node, subnet, at)
        }
    }

    #[test]
    fn a_settled_claim_keeps_its_subnet_against_an_earlier_unsettled_one() {
        // X claimed first while it heard nobody; node1 claimed later, settled and
        // handed out addresses before the two heard each other.
        let claims = [
            c("x", "10.244.1.0/24", 10),
            settled("node1", "10.244.1.0/24", 5_000),
        ];
        assert_eq!(holders(&claims), BTreeSet::from(["node1"]));
        // However much earlier, and for a block that only overlaps.
        let claims = [
            c("wide", "10.244.0.0/16", 0),
            settled("node1", "10.244.1.0/24", u64::MAX),
        ];
        assert_eq!(holders(&claims), BTreeSet::from(["node1"]));
    }

    #[test]
    fn among_settled_claims_and_among_unsettled_ones_the_earliest_wins() {
        let claims = [
            settled("late", "10.244.1.0/24", 20),
            settled("early", "10.244.1.0/24", 10),
            c("first", "10.244.2.0/24", 1),
            c("second", "10.244.2.0/24", 2),
        ];
        assert_eq!(holders(&claims), BTreeSet::from(["early", "first"]));
    }

    #[test]
    fn an_unsettled_claim_that_loses_to_a_settled_one_blocks_nobody_else() {
        // x loses to node1, so its wider block does not also keep y out of the
        // neighbouring /24.
        let claims = [
            c("x", "10.244.0.0/23", 1),
            settled("node1", "10.244.1.0/24", 50),
            c("y", "10.244.0.0/24", 60),
        ];
        assert_eq!(holders(&claims), BTreeSet::from(["node1", "y"]));
    }

    #[test]
    fn the_earliest_claim_of_a_subnet_keeps_it() {
        let claims = [
            c("b", "10.244.1.0/24", 10),
            c("a", "10.244.1.0/24", 20),
            c("c", "10.244.2.0/24", 30),
        ];
        assert_eq!(holders(&claims), BTreeSet::from(["b", "c"]));
    }

    #[test]
    fn ties_go_to_the_smaller_name_and_overlaps_count_as_clashes() {
        let claims = [
            c("zeta", "10.244.1.0/24", 10),
            c("alpha", "10.244.1.0/24", 10),
            c("wide", "10.244.0.0/16", 11),
        ];
        assert_eq!(holders(&claims), BTreeSet::from(["alpha"]));
    }

    #[test]
    fn nested_blocks_clash_both_ways_and_neighbours_do_not() {
        let claims = [
            c("mid", "10.244.4.0/22", 1),
            c("inside", "10.244.5.0/24", 2),
            c("outside", "10.244.0.0/16", 3),
            c("below", "10.244.3.0/24", 4),
            c("above", "10.244.8.0/24", 5),
        ];
        assert_eq!(holders(&claims), BTreeSet::from(["mid", "below", "above"]));
    }

    #[test]
    fn the_verdict_does_not_depend_on_the_order_claims_were_heard() {
        let mut claims = vec![
            c("n1", "10.244.1.0/24", 5),
            c("n2", "10.244.1.0/24", 6),
            c("n3", "10.244.2.0/24", 6),
            c("n4", "10.244.2.0/24", 6),
            c("n5", "10.244.3.0/24", 1),
            settled("n6", "10.244.3.0/24", 9),
            settled("n7", "10.244.4.0/24", 9),
            settled("n8", "10.244.4.0/24", 9),
        ];
        let first = holders(&claims);
        claims.reverse();
        assert_eq!(holders(&claims), first);
        claims.rotate_left(2);
        assert_eq!(holders(&claims), first);
        claims.swap(0, 5);
        assert_eq!(holders(&claims), first);
        assert_eq!(first, BTreeSet::from(["n1", "n3", "n6", "n7"]));
    }
}
