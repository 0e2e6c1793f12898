//! The longest match alone gives Kubernetes' answer however blocks, excepts and
//! pods overlap.
use netpath_common::POLICY_INGRESS;
use serde_json::json;

use super::*;

const SERVER: &str = "10.244.0.10";

/// A server in x selected by `ingress`, and a client pod (10.244.1.7) it may name.
fn server_with(ingress: Value) -> Compiled {
    let pods = [
        pod("x", "srv", json!({"app": "srv"}), SERVER, json!([])),
        pod(
            "x",
            "client",
            json!({"app": "client"}),
            "10.244.1.7",
            json!([]),
        ),
    ];
    let p = policy(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "srv"}}, "ingress": ingress}),
    );
    compiled(&[], &pods, &[p], &[local("x", "srv", SERVER)])
}

fn from(c: &Compiled, peer: &str, protocol: u8, port: u16) -> bool {
    judge(c, ip(SERVER), POLICY_INGRESS, ip(peer), protocol, port)
}

#[test]
fn an_except_inside_its_cidr_is_a_hole() {
    let c = server_with(
        json!([{"from": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}]}]),
    );
    assert!(from(&c, "10.1.1.1", TCP, 80));
    assert!(from(&c, "10.1.3.255", UDP, 9));
    assert!(!from(&c, "10.1.2.5", TCP, 80), "inside the except");
    assert!(!from(&c, "10.2.0.1", TCP, 80), "outside the cidr");
}

#[test]
fn overlapping_rules_add_up_where_both_apply() {
    let c = server_with(json!([
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 80}]},
        {"from": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}],
         "ports": [{"port": 81}]},
    ]));
    let cases = [
        ("10.1.1.1", 80, true),
        ("10.1.1.1", 81, true),
        ("10.1.2.1", 80, true),
        ("10.1.2.1", 81, false),
        ("10.2.0.1", 80, true),
        ("10.2.0.1", 81, false),
        ("11.0.0.1", 80, false),
    ];
    for (peer, port, want) in cases {
        assert_eq!(from(&c, peer, TCP, port), want, "{peer}:{port}");
    }
}

#[test]
fn a_pod_inside_an_except_keeps_what_its_own_rule_allows() {
    let c = server_with(json!([
        {"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}}],
         "ports": [{"port": 80}]},
        {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 81}]},
    ]));
    assert!(
        !from(&c, "10.244.1.7", TCP, 80),
        "the except holds for the pod too"
    );
    assert!(from(&c, "10.244.1.7", TCP, 81), "its own rule");
    assert!(
        !from(&c, "10.244.1.8", TCP, 81),
        "a neighbour in the except"
    );
    assert!(from(&c, "10.244.2.1", TCP, 80));
    assert!(!from(&c, "10.244.2.1", TCP, 81));
}

#[test]
fn a_narrower_block_inside_an_except_of_another_rule_is_allowed() {
    // Kubernetes e2e: "should ensure an IP overlapping both IPBlock.CIDR and
    // IPBlock.Except is allowed", from the server's side.
    let c = server_with(json!([
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
        {"from": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]},
    ]));
    assert!(from(&c, "10.1.2.3", TCP, 80));
    assert!(!from(&c, "10.1.3.3", TCP, 80));
    assert!(from(&c, "10.2.0.0", TCP, 80));
}

#[test]
fn families_never_meet_and_an_empty_from_admits_both() {
    let c = server_with(
        json!([{"from": [{"ipBlock": {"cidr": "fd00::/8", "except": ["fd00:1::/32"]}}]}]),
    );
    assert!(from(&c, "fd00:2::1", TCP, 80));
    assert!(!from(&c, "fd00:1::1", TCP, 80));
    assert!(!from(&c, "10.0.0.1", TCP, 80));
    let c = server_with(json!([{"ports": [{"port": 80}]}]));
    assert!(from(&c, "fd00::1", TCP, 80) && from(&c, "192.0.2.1", TCP, 80));
    assert!(!from(&c, "192.0.2.1", TCP, 81));
}

#[test]
fn only_tcp_udp_and_sctp_reach_the_port_sets() {
    let c = server_with(json!([{"ports": [{"protocol": "SCTP", "port": 80}, {"port": 80}]}]));
    assert!(from(&c, "192.0.2.1", SCTP, 80));
    assert!(from(&c, "192.0.2.1", TCP, 80));
    assert!(!from(&c, "192.0.2.1", UDP, 80));
    assert!(!from(&c, "192.0.2.1", 1, 0), "ICMP: no port rule admits it");
    let any = server_with(json!([{}]));
    assert!(
        from(&any, "192.0.2.1", 1, 0),
        "a rule without ports admits every protocol"
    );
}

/// A small deterministic generator (xorshift), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A block inside 10.0.0.0/24 (or inside `within`).
    fn block(&mut self, within: (u32, u8)) -> (u32, u8) {
        let len = within.1 + self.next(u64::from(33 - within.1)) as u8;
        let host = within.0 | self.next(1 << (32 - within.1)) as u32;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        (host & mask, len)
    }
}

fn text((addr, len): (u32, u8)) -> String {
    format!("{}/{len}", std::net::Ipv4Addr::from(addr))
}

fn inside((net, len): (u32, u8), a: u32) -> bool {
    len == 0 || (a ^ net) >> (32 - len) == 0
}

#[test]
fn random_blocks_excepts_and_ports_match_the_definition() {
    let port_choices = [
        json!([]),
        json!([{"port": 80}]),
        json!([{"port": 80, "endPort": 81}]),
        json!([{"protocol": "UDP", "port": 81}]),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for trial in 0..150 {
        // (blocks with excepts, ports) per rule.
        let mut rules = Vec::new();
        for _ in 0..1 + rng.next(4) {
            let mut peers = Vec::new();
            for _ in 0..1 + rng.next(2) {
                let cidr = rng.block((0x0a00_0000, 24));
                let except: Vec<_> = (0..rng.next(3))
                    .map(|_| rng.block(cidr))
                    .filter(|e| e.1 > cidr.1)
                    .collect();
                peers.push((cidr, except));
            }
            rules.push((peers, rng.next(port_choices.len() as u64) as usize));
        }
        let ingress: Vec<Value> = rules
            .iter()
            .map(|(peers, ports)| {
                let from: Vec<Value> = peers
                    .iter()
                    .map(|(c, e)| {
                        let e: Vec<String> = e.iter().map(|b| text(*b)).collect();
                        json!({"ipBlock": {"cidr": text(*c), "except": e}})
                    })
                    .collect();
                json!({"from": from, "ports": port_choices[*ports]})
            })
            .collect();
        let c = server_with(json!(ingress));
        for a in 0x0a00_0000u32..=0x0a00_0100 {
            for (protocol, port) in [(TCP, 80), (TCP, 81), (UDP, 81), (UDP, 80)] {
                let want = rules.iter().any(|(peers, ports)| {
                    let peer_ok = peers
                        .iter()
                        .any(|(c, e)| inside(*c, a) && !e.iter().any(|e| inside(*e, a)));
                    let port_ok = match ports {
                        0 => true,
                        1 => (protocol, port) == (TCP, 80),
                        2 => protocol == TCP,
                        _ => (protocol, port) == (UDP, 81),
                    };
                    peer_ok && port_ok
                });
                let peer = std::net::Ipv4Addr::from(a).to_string();
                assert_eq!(
                    from(&c, &peer, protocol, port),
                    want,
                    "trial {trial}: {peer} {protocol}/{port} with {ingress:#?}"
                );
            }
        }
    }
}
