//! Subnet claims without a coordinator. Every node sees the claims of the members
//! it knows of (alive, suspected, and down but not yet forgotten) and evaluates one
//! rule on them: of claims that overlap, the earliest keeps its subnet, ties going to
//! the smaller node name. The rule needs nothing but the claims themselves, so every
//! node that has heard the same claims reaches the same verdict.
use std::collections::BTreeSet;

use crate::net::{CidrSet, Ipv4Net};

/// One node's claim of a pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<'a> {
    pub node: &'a str,
    pub subnet: Ipv4Net,
    /// When the claim was made, Unix milliseconds of the claiming node's clock.
    pub claimed_ms: u64,
}

/// The nodes whose claims stand: earliest first, each admitted unless it overlaps
/// one admitted before it.
pub fn holders<'a>(claims: &[Claim<'a>]) -> BTreeSet<&'a str> {
    let mut order: Vec<&Claim<'a>> = claims.iter().collect();
    order.sort_by(|a, b| (a.claimed_ms, a.node).cmp(&(b.claimed_ms, b.node)));
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
        }
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
        ];
        let first = holders(&claims);
        claims.reverse();
        assert_eq!(holders(&claims), first);
        claims.rotate_left(2);
        assert_eq!(holders(&claims), first);
        assert_eq!(first, BTreeSet::from(["n1", "n3", "n5"]));
    }
}
