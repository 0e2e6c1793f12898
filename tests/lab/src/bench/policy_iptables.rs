//! The policy bench's baseline: the same NetworkPolicies as kube-router and
//! Weave-npc write them (an ipset per policy, a chain for the selected pod behind
//! conntrack's verdict, then drop) on Calico's kernel path (`NodeKind::RoutedVeth`),
//! restored with `ipset restore` and `iptables-restore` inside the server's node
//! namespace only.
use std::{fmt::Write as _, net::Ipv4Addr};

use anyhow::{Context, Result};

use netpath::spec::Backend;

use super::{
    policy::{check_isolated, ends, peer_block, peer_pod, peer_port},
    services::pipe_in,
    tools,
};
use crate::lab::{generated_spec, Lab, LabConfig, NodeKind};

/// `ipset restore` input: a set per policy holding its peer, and the client's.
fn ipsets(n: usize, client: Ipv4Addr) -> String {
    let mut s = format!("create np-client hash:ip hashsize 64\nadd np-client {client}\n");
    for i in 0..n {
        let (kind, peer) = if i.is_multiple_of(2) {
            ("hash:ip", peer_pod(i).to_string())
        } else {
            ("hash:net", format!("{}/32", peer_block(i)))
        };
        let _ = writeln!(s, "create np-{i} {kind} hashsize 64\nadd np-{i} {peer}");
    }
    s
}

/// `iptables-restore` input: conntrack's verdict first, then the selected pod's
/// chain walking one set match per policy (the client's in the middle, where a
/// policy of random name order lands on average), then drop.
fn filter_rules(n: usize, server: Ipv4Addr) -> String {
    let mut lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "-A NP-POD-SERVER -m set --match-set np-{i} src -p tcp -m tcp --dport {} -j ACCEPT",
                peer_port(i)
            )
        })
        .collect();
    lines.insert(
        n.div_ceil(2),
        "-A NP-POD-SERVER -m set --match-set np-client src -j ACCEPT".into(),
    );
    format!(
        "*filter\n:NP-FORWARD - [0:0]\n:NP-POD-SERVER - [0:0]\n-A FORWARD -j NP-FORWARD\n\
         -A NP-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A NP-FORWARD -d {server}/32 -j NP-POD-SERVER\n{}\n-A NP-POD-SERVER -j DROP\nCOMMIT\n",
        lines.join("\n")
    )
}

/// Connection rate on two Calico-style kernel nodes, with `n` policies as
/// iptables + ipset on the server's node (0: no rules at all).
pub fn kernel_rate(n: usize, secs: u32) -> Result<f64> {
    let mut cfg = LabConfig::with_spec(generated_spec(2, Backend::Direct)?, 1)?;
    cfg.kinds = vec![(0, NodeKind::RoutedVeth), (1, NodeKind::RoutedVeth)];
    let lab = Lab::up(&cfg)?;
    let e = ends(&lab);
    if n > 0 {
        let node = lab.nodes[1].ns.path();
        let client = lab.nodes[0].pods[0].ip;
        pipe_in(node, &["ipset", "restore"], &ipsets(n, client))
            .context("ipset (Debian package ipset)")?;
        pipe_in(
            node,
            &["iptables-restore", "--noflush"],
            &filter_rules(n, e.server_ip),
        )?;
        check_isolated(lab.nodes[0].ns.path(), e.server_ip)?;
    }
    tools::crr_per_s(&e, secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_is_a_set_and_a_rule_and_the_client_sits_in_the_middle() {
        let (client, server) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 2));
        let rules = filter_rules(4, server);
        let chain: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with("-A NP-POD"))
            .collect();
        assert_eq!(chain.len(), 6, "{rules}");
        assert!(
            chain[2].contains("np-client") && chain[5].ends_with("DROP"),
            "{rules}"
        );
        assert!(chain[1].contains("--dport 8001"), "{rules}");
        let sets = ipsets(4, client);
        assert!(sets.contains("add np-1 172.20.0.1/32") && sets.contains("add np-2 10.244.128.2"));
        assert!(filter_rules(1, server)
            .lines()
            .nth(6)
            .unwrap()
            .contains("np-0"));
    }
}
